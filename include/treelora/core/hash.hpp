// treelora/core/hash.hpp: FNV-1a, 64-bit (Fowler, Noll, Vo), the checksum of the backbone cache and of checkpoints.
// A single changed byte always changes the hash: each step (xor a byte, multiply by an odd number mod 2^64) is a
// bijection of the running state, so two inputs that differ in one byte reach different states from there on.
#pragma once

#include <cstddef>
#include <cstdint>

namespace treelora {

/// FNV-1a, 64-bit: h = (h xor byte) * 0x100000001b3, from 0xcbf29ce484222325 (or from `hash`, to continue one).
inline std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t hash = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 0x100000001b3ULL;
  return hash;
}

}  // namespace treelora

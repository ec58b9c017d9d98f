// tests/fuzz/largest_allocation.hpp: the largest single operator-new request made while a piece of code runs.
// The readers' doctests (test_data.cpp, test_pretrain.cpp) use it to check that a hostile header cannot make
// a reader allocate what the file does not hold; the fuzzers check the same with -rss_limit_mb /
// -malloc_limit_mb. It REPLACES the global operator new and delete: include it in exactly one translation
// unit of a program.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace treelora::testing {

inline std::atomic<bool> allocation_tracking{false};
inline std::atomic<std::size_t> allocation_largest{0};

/// Runs `code` and returns the largest single allocation it requested through operator new (or new[]).
/// Exceptions from `code` propagate; wrap the call in CHECK_THROWS_* inside `code` to test a throwing reader.
template <class Code>
std::size_t largest_allocation(Code&& code) {
  allocation_largest = 0;
  allocation_tracking = true;
  struct stop {
    ~stop() { allocation_tracking = false; }
  } stop_on_exit;
  code();
  return allocation_largest;
}

}  // namespace treelora::testing

// libstdc++'s operator new[] and nothrow new forward to this operator new; aligned new and its delete do not
// come here (they use aligned_alloc / free), which pairs correctly with the free below. Out of line, so that
// GCC does not see an inlined free() of memory from operator new (a false -Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t bytes) {
  if (treelora::testing::allocation_tracking.load(std::memory_order_relaxed)) {
    std::size_t seen = treelora::testing::allocation_largest.load(std::memory_order_relaxed);
    while (bytes > seen && !treelora::testing::allocation_largest.compare_exchange_weak(seen, bytes)) {
    }
  }
  if (void* p = std::malloc(bytes ? bytes : 1)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

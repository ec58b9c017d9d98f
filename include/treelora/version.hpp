// treelora/version.hpp: the library version. CMake reads these three macros (one source of truth).
#pragma once

#define TREELORA_VERSION_MAJOR 0
#define TREELORA_VERSION_MINOR 1
#define TREELORA_VERSION_PATCH 0

namespace treelora {
inline constexpr int version_major = TREELORA_VERSION_MAJOR;
inline constexpr int version_minor = TREELORA_VERSION_MINOR;
inline constexpr int version_patch = TREELORA_VERSION_PATCH;
}  // namespace treelora

// treelora/core/eigen.hpp: Eigen's Core module, included the one way every treelora header includes it.
//
// GCC 12 with AVX-512 enabled (-march=native on such a machine) reports a false -Wuninitialized or
// -Wmaybe-uninitialized inside its own AVX-512 intrinsics once Eigen's kernels inline them: the self-initialised
// `__Y = __Y` of _mm256_undefined_pd (GCC bug 105593, fixed in GCC 13), an error under -Werror. GCC judges a warning by
// the pragmas in force at the warning's location, here the intrinsics header that Eigen/Core includes first, so
// silencing the two warnings around this include silences exactly those and nothing in the code that uses Eigen.
// Without AVX (-march=x86-64, as the portable GPU-test build compiles) GCC 12 reports a false -Wuse-after-free in
// Eigen's aligned_free (Eigen/src/Core/util/Memory.h) where an Eigen array is reassigned; silenced the same way.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif
#include <Eigen/Core>
#pragma GCC diagnostic pop
#else
#include <Eigen/Core>
#endif

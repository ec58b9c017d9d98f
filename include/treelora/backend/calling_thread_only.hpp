// treelora/backend/calling_thread_only.hpp: keeps OpenMP-threaded library code (Eigen's products, an OpenMP build of
// OpenBLAS) on the calling thread for a scope, so that its rounding does not depend on the thread count. Eigen threads
// a product of about 10^5 multiply-adds or more with OpenMP on its own, and threaded it cuts the inner dimension into
// other blocks (about 250 long, where one thread balances them): the same product, and every decomposition built on
// products (BDCSVD, ...), then rounds differently on 1 and on 2 threads (measured: GPM at d = 300 stored a differently
// rounded basis). Host-side linear algebra whose results must not depend on the thread count runs inside one of these
// (docs/design.md, "Reproducibility across thread counts").
#pragma once

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace treelora {

/// While alive, OpenMP parallel regions started by the calling thread run on that thread alone. It sets the
/// calling thread's OpenMP thread count (a per-thread setting: other threads keep theirs, so it is safe in a
/// parallel region and in a program with several threads of its own) to 1 and restores it.
/// Eigen::setNbThreads, when a program calls it, overrides the OpenMP setting inside Eigen. Costs two calls
/// into the OpenMP runtime; nothing without OpenMP.
class calling_thread_only {
 public:
#if defined(_OPENMP)
  calling_thread_only() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~calling_thread_only() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
#else
  calling_thread_only() = default;
#endif
  calling_thread_only(const calling_thread_only&) = delete;
  calling_thread_only& operator=(const calling_thread_only&) = delete;

 private:
#if defined(_OPENMP)
  int saved_;
#endif
};

}  // namespace treelora

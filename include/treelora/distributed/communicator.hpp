// treelora/distributed/communicator.hpp: what data-parallel training needs from the processes it runs on, as one
// concept, and the communicator of a single process.
//
// A Communicator has a rank in [0, size), sums arrays of floats or doubles over every rank in place (each rank ends
// with the same sum), broadcasts bytes from one rank, and waits for every rank (barrier). Implementations:
//   single_process            (here) rank 0 of 1, every collective leaves the data as it is: code written for the
//                             data-parallel runner runs unchanged without MPI;
//   mpi_communicator          (distributed/mpi.hpp, with TREELORA_HAS_MPI) processes started by mpirun.
// On top of the concept: all_reduce_sum of a backend tensor (through host memory where the backend's is not the
// host's), broadcast of a trivially copyable value or vector, and share_of, the rows of a global batch one rank takes.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/tensor/tensor.hpp"

namespace treelora {

template <class C>
concept Communicator = requires(C& c, const C& k, std::span<float> f, std::span<double> d, std::span<std::byte> bytes, int root) {
  { k.rank() } -> std::convertible_to<int>;
  { k.size() } -> std::convertible_to<int>;
  c.all_reduce_sum(f);
  c.all_reduce_sum(d);
  c.broadcast(bytes, root);
  c.barrier();
};

/// One process: rank 0 of 1. Every collective leaves its data as it is (a broadcast from a root other than 0 is an
/// error, as it would be on any communicator of one rank).
struct single_process {
  int rank() const { return 0; }
  int size() const { return 1; }
  void all_reduce_sum(std::span<float>) {}
  void all_reduce_sum(std::span<double>) {}
  void broadcast(std::span<std::byte>, int root) const {
    if (root != 0) throw_invalid_argument("single_process::broadcast", concat("root ", root, " is not a rank of 1 process"));
  }
  void barrier() {}
};
static_assert(Communicator<single_process>);

/// Any Communicator behind one type, so that runner_options can hold one: it refers to the caller's communicator,
/// which must outlive it (the default holds its own single_process).
class any_communicator {
 public:
  any_communicator() : self_(std::make_shared<owned>()) {}
  template <Communicator C>
    requires(!std::same_as<std::remove_cv_t<C>, any_communicator>)
  any_communicator(C& communicator) : self_(std::make_shared<borrowed<C>>(communicator)) {}  // NOLINT: implicit by design

  int rank() const { return self_->rank(); }
  int size() const { return self_->size(); }
  void all_reduce_sum(std::span<float> values) const { self_->all_reduce_sum(values); }
  void all_reduce_sum(std::span<double> values) const { self_->all_reduce_sum(values); }
  void broadcast(std::span<std::byte> bytes, int root) const { self_->broadcast(bytes, root); }
  void barrier() const { self_->barrier(); }

 private:
  struct interface {
    virtual ~interface() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual void all_reduce_sum(std::span<float>) = 0;
    virtual void all_reduce_sum(std::span<double>) = 0;
    virtual void broadcast(std::span<std::byte>, int) = 0;
    virtual void barrier() = 0;
  };
  template <class C>
  struct borrowed final : interface {
    explicit borrowed(C& c) : communicator(c) {}
    int rank() const override { return int(communicator.rank()); }
    int size() const override { return int(communicator.size()); }
    void all_reduce_sum(std::span<float> v) override { communicator.all_reduce_sum(v); }
    void all_reduce_sum(std::span<double> v) override { communicator.all_reduce_sum(v); }
    void broadcast(std::span<std::byte> b, int root) override { communicator.broadcast(b, root); }
    void barrier() override { communicator.barrier(); }
    C& communicator;
  };
  struct owned final : interface {
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void all_reduce_sum(std::span<float>) override {}
    void all_reduce_sum(std::span<double>) override {}
    void broadcast(std::span<std::byte> b, int root) override { single_process{}.broadcast(b, root); }
    void barrier() override {}
  };
  std::shared_ptr<interface> self_;
};
static_assert(Communicator<const any_communicator>);

/// The rows [first, first + count) of a global batch of `rows` rows that `rank` of `size` takes: contiguous, in rank
/// order, the first rows % size ranks one row more than the others (a rank may take none).
struct row_share {
  index_t first = 0, count = 0;
};
inline row_share share_of(index_t rows, int rank, int size) {
  if (size <= 0 || rank < 0 || rank >= size || rows < 0)
    throw_invalid_argument("share_of", concat("rank ", rank, " of ", size, " processes, ", rows, " rows"));
  const index_t base = rows / size, extra = rows % size, r = rank;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

/// Sums `t` over every rank, in place (a backend whose memory is not the host's goes through a host copy).
template <Communicator C, class B>
void all_reduce_sum(C& communicator, tensor<B>& t) {
  using T = typename B::scalar_type;
  if (t.empty() || t.numel() == 0 || communicator.size() == 1) return;
  if constexpr (B::is_host_accessible) {
    t.backend().synchronize();
    communicator.all_reduce_sum(std::span<T>(t.data(), std::size_t(t.numel())));
  } else {
    std::vector<T> host = t.to_host();
    communicator.all_reduce_sum(std::span<T>(host));
    t.backend().copy_from_host(host.data(), t.data(), t.numel());
  }
}

/// Every rank ends with `root`'s value (trivially copyable).
template <Communicator C, class T>
  requires std::is_trivially_copyable_v<T>
void broadcast_value(C& communicator, T& value, int root = 0) {
  communicator.broadcast(std::as_writable_bytes(std::span<T, 1>(&value, 1)), root);
}

/// Every rank ends with `root`'s vector (its size first, then its elements).
template <Communicator C, class T>
  requires std::is_trivially_copyable_v<T>
void broadcast_vector(C& communicator, std::vector<T>& values, int root = 0) {
  std::size_t n = values.size();
  broadcast_value(communicator, n, root);
  values.resize(n);
  if (n) communicator.broadcast(std::as_writable_bytes(std::span<T>(values)), root);
}

}  // namespace treelora

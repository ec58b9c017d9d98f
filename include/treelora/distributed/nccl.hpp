// treelora/distributed/nccl.hpp: the Communicator (distributed/communicator.hpp) of GPUs, on NCCL (shipped with the
// CUDA toolkit). One process per GPU, started by mpirun: an MPI communicator (or any Communicator) carries NCCL's
// unique id from rank 0 to the others once, then NCCL moves the data between the GPUs (NVLink, PCIe, InfiniBand).
// Link treelora::nccl (CMake, TREELORA_NCCL AUTO/ON/OFF: found where the CUDA backend is built and nccl.h and
// libnccl exist), which defines TREELORA_HAS_NCCL.
//
//   treelora::mpi_session session(argc, argv);
//   treelora::mpi_communicator world;
//   treelora::nccl_communicator gpus(world, local_rank);          // this process's GPU
//   treelora::all_reduce_sum(gpus, gradient_tensor);              // a cuda_backend tensor: summed on the device
//   gpus.all_reduce_sum(std::span<float>(host_values));           // the Communicator concept: staged through the GPU
//
// A backend tensor is summed in place in device memory, on the backend's own stream, so it follows the kernels that
// wrote it without a host synchronisation. Host spans (what the concept's members take, and what the runner's packed
// gradients are today) go through one device buffer of this communicator. Every operation is waited for against a
// deadline (600 s by default) while polling NCCL's asynchronous error state: when another rank has died or hangs,
// the waiting rank aborts its NCCL communicator and throws std::runtime_error naming the operation, instead of
// waiting forever. The communicator is non-blocking (ncclConfig_t::blocking = 0) so that an abort is always possible.
//
// Status: compiled wherever NCCL is found; not yet run (no GPU machine has been available: docs/scaling.md).
#pragma once

#if !defined(TREELORA_HAS_NCCL)
#error "treelora/distributed/nccl.hpp needs NCCL and the CUDA runtime: link treelora::nccl (TREELORA_NCCL, with the CUDA toolkit)"
#endif

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>

#include "treelora/core/error.hpp"
#include "treelora/distributed/communicator.hpp"
#include "treelora/tensor/tensor.hpp"

namespace treelora {

namespace detail {
inline void nccl_check(ncclResult_t code, std::string_view where, std::string_view what) {
  if (code == ncclSuccess || code == ncclInProgress) return;
  throw_runtime_error(where, concat(what, ": NCCL error ", int(code), " (", ncclGetErrorString(code), ")"));
}
inline void nccl_cuda_check(cudaError_t code, std::string_view where, std::string_view what) {
  if (code == cudaSuccess) return;
  throw_runtime_error(where, concat(what, ": CUDA error ", int(code), " (", cudaGetErrorString(code), ")"));
}

/// Makes `device` current for a scope and restores the previous device.
class nccl_device_scope {
 public:
  explicit nccl_device_scope(int device) {
    nccl_cuda_check(cudaGetDevice(&previous_), "nccl_communicator", "cudaGetDevice");
    if (previous_ != device) nccl_cuda_check(cudaSetDevice(device), "nccl_communicator", concat("cudaSetDevice(", device, ")"));
  }
  ~nccl_device_scope() { cudaSetDevice(previous_); }
  nccl_device_scope(const nccl_device_scope&) = delete;
  nccl_device_scope& operator=(const nccl_device_scope&) = delete;

 private:
  int previous_ = 0;
};

template <class T>
constexpr ncclDataType_t nccl_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "nccl_communicator sums float or double");
  return std::is_same_v<T, float> ? ncclFloat32 : ncclFloat64;
}
}  // namespace detail

/// The Communicator of one GPU per rank. Every rank of `bootstrap` must construct it at the same point.
class nccl_communicator {
 public:
  /// Joins the NCCL communicator of `bootstrap`'s ranks on CUDA device `device` of this process (rank 0 makes NCCL's
  /// unique id and broadcasts it through `bootstrap`). Operations time out after `timeout_seconds`.
  template <Communicator Bootstrap>
  nccl_communicator(Bootstrap& bootstrap, int device, double timeout_seconds = 600)
      : device_(device), timeout_(timeout_seconds), rank_(bootstrap.rank()), size_(bootstrap.size()) {
    if (!(timeout_seconds > 0))
      throw_invalid_argument("nccl_communicator", concat("timeout ", timeout_seconds, " s must be positive"));
    int devices = 0;
    detail::nccl_cuda_check(cudaGetDeviceCount(&devices), "nccl_communicator", "cudaGetDeviceCount");
    if (device < 0 || device >= devices)
      throw_invalid_argument("nccl_communicator", concat("device ", device, " is not one of this machine's ", devices, " CUDA devices"));
    ncclUniqueId id{};
    if (rank_ == 0) detail::nccl_check(ncclGetUniqueId(&id), "nccl_communicator", "ncclGetUniqueId");
    bootstrap.broadcast(std::as_writable_bytes(std::span<ncclUniqueId>(&id, 1)), 0);
    const detail::nccl_device_scope scope(device_);
    detail::nccl_cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "nccl_communicator", "cudaStreamCreate");
    try {
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;  // calls return at once; wait() polls, so that a hung peer can be given up on
      detail::nccl_check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "nccl_communicator", "ncclCommInitRankConfig");
      wait_for_communicator(concat("joining the NCCL communicator of ", size_, " ranks"));
    } catch (...) {  // no destructor runs for a constructor that throws
      abort_communicator();
      cudaStreamDestroy(stream_);
      throw;
    }
  }

  ~nccl_communicator() {
    if (comm_) {
      cudaSetDevice(device_);  // (a destructor must not throw: no nccl_device_scope)
      const ncclResult_t finalize = ncclCommFinalize(comm_);
      if ((finalize == ncclSuccess || finalize == ncclInProgress) && finish_quietly()) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    if (staging_) cudaFree(staging_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  double timeout_seconds() const { return timeout_; }

  /// Sums `n` values of device memory (on this communicator's device) in place over the ranks, on `stream` (null:
  /// this communicator's own), and waits for the sum.
  template <class T>
  void all_reduce_sum_device(T* values, std::size_t n, cudaStream_t stream = nullptr) {
    if (n == 0) return;
    const detail::nccl_device_scope scope(device_);
    const cudaStream_t s = stream ? stream : stream_;
    enqueue(ncclAllReduce(values, values, n, detail::nccl_type<T>(), ncclSum, usable(), s), "ncclAllReduce");
    wait_for_stream(s, concat("all_reduce_sum of ", n, " values"));
  }

  void all_reduce_sum(std::span<float> values) { host_sum(values); }
  void all_reduce_sum(std::span<double> values) { host_sum(values); }

  void broadcast(std::span<std::byte> bytes, int root) {
    if (root < 0 || root >= size_)
      throw_invalid_argument("nccl_communicator::broadcast", concat("root ", root, " is not a rank of ", size_));
    if (bytes.empty()) return;
    const detail::nccl_device_scope scope(device_);
    void* device = staging(bytes.size());
    copy(device, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    enqueue(ncclBroadcast(device, device, bytes.size(), ncclUint8, root, usable(), stream_), "ncclBroadcast");
    const std::string what = concat("broadcast of ", bytes.size(), " bytes from rank ", root);
    wait_for_stream(stream_, what);  // first: a copy into pageable memory would block the host with no deadline
    copy(bytes.data(), device, bytes.size(), cudaMemcpyDeviceToHost);
    wait_for_stream(stream_, what);
  }

  /// Returns when every rank has reached it (NCCL has no barrier: an all-reduce of one value).
  void barrier() {
    float one = 1;
    host_sum(std::span<float>(&one, 1));
  }

 private:
  template <class T>
  void host_sum(std::span<T> values) {
    if (values.empty()) return;
    const detail::nccl_device_scope scope(device_);
    const std::size_t bytes = values.size() * sizeof(T);
    T* device = static_cast<T*>(staging(bytes));
    copy(device, values.data(), bytes, cudaMemcpyHostToDevice);
    enqueue(ncclAllReduce(device, device, values.size(), detail::nccl_type<T>(), ncclSum, usable(), stream_), "ncclAllReduce");
    const std::string what = concat("all_reduce_sum of ", values.size(), " host values");
    wait_for_stream(stream_, what);  // first: a copy into pageable memory would block the host with no deadline
    copy(values.data(), device, bytes, cudaMemcpyDeviceToHost);
    wait_for_stream(stream_, what);
  }

  /// A device buffer of at least `bytes` (grown, never shrunk).
  void* staging(std::size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_) detail::nccl_cuda_check(cudaFree(staging_), "nccl_communicator", "cudaFree");
      staging_ = nullptr, staging_bytes_ = 0;
      detail::nccl_cuda_check(cudaMalloc(&staging_, bytes), "nccl_communicator", concat("cudaMalloc of ", bytes, " bytes"));
      staging_bytes_ = bytes;
    }
    return staging_;
  }

  void copy(void* to, const void* from, std::size_t bytes, cudaMemcpyKind kind) {
    detail::nccl_cuda_check(cudaMemcpyAsync(to, from, bytes, kind, stream_), "nccl_communicator", "cudaMemcpyAsync");
  }

  ncclComm_t usable() const {
    if (!comm_) throw_runtime_error("nccl_communicator", concat("rank ", rank_, ": the communicator was aborted after an earlier failure"));
    return comm_;
  }

  /// A non-blocking call returns ncclInProgress until NCCL has taken it: wait for that, then for its stream.
  void enqueue(ncclResult_t code, std::string_view what) {
    detail::nccl_check(code, "nccl_communicator", what);
    if (code == ncclInProgress) wait_for_communicator(std::string(what));
  }

  void wait_for_communicator(const std::string& what) { wait(nullptr, what); }
  void wait_for_stream(cudaStream_t stream, const std::string& what) { wait(stream, what); }

  /// Polls NCCL's asynchronous state (and the stream, when given) until both are done, an error, or the deadline; on
  /// an error or the deadline the communicator is aborted (ncclCommAbort), so that later calls fail at once.
  void wait(cudaStream_t stream, const std::string& what) {
    const auto start = std::chrono::steady_clock::now();
    for (long polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      detail::nccl_check(ncclCommGetAsyncError(usable(), &state), "nccl_communicator", "ncclCommGetAsyncError");
      if (state != ncclSuccess && state != ncclInProgress) {
        abort_communicator();
        detail::nccl_check(state, "nccl_communicator", concat(what, " on rank ", rank_, " of ", size_));
      }
      const cudaError_t query = stream ? cudaStreamQuery(stream) : cudaSuccess;
      if (query != cudaSuccess && query != cudaErrorNotReady) {
        abort_communicator();
        detail::nccl_cuda_check(query, "nccl_communicator", concat(what, " on rank ", rank_, " of ", size_));
      }
      if (state == ncclSuccess && query == cudaSuccess) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_) {
        abort_communicator();
        throw_runtime_error("nccl_communicator",
                            concat(what, " on rank ", rank_, " of ", size_, " did not complete within ", timeout_,
                                   " s: another rank has stopped, crashed or hangs (this rank's NCCL communicator is aborted)"));
      }
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void abort_communicator() {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  /// In the destructor: waits (a bounded time, never throwing) for ncclCommFinalize to finish.
  bool finish_quietly() {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) return false;
      if (state == ncclSuccess) return true;
      if (state != ncclInProgress) return false;
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  int device_ = 0;
  double timeout_ = 600;
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
};
static_assert(Communicator<nccl_communicator>);

/// A device tensor (cuda_backend) summed over the GPUs in place, on its backend's stream: no host copy. The tensor
/// must live on the communicator's device.
template <class B>
  requires requires(B& backend) {
    backend.context().stream();
    backend.context().device();
  }
void all_reduce_sum(nccl_communicator& communicator, tensor<B>& t) {
  if (t.empty()) return;
  if (t.backend().context().device() != communicator.device())
    throw_invalid_argument("all_reduce_sum", concat("the tensor is on CUDA device ", t.backend().context().device(),
                                                    ", the NCCL communicator on device ", communicator.device()));
  communicator.all_reduce_sum_device(t.data(), std::size_t(t.numel()), t.backend().context().stream());
}

}  // namespace treelora

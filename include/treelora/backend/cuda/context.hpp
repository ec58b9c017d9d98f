// treelora/backend/cuda/context.hpp: what the CUDA backend holds: a context (device, stream, cuBLAS handle, memory
// pool, scratch) and RAII device buffers. No hidden globals: two contexts in one program (two devices, or two streams
// on one device) never share state, and the CPU backend is unaffected by either.
//
// Ownership: a device_buffer shares ownership of its context's stream and memory pool (not of the context), so a
// tensor that outlives its context still frees correctly. Frees are stream-ordered (cudaFreeAsync), so dropping a
// buffer never synchronises the device.
// Threads: a context and the backends on it are used by one host thread at a time (one stream, one set of scratch).
// This header needs only the CUDA runtime and cuBLAS headers; the kernels live in cuda/kernels.hpp (nvcc only).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

#include "treelora/backend/cuda/check.hpp"
#include "treelora/core/error.hpp"

namespace treelora {

/// How cuda_backend<float> runs gemm. cuda_backend<double> always uses FP64 cublasDgemm and ignores the mode.
enum class gemm_mode {
  fp32,  ///< cublasSgemm: full FP32 (the default; compared with the CPU backend at the float tolerance)
  tf32,  ///< FP32 storage, TF32 tensor-core products with FP32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32)
  bf16,  ///< operands rounded to bf16 scratch copies, FP32 accumulation and output (cublasGemmEx, CUBLAS_COMPUTE_32F)
};

/// Runs the calls in its scope on `device`, restoring the previous current device afterwards (cheap when equal).
class device_guard {
 public:
  explicit device_guard(int device) {
    TREELORA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) TREELORA_CUDA_CHECK(cudaSetDevice(device));
    else previous_ = -1;
  }
  ~device_guard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int previous_ = -1;
};

namespace cuda_detail {

/// The stream and the memory pool: shared by a context and every buffer allocated from it, and destroyed after the
/// last of them (the stream is synchronised first).
class stream_resources {
 public:
  explicit stream_resources(int device) : device_(device) {
    device_guard guard(device);
    TREELORA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    int pools_supported = 0;
    TREELORA_CUDA_CHECK(cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, device));
    if (pools_supported) {
      // Our own pool, not the device's default one: its settings are ours to choose. Keeping freed memory in the
      // pool (release threshold = max) makes the allocate/free of a training step's scratch tensors cheap.
      cudaMemPoolProps props{};
      props.allocType = cudaMemAllocationTypePinned;
      props.location.type = cudaMemLocationTypeDevice;
      props.location.id = device;
      TREELORA_CUDA_CHECK(cudaMemPoolCreate(&pool_, &props));
      std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
      TREELORA_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
    }
  }
  ~stream_resources() {
    // Destructors never throw: errors here (a device already in an error state) are ignored on purpose.
    (void)cudaStreamSynchronize(stream_);
    if (pool_) (void)cudaMemPoolDestroy(pool_);
    (void)cudaStreamDestroy(stream_);
  }
  stream_resources(const stream_resources&) = delete;
  stream_resources& operator=(const stream_resources&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  void* allocate(std::size_t bytes) {
    void* p = nullptr;
    if (pool_) TREELORA_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, pool_, stream_));
    else TREELORA_CUDA_CHECK(cudaMalloc(&p, bytes));  // devices without memory pools: synchronous fallback
    return p;
  }
  void free(void* p) noexcept {
    if (!p) return;
    if (pool_) (void)cudaFreeAsync(p, stream_);
    else (void)cudaFree(p);
  }

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
};

}  // namespace cuda_detail

/// Owning device array of trivially copyable T (never managed memory). Moves, never copies implicitly; the memory is
/// not host-accessible: copy it with the backend's copy_to_host / copy_from_host.
template <class T>
class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "device_buffer holds trivially copyable elements");

 public:
  device_buffer() = default;
  device_buffer(std::shared_ptr<cuda_detail::stream_resources> resources, index_t size)
      : resources_(std::move(resources)), size_(size) {
    if (size < 0) throw_invalid_argument("device_buffer", concat("negative size ", size));
    if (size > 0) data_ = static_cast<T*>(resources_->allocate(static_cast<std::size_t>(size) * sizeof(T)));
  }
  ~device_buffer() { release(); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept
      : resources_(std::move(other.resources_)), data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  device_buffer& operator=(device_buffer&& other) noexcept {
    if (this != &other) {
      release();
      resources_ = std::move(other.resources_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  index_t size() const { return size_; }

 private:
  void release() noexcept {
    if (data_) resources_->free(data_);
    data_ = nullptr;
    size_ = 0;
  }
  std::shared_ptr<cuda_detail::stream_resources> resources_;
  T* data_ = nullptr;
  index_t size_ = 0;
};

/// Owning page-locked host array (cudaMallocHost): the staging memory of truly asynchronous host->device copies.
template <class T>
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(index_t size) : size_(size) {
    if (size > 0) {
      void* p = nullptr;
      TREELORA_CUDA_CHECK(cudaMallocHost(&p, static_cast<std::size_t>(size) * sizeof(T)));
      data_.reset(static_cast<T*>(p));
    }
  }
  T* data() { return data_.get(); }
  index_t size() const { return size_; }

 private:
  struct free_host {
    void operator()(T* p) const noexcept { (void)cudaFreeHost(p); }
  };
  std::unique_ptr<T, free_host> data_;
  index_t size_ = 0;
};

/// The number of CUDA devices, or 0 when there is no device or no usable driver (never throws).
inline int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error so that later calls do not report it
    return 0;
  }
  return count;
}

/// A device, its stream and cuBLAS handle, the gemm mode, and the scratch memory kernels need. Non-copyable and
/// non-movable: backends refer to it. Every operation is queued on stream(); host-visible results (reductions,
/// copy_to_host) synchronise that stream, nothing else does.
class cuda_context {
 public:
  explicit cuda_context(int device = 0, gemm_mode mode = gemm_mode::fp32) : mode_(mode) {
    const int count = cuda_device_count();
    if (device < 0 || device >= count)
      throw_runtime_error("cuda_context", concat("device ", device, " requested but ", count, " CUDA device(s) present"));
    device_guard guard(device);  // the cuBLAS handle binds to the current device
    resources_ = std::make_shared<cuda_detail::stream_resources>(device);
    TREELORA_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device));
    TREELORA_CUBLAS_CHECK(cublasCreate(&blas_));
    TREELORA_CUBLAS_CHECK(cublasSetStream(blas_, resources_->stream()));
    TREELORA_CUDA_CHECK(cudaEventCreateWithFlags(&index_ring_event_, cudaEventDisableTiming));
    host_result_ = pinned_buffer<double>(1);
  }
  ~cuda_context() {
    (void)cudaStreamSynchronize(stream());
    (void)cublasDestroy(blas_);
    (void)cudaEventDestroy(index_ring_event_);
  }
  cuda_context(const cuda_context&) = delete;
  cuda_context& operator=(const cuda_context&) = delete;

  int device() const { return resources_->device(); }
  cudaStream_t stream() const { return resources_->stream(); }
  cublasHandle_t blas() const { return blas_; }
  int multiprocessors() const { return multiprocessors_; }
  gemm_mode mode() const { return mode_; }
  void set_gemm_mode(gemm_mode mode) { mode_ = mode; }
  /// Waits for everything queued on the stream.
  void synchronize() {
    device_guard guard(device());
    ++host_waits_;
    TREELORA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  /// How many times the host has waited for this context's device work so far (synchronize, every device->host
  /// read, a wrap of the index staging ring): a training step's count says whether it is one stream of kernels.
  std::uint64_t host_waits() const { return host_waits_; }

  /// A buffer on this context's device, freed in stream order.
  template <class T>
  device_buffer<T> allocate(index_t n) {
    device_guard guard(device());
    return device_buffer<T>(resources_, n);
  }

  /// Grow-only device scratch (one per `slot`), valid until the next request of the same slot. Reusing it is safe
  /// without synchronisation because every user is queued on the one stream.
  enum class scratch_slot : int { reduction, operand_a, operand_b, overlap, count };
  template <class T>
  T* scratch(scratch_slot slot, index_t n) {
    auto& buffer = scratch_[static_cast<int>(slot)];
    const index_t bytes = n * static_cast<index_t>(sizeof(T));
    if (buffer.size() < bytes) buffer = allocate<std::byte>(grown(bytes));
    return reinterpret_cast<T*>(buffer.data());
  }

  /// Copies a host index list to the device for a kernel queued next, through page-locked staging: the copy is
  /// asynchronous (a pageable-memory copy may synchronise). Staging is a ring; when it wraps, the host waits until
  /// the previous lap's copies have run (once per ring's worth of indices), and on growth the stream is drained.
  const index_t* upload_indices(std::span<const index_t> indices) {
    const auto n = static_cast<index_t>(indices.size());
    if (n == 0) return nullptr;
    if (n > index_ring_host_.size()) {
      synchronize();
      const index_t capacity = grown(n);
      index_ring_host_ = pinned_buffer<index_t>(capacity);
      index_ring_device_ = allocate<index_t>(capacity);
      index_ring_cursor_ = 0;
    } else if (index_ring_cursor_ + n > index_ring_host_.size()) {
      ++host_waits_;
      TREELORA_CUDA_CHECK(cudaEventSynchronize(index_ring_event_));
      index_ring_cursor_ = 0;
    }
    index_t* staged = index_ring_host_.data() + index_ring_cursor_;
    index_t* device = index_ring_device_.data() + index_ring_cursor_;
    std::memcpy(staged, indices.data(), static_cast<std::size_t>(n) * sizeof(index_t));
    TREELORA_CUDA_CHECK(cudaMemcpyAsync(device, staged, static_cast<std::size_t>(n) * sizeof(index_t),
                                        cudaMemcpyHostToDevice, stream()));
    TREELORA_CUDA_CHECK(cudaEventRecord(index_ring_event_, stream()));
    index_ring_cursor_ += (n + 31) / 32 * 32;  // keep each list 256-byte aligned
    return device;
  }

  /// The one device->host copy of a reduction: reads a double the last kernel wrote to `device_value`, synchronising
  /// the stream.
  double read_result(const double* device_value) {
    TREELORA_CUDA_CHECK(
        cudaMemcpyAsync(host_result_.data(), device_value, sizeof(double), cudaMemcpyDeviceToHost, stream()));
    ++host_waits_;
    TREELORA_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return *host_result_.data();
  }

 private:
  static index_t grown(index_t n) {
    index_t capacity = 4096;
    while (capacity < n) capacity *= 2;
    return capacity;
  }

  std::shared_ptr<cuda_detail::stream_resources> resources_;
  gemm_mode mode_;
  int multiprocessors_ = 0;
  std::uint64_t host_waits_ = 0;
  cublasHandle_t blas_ = nullptr;
  device_buffer<std::byte> scratch_[static_cast<int>(scratch_slot::count)];
  pinned_buffer<index_t> index_ring_host_;
  device_buffer<index_t> index_ring_device_;
  index_t index_ring_cursor_ = 0;
  cudaEvent_t index_ring_event_ = nullptr;
  pinned_buffer<double> host_result_;
};

}  // namespace treelora

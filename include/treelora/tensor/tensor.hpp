// treelora/tensor/tensor.hpp: a small dense row-major tensor (rank <= 4) in a backend's memory.
// tensor<B> owns its memory; tensor_view<B> and const_tensor_view<B> borrow it. A tensor remembers its
// backend so it can copy itself to the host; every host/backend copy is an explicit call.
#pragma once

#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "treelora/backend/backend.hpp"
#include "treelora/tensor/shape.hpp"

namespace treelora {

template <Backend B, bool IsConst>
class basic_tensor_view {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using element_type = std::conditional_t<IsConst, const scalar_type, scalar_type>;

  basic_tensor_view() = default;
  basic_tensor_view(B& backend, element_type* data, treelora::shape s) : backend_(&backend), data_(data), shape_(s) {}
  /// A mutable view converts to a const one.
  template <bool OtherConst>
    requires(IsConst && !OtherConst)
  basic_tensor_view(const basic_tensor_view<B, OtherConst>& other)  // NOLINT: implicit by design
      : backend_(other.backend()), data_(other.data()), shape_(other.shape()) {}

  element_type* data() const { return data_; }
  const treelora::shape& shape() const { return shape_; }
  index_t numel() const { return shape_.numel(); }
  index_t rows() const { return shape_.rows(); }
  index_t cols() const { return shape_.cols(); }
  B* backend() const { return backend_; }

  /// The same memory under another shape with the same element count.
  basic_tensor_view reshaped(treelora::shape s) const {
    if (s.numel() != numel())
      throw_invalid_argument("reshape", concat("cannot view ", shape_.to_string(), " as ", s.to_string()));
    return {*backend_, data_, s};
  }
  /// Rows [first, first + count) of the [rows, cols] reading of this view.
  basic_tensor_view row_range(index_t first, index_t count) const {
    if (first < 0 || count < 0 || first + count > rows())
      throw_invalid_argument("row_range", concat("rows [", first, ", ", first + count, ") of ", shape_.to_string()));
    return {*backend_, data_ + first * cols(), treelora::shape{count, cols()}};
  }
  std::vector<scalar_type> to_host() const {
    std::vector<scalar_type> out(static_cast<std::size_t>(numel()));
    if (numel()) backend_->copy_to_host(data_, out.data(), numel());
    return out;
  }

 private:
  B* backend_ = nullptr;
  element_type* data_ = nullptr;
  treelora::shape shape_;
};

template <Backend B>
using tensor_view = basic_tensor_view<B, false>;
template <Backend B>
using const_tensor_view = basic_tensor_view<B, true>;

template <Backend B>
class tensor {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  tensor() = default;
  /// Allocates and zero-fills.
  tensor(B& backend, treelora::shape s) : backend_(&backend), buffer_(backend.allocate(s.numel())), shape_(s) {
    if (s.numel()) backend.fill(buffer_.data(), s.numel(), scalar_type(0));
  }
  /// Copies host data in; the size must match the shape.
  static tensor from_host(B& backend, treelora::shape s, std::span<const scalar_type> host) {
    if (static_cast<index_t>(host.size()) != s.numel())
      throw_invalid_argument("tensor::from_host", concat(host.size(), " values for shape ", s.to_string()));
    tensor t(backend, s);
    if (s.numel()) backend.copy_from_host(host.data(), t.data(), s.numel());
    return t;
  }

  tensor(const tensor& other) : backend_(other.backend_), shape_(other.shape_) {
    if (backend_) {
      buffer_ = backend_->allocate(shape_.numel());
      backend_->copy(other.data(), data(), shape_.numel());
    }
  }
  tensor& operator=(const tensor& other) {
    if (this != &other) {
      tensor copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  tensor(tensor&&) noexcept = default;
  tensor& operator=(tensor&&) noexcept = default;

  scalar_type* data() { return buffer_.data(); }
  const scalar_type* data() const { return const_cast<tensor*>(this)->buffer_.data(); }
  const treelora::shape& shape() const { return shape_; }
  index_t numel() const { return shape_.numel(); }
  index_t rows() const { return shape_.rows(); }
  index_t cols() const { return shape_.cols(); }
  B& backend() const { return *require_backend("backend"); }
  bool empty() const { return backend_ == nullptr; }

  /// Changes the shape, reallocating only when the new size exceeds the capacity. Contents are unspecified
  /// afterwards: this is for scratch and output buffers that are overwritten.
  void resize(B& backend, treelora::shape s) {
    if (backend_ != &backend || buffer_.size() < s.numel()) buffer_ = backend.allocate(s.numel());
    backend_ = &backend;
    shape_ = s;
  }
  void fill(scalar_type value) {
    if (numel()) require_backend("fill")->fill(data(), numel(), value);
  }

  tensor_view<B> view() { return {*require_backend("view"), data(), shape_}; }
  const_tensor_view<B> view() const { return {*require_backend("view"), data(), shape_}; }
  operator tensor_view<B>() { return view(); }               // NOLINT: implicit by design
  operator const_tensor_view<B>() const { return view(); }   // NOLINT: implicit by design
  std::vector<scalar_type> to_host() const { return view().to_host(); }

 private:
  /// A default-constructed (empty) tensor has no backend: using one as data is the caller's bug, reported as such.
  B* require_backend(std::string_view what) const {
    if (!backend_)
      throw_invalid_argument(concat("tensor::", what), "the tensor is empty (default-constructed): it has no backend or data");
    return backend_;
  }

  B* backend_ = nullptr;
  typename B::buffer_type buffer_;
  treelora::shape shape_;
};

/// "name [2, 3]" for error messages.
template <class T>
std::string describe(const T& t) {
  return t.shape().to_string();
}

}  // namespace treelora

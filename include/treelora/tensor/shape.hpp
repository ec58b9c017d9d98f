// treelora/tensor/shape.hpp: the shape of a dense row-major tensor of rank 0 to 4.
#pragma once

#include <array>
#include <initializer_list>
#include <string>

#include "treelora/core/error.hpp"

namespace treelora {

class shape {
 public:
  static constexpr int max_rank = 4;

  shape() = default;
  shape(std::initializer_list<index_t> dims) {
    if (dims.size() > max_rank) throw_invalid_argument("shape", concat("rank ", dims.size(), " > ", max_rank));
    for (index_t d : dims) dims_[static_cast<std::size_t>(rank_++)] = non_negative(d);
  }

  int rank() const { return rank_; }
  index_t operator[](int axis) const {
    if (axis < 0 || axis >= rank_) throw_invalid_argument("shape", concat("axis ", axis, " out of range for ", to_string()));
    return dims_[static_cast<std::size_t>(axis)];
  }
  /// The number of elements. Throws std::invalid_argument when it does not fit in index_t (extents can come
  /// from files); an extent of 0 makes it 0 whatever the others are.
  index_t numel() const {
    index_t n = 1;
    bool overflow = false;
    for (int i = 0; i < rank_; ++i)
      overflow |= __builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &n);
    if (overflow) [[unlikely]] {
      for (int i = 0; i < rank_; ++i)
        if (dims_[static_cast<std::size_t>(i)] == 0) return 0;
      throw_invalid_argument("shape", concat(to_string(), " has more than 2^63 - 1 elements"));
    }
    return n;
  }
  /// The extent of the last axis (1 for a scalar): tensors of any rank are read as [rows, cols] matrices.
  index_t cols() const { return rank_ == 0 ? 1 : dims_[static_cast<std::size_t>(rank_ - 1)]; }
  /// The product of all but the last axis.
  index_t rows() const { return cols() == 0 ? 0 : (rank_ <= 1 ? 1 : numel() / cols()); }

  /// {leading, dims of example...}: a batch of `leading` examples of shape `example`.
  static shape batched(index_t leading, const shape& example) {
    if (example.rank_ >= max_rank)
      throw_invalid_argument("shape::batched", concat("a batch of ", example.to_string(), " would exceed rank ", max_rank));
    shape s;
    s.rank_ = example.rank_ + 1;
    s.dims_[0] = non_negative(leading);
    for (int i = 0; i < example.rank_; ++i) s.dims_[static_cast<std::size_t>(i + 1)] = example.dims_[static_cast<std::size_t>(i)];
    return s;
  }

  /// The same shape with the last axis replaced.
  shape with_last(index_t extent) const {
    shape s = *this;
    if (s.rank_ == 0) s.rank_ = 1;
    s.dims_[static_cast<std::size_t>(s.rank_ - 1)] = non_negative(extent);
    return s;
  }

  std::string to_string() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
    return s + "]";
  }
  friend bool operator==(const shape& a, const shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }

 private:
  static index_t non_negative(index_t extent) {
    if (extent < 0) throw_invalid_argument("shape", concat("negative extent ", extent));
    return extent;
  }

  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace treelora

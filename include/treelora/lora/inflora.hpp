// treelora/lora/inflora.hpp: the InfLoRA factorisation (Liang & Li, CVPR 2024), and the two pieces the continual
// factorisations share (frozen_history: finished tasks' branches; input_covariance: the feature-collection pass).
//
// Per task t a branch B_t A_t with A_t [r, in] FIXED (set by the strategy from the projected SVD of the task's
// input covariance, divided by sqrt 3) and B_t [out, r] trained from zeros:
//   y = W0 x + b0 + sum_{i<t} B_i A_i x + B_t A_t x        (no alpha / r scaling, as in InfLoRA)
// After the task the branch is frozen: folded into one delta [out, in] (merged, the default: one GEMM at inference
// whatever the number of tasks) or kept as a branch (summed at inference, r-wide GEMMs per task).
// Before a task's A is set, A is Kaiming-uniform (as standard LoRA) so the layer also trains stand-alone.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "treelora/core/eigen.hpp"

#include "treelora/lora/factorization.hpp"

namespace treelora {

/// Finished tasks' adapter branches, frozen: merged into one delta, or kept as (scale, A, B) branches.
template <Backend B>
class frozen_history {
 public:
  using scalar_type = typename B::scalar_type;

  frozen_history() = default;
  frozen_history(B& backend, index_t in, index_t out, bool merge) : backend_(&backend), in_(in), out_(out), merge_(merge) {}

  bool empty() const { return tasks_ == 0; }
  index_t tasks() const { return tasks_; }
  bool merged() const { return merge_; }

  /// Adds scale * b a to the history (copies; a [r, in], b [out, r]).
  void add(const tensor<B>& a, const tensor<B>& b, scalar_type scale) {
    if (merge_) {
      if (delta_.empty()) delta_ = tensor<B>(*backend_, shape{out_, in_});
      matmul<B>(b, transpose::no, a, transpose::no, delta_, scale, scalar_type(1));  // delta += s B A
    } else {
      branches_.push_back({scale, a, b});
    }
    ++tasks_;
  }

  /// y += history(x), x [rows, in]
  void forward_add(const_tensor_view<B> x, tensor_view<B> y) {
    if (merge_) {
      if (!delta_.empty()) matmul<B>(x, transpose::no, delta_, transpose::yes, y, scalar_type(1), scalar_type(1));
      return;
    }
    for (auto& branch : branches_) {
      hidden_.resize(*backend_, shape{x.rows(), branch.a.rows()});
      matmul<B>(x, transpose::no, branch.a, transpose::yes, hidden_);
      matmul<B>(hidden_, transpose::no, branch.b, transpose::yes, y, branch.scale, scalar_type(1));
    }
  }

  /// dx += (d history / dx)^T dy (nothing trains here)
  void backward_add(const_tensor_view<B> dy, tensor_view<B> dx) {
    if (merge_) {
      if (!delta_.empty()) matmul<B>(dy, transpose::no, delta_, transpose::no, dx, scalar_type(1), scalar_type(1));
      return;
    }
    for (auto& branch : branches_) {
      hidden_.resize(*backend_, shape{dy.rows(), branch.a.rows()});
      matmul<B>(dy, transpose::no, branch.b, transpose::no, hidden_, branch.scale);
      matmul<B>(hidden_, transpose::no, branch.a, transpose::no, dx, scalar_type(1), scalar_type(1));
    }
  }

  /// W += sign * history
  void merge_into(tensor<B>& weight, scalar_type sign) {
    if (merge_ && !delta_.empty()) axpy<B>(sign, delta_, weight);
    for (auto& branch : branches_) matmul<B>(branch.b, transpose::no, branch.a, transpose::no, weight, sign * branch.scale, 1);
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    if (!delta_.empty()) out.push_back({join_name(prefix, "lora_delta"), &delta_, &no_gradient_, false});
    for (std::size_t i = 0; i < branches_.size(); ++i) {
      out.push_back({join_name(prefix, concat("lora_a.", i)), &branches_[i].a, &no_gradient_, false});
      out.push_back({join_name(prefix, concat("lora_b.", i)), &branches_[i].b, &no_gradient_, false});
    }
  }

  /// A finished task's branch as kept without merging: the history adds scale * b a.
  struct branch {
    scalar_type scale;
    tensor<B> a, b;
  };
  /// The kept branches in task order (empty when merged(): the factors were folded into one delta).
  const std::vector<branch>& branches() const { return branches_; }

  /// Checkpoints (io/checkpoint.hpp): the merged delta, or every kept branch.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("merged", merge_);
    ar.count("tasks", tasks_);
    if (merge_) {
      ar.tensor("delta", delta_, *backend_);
      ar.require(delta_.empty() ? tasks_ == 0 : (tasks_ > 0 && delta_.shape() == shape{out_, in_}), "delta",
                 concat("must be [", out_, ", ", in_, "] after a task, empty before"));
      return;
    }
    std::size_t n = branches_.size();
    ar.count("branches", n);
    ar.require(index_t(n) == tasks_, "branches", "must be one per finished task");
    if constexpr (Archive::loading()) branches_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      auto& branch = branches_[i];
      ar.value(concat("branch.", i, ".scale"), branch.scale);
      ar.tensor(concat("branch.", i, ".a"), branch.a, *backend_);
      ar.tensor(concat("branch.", i, ".b"), branch.b, *backend_);
      ar.require(branch.a.shape().rank() == 2 && branch.a.cols() == in_ && branch.b.shape() == shape{out_, branch.a.rows()},
                 concat("branch.", i), concat("must be A [r, ", in_, "] and B [", out_, ", r]"));
    }
  }

  std::size_t bytes() const {
    std::size_t n = std::size_t(delta_.numel());
    for (const auto& branch : branches_) n += std::size_t(branch.a.numel() + branch.b.numel());
    return n * sizeof(scalar_type);
  }

 private:
  B* backend_ = nullptr;
  index_t in_ = 0, out_ = 0, tasks_ = 0;
  bool merge_ = true;
  tensor<B> delta_, hidden_, no_gradient_;
  std::vector<branch> branches_;
};

/// The feature-collection pass: while on, accumulates C += x^T x over the rows of every forward input
/// (all rows, or only each sample's first row, its CLS token, when the input is [batch, tokens, in]).
template <Backend B>
class input_covariance {
 public:
  using scalar_type = typename B::scalar_type;

  input_covariance() = default;
  input_covariance(B& backend, index_t in) : backend_(&backend), in_(in) {}

  bool collecting() const { return collecting_; }
  /// Starts (from zero) or stops collecting. cls_only: only each sample's CLS row.
  void collect(bool on, bool cls_only = false) {
    if (on) {
      covariance_.resize(*backend_, shape{in_, in_});
      covariance_.fill(scalar_type(0));
      rows_ = 0;
    }
    collecting_ = on;
    cls_only_ = cls_only;
  }

  void observe(const_tensor_view<B> x) {
    if (!collecting_) return;
    const_tensor_view<B> rows = x;
    if (cls_only_ && x.shape().rank() == 3) {
      const index_t batch = x.shape()[0], tokens = x.shape()[1];
      cls_index_.resize(std::size_t(batch));
      for (index_t b = 0; b < batch; ++b) cls_index_[std::size_t(b)] = b * tokens;
      cls_.resize(*backend_, shape{batch, in_});
      gather_rows<B>(x.reshaped(shape{batch * tokens, in_}), cls_index_, cls_);
      rows = cls_;
    }
    matmul<B>(rows, transpose::yes, rows, transpose::no, covariance_, scalar_type(1), scalar_type(1));  // C += x^T x
    rows_ += rows.rows();
  }

  /// C [in, in] on the host in double (one backend -> host copy per task boundary).
  Eigen::MatrixXd to_host() const {
    const auto h = covariance_.to_host();
    Eigen::MatrixXd c(in_, in_);
    for (index_t i = 0; i < in_; ++i)
      for (index_t j = 0; j < in_; ++j) c(i, j) = static_cast<double>(h[std::size_t(i * in_ + j)]);
    return c;
  }
  index_t rows() const { return rows_; }

  /// Data-parallel collection (training_context::sum_over_ranks): replaces C and the row count by their sums over the
  /// ranks, `sum` summing a span of doubles in place (through the host, in double: once per task boundary).
  template <class Sum>
  void sum_over(Sum&& sum) {
    const auto h = covariance_.to_host();
    std::vector<double> values(h.size() + 1);
    for (std::size_t i = 0; i < h.size(); ++i) values[i] = static_cast<double>(h[i]);
    values.back() = double(rows_);
    sum(std::span<double>(values));
    std::vector<scalar_type> summed(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) summed[i] = static_cast<scalar_type>(values[i]);
    covariance_ = tensor<B>::from_host(*backend_, shape{in_, in_}, summed);
    rows_ = index_t(values.back());
  }

 private:
  B* backend_ = nullptr;
  index_t in_ = 0, rows_ = 0;
  bool collecting_ = false, cls_only_ = false;
  tensor<B> covariance_, cls_;
  std::vector<index_t> cls_index_;
};

/// Copies a host [rows, cols] double matrix (Eigen, any layout) into a backend tensor.
template <Backend B>
void assign_from_host(tensor<B>& t, B& backend, const Eigen::MatrixXd& m) {
  std::vector<typename B::scalar_type> host(std::size_t(m.size()));
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) host[std::size_t(i * m.cols() + j)] = static_cast<typename B::scalar_type>(m(i, j));
  t = tensor<B>::from_host(backend, shape{index_t(m.rows()), index_t(m.cols())}, host);
}

struct inflora {
  struct config {
    index_t rank = 10;            ///< r (InfLoRA's default)
    bool merge_finished = true;   ///< fold a finished task's B A into one delta (false: keep per-task branches)
    std::uint64_t seed = 0;       ///< the stand-alone initialisation of A before a strategy sets it
  };

  template <Backend B>
  class adapter {
   public:
    using backend_type = B;
    using scalar_type = typename B::scalar_type;

    adapter(B& backend, index_t in_features, index_t out_features, const config& c)
        : backend_(&backend), config_(c), in_(in_features), out_(out_features),
          history_(backend, in_features, out_features, c.merge_finished), covariance_(backend, in_features) {
      if (c.rank <= 0 || c.rank > in_features)
        throw_invalid_argument("inflora", concat("rank ", c.rank, " must be in [1, in ", in_features, "]"));
      detail::init_low_rank_factors(backend, c.rank, in_features, out_features, c.seed, a_, b_, a_gradient_, b_gradient_);
    }

    // Model-facing views (adapter_view): the current task's branch.
    tensor<B>& a() { return a_; }
    tensor<B>& b() { return b_; }
    tensor<B>& a_gradient() { return a_gradient_; }
    tensor<B>& b_gradient() { return b_gradient_; }
    bool& gradients_enabled() { return gradients_enabled_; }
    index_t rank() const { return config_.rank; }
    index_t in_features() const { return in_; }
    const frozen_history<B>& history() const { return history_; }
    input_covariance<B>& covariance() { return covariance_; }
    void set_training(bool) {}

    /// A new task: A_t = `a` ([r, in], already divided by sqrt 3 by the caller), B_t = 0.
    void start_task(const Eigen::MatrixXd& a) {
      if (a.rows() != config_.rank || a.cols() != in_)
        throw_invalid_argument("inflora::start_task", concat("A is ", a.rows(), " x ", a.cols(), ", expected ", config_.rank, " x ", in_));
      assign_from_host(a_, *backend_, a);
      b_.fill(scalar_type(0));
      b_gradient_.fill(scalar_type(0));
    }
    /// The task is over: B_t A_t joins the frozen history; the current branch is zero until the next start_task.
    void finish_task() {
      history_.add(a_, b_, scalar_type(1));
      b_.fill(scalar_type(0));
    }

    void forward_add(const_tensor_view<B> x, tensor_view<B> y) {
      covariance_.observe(x);
      input_ = x;
      hidden_.resize(*backend_, shape{x.rows(), config_.rank});
      matmul<B>(x, transpose::no, a_, transpose::yes, hidden_);                          // h = x A^T
      matmul<B>(hidden_, transpose::no, b_, transpose::yes, y, scalar_type(1), scalar_type(1));  // y += h B^T
      history_.forward_add(x, y);
    }

    /// dB += dy^T h; dx += dy B A + history'. A is fixed: no dA.
    void backward_add(const_tensor_view<B> dy, tensor_view<B> dx) {
      if (input_.data() == nullptr) throw_invalid_argument("inflora::backward_add", "called before forward_add");
      hidden_gradient_.resize(*backend_, shape{dy.rows(), config_.rank});
      matmul<B>(dy, transpose::no, b_, transpose::no, hidden_gradient_);
      if (gradients_enabled_) matmul<B>(dy, transpose::yes, hidden_, transpose::no, b_gradient_, scalar_type(1), scalar_type(1));
      matmul<B>(hidden_gradient_, transpose::no, a_, transpose::no, dx, scalar_type(1), scalar_type(1));
      history_.backward_add(dy, dx);
    }

    void merge_into(tensor<B>& weight, scalar_type sign) {
      matmul<B>(b_, transpose::no, a_, transpose::no, weight, sign, scalar_type(1));
      history_.merge_into(weight, sign);
    }

    /// "lora_a" (frozen), "lora_b" (trains), then the frozen history.
    void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
      out.push_back({join_name(prefix, "lora_a"), &a_, &a_gradient_, false});
      out.push_back({join_name(prefix, "lora_b"), &b_, &b_gradient_, true});
      history_.collect_parameters(out, prefix);
    }

    std::size_t state_bytes() const { return history_.bytes(); }

    /// Checkpoints (io/checkpoint.hpp): the current branch and the frozen history.
    template <class Archive>
    void checkpoint(Archive ar) {
      ar.expect("rank", config_.rank), ar.expect("merge_finished", config_.merge_finished), ar.expect("seed", config_.seed);
      ar.tensor_of_shape("lora_a", a_, *backend_, a_gradient_.shape());
      ar.tensor_of_shape("lora_b", b_, *backend_, b_gradient_.shape());
      ar.value("gradients_enabled", gradients_enabled_);
      history_.checkpoint(ar.scope("history"));
    }

   private:
    B* backend_;
    config config_;
    index_t in_, out_;
    bool gradients_enabled_ = true;
    tensor<B> a_, b_, a_gradient_, b_gradient_, hidden_, hidden_gradient_;
    frozen_history<B> history_;
    input_covariance<B> covariance_;
    const_tensor_view<B> input_;
  };
};

}  // namespace treelora

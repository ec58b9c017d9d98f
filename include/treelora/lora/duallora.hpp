// treelora/lora/duallora.hpp: the DualLoRA factorisation (Chen et al., arXiv 2411.00623, "Dual Low-Rank Adaptation
// for Continual Learning with Pre-Trained Models" / "Replay-Free Continual Low-Rank Adaptation with Dynamic
// Memory"). No public code and no equations were reachable: this is our reconstruction, documented with every
// reconstructed choice (each an option here) in docs/strategies.md, section DualLoRA.
//
// For an input x of a sample whose CLS feature at this layer is c (the sample's first row of x when x is
// [batch, tokens, in]; the row itself when x is [rows, in]; with feature = every_token, for language models, every
// row is a sample: each token is gated by its own input):
//   y = W0 x + b0 + dW_o x + sum_{j<=t} gamma_j(c) B_r^j (U_j^T x)
// - orthogonal adapter dW_o, per_task_fixed_a (choice A, default): InfLoRA-style branch B_o^t A_o^t with A_o^t
//   fixed by the strategy (top-r directions of (I - M M^T) C_t, / sqrt 3), B_o^t trained from zeros, merged into
//   the frozen history after the task. shared_projected (choice B): one LoRA through all tasks (A Kaiming, B
//   zeros, both trained); the strategy projects A's gradient onto the complement of span(M).
// - residual adapters: per task j, A_r^j = U_j^T FIXED (the task's orthonormal CLS basis, [k_j, in]) and B_r^j
//   [out, k_j] trained only during task j, then frozen. k_j may be 0 (the memory already explained the task).
// - dynamic-memory gate (host maths below, the gates are [batch, T] numbers):
//   s_j(c) = ||U_j^T c||^2 / ||c||^2 in [0, 1]
//   energy (default): gamma_j = s_j;  softmax: gamma = softmax_j(s_j / temperature) over tasks with a basis;
//   per_basis: each basis direction u gated by (u^T c)^2 / ||c||^2;  top1: gamma = 1 for argmax_j s_j, else 0.
//   The gate is differentiated through c by default (gate_gradient = false: a constant of the forward pass).
// Host <-> backend traffic per forward: each sample's CLS row to the host ([samples, in]) and the gates back
// ([samples, K]); the broadcast over tokens and, in backward, the per-sample sums run on the backend ([samples, k_j]
// per task back to the host, and [samples, in] for the CLS gradient).
// The gated residual cannot be folded into W0 (it depends on the sample): merge_into throws once a residual
// adapter exists. scores() keeps the last forward's s_j per sample and cls_features() its CLS rows (every forward,
// before the first task too): what the strategy's task-identity prediction reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include "treelora/core/eigen.hpp"

#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/lora/inflora.hpp"

namespace treelora {

enum class dual_orthogonal {
  per_task_fixed_a,  ///< choice A (default): per task a fixed InfLoRA-style A_o^t, trained B_o^t, merged after the task
  shared_projected,  ///< choice B: one shared LoRA whose A-gradient is projected onto the complement of span(M)
};

/// Which row of a sample's input is the feature c the gate reads.
enum class dual_feature {
  first_token,  ///< (default) the sample's first row: a ViT's CLS token ([batch, tokens, in]; a row of [rows, in])
  every_token,  ///< every row is its own sample: each token gated by its own input (decoder-only language models,
                ///< which have no CLS token and whose first row, padding or BOS, says nothing about the task)
};

enum class dual_gate {
  energy,     ///< gamma_j = ||U_j^T c||^2 / ||c||^2 (default)
  softmax,    ///< gamma = softmax over tasks of s_j / temperature (sharpened)
  per_basis,  ///< each basis direction u_k of U_j gated by (u_k^T c)^2 / ||c||^2
  top1,       ///< hard: gamma_j = 1 for the task with the largest s_j, 0 for the others (no gradient)
};

/// The gate's host maths, shared by the adapter and its tests. Columns of the projections P = C U^T [samples, K]
/// are grouped by task: task j owns columns [offsets[j], offsets[j + 1]).
namespace dual_gating {

/// scores(i, j) = s_j = sum_{k in j} P(i, k)^2 / norms2(i); gates(i, k) = the gate applied to column k.
inline void forward(dual_gate mode, double temperature, const Eigen::MatrixXd& projections,
                    const Eigen::VectorXd& norms2, const std::vector<index_t>& offsets, Eigen::MatrixXd& scores,
                    Eigen::MatrixXd& gates) {
  const index_t samples = index_t(projections.rows()), tasks = index_t(offsets.size()) - 1;
  scores.setZero(samples, tasks);
  gates.setZero(samples, projections.cols());
  for (index_t i = 0; i < samples; ++i) {
    if (!(norms2(i) > 0)) continue;  // c = 0: every score and gate is 0
    for (index_t j = 0; j < tasks; ++j)
      for (index_t k = offsets[std::size_t(j)]; k < offsets[std::size_t(j) + 1]; ++k)
        scores(i, j) += projections(i, k) * projections(i, k) / norms2(i);
    if (mode == dual_gate::per_basis) {
      gates.row(i) = projections.row(i).array().square() / norms2(i);
      continue;
    }
    std::vector<double> gamma(std::size_t(tasks), 0.0);
    if (mode == dual_gate::energy) {
      for (index_t j = 0; j < tasks; ++j) gamma[std::size_t(j)] = scores(i, j);
    } else {
      // softmax and top1 range over the tasks that have a basis (a task without one has no columns to gate)
      double best = -std::numeric_limits<double>::infinity();
      index_t arg = -1;
      for (index_t j = 0; j < tasks; ++j)
        if (offsets[std::size_t(j) + 1] > offsets[std::size_t(j)] && scores(i, j) > best) best = scores(i, j), arg = j;
      if (arg < 0) continue;
      if (mode == dual_gate::top1) {
        gamma[std::size_t(arg)] = 1;
      } else {
        double total = 0;
        for (index_t j = 0; j < tasks; ++j)
          if (offsets[std::size_t(j) + 1] > offsets[std::size_t(j)])
            total += gamma[std::size_t(j)] = std::exp((scores(i, j) - best) / temperature);
        for (auto& g : gamma) g /= total;
      }
    }
    for (index_t j = 0; j < tasks; ++j)
      for (index_t k = offsets[std::size_t(j)]; k < offsets[std::size_t(j) + 1]; ++k) gates(i, k) = gamma[std::size_t(j)];
  }
}

/// Given d loss / d gates (same shape as gates), writes d loss / d projections and d loss / d norms2. The CLS
/// gradient is then d loss / d c = d_projections U + 2 d_norms2 c (P = C U^T, norms2 = ||c||^2).
inline void backward(dual_gate mode, double temperature, const Eigen::MatrixXd& projections,
                     const Eigen::VectorXd& norms2, const std::vector<index_t>& offsets, const Eigen::MatrixXd& scores,
                     const Eigen::MatrixXd& gates, const Eigen::MatrixXd& gate_gradient,
                     Eigen::MatrixXd& projection_gradient, Eigen::VectorXd& norms2_gradient) {
  const index_t samples = index_t(projections.rows()), tasks = index_t(offsets.size()) - 1;
  projection_gradient.setZero(samples, projections.cols());
  norms2_gradient.setZero(samples);
  if (mode == dual_gate::top1) return;  // piecewise constant
  for (index_t i = 0; i < samples; ++i) {
    if (!(norms2(i) > 0)) continue;
    if (mode == dual_gate::per_basis) {  // g_k = P_k^2 / n2
      for (index_t k = 0; k < projections.cols(); ++k) {
        projection_gradient(i, k) = gate_gradient(i, k) * 2 * projections(i, k) / norms2(i);
        norms2_gradient(i) -= gate_gradient(i, k) * gates(i, k) / norms2(i);
      }
      continue;
    }
    // d loss / d gamma_j, then d loss / d s_j
    std::vector<double> dgamma(std::size_t(tasks), 0.0), dscore(std::size_t(tasks), 0.0);
    for (index_t j = 0; j < tasks; ++j)
      for (index_t k = offsets[std::size_t(j)]; k < offsets[std::size_t(j) + 1]; ++k) dgamma[std::size_t(j)] += gate_gradient(i, k);
    if (mode == dual_gate::energy) {
      dscore = dgamma;
    } else {  // softmax: ds_j = gamma_j (dgamma_j - sum_l gamma_l dgamma_l) / temperature
      double mean = 0;
      for (index_t j = 0; j < tasks; ++j)
        if (offsets[std::size_t(j) + 1] > offsets[std::size_t(j)])
          mean += gates(i, offsets[std::size_t(j)]) * dgamma[std::size_t(j)];
      for (index_t j = 0; j < tasks; ++j)
        if (offsets[std::size_t(j) + 1] > offsets[std::size_t(j)])
          dscore[std::size_t(j)] = gates(i, offsets[std::size_t(j)]) * (dgamma[std::size_t(j)] - mean) / temperature;
    }
    // s_j = sum_{k in j} P_k^2 / n2
    for (index_t j = 0; j < tasks; ++j) {
      for (index_t k = offsets[std::size_t(j)]; k < offsets[std::size_t(j) + 1]; ++k)
        projection_gradient(i, k) = dscore[std::size_t(j)] * 2 * projections(i, k) / norms2(i);
      norms2_gradient(i) -= dscore[std::size_t(j)] * scores(i, j) / norms2(i);
    }
  }
}

}  // namespace dual_gating

struct dual_lora {
  struct config {
    index_t rank = 10;                                           ///< r of the orthogonal adapter
    dual_orthogonal orthogonal = dual_orthogonal::per_task_fixed_a;  ///< choice A (default) or B
    dual_gate gate = dual_gate::energy;                          ///< the dynamic-memory gate
    dual_feature feature = dual_feature::first_token;            ///< the row the gate reads (CLS or every token)
    double gate_temperature = 0.05;                              ///< softmax gate only
    bool gate_gradient = true;   ///< differentiate the gate through the CLS feature (false: stop-gradient)
    bool merge_finished = true;  ///< choice A: fold finished tasks' B_o A_o into one delta
    std::uint64_t seed = 0;      ///< Kaiming initialisation of A_o (choice B, and choice A before a task sets it)
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
        throw_invalid_argument("dual_lora", concat("rank ", c.rank, " must be in [1, in ", in_features, "]"));
      if (c.gate == dual_gate::softmax && !(c.gate_temperature > 0 && std::isfinite(c.gate_temperature)))
        throw_invalid_argument("dual_lora", concat("gate temperature ", c.gate_temperature, " must be positive"));
      detail::init_low_rank_factors(backend, c.rank, in_features, out_features, c.seed, a_, b_, a_gradient_, b_gradient_);
      offsets_ = {0};
      basis_.resize(0, in_features);
    }

    // Model-facing views (adapter_view): the orthogonal adapter's current A and B.
    tensor<B>& a() { return a_; }
    tensor<B>& b() { return b_; }
    tensor<B>& a_gradient() { return a_gradient_; }
    tensor<B>& b_gradient() { return b_gradient_; }
    bool& gradients_enabled() { return gradients_enabled_; }
    index_t rank() const { return config_.rank; }
    index_t in_features() const { return in_; }
    const config& settings() const { return config_; }
    const frozen_history<B>& history() const { return history_; }
    input_covariance<B>& covariance() { return covariance_; }
    void set_training(bool) {}

    /// Tasks with a residual adapter (one per add_residual_task, including those with k_j = 0).
    index_t residual_tasks() const { return index_t(residual_.size()); }
    /// k_j: the width of task j's basis.
    index_t basis_size(index_t task) const { return offsets_.at(std::size_t(task) + 1) - offsets_.at(std::size_t(task)); }
    /// Task j's residual up-projection B_r^j [out, k_j] (its gradient is accumulated only while j trains).
    tensor<B>& residual_b(index_t task) { return residual_.at(std::size_t(task)).b; }
    tensor<B>& residual_b_gradient(index_t task) { return residual_.at(std::size_t(task)).b_gradient; }
    /// The task whose B_r trains (-1 between tasks).
    index_t training_task() const { return training_; }
    /// s_j per sample of the last forward, [samples, residual_tasks()] (no columns before the first task).
    const Eigen::MatrixXd& scores() const { return scores_; }
    /// The gates applied per basis column in the last forward, [samples, sum_j k_j].
    const Eigen::MatrixXd& gates() const { return gates_; }
    /// Each sample's CLS feature at this layer's input in the last forward, [samples, in] (host, double).
    const Eigen::MatrixXd& cls_features() const { return cls_; }

    /// Choice A: a new task's orthogonal branch, A_o^t = `a` ([r, in], already scaled by the caller), B_o^t = 0.
    void start_orthogonal_task(const Eigen::MatrixXd& a) {
      if (config_.orthogonal != dual_orthogonal::per_task_fixed_a)
        throw_invalid_argument("dual_lora::start_orthogonal_task", "the shared (choice B) adapter has no per-task A");
      if (a.rows() != config_.rank || a.cols() != in_)
        throw_invalid_argument("dual_lora::start_orthogonal_task",
                               concat("A is ", a.rows(), " x ", a.cols(), ", expected ", config_.rank, " x ", in_));
      assign_from_host(a_, *backend_, a);
      b_.fill(scalar_type(0));
      b_gradient_.fill(scalar_type(0));
    }

    /// A new task's residual adapter: A_r = `basis_rows` ([k, in], orthonormal rows U_t^T, fixed), B_r = 0, trained
    /// until finish_task. k = 0 is allowed (nothing new to adapt for this task at this layer).
    void add_residual_task(const Eigen::MatrixXd& basis_rows) {
      if (training_ >= 0) throw_invalid_argument("dual_lora::add_residual_task", "the previous task is not finished");
      if (basis_rows.rows() > 0 && basis_rows.cols() != in_)
        throw_invalid_argument("dual_lora::add_residual_task", concat("basis has ", basis_rows.cols(), " columns, expected ", in_));
      const index_t k = index_t(basis_rows.rows());
      residual_task r;
      if (k > 0) {
        assign_from_host(r.u, *backend_, basis_rows);
        r.b = tensor<B>(*backend_, shape{out_, k});
        r.b_gradient = tensor<B>(*backend_, shape{out_, k});
        Eigen::MatrixXd all(basis_.rows() + k, in_);
        all << basis_, basis_rows;
        basis_ = std::move(all);
      }
      residual_.push_back(std::move(r));
      offsets_.push_back(offsets_.back() + k);
      training_ = index_t(residual_.size()) - 1;
    }

    /// Checkpoints (io/checkpoint.hpp): the orthogonal adapter, its history, every task's residual adapter (the
    /// stacked bases U_j^T exactly as given, each task's B_r) and which one trains.
    template <class Archive>
    void checkpoint(Archive ar) {
      ar.expect("rank", config_.rank), ar.expect("orthogonal", config_.orthogonal), ar.expect("gate", config_.gate);
      ar.expect("gate_temperature", config_.gate_temperature), ar.expect("gate_gradient", config_.gate_gradient);
      ar.expect("merge_finished", config_.merge_finished), ar.expect("seed", config_.seed);
      ar.tensor_of_shape("lora_a", a_, *backend_, a_gradient_.shape());
      ar.tensor_of_shape("lora_b", b_, *backend_, b_gradient_.shape());
      ar.value("gradients_enabled", gradients_enabled_);
      history_.checkpoint(ar.scope("history"));
      ar.value("offsets", offsets_);
      bool valid = !offsets_.empty() && offsets_.front() == 0;
      for (std::size_t j = 1; j < offsets_.size(); ++j) valid = valid && offsets_[j] >= offsets_[j - 1];
      ar.require(valid, "offsets", "must start at 0 and never decrease");
      ar.host_matrix("basis", basis_);
      ar.require(basis_.cols() == in_ && basis_.rows() == offsets_.back(), "basis", concat("must be [offsets.back(), ", in_, "]"));
      if constexpr (Archive::loading()) {
        residual_.clear();
        for (std::size_t j = 0; j + 1 < offsets_.size(); ++j) {
          residual_task r;
          const index_t k = offsets_[j + 1] - offsets_[j];
          if (k > 0) {
            assign_from_host(r.u, *backend_, basis_.middleRows(offsets_[j], k));  // as add_residual_task made it
            r.b_gradient = tensor<B>(*backend_, shape{out_, k});
          }
          residual_.push_back(std::move(r));
        }
      }
      for (std::size_t j = 0; j < residual_.size(); ++j) {
        auto& r = residual_[j];
        const index_t k = offsets_[j + 1] - offsets_[j];
        if (k > 0) ar.tensor_of_shape(concat("residual.", j, ".b"), r.b, *backend_, shape{out_, k});
      }
      ar.value("training", training_);
      ar.require(training_ >= -1 && training_ < index_t(residual_.size()), "training", "must be -1 or a residual task");
    }

    /// The task is over: choice A folds B_o^t A_o^t into the frozen history; the task's B_r^t freezes.
    void finish_task() {
      if (config_.orthogonal == dual_orthogonal::per_task_fixed_a) {
        history_.add(a_, b_, scalar_type(1));
        b_.fill(scalar_type(0));
      }
      training_ = -1;
    }

    void forward_add(const_tensor_view<B> x, tensor_view<B> y) {
      covariance_.observe(x);
      input_ = x;
      hidden_.resize(*backend_, shape{x.rows(), config_.rank});
      matmul<B>(x, transpose::no, a_, transpose::yes, hidden_);                                 // h = x A_o^T
      matmul<B>(hidden_, transpose::no, b_, transpose::yes, y, scalar_type(1), scalar_type(1));  // y += h B_o^T
      history_.forward_add(x, y);
      compute_gates(x);  // every forward: the CLS rows (the strategy's task statistics read them) and the gates
      if (residual_.empty()) return;
      upload_sample_gates();
      for (std::size_t j = 0; j < residual_.size(); ++j) {
        auto& r = residual_[j];
        if (r.u.empty()) continue;
        const index_t k = r.u.rows();
        r.hidden.resize(*backend_, shape{x.rows(), k});
        matmul<B>(x, transpose::no, r.u, transpose::yes, r.hidden);  // H_j = x U_j
        expand_gates(index_t(j), x.rows(), r);                      // G_j per row (the sample's gates)
        r.gated.resize(*backend_, r.hidden.shape());
        multiply<B>(r.hidden, r.gate_rows, r.gated);                                              // H_j o G_j
        matmul<B>(r.gated, transpose::no, r.b, transpose::yes, y, scalar_type(1), scalar_type(1));  // y += (H_j o G_j) B_j^T
      }
    }

    /// dB_o (+ dA_o for choice B) and dB_r^t accumulate; dx += every branch's input gradient, the gate's included.
    void backward_add(const_tensor_view<B> dy, tensor_view<B> dx) {
      if (input_.data() == nullptr) throw_invalid_argument("dual_lora::backward_add", "called before forward_add");
      hidden_gradient_.resize(*backend_, shape{dy.rows(), config_.rank});
      matmul<B>(dy, transpose::no, b_, transpose::no, hidden_gradient_);
      if (gradients_enabled_) {
        matmul<B>(dy, transpose::yes, hidden_, transpose::no, b_gradient_, scalar_type(1), scalar_type(1));
        if (config_.orthogonal == dual_orthogonal::shared_projected)
          matmul<B>(hidden_gradient_, transpose::yes, input_, transpose::no, a_gradient_, scalar_type(1), scalar_type(1));
      }
      matmul<B>(hidden_gradient_, transpose::no, a_, transpose::no, dx, scalar_type(1), scalar_type(1));
      history_.backward_add(dy, dx);
      if (residual_.empty()) return;
      const bool through_gate = config_.gate_gradient && config_.gate != dual_gate::top1;
      if (through_gate) gate_gradient_.setZero(samples_, basis_.rows());
      for (std::size_t j = 0; j < residual_.size(); ++j) {
        auto& r = residual_[j];
        if (r.u.empty()) continue;
        r.gated_gradient.resize(*backend_, r.hidden.shape());
        matmul<B>(dy, transpose::no, r.b, transpose::no, r.gated_gradient);  // d(H o G) = dy B_j
        if (gradients_enabled_ && index_t(j) == training_)
          matmul<B>(dy, transpose::yes, r.gated, transpose::no, r.b_gradient, scalar_type(1), scalar_type(1));
        r.product.resize(*backend_, r.hidden.shape());
        multiply<B>(r.gated_gradient, r.gate_rows, r.product);  // dH = d(H o G) o G
        matmul<B>(r.product, transpose::no, r.u, transpose::no, dx, scalar_type(1), scalar_type(1));  // dx += dH U_j^T
        if (!through_gate) continue;
        multiply<B>(r.gated_gradient, r.hidden, r.product);  // dG = d(H o G) o H, summed over the sample's rows
        const index_t k = r.u.rows(), offset = offsets_[j];
        sample_sums_.resize(*backend_, shape{samples_, k});  // per sample: ones[1, tokens] x product_b [tokens, k]
        backend_->gemm_strided_batched(transpose::no, transpose::no, 1, k, tokens_, scalar_type(1), ones_.data(), tokens_, 0,
                                       r.product.data(), k, tokens_ * k, scalar_type(0), sample_sums_.data(), k, k,
                                       samples_);
        const auto host = sample_sums_.to_host();  // [samples, k]: one small copy per task
        for (index_t i = 0; i < samples_; ++i)
          for (index_t c = 0; c < k; ++c) gate_gradient_(i, offset + c) = static_cast<double>(host[std::size_t(i * k + c)]);
      }
      if (!through_gate) return;
      dual_gating::backward(config_.gate, config_.gate_temperature, projections_, norms2_, offsets_, scores_, gates_,
                            gate_gradient_, projection_gradient_, norms2_gradient_);
      // d loss / d c = dP U + 2 d(n2) c, added to each sample's CLS row of dx
      const calling_thread_only serial;  // Eigen's threaded product would round by the thread count
      const Eigen::MatrixXd cls_gradient =
          projection_gradient_ * basis_ + (2 * norms2_gradient_).asDiagonal() * cls_;
      std::vector<scalar_type> host(std::size_t(cls_gradient.size()));
      for (index_t i = 0; i < samples_; ++i)
        for (index_t c = 0; c < in_; ++c) host[std::size_t(i * in_ + c)] = static_cast<scalar_type>(cls_gradient(i, c));
      cls_rows_.resize(*backend_, shape{samples_, in_});
      backend_->copy_from_host(host.data(), cls_rows_.data(), samples_ * in_);
      scatter_add_rows<B>(cls_rows_, cls_index_, dx.reshaped(shape{dx.rows(), in_}));
    }

    /// W += sign * dW_o. The gated residual depends on the sample and cannot be merged: throws once it exists.
    void merge_into(tensor<B>& weight, scalar_type sign) {
      if (basis_.rows() > 0)
        throw_invalid_argument("dual_lora::merge_into", "the residual adapters are gated per sample and cannot be merged "
                                                        "into the base weight");
      matmul<B>(b_, transpose::no, a_, transpose::no, weight, sign, scalar_type(1));
      history_.merge_into(weight, sign);
    }

    /// "lora_a" (trains in choice B only), "lora_b", the frozen history, then "lora_residual_u.j" (frozen) and
    /// "lora_residual_b.j" (trains only while task j does); every adapter name starts with "lora_" (the backbone is
    /// what has none).
    void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
      out.push_back({join_name(prefix, "lora_a"), &a_, &a_gradient_, config_.orthogonal == dual_orthogonal::shared_projected});
      out.push_back({join_name(prefix, "lora_b"), &b_, &b_gradient_, true});
      history_.collect_parameters(out, prefix);
      for (std::size_t j = 0; j < residual_.size(); ++j) {
        if (residual_[j].u.empty()) continue;
        out.push_back({join_name(prefix, concat("lora_residual_u.", j)), &residual_[j].u, &no_gradient_, false});
        out.push_back({join_name(prefix, concat("lora_residual_b.", j)), &residual_[j].b, &residual_[j].b_gradient,
                       index_t(j) == training_});
      }
    }

    /// Per-task state kept: the frozen orthogonal history and every residual adapter (U_j and B_r^j).
    std::size_t state_bytes() const {
      std::size_t n = 0;
      for (const auto& r : residual_) n += std::size_t(r.u.numel() + r.b.numel());
      return history_.bytes() + n * sizeof(scalar_type);
    }

   private:
    struct residual_task {
      tensor<B> u, b, b_gradient;                                  // U_j^T [k, in], B_r^j [out, k]
      tensor<B> hidden, gate_rows, gated, gated_gradient, product;  // per-forward scratch [rows, k]
    };

    /// The CLS rows of x to the host, then P = C U^T, ||c||^2 and the gates.
    void compute_gates(const_tensor_view<B> x) {
      if (x.shape().rank() == 3 && config_.feature == dual_feature::first_token) {
        samples_ = x.shape()[0];
        tokens_ = x.shape()[1];
      } else {
        samples_ = x.rows();
        tokens_ = 1;
      }
      cls_index_.resize(std::size_t(samples_));
      for (index_t i = 0; i < samples_; ++i) cls_index_[std::size_t(i)] = i * tokens_;
      const_tensor_view<B> cls = x.reshaped(shape{x.rows(), in_});
      if (tokens_ > 1) {
        cls_rows_.resize(*backend_, shape{samples_, in_});
        gather_rows<B>(cls, cls_index_, cls_rows_);
        cls = cls_rows_;
      }
      const auto host = cls.to_host();
      cls_.resize(samples_, in_);
      for (index_t i = 0; i < samples_; ++i)
        for (index_t c = 0; c < in_; ++c) cls_(i, c) = static_cast<double>(host[std::size_t(i * in_ + c)]);
      const calling_thread_only serial;  // Eigen's threaded product would round by the thread count
      projections_ = cls_ * basis_.transpose();
      norms2_ = cls_.rowwise().squaredNorm();
      dual_gating::forward(config_.gate, config_.gate_temperature, projections_, norms2_, offsets_, scores_, gates_);
    }

    /// The gates [samples, K] to the backend (one host -> backend copy per forward), and a ones vector [tokens].
    void upload_sample_gates() {
      staging_.resize(std::size_t(gates_.size()));
      for (index_t i = 0; i < samples_; ++i)
        for (index_t c = 0; c < gates_.cols(); ++c)
          staging_[std::size_t(i * gates_.cols() + c)] = static_cast<scalar_type>(gates_(i, c));
      sample_gates_.resize(*backend_, shape{samples_, index_t(gates_.cols())});
      backend_->copy_from_host(staging_.data(), sample_gates_.data(), sample_gates_.numel());
      if (ones_.empty() || ones_.numel() != tokens_) {
        ones_.resize(*backend_, shape{tokens_});
        ones_.fill(scalar_type(1));
      }
    }

    /// gate_rows [rows, k_j]: row r carries its sample's (r / tokens) gates for task j's columns, broadcast on the
    /// backend: per sample, ones[tokens, 1] x gates[sample, offset : offset + k] [1, k].
    void expand_gates(index_t task, index_t rows, residual_task& r) {
      const index_t k = r.u.rows(), offset = offsets_[std::size_t(task)], columns = sample_gates_.cols();
      r.gate_rows.resize(*backend_, shape{rows, k});
      backend_->gemm_strided_batched(transpose::no, transpose::no, tokens_, k, 1, scalar_type(1), ones_.data(), 1, 0,
                                     sample_gates_.data() + offset, columns, columns, scalar_type(0), r.gate_rows.data(), k,
                                     tokens_ * k, samples_);
    }

    B* backend_;
    config config_;
    index_t in_, out_;
    bool gradients_enabled_ = true;
    tensor<B> a_, b_, a_gradient_, b_gradient_, hidden_, hidden_gradient_, cls_rows_, no_gradient_;
    tensor<B> sample_gates_, ones_, sample_sums_;  // gates [samples, K], ones [tokens], per-sample sums [samples, k]
    frozen_history<B> history_;
    input_covariance<B> covariance_;
    const_tensor_view<B> input_;
    std::deque<residual_task> residual_;  // deque: parameter pointers stay valid as tasks are added
    std::vector<index_t> offsets_;        // task j's basis columns [offsets_[j], offsets_[j + 1])
    index_t training_ = -1;
    Eigen::MatrixXd basis_;               // [K, in]: every U_j^T stacked, the host copy the gate uses
    index_t samples_ = 0, tokens_ = 1;
    std::vector<index_t> cls_index_;
    std::vector<scalar_type> staging_;
    Eigen::MatrixXd cls_, projections_, scores_, gates_, gate_gradient_, projection_gradient_;
    Eigen::VectorXd norms2_, norms2_gradient_;
  };
};

}  // namespace treelora

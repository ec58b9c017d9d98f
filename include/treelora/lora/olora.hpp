// treelora/lora/olora.hpp: the O-LoRA factorisation (Wang et al., EMNLP Findings 2023, "Orthogonal Subspace
// Learning for Language Model Continual Learning").
//
// A new standard LoRA per task (A Kaiming-uniform, B zeros, scale s = alpha / r); earlier tasks' LoRAs are frozen
// and summed at inference:  y = W0 x + b0 + sum_{i<t} s B_i A_i x + s B_t A_t x.
// The orthogonality loss against the earlier A's (O-LoRA: the sum of absolute entries):
//   L_orth = lambda1 sum_{i<t} sum |A_i A_t^T|,   d L_orth / d A_t = lambda1 sum_i sign(A_i A_t^T)^T A_i
// computed as ONE product against the stacked earlier A's [sum r_i, in]. The optional L2 term on the new LoRA is
// O-LoRA's released form, lambda2 (||A_t||_F + ||B_t||_F) (norms, not squared), gradient lambda2 P / ||P||_F.
// (The O-LoRA in the released TreeLoRA code is inert: its list of earlier LoRAs stays empty. Not copied.)
#pragma once

#include "treelora/backend/random.hpp"
#include "treelora/lora/inflora.hpp"

namespace treelora {

struct olora {
  struct config {
    index_t rank = 8;
    double alpha = 16.0;
    bool merge_finished = true;  ///< fold finished tasks' s B A into one delta (their A's are kept for the loss)
    std::uint64_t seed = 0;      ///< initialisation of each task's A (task t uses a seed derived from seed and t)
  };

  template <Backend B>
  class adapter {
   public:
    using backend_type = B;
    using scalar_type = typename B::scalar_type;

    adapter(B& backend, index_t in_features, index_t out_features, const config& c)
        : backend_(&backend), config_(c), in_(in_features), out_(out_features),
          history_(backend, in_features, out_features, c.merge_finished), covariance_(backend, in_features) {
      if (c.rank <= 0 || c.rank > in_features || c.rank > out_features)
        throw_invalid_argument("olora", concat("rank ", c.rank, " must be in [1, min(in ", in_features, ", out ", out_features, ")]"));
      if (!std::isfinite(c.alpha)) throw_invalid_argument("olora", concat("alpha ", c.alpha, " is not finite"));
      scaling_ = static_cast<scalar_type>(c.alpha / double(c.rank));
      a_ = tensor<B>(backend, shape{c.rank, in_features});
      b_ = tensor<B>(backend, shape{out_features, c.rank});
      a_gradient_ = tensor<B>(backend, a_.shape());
      b_gradient_ = tensor<B>(backend, b_.shape());
      initialise(0);
    }

    tensor<B>& a() { return a_; }
    tensor<B>& b() { return b_; }
    tensor<B>& a_gradient() { return a_gradient_; }
    tensor<B>& b_gradient() { return b_gradient_; }
    bool& gradients_enabled() { return gradients_enabled_; }
    scalar_type scaling() const { return scaling_; }
    index_t rank() const { return config_.rank; }
    /// The earlier tasks' A's stacked [sum r_i, in] (empty before the second task).
    const tensor<B>& previous_a() const { return previous_a_; }
    const frozen_history<B>& history() const { return history_; }
    input_covariance<B>& covariance() { return covariance_; }
    void set_training(bool) {}

    /// Task t (> 0) starts: a fresh LoRA (A from the seed of (seed, t), B = 0). Task 0 uses the constructor's.
    void start_task(index_t task) {
      if (task > 0) initialise(task);
    }
    /// The task is over: s B_t A_t joins the frozen history and A_t the orthogonality stack.
    void finish_task() {
      history_.add(a_, b_, scaling_);
      tensor<B> stacked(*backend_, shape{previous_a_.empty() ? a_.rows() : previous_a_.rows() + a_.rows(), in_});
      if (!previous_a_.empty()) backend_->copy(previous_a_.data(), stacked.data(), previous_a_.numel());
      backend_->copy(a_.data(), stacked.data() + (previous_a_.empty() ? 0 : previous_a_.numel()), a_.numel());
      previous_a_ = std::move(stacked);
      b_.fill(scalar_type(0));
    }

    /// Adds d L_orth / d A_t to A's gradient and returns L_orth = lambda1 sum |A_old A_t^T| (0 before task 2).
    double add_orthogonality_gradient(double lambda1) {
      if (previous_a_.empty() || lambda1 == 0) return 0;
      overlap_.resize(*backend_, shape{previous_a_.rows(), config_.rank});
      matmul<B>(previous_a_, transpose::no, a_, transpose::yes, overlap_);  // P = A_old A_t^T
      const double value = lambda1 * static_cast<double>(l1_norm<B>(overlap_));
      apply<B>(unary_function::sign, overlap_, overlap_);
      matmul<B>(overlap_, transpose::yes, previous_a_, transpose::no, a_gradient_, static_cast<scalar_type>(lambda1),
                scalar_type(1));  // dA_t += lambda1 sign(P)^T A_old
      return value;
    }

    /// Adds the gradient of lambda2 (||A_t||_F + ||B_t||_F) and returns its value.
    double add_l2_gradient(double lambda2) {
      if (lambda2 == 0) return 0;
      double value = 0;
      for (auto [p, g] : {std::pair{&a_, &a_gradient_}, std::pair{&b_, &b_gradient_}}) {
        const double norm = std::sqrt(static_cast<double>(squared_norm<B>(*p)));
        value += lambda2 * norm;
        if (norm > 0) axpy<B>(static_cast<scalar_type>(lambda2 / norm), *p, *g);
      }
      return value;
    }

    void forward_add(const_tensor_view<B> x, tensor_view<B> y) {
      covariance_.observe(x);
      input_ = x;
      hidden_.resize(*backend_, shape{x.rows(), config_.rank});
      matmul<B>(x, transpose::no, a_, transpose::yes, hidden_);              // h = x A^T
      matmul<B>(hidden_, transpose::no, b_, transpose::yes, y, scaling_, 1);  // y += s h B^T
      history_.forward_add(x, y);
    }

    void backward_add(const_tensor_view<B> dy, tensor_view<B> dx) {
      if (input_.data() == nullptr) throw_invalid_argument("olora::backward_add", "called before forward_add");
      hidden_gradient_.resize(*backend_, shape{dy.rows(), config_.rank});
      matmul<B>(dy, transpose::no, b_, transpose::no, hidden_gradient_, scaling_);  // dh = s dy B
      if (gradients_enabled_) {
        matmul<B>(dy, transpose::yes, hidden_, transpose::no, b_gradient_, scaling_, 1);        // dB += s dy^T h
        matmul<B>(hidden_gradient_, transpose::yes, input_, transpose::no, a_gradient_, 1, 1);  // dA += dh^T x
      }
      matmul<B>(hidden_gradient_, transpose::no, a_, transpose::no, dx, 1, 1);  // dx += dh A
      history_.backward_add(dy, dx);
    }

    void merge_into(tensor<B>& weight, scalar_type sign) {
      matmul<B>(b_, transpose::no, a_, transpose::no, weight, sign * scaling_, 1);
      history_.merge_into(weight, sign);
    }

    void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
      out.push_back({join_name(prefix, "lora_a"), &a_, &a_gradient_, true});
      out.push_back({join_name(prefix, "lora_b"), &b_, &b_gradient_, true});
      if (!previous_a_.empty()) out.push_back({join_name(prefix, "lora_previous_a"), &previous_a_, &no_gradient_, false});
      history_.collect_parameters(out, prefix);
    }

    std::size_t state_bytes() const {
      return history_.bytes() + std::size_t(previous_a_.numel()) * sizeof(scalar_type);
    }

    /// Checkpoints (io/checkpoint.hpp): the current task's LoRA, the earlier tasks' A's and the frozen history.
    template <class Archive>
    void checkpoint(Archive ar) {
      ar.expect("rank", config_.rank), ar.expect("alpha", config_.alpha), ar.expect("merge_finished", config_.merge_finished);
      ar.expect("seed", config_.seed);
      ar.tensor_of_shape("lora_a", a_, *backend_, a_gradient_.shape());
      ar.tensor_of_shape("lora_b", b_, *backend_, b_gradient_.shape());
      ar.value("gradients_enabled", gradients_enabled_);
      ar.tensor("previous_a", previous_a_, *backend_);
      ar.require(previous_a_.empty() || (previous_a_.shape().rank() == 2 && previous_a_.cols() == in_ &&
                                         previous_a_.rows() % config_.rank == 0),
                 "previous_a", concat("must be [tasks x ", config_.rank, ", ", in_, "]"));
      history_.checkpoint(ar.scope("history"));
    }

   private:
    void initialise(index_t task) {
      const auto bound = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(in_)));  // Kaiming, a = sqrt 5
      fill_uniform<B>(a_, -bound, bound, task == 0 ? config_.seed : random::mix64(config_.seed ^ random::mix64(std::uint64_t(task))));
      b_.fill(scalar_type(0));
    }

    B* backend_;
    config config_;
    index_t in_, out_;
    scalar_type scaling_;
    bool gradients_enabled_ = true;
    tensor<B> a_, b_, a_gradient_, b_gradient_, hidden_, hidden_gradient_, previous_a_, overlap_, no_gradient_;
    frozen_history<B> history_;
    input_covariance<B> covariance_;
    const_tensor_view<B> input_;
  };
};

}  // namespace treelora

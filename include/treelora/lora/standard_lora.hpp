// treelora/lora/standard_lora.hpp: the standard LoRA factorisation (Hu et al. 2021, PEFT's behaviour).
//   y = W0 x + s * B A dropout(x),  A [r, in] Kaiming-uniform (a = sqrt 5), B [out, r] zeros,
//   s = alpha / r, or alpha / sqrt(r) with rank_stabilized (rsLoRA, Kalajdzievski 2023).
#pragma once

#include <cmath>
#include <cstdint>

#include "treelora/lora/factorization.hpp"

namespace treelora {

struct standard_lora {
  struct config {
    index_t rank = 8;
    double alpha = 16.0;
    bool rank_stabilized = false;  ///< scale by alpha / sqrt(r) instead of alpha / r
    double dropout = 0.0;          ///< probability of dropping an input element of the adapter branch
    std::uint64_t seed = 0;        ///< initialisation of A and the dropout stream
  };

  template <Backend B>
  class adapter {
   public:
    using backend_type = B;
    using scalar_type = typename B::scalar_type;

    adapter(B& backend, index_t in_features, index_t out_features, const config& c)
        : backend_(&backend), config_(c), in_(in_features), out_(out_features) {
      if (c.rank <= 0 || c.rank > in_features || c.rank > out_features)
        throw_invalid_argument("standard_lora", concat("rank ", c.rank, " must be in [1, min(in ", in_features, ", out ",
                                                        out_features, ")]"));
      if (!(c.dropout >= 0 && c.dropout < 1))
        throw_invalid_argument("standard_lora", concat("dropout ", c.dropout, " outside [0, 1)"));
      if (!std::isfinite(c.alpha)) throw_invalid_argument("standard_lora", concat("alpha ", c.alpha, " is not finite"));
      scaling_ = static_cast<scalar_type>(c.rank_stabilized ? c.alpha / std::sqrt(double(c.rank)) : c.alpha / double(c.rank));
      detail::init_low_rank_factors(backend, c.rank, in_features, out_features, c.seed, a_, b_, a_gradient_, b_gradient_);
    }

    tensor<B>& a() { return a_; }
    tensor<B>& b() { return b_; }
    tensor<B>& a_gradient() { return a_gradient_; }
    tensor<B>& b_gradient() { return b_gradient_; }
    scalar_type scaling() const { return scaling_; }
    index_t rank() const { return config_.rank; }
    /// The configuration it was built with (alpha and rank_stabilized: what an adapter export writes).
    const config& configuration() const { return config_; }
    void set_training(bool training) { training_ = training; }
    /// false: backward_add still passes the input gradient through but skips the dA and dB GEMMs (a sparse
    /// update rule that leaves this module out of a step saves that work).
    bool& gradients_enabled() { return gradients_enabled_; }
    /// Frees the per-forward scratch, the dropout mask included (activation checkpointing).
    void release_buffers() {
      hidden_ = tensor<B>(), hidden_gradient_ = tensor<B>(), mask_ = tensor<B>(), dropped_ = tensor<B>();
      input_ = {};
    }
    /// Where the dropout stream is: setting it back replays the same masks (checkpoints, gradient checks).
    std::uint64_t dropout_position() const { return dropout_counter_; }
    void set_dropout_position(std::uint64_t position) { dropout_counter_ = position; }

    void forward_add(const_tensor_view<B> x, tensor_view<B> y) {
      const_tensor_view<B> xd = x;
      if (training_ && config_.dropout > 0) {
        mask_.resize(*backend_, x.shape());
        dropped_.resize(*backend_, x.shape());
        fill_dropout_mask<B>(mask_, 1.0 - config_.dropout, config_.seed ^ 0x5eedd50ULL, dropout_counter_);
        dropout_counter_ += static_cast<std::uint64_t>(x.numel());
        multiply<B>(x, mask_, dropped_);
        xd = dropped_;
      }
      input_ = xd;
      hidden_.resize(*backend_, shape{x.rows(), config_.rank});
      matmul<B>(xd, transpose::no, a_, transpose::yes, hidden_);              // h = x A^T
      matmul<B>(hidden_, transpose::no, b_, transpose::yes, y, scaling_, 1);  // y += s h B^T
    }

    void backward_add(const_tensor_view<B> dy, tensor_view<B> dx) {
      if (input_.data() == nullptr) throw_invalid_argument("standard_lora::backward_add", "called before forward_add");
      hidden_gradient_.resize(*backend_, shape{dy.rows(), config_.rank});
      matmul<B>(dy, transpose::no, b_, transpose::no, hidden_gradient_, scaling_);            // dh = s dy B
      if (gradients_enabled_) {
        matmul<B>(dy, transpose::yes, hidden_, transpose::no, b_gradient_, scaling_, 1);        // dB += s dy^T h
        matmul<B>(hidden_gradient_, transpose::yes, input_, transpose::no, a_gradient_, 1, 1);  // dA += dh^T x
      }
      if (training_ && config_.dropout > 0) {
        dropped_.resize(*backend_, dx.shape());
        matmul<B>(hidden_gradient_, transpose::no, a_, transpose::no, dropped_);  // (dh A), then masked
        multiply_add<B>(dropped_, mask_, dx);
      } else {
        matmul<B>(hidden_gradient_, transpose::no, a_, transpose::no, dx, 1, 1);  // dx += dh A
      }
    }

    /// W += sign * s * B A
    void merge_into(tensor<B>& weight, scalar_type sign) {
      matmul<B>(b_, transpose::no, a_, transpose::no, weight, sign * scaling_, 1);
    }

    void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
      out.push_back({join_name(prefix, "lora_a"), &a_, &a_gradient_, true});
      out.push_back({join_name(prefix, "lora_b"), &b_, &b_gradient_, true});
    }

    /// Checkpoints (io/checkpoint.hpp): the configuration is compared, A, B and the dropout position restored.
    template <class Archive>
    void checkpoint(Archive ar) {
      ar.expect("rank", config_.rank), ar.expect("alpha", config_.alpha), ar.expect("rank_stabilized", config_.rank_stabilized);
      ar.expect("dropout", config_.dropout), ar.expect("seed", config_.seed);
      ar.tensor_of_shape("lora_a", a_, *backend_, a_gradient_.shape());
      ar.tensor_of_shape("lora_b", b_, *backend_, b_gradient_.shape());
      ar.value("dropout_position", dropout_counter_);
      ar.value("gradients_enabled", gradients_enabled_);
    }

   private:
    B* backend_;
    config config_;
    index_t in_, out_;
    scalar_type scaling_;
    bool training_ = true;
    bool gradients_enabled_ = true;
    std::uint64_t dropout_counter_ = 0;
    tensor<B> a_, b_, a_gradient_, b_gradient_;
    tensor<B> hidden_, hidden_gradient_, mask_, dropped_;
    const_tensor_view<B> input_;
  };
};

}  // namespace treelora

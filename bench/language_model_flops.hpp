// bench/language_model_flops.hpp: the FLOP count the language-model benchmarks (bench_language_models on the CPU,
// bench_cuda's lm_lora_step on a GPU) turn their step times into rates with.
#pragma once

#include "treelora/models/llama.hpp"

namespace treelora::bench {

/// FLOPs of one LoRA training step per token with a frozen base (docs/language-models.md): forward 2N, input
/// gradients 2N (no weight gradients of the frozen base), attention 12 L d_q T; the adapters' own are negligible.
inline double lora_step_flops_per_token(const llama_config& c, index_t tokens) {
  const double d = double(c.hidden_size), q = double(c.num_attention_heads * c.head_width()),
               kv = double(c.num_key_value_heads * c.head_width()), inner = double(c.intermediate_size);
  const double per_layer = d * q * 2 + d * kv * 2 + 3 * d * inner;
  const double n = double(c.num_hidden_layers) * per_layer + double(c.vocab_size) * d * (c.tie_word_embeddings ? 1 : 2);
  return 4 * n + 12 * double(c.num_hidden_layers) * q * double(tokens);
}

}  // namespace treelora::bench

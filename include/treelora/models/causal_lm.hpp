// treelora/models/causal_lm.hpp: what the decoder-only language models (models/llama.hpp, models/gpt2.hpp) share:
// token batches with left padding, the output head (tied to the token embedding or its own), the ids-as-scalars
// entry point that makes a language model a Layer (and so a Model every strategy trains), and greedy generation with
// or without the key/value cache.
//
// A language model M here has
//   forward_tokens(ids, layout, last_only)  ids [batch * tokens] row-major -> logits [batch * tokens, vocabulary]
//                                 (last_only: each sequence's last token only, [batch, vocabulary])
//   backward(d logits)            parameter gradients accumulate (the Layer contract)
//   set_cache(batch, capacity)    turns every layer's key/value cache on (capacity > 0) or off (0)
//   vocabulary(), pad_token_id(), eos_token_ids()
// Padding is on the left (TRACE's convention): a sequence's leading pad_token_id tokens are its padding. Positions
// count from the first real token, and padding is masked out of attention, so a padded sequence computes what it
// computes alone (tests/test_language_models.cpp checks it).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "treelora/core/hash.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/layers/embedding.hpp"
#include "treelora/layers/linear.hpp"
#include "treelora/models/transformer/causal_attention.hpp"

namespace treelora {

/// The layout of a [batch, tokens] id batch: a sequence's leading `pad_id` tokens are left padding (none when
/// pad_id < 0). Throws std::invalid_argument when the sizes disagree.
inline token_layout left_padded_layout(std::span<const index_t> ids, index_t batch, index_t tokens, index_t pad_id,
                                       index_t past = 0) {
  if (batch <= 0 || tokens <= 0 || static_cast<index_t>(ids.size()) != batch * tokens)
    throw_invalid_argument("left_padded_layout", concat(ids.size(), " ids are not ", batch, " sequences of ", tokens, " tokens"));
  token_layout layout{batch, tokens, past, std::vector<index_t>(std::size_t(batch), 0)};
  if (pad_id >= 0)
    for (index_t b = 0; b < batch; ++b) {
      index_t pad = 0;
      while (pad < tokens && ids[std::size_t(b * tokens + pad)] == pad_id) ++pad;
      layout.left_padding[std::size_t(b)] = pad;
    }
  return layout;
}

/// Token ids stored as scalars (the Layer entry point of a language model: inputs are a [batch, tokens] tensor) back
/// to integers. Throws std::invalid_argument naming the first value that is not an id of the vocabulary.
template <Backend B>
std::vector<index_t> ids_from_scalars(const_tensor_view<B> ids, index_t vocabulary, std::string_view where) {
  if (ids.shape().rank() != 2)
    throw_invalid_argument(where, concat("token ids ", ids.shape().to_string(), " should be [batch, tokens]"));
  const auto host = ids.to_host();
  std::vector<index_t> out(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) {
    const double v = static_cast<double>(host[i]);
    if (!(v >= 0 && v < static_cast<double>(vocabulary)) || v != std::floor(v))
      throw_invalid_argument(where, concat("token id ", v, " at position ", i, " is not an id of the vocabulary [0, ", vocabulary, ")"));
    out[i] = static_cast<index_t>(v);
  }
  return out;
}

/// The last token's row of each sequence of h [batch, tokens, width], gathered into `out` [batch, width].
template <Backend B>
const_tensor_view<B> last_rows(const_tensor_view<B> h, index_t batch, index_t tokens, tensor<B>& out, B& backend) {
  const index_t width = h.cols();
  std::vector<index_t> rows(static_cast<std::size_t>(batch));
  for (index_t b = 0; b < batch; ++b) rows[std::size_t(b)] = b * tokens + tokens - 1;
  out.resize(backend, shape{batch, width});
  gather_rows<B>(h.reshaped(shape{batch * tokens, width}), rows, out);
  return out;
}

/// The output head: logits = h W^T with W the token embedding's table (tied) or a weight of its own [vocabulary,
/// width] (untied; Hugging Face's lm_head.weight). Backward returns dh and adds dW when W trains.
template <Backend B>
class lm_head {
 public:
  using scalar_type = typename B::scalar_type;

  /// Tied to `table` (which must outlive the head) or, with `table` null, a weight N(0, stddev) of its own.
  lm_head(B& backend, embedding<B>* table, index_t vocabulary, index_t width, std::uint64_t seed, double stddev)
      : backend_(&backend), table_(table) {
    if (!table_) {
      weight_ = tensor<B>(backend, shape{vocabulary, width});
      fill_normal<B>(weight_, 0, static_cast<scalar_type>(stddev), seed);
      set_trainable(true);
    }
  }
  bool tied() const { return table_ != nullptr; }
  void retie(embedding<B>* table) {
    if (table_) table_ = table;
  }
  tensor<B>& weight() { return table_ ? table_->weight() : weight_; }
  void set_trainable(bool trainable) {
    if (table_) return;  // a tied head trains with the embedding
    trainable_ = trainable;
    if (trainable && weight_gradient_.empty()) weight_gradient_ = tensor<B>(*backend_, weight_.shape());
  }
  void release_buffers() { logits_ = tensor<B>(), input_gradient_ = tensor<B>(), input_ = {}; }

  const_tensor_view<B> forward(const_tensor_view<B> h) {
    input_ = h;
    logits_.resize(*backend_, shape{h.rows(), weight().rows()});
    matmul<B>(h.reshaped(shape{h.rows(), h.cols()}), transpose::no, weight(), transpose::yes, logits_);
    return logits_;
  }
  const_tensor_view<B> backward(const_tensor_view<B> dlogits) {
    if (input_.data() == nullptr) throw_invalid_argument("lm_head::backward", "called before forward");
    const auto h = input_.reshaped(shape{input_.rows(), input_.cols()});
    if (table_ ? table_->trainable() : trainable_)  // dW += dlogits^T h
      matmul<B>(dlogits, transpose::yes, h, transpose::no, table_ ? table_->weight_gradient() : weight_gradient_, 1, 1);
    input_gradient_.resize(*backend_, input_.shape());
    matmul<B>(dlogits, transpose::no, weight(), transpose::no, input_gradient_.view().reshaped(h.shape()));  // dh = dlogits W
    return input_gradient_;
  }
  /// "lm_head.weight" only when untied (a tied head is the embedding's parameter).
  void collect_parameters(parameter_list<B>& out, std::string_view name) {
    if (!table_) out.push_back({std::string(name), &weight_, &weight_gradient_, trainable_});
  }

 private:
  B* backend_;
  embedding<B>* table_;
  bool trainable_ = false;
  tensor<B> weight_, weight_gradient_, logits_, input_gradient_;
  const_tensor_view<B> input_;
};

/// FNV-1a-64 of named parameters (names, shapes, values): which pre-trained weights a model holds.
template <Backend B>
std::uint64_t parameters_fingerprint(const parameter_list<B>& params, std::string_view salt) {
  std::uint64_t h = fnv1a64(salt.data(), salt.size());
  for (const auto& p : params) {
    h = fnv1a64(p.name.data(), p.name.size(), h);
    const std::string dims = p.value->shape().to_string();
    h = fnv1a64(dims.data(), dims.size(), h);
    const auto host = p.value->to_host();
    h = fnv1a64(host.data(), host.size() * sizeof(typename B::scalar_type), h);
  }
  return h;
}

/// Greedy decoding. Each prompt is a list of ids (BOS included by the caller); generation stops for a sequence at
/// one of `stop_ids` (kept in its output) or after max_new_tokens.
struct generation_options {
  index_t max_new_tokens = 32;
  std::vector<index_t> stop_ids = {};  ///< empty: the model's eos_token_ids()
  bool use_cache = true;          ///< false recomputes the whole sequence at every step (the reference path)
  bool keep_logits = false;       ///< keep each step's logits (tests compare the two paths with them)
};

struct generation_result {
  std::vector<std::vector<index_t>> tokens;  ///< per prompt: the generated ids (a stop id included when reached)
  /// With keep_logits: per step, [prompts x vocabulary] row-major (a finished sequence's rows are its last step's
  /// inputs and are not meaningful).
  std::vector<std::vector<float>> step_logits;
  index_t steps = 0;
};

/// Greedy generation, batched over prompts (left-padded to the longest). With the cache, the prompts run once and
/// each step feeds one token per sequence; without, every step runs the whole sequence again. Ties go to the lowest id.
template <class LM>
generation_result generate_greedy(LM& model, const std::vector<std::vector<index_t>>& prompts, const generation_options& options = {}) {
  if (prompts.empty()) throw_invalid_argument("generate_greedy", "no prompts");
  if (options.max_new_tokens <= 0)
    throw_invalid_argument("generate_greedy", concat("max_new_tokens ", options.max_new_tokens, " must be positive"));
  const index_t batch = static_cast<index_t>(prompts.size()), vocabulary = model.vocabulary();
  index_t longest = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw_invalid_argument("generate_greedy", concat("prompt ", i, " is empty (start it with BOS)"));
    longest = std::max<index_t>(longest, static_cast<index_t>(prompts[i].size()));
  }
  const std::vector<index_t> stops = options.stop_ids.empty() ? model.eos_token_ids() : options.stop_ids;
  const index_t filler = model.pad_token_id() >= 0 ? model.pad_token_id() : 0;  // masked: any id would do
  // sequences[b]: the left-padded prompt followed by what was generated
  std::vector<std::vector<index_t>> sequences(prompts.size());
  token_layout layout{batch, longest, 0, std::vector<index_t>(std::size_t(batch))};
  for (index_t b = 0; b < batch; ++b) {
    const auto& p = prompts[std::size_t(b)];
    layout.left_padding[std::size_t(b)] = longest - static_cast<index_t>(p.size());
    sequences[std::size_t(b)].assign(std::size_t(longest) - p.size(), filler);
    sequences[std::size_t(b)].insert(sequences[std::size_t(b)].end(), p.begin(), p.end());
  }
  generation_result result;
  result.tokens.resize(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  model.set_cache(options.use_cache ? batch : 0, options.use_cache ? longest + options.max_new_tokens : 0);
  struct cache_off {  // the cache is turned off however generation ends
    LM& m;
    ~cache_off() { m.set_cache(0, 0); }
  } guard{model};
  std::vector<index_t> ids;
  for (index_t step = 0; step < options.max_new_tokens; ++step) {
    index_t tokens;
    if (options.use_cache && step > 0) {  // one new token per sequence
      tokens = 1;
      ids.resize(std::size_t(batch));
      for (index_t b = 0; b < batch; ++b) ids[std::size_t(b)] = sequences[std::size_t(b)].back();
      layout.past = longest + step - 1;
    } else {  // the whole sequence
      tokens = longest + step;
      ids.clear();
      for (const auto& s : sequences) ids.insert(ids.end(), s.begin(), s.end());
      layout.past = 0;
    }
    layout.tokens = tokens;
    const auto logits = model.forward_tokens(ids, layout, /*last_only=*/true);  // [batch, vocabulary]
    const auto all = logits.to_host();  // one copy per step
    std::vector<float> last(all.begin(), all.end());
    for (index_t b = 0; b < batch; ++b) {
      const auto* row = all.data() + b * vocabulary;
      index_t best = 0;
      for (index_t v = 1; v < vocabulary; ++v)
        if (row[v] > row[best]) best = v;
      if (!std::isfinite(static_cast<double>(row[best])))
        throw_runtime_error("generate_greedy", concat("step ", step, ", prompt ", b, ": the logits are not finite"));
      auto& seq = sequences[std::size_t(b)];
      if (done[std::size_t(b)]) {
        seq.push_back(seq.back());
        continue;
      }
      seq.push_back(best);
      result.tokens[std::size_t(b)].push_back(best);
      if (std::find(stops.begin(), stops.end(), best) != stops.end()) done[std::size_t(b)] = true;
    }
    if (options.keep_logits) result.step_logits.push_back(std::move(last));
    result.steps = step + 1;
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  return result;
}

}  // namespace treelora

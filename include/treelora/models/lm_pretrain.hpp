// treelora/models/lm_pretrain.hpp: pre-training a decoder-only language model from scratch on a corpus (the text
// benchmark's base model, docs/text-benchmark.md):
//   pack_sequences:     documents (ids, no BOS/EOS) -> training sequences of `tokens` ids: BOS, then the documents one
//                       after another, each followed by EOS, cut into equal pieces (the last partial piece dropped)
//   causal_lm_loss:     mean next-token cross-entropy over every token after BOS of a set of sequences (forward only);
//                       exp of it is the perplexity
//   pretrain_causal_lm: every parameter trained (the model has no adapters) with AdamW, linear warm-up then cosine
//                       decay, gradient clipping; a seeded order of the sequences, epoch after epoch, for `steps`
//                       steps. Deterministic for a seed on the CPU backend.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <numbers>
#include <span>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/data/batching.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/models/causal_lm.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/optim/clip.hpp"

namespace treelora {

/// See the file comment. Throws std::invalid_argument for tokens < 2.
inline std::vector<std::vector<index_t>> pack_sequences(std::span<const std::vector<std::int32_t>> documents, index_t bos,
                                                        index_t eos, index_t tokens) {
  if (tokens < 2) throw_invalid_argument("pack_sequences", concat("sequences of ", tokens, " tokens (at least 2)"));
  std::vector<std::vector<index_t>> out;
  std::vector<index_t> current{bos};
  const auto push = [&](index_t id) {
    current.push_back(id);
    if (index_t(current.size()) == tokens) {
      out.push_back(std::move(current));
      current.assign(1, bos);
    }
  };
  for (const auto& d : documents) {
    for (auto id : d) push(id);
    push(eos);
  }
  return out;
}

struct lm_pretrain_settings {
  index_t steps = 300;
  index_t batch_size = 16;
  double learning_rate = 3e-3;  ///< peak
  index_t warmup_steps = 30;
  double weight_decay = 0.01;   ///< decoupled (AdamW)
  double clip_norm = 1.0;
  std::uint64_t seed = 0;       ///< the order of the sequences
  index_t report_every = 25;    ///< progress(step, mean loss of the last steps) every this many steps
};

struct lm_pretrain_report {
  index_t steps = 0, tokens = 0;  ///< tokens: predicted tokens seen
  double seconds = 0;
  double first_loss = 0, final_loss = 0;  ///< training loss of the first step, mean of the last report_every steps
};

namespace detail {
/// counted flags of packed sequences: every token but the first (BOS) is a target.
inline std::vector<unsigned char> all_but_first(index_t batch, index_t tokens) {
  std::vector<unsigned char> counted(std::size_t(batch * tokens), 1);
  for (index_t b = 0; b < batch; ++b) counted[std::size_t(b * tokens)] = 0;
  return counted;
}
}  // namespace detail

/// The mean next-token loss over `sequences` (equal lengths), in batches of `batch_size`, evaluation mode.
template <class LM>
double causal_lm_loss(LM& model, const std::vector<std::vector<index_t>>& sequences, index_t batch_size = 16) {
  using B = typename LM::backend_type;
  if (sequences.empty()) throw_invalid_argument("causal_lm_loss", "no sequences");
  const index_t tokens = index_t(sequences.front().size());
  model.set_training(false);
  tensor<B> gradient;
  double total = 0;
  index_t counted = 0;
  std::vector<index_t> ids;
  for (std::size_t first = 0; first < sequences.size(); first += std::size_t(batch_size)) {
    const index_t n = index_t(std::min(sequences.size() - first, std::size_t(batch_size)));
    ids.clear();
    for (index_t i = 0; i < n; ++i) {
      const auto& s = sequences[first + std::size_t(i)];
      if (index_t(s.size()) != tokens) throw_invalid_argument("causal_lm_loss", "sequences of several lengths");
      ids.insert(ids.end(), s.begin(), s.end());
    }
    const auto labels = next_token_labels(ids, detail::all_but_first(n, tokens), tokens);
    const auto logits = model.forward_tokens(ids, token_layout{n, tokens, 0, std::vector<index_t>(std::size_t(n), 0)});
    gradient.resize(model.backend(), logits.shape());
    const index_t c = n * (tokens - 1);
    total += token_cross_entropy_loss<B>(logits, labels, gradient) * double(c);
    counted += c;
  }
  model.set_training(true);
  return total / double(counted);
}

/// See the file comment. `progress(step, loss)` is called every settings.report_every steps (may be empty).
template <class LM>
lm_pretrain_report pretrain_causal_lm(LM& model, const std::vector<std::vector<index_t>>& sequences,
                                      const lm_pretrain_settings& settings,
                                      const std::function<void(index_t, double)>& progress = {}) {
  using B = typename LM::backend_type;
  constexpr std::string_view where = "pretrain_causal_lm";
  if (sequences.empty()) throw_invalid_argument(where, "no sequences");
  if (settings.steps <= 0 || settings.batch_size <= 0 || settings.warmup_steps < 0 || settings.report_every <= 0)
    throw_invalid_argument(where, concat("steps ", settings.steps, ", batch ", settings.batch_size, ", warm-up ",
                                         settings.warmup_steps, ", report_every ", settings.report_every,
                                         ": steps, batch and report_every must be >= 1, warm-up >= 0"));
  if (!(settings.learning_rate > 0) || !std::isfinite(settings.learning_rate) || !(settings.clip_norm >= 0))
    throw_invalid_argument(where, concat("learning rate ", settings.learning_rate, " (must be > 0), clip ", settings.clip_norm));
  const index_t tokens = index_t(sequences.front().size());
  for (const auto& s : sequences)
    if (index_t(s.size()) != tokens) throw_invalid_argument(where, "sequences of several lengths (pack_sequences makes equal ones)");
  auto params = parameters(model);
  if (trainable_parameter_count(params) == 0) throw_invalid_argument(where, "the model has no trainable parameter");
  adam<B> optimizer(params, {.learning_rate = settings.learning_rate, .weight_decay = settings.weight_decay,
                             .decoupled_weight_decay = settings.weight_decay > 0});
  const index_t batch = std::min<index_t>(settings.batch_size, index_t(sequences.size()));
  const index_t per_epoch = index_t(sequences.size()) / batch;
  const auto counted = detail::all_but_first(batch, tokens);
  lm_pretrain_report report;
  tensor<B> gradient;
  std::vector<index_t> ids, order;
  double window = 0;
  index_t in_window = 0;
  const auto start = std::chrono::steady_clock::now();
  model.set_training(true);
  for (index_t step = 0; step < settings.steps; ++step) {
    const index_t epoch = step / per_epoch, within = step % per_epoch;
    if (within == 0) order = epoch_permutation(index_t(sequences.size()), settings.seed, epoch);
    ids.clear();
    for (index_t i = 0; i < batch; ++i) {
      const auto& s = sequences[std::size_t(order[std::size_t(within * batch + i)])];
      ids.insert(ids.end(), s.begin(), s.end());
    }
    const double lr = step < settings.warmup_steps
                          ? settings.learning_rate * double(step + 1) / double(settings.warmup_steps)
                          : settings.learning_rate * 0.5 *
                                (1 + std::cos(std::numbers::pi * double(step - settings.warmup_steps) /
                                              double(std::max<index_t>(1, settings.steps - settings.warmup_steps))));
    optimizer.set_learning_rate(lr);
    zero_gradients(params);
    const auto labels = next_token_labels(ids, counted, tokens);
    const auto logits = model.forward_tokens(ids, token_layout{batch, tokens, 0, std::vector<index_t>(std::size_t(batch), 0)});
    gradient.resize(model.backend(), logits.shape());
    const double loss = token_cross_entropy_loss<B>(logits, labels, gradient);
    if (!std::isfinite(loss)) throw_runtime_error(where, concat("the loss is ", loss, " at step ", step, "; lower the learning rate"));
    model.backward(gradient);
    if (settings.clip_norm > 0) clip_gradient_norm(params, settings.clip_norm);
    optimizer.step();
    if (step == 0) report.first_loss = loss;
    window += loss, ++in_window;
    report.tokens += batch * (tokens - 1);
    if ((step + 1) % settings.report_every == 0 || step + 1 == settings.steps) {
      report.final_loss = window / double(in_window);
      if (progress) progress(step + 1, report.final_loss);
      window = 0, in_window = 0;
    }
  }
  report.steps = settings.steps;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace treelora

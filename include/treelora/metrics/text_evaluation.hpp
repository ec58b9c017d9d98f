// treelora/metrics/text_evaluation.hpp: scoring a language model on a text task (docs/text-benchmark.md):
//   evaluate_text_task:  greedy answers to every test prompt (models/causal_lm.hpp, key/value cache, batched), the
//                        answer decoded up to EOS, scored by the task's metric (metrics/text_metrics.hpp), in [0, 1];
//   answer_loss (answer_loss_tokens on examples already tokenized): the held-out loss, next-token cross-entropy over the answer tokens and EOS only, the mean
//                        over every counted token of the set (not a mean of batch means).
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "treelora/data/text_batches.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/metrics/text_metrics.hpp"
#include "treelora/models/causal_lm.hpp"

namespace treelora {

struct text_evaluation_options {
  index_t batch_size = 16;
  index_t max_new_tokens = 32;  ///< generation stops at EOS or here
  text_batch_options budgets = {};
};

struct text_evaluation {
  double score = 0;                      ///< the mean of the metric over the examples, in [0, 1]
  std::vector<std::string> predictions;  ///< the decoded answers, in example order
};

/// Greedy answers to prompts already tokenized (`examples[i].prompt`: BOS + ids), decoded by `decode` (ids ->
/// text) and scored by `metric` against `answers`.
template <class LM, class Decode>
text_evaluation evaluate_text_prompts(LM& model, std::span<const tokenized_example> examples, std::span<const std::string> answers,
                                      std::string_view metric, index_t eos, Decode&& decode, index_t batch_size,
                                      index_t max_new_tokens) {
  if (examples.empty()) throw_invalid_argument("evaluate_text_task", "no examples");
  if (examples.size() != answers.size())
    throw_invalid_argument("evaluate_text_task", concat(examples.size(), " prompts for ", answers.size(), " answers"));
  if (batch_size <= 0) throw_invalid_argument("evaluate_text_task", concat("batch size ", batch_size, " must be positive"));
  text_evaluation out;
  std::vector<std::vector<index_t>> prompts;
  std::vector<std::int32_t> answer;
  for (std::size_t first = 0; first < examples.size(); first += std::size_t(batch_size)) {
    const std::size_t last = std::min(examples.size(), first + std::size_t(batch_size));
    prompts.clear();
    for (std::size_t i = first; i < last; ++i) prompts.push_back(examples[i].prompt);
    const auto generated = generate_greedy(model, prompts, {.max_new_tokens = max_new_tokens, .stop_ids = {eos}});
    for (const auto& ids : generated.tokens) {
      answer.clear();
      for (index_t id : ids)
        if (id != eos) answer.push_back(static_cast<std::int32_t>(id));
      out.predictions.push_back(decode(std::span<const std::int32_t>(answer)));
    }
  }
  out.score = mean_text_score(std::string(metric), out.predictions, std::vector<std::string>(answers.begin(), answers.end()));
  return out;
}

/// Greedy answers to `examples`' prompts, scored by `metric` against their answers.
template <class LM, Tokenizer T>
text_evaluation evaluate_text_task(LM& model, const T& tokenizer, const std::vector<text_example>& examples,
                                   std::string_view metric, const text_evaluation_options& options = {}) {
  if (examples.empty()) throw_invalid_argument("evaluate_text_task", "no examples");
  std::vector<tokenized_example> tokenized;
  std::vector<std::string> targets;
  for (const auto& e : examples) {
    tokenized.push_back(tokenize_example(tokenizer, e, options.budgets));
    targets.push_back(e.answer);
  }
  return evaluate_text_prompts(model, tokenized, targets, metric, tokenizer.eos_id(),
                               [&](std::span<const std::int32_t> ids) { return tokenizer.decode(ids); }, options.batch_size,
                               options.max_new_tokens);
}

/// The mean next-token cross-entropy over the answer tokens and EOS of examples already tokenized, left-padded with
/// `pad` in batches of `batch_size` (forward only; the mean over every counted token, not a mean of batch means).
template <class LM>
double answer_loss_tokens(LM& model, std::span<const tokenized_example> examples, index_t pad, index_t batch_size) {
  using B = typename LM::backend_type;
  if (examples.empty()) throw_invalid_argument("answer_loss", "no examples");
  if (batch_size <= 0) throw_invalid_argument("answer_loss", concat("batch size ", batch_size, " must be positive"));
  if (pad < 0) throw_invalid_argument("answer_loss", concat("pad id ", pad, ": batches of several lengths need one"));
  double total = 0;
  index_t counted_tokens = 0;
  tensor<B> gradient;
  std::vector<const tokenized_example*> pointers;
  for (std::size_t first = 0; first < examples.size(); first += std::size_t(batch_size)) {
    const std::size_t last = std::min(examples.size(), first + std::size_t(batch_size));
    pointers.clear();
    for (std::size_t i = first; i < last; ++i) pointers.push_back(&examples[i]);
    const token_batch batch = make_token_batch(pointers, pad);
    const auto labels = next_token_labels(batch.ids, batch.counted, batch.tokens);
    const index_t n = index_t(std::count_if(labels.begin(), labels.end(), [](index_t l) { return l != ignored_label; }));
    if (n == 0) continue;
    const auto logits = model.forward_tokens(batch.ids, left_padded_layout(batch.ids, batch.batch, batch.tokens, pad));
    gradient.resize(model.backend(), logits.shape());
    total += token_cross_entropy_loss<B>(logits, labels, gradient) * double(n);
    counted_tokens += n;
  }
  if (counted_tokens == 0) throw_invalid_argument("answer_loss", "no answer token to score");
  return total / double(counted_tokens);
}

/// The mean next-token cross-entropy over the answer tokens and EOS of `examples` (forward only).
template <class LM, Tokenizer T>
double answer_loss(LM& model, const T& tokenizer, const std::vector<text_example>& examples, const text_evaluation_options& options = {}) {
  if (examples.empty()) throw_invalid_argument("answer_loss", "no examples");
  const index_t pad = model.pad_token_id();
  if (pad < 0) throw_invalid_argument("answer_loss", "the model has no pad_token_id: batches of several lengths need one");
  std::vector<tokenized_example> tokenized;
  for (const auto& e : examples) tokenized.push_back(tokenize_example(tokenizer, e, options.budgets));
  return answer_loss_tokens(model, std::span<const tokenized_example>(tokenized), pad, options.batch_size);
}

}  // namespace treelora

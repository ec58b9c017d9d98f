// treelora/data/text_batches.hpp: text examples ({prompt, answer}, data/text_tasks.hpp) as a language model reads
// them (docs/text-benchmark.md):
//   tokenize_example:  prompt = BOS + the prompt's ids, answer = the answer's ids + EOS, each cut to a token budget
//                      (a prompt keeps its END: the answer follows the last words of the prompt; an answer keeps its
//                      start, and its EOS stays: the model must learn to stop);
//   make_token_batch:  sequences = prompt + answer, padded on the LEFT to the longest (TRACE's convention, and what
//                      models/causal_lm.hpp's token_layout reads), with `counted` marking the answer and EOS: the
//                      tokens the loss counts (next_token_labels, layers/cross_entropy.hpp);
//   tokenize_stream:   text tasks -> a token_stream, what the runner trains a language model on
//                      (strategy/text_runner.hpp): every example tokenized once, the test answers kept as text.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/data/text_tasks.hpp"
#include "treelora/tokenizer/tokenizer.hpp"

namespace treelora {

struct text_batch_options {
  index_t max_prompt_tokens = 192;  ///< BOS included
  index_t max_answer_tokens = 64;   ///< EOS included
};

/// One example as ids.
struct tokenized_example {
  std::vector<index_t> prompt;  ///< BOS + the prompt's last tokens
  std::vector<index_t> answer;  ///< the answer's first tokens + EOS
};

/// A [batch, tokens] left-padded batch and the answer mask.
struct token_batch {
  index_t batch = 0, tokens = 0;
  std::vector<index_t> ids;              ///< row-major, padding = pad_id
  std::vector<unsigned char> counted;    ///< 1 on answer tokens and EOS
};

/// Throws std::invalid_argument when the tokenizer has no BOS or EOS, or a budget leaves no room for text.
template <Tokenizer T>
tokenized_example tokenize_example(const T& tokenizer, const text_example& example, const text_batch_options& options = {}) {
  if (tokenizer.bos_id() < 0 || tokenizer.eos_id() < 0)
    throw_invalid_argument("tokenize_example", "the tokenizer has no BOS or no EOS token (a sequence needs both)");
  if (options.max_prompt_tokens < 2 || options.max_answer_tokens < 2)
    throw_invalid_argument("tokenize_example", concat("budgets of ", options.max_prompt_tokens, " prompt and ",
                                                      options.max_answer_tokens, " answer tokens leave no room for text "
                                                      "beside BOS and EOS"));
  tokenized_example out;
  const auto prompt = tokenizer.encode(example.prompt), answer = tokenizer.encode(example.answer);
  const std::size_t prompt_kept = std::min(prompt.size(), std::size_t(options.max_prompt_tokens - 1));
  out.prompt.reserve(prompt_kept + 1);
  out.prompt.push_back(tokenizer.bos_id());
  out.prompt.insert(out.prompt.end(), prompt.end() - std::ptrdiff_t(prompt_kept), prompt.end());
  const std::size_t answer_kept = std::min(answer.size(), std::size_t(options.max_answer_tokens - 1));
  out.answer.assign(answer.begin(), answer.begin() + std::ptrdiff_t(answer_kept));
  out.answer.push_back(tokenizer.eos_id());
  return out;
}

/// The examples as one left-padded batch (pad_id fills the left; it must be an id of the vocabulary, and a sequence
/// must not start with it: every one starts with BOS).
inline token_batch make_token_batch(std::span<const tokenized_example* const> examples, index_t pad_id) {
  if (examples.empty()) throw_invalid_argument("make_token_batch", "no examples");
  if (pad_id < 0) throw_invalid_argument("make_token_batch", concat("pad id ", pad_id, " is not a token id"));
  token_batch out;
  out.batch = static_cast<index_t>(examples.size());
  for (const auto* e : examples) out.tokens = std::max<index_t>(out.tokens, index_t(e->prompt.size() + e->answer.size()));
  out.ids.reserve(std::size_t(out.batch * out.tokens));
  out.counted.reserve(out.ids.capacity());
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const auto& e = *examples[i];
    if (e.prompt.empty() || e.prompt.front() == pad_id)
      throw_invalid_argument("make_token_batch", concat("example ", i, " does not start with a token other than the pad id ",
                                                        pad_id, " (its padding could not be told from its text)"));
    const std::size_t padding = std::size_t(out.tokens) - e.prompt.size() - e.answer.size();
    out.ids.insert(out.ids.end(), padding, pad_id);
    out.counted.insert(out.counted.end(), padding + e.prompt.size(), 0);
    out.ids.insert(out.ids.end(), e.prompt.begin(), e.prompt.end());
    out.ids.insert(out.ids.end(), e.answer.begin(), e.answer.end());
    out.counted.insert(out.counted.end(), e.answer.size(), 1);
  }
  return out;
}

/// A text task as a language model trains on it: training and test examples as ids, the test answers as text
/// (generations are decoded and scored against them by `metric`, metrics/text_metrics.hpp).
struct token_task {
  std::string name, metric;
  std::vector<tokenized_example> train, test;
  std::vector<std::string> test_answers;
};

/// A stream of text tasks for a language model (strategy/text_runner.hpp trains on it with run_stream).
struct token_stream {
  std::string name;
  std::vector<token_task> tasks;
  index_t vocabulary = 0;       ///< ids are below it
  index_t pad_id = -1;          ///< left padding of a batch
  index_t eos_id = -1;          ///< generation stops here
  index_t max_new_tokens = 32;  ///< generation stops here too
  std::function<std::string(std::span<const std::int32_t>)> decode = {};  ///< ids -> text (the tokenizer's)
};

/// Tokenizes `tasks` once with `tokenizer` (budgets as tokenize_example). `pad_id`: the id that pads batches on the
/// left (the model's pad_token_id). The stream decodes generations with a copy of the tokenizer, or, for a tokenizer
/// that cannot be copied (sentencepiece_tokenizer), with the tokenizer itself: it must then outlive the stream.
template <Tokenizer T>
token_stream tokenize_stream(std::string name, std::span<const text_task> tasks, const T& tokenizer, index_t pad_id,
                             const text_batch_options& budgets = {}, index_t max_new_tokens = 32) {
  if (tasks.empty()) throw_invalid_argument("tokenize_stream", "no tasks");
  if (pad_id < 0 || pad_id >= tokenizer.vocab_size())
    throw_invalid_argument("tokenize_stream", concat("pad id ", pad_id, " outside the vocabulary [0, ", tokenizer.vocab_size(), ")"));
  if (max_new_tokens <= 0) throw_invalid_argument("tokenize_stream", concat("max_new_tokens ", max_new_tokens, " must be >= 1"));
  token_stream out{std::move(name), {}, tokenizer.vocab_size(), pad_id, tokenizer.eos_id(), max_new_tokens, {}};
  if constexpr (std::is_copy_constructible_v<T>)
    out.decode = [copy = std::make_shared<const T>(tokenizer)](std::span<const std::int32_t> ids) { return copy->decode(ids); };
  else
    out.decode = [&tokenizer](std::span<const std::int32_t> ids) { return tokenizer.decode(ids); };
  for (const auto& task : tasks) {
    token_task t{task.name, task.metric, {}, {}, {}};
    for (const auto& e : task.train) t.train.push_back(tokenize_example(tokenizer, e, budgets));
    for (const auto& e : task.test) {
      t.test.push_back(tokenize_example(tokenizer, e, budgets));
      t.test_answers.push_back(e.answer);
    }
    out.tasks.push_back(std::move(t));
  }
  return out;
}

}  // namespace treelora

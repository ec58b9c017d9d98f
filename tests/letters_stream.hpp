// tests/letters_stream.hpp: a tiny language-model continual-learning stream for tests of the text runner: tasks on
// letters ("copy" answers the prompt's letters, "reverse" them reversed), and a tiny Llama configuration for it.
// Shared by tests/test_text_runner.cpp and the data-parallel text tests (tests/mpi/mpi_text_parallel.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/strategy/text_runner.hpp"

namespace treelora::testing::letters_stream {

// ids: 0 pad, 1 BOS, 2 EOS, 3 "?", 4 "!", 5.. letters
constexpr index_t pad = 0, bos = 1, eos = 2, vocabulary = 16;

inline llama_config tiny(std::vector<std::string> targets = {"q_proj", "v_proj"}) {
  llama_config c;
  c.vocab_size = vocabulary, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 32, c.rope_theta = 100.0;
  c.bos_token_id = bos, c.eos_token_ids = {eos}, c.pad_token_id = pad, c.initializer_range = 0.3;
  c.lora_targets = std::move(targets), c.lora_rank = 2, c.lora_alpha = 4, c.seed = 3;
  return c;
}

inline std::string letters(std::span<const std::int32_t> ids) {
  std::string s;
  for (auto id : ids) s += id >= 5 ? char('a' + id - 5) : '#';
  return s;
}

/// Task "copy" answers the prompt's letters, "reverse" them reversed (prompts of 1-3 letters, marker 3 or 4).
inline token_task make_task(std::string name, bool reverse, std::uint64_t seed, index_t train, index_t test) {
  token_task t{std::move(name), "exact_match", {}, {}, {}};
  random::generator g(seed);
  for (index_t i = 0; i < train + test; ++i) {
    const index_t n = 1 + index_t(g.below(3));
    std::vector<index_t> body;
    for (index_t k = 0; k < n; ++k) body.push_back(5 + index_t(g.below(vocabulary - 5)));
    tokenized_example e;
    e.prompt = {bos};
    e.prompt.insert(e.prompt.end(), body.begin(), body.end());
    e.prompt.push_back(reverse ? 4 : 3);
    e.answer = body;
    if (reverse) std::reverse(e.answer.begin(), e.answer.end());
    e.answer.push_back(eos);
    if (i < train) t.train.push_back(e);
    else {
      std::vector<std::int32_t> a(e.answer.begin(), e.answer.end() - 1);
      t.test_answers.push_back(letters(a));
      t.test.push_back(std::move(e));
    }
  }
  return t;
}

inline token_stream make_stream(index_t train = 24, index_t test = 6) {
  token_stream s{"letters", {}, vocabulary, pad, eos, 4, letters};
  s.tasks.push_back(make_task("copy", false, 1, train, test));
  s.tasks.push_back(make_task("reverse", true, 2, train, test));
  return s;
}

}  // namespace treelora::testing::letters_stream

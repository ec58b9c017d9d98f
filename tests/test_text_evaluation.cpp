// Text examples as a language model reads them (data/text_batches.hpp) and scoring a model on a text task
// (metrics/text_evaluation.hpp): budgets and BOS/EOS, the left-padded batch and its answer mask, and end to end a
// tiny Llama whose adapters learn four answers: scored 1 by every metric afterwards, its held-out answer loss the
// same in batches of 1 and of 4 (padding changes nothing) and equal to the training loss of the same batch.
#include "test_support.hpp"

#include "treelora/metrics/text_evaluation.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/tokenizer/sentencepiece.hpp"

using namespace treelora;
using B = cpu_backend<float>;

namespace {

// As the stream's tasks are written (data/text_tasks.hpp): a prompt ends with a newline, an answer has no
// leading whitespace.
const std::vector<text_example> examples = {{"The capital of France is\n", "Paris.", "fr"},
                                            {"The capital of Italy is\n", "Rome.", "it"},
                                            {"Two plus two is\n", "four.", "2+2"},
                                            {"The opposite of hot is\n", "cold.", "hot"}};

const sentencepiece_tokenizer& tokenizer() {
  static const sentencepiece_tokenizer t = [] {
    std::vector<std::string> text;
    for (const auto& e : examples) text.push_back(e.prompt + e.answer);  // the trainer reads one line each
    sentencepiece_training_options options;
    options.vocab_size = 300;
    return sentencepiece_tokenizer::from_serialized(train_sentencepiece(text, options));
  }();
  return t;
}

}  // namespace

TEST_CASE("tokenize_example: BOS + the prompt's end, the answer's start + EOS, within the budgets") {
  const auto& t = tokenizer();
  const auto full = tokenize_example(t, examples[0]);
  const auto prompt = t.encode(examples[0].prompt), answer = t.encode(examples[0].answer);
  REQUIRE(prompt.size() >= 3);
  CHECK(full.prompt.size() == prompt.size() + 1);
  CHECK(full.prompt.front() == t.bos_id());
  CHECK(full.answer.back() == t.eos_id());
  CHECK(full.answer.size() == answer.size() + 1);
  const auto cut = tokenize_example(t, examples[0], {.max_prompt_tokens = 3, .max_answer_tokens = 2});
  CHECK(cut.prompt == std::vector<index_t>{t.bos_id(), prompt[prompt.size() - 2], prompt.back()});  // the END is kept
  CHECK(cut.answer == std::vector<index_t>{answer.front(), t.eos_id()});                        // the start, and EOS
  CHECK(testing::contains(testing::error_of([&] { tokenize_example(t, examples[0], {.max_prompt_tokens = 1}); }),
                          "leave no room for text"));
}

TEST_CASE("make_token_batch: left padding, the answer and EOS counted, the rest not") {
  const tokenized_example a{{1, 7, 8, 9}, {20, 2}}, b{{1, 7}, {21, 22, 2}};
  const std::vector<const tokenized_example*> both = {&a, &b};
  const auto batch = make_token_batch(both, 0);
  CHECK(batch.batch == 2);
  CHECK(batch.tokens == 6);
  CHECK(batch.ids == std::vector<index_t>{1, 7, 8, 9, 20, 2, 0, 1, 7, 21, 22, 2});
  CHECK(batch.counted == std::vector<unsigned char>{0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1});
  const auto layout = left_padded_layout(batch.ids, 2, 6, 0);
  CHECK(layout.left_padding == std::vector<index_t>{0, 1});
  // next-token labels: position t predicts token t + 1 where it counts
  const auto labels = next_token_labels(batch.ids, batch.counted, 6);
  CHECK(labels == std::vector<index_t>{ignored_label, ignored_label, ignored_label, 20, 2, ignored_label,
                                       ignored_label, ignored_label, 21, 22, 2, ignored_label});
  const tokenized_example padded_start{{0, 5}, {2}};
  const std::vector<const tokenized_example*> bad = {&padded_start};
  CHECK(testing::contains(testing::error_of([&] { make_token_batch(bad, 0); }), "example 0 does not start with a token other than the pad id 0"));
}

TEST_CASE("a tiny Llama's adapters learn four answers: every metric scores them 1, the answer loss ignores padding") {
  const auto& t = tokenizer();
  B backend;
  llama_config config = llama_config::tiny();
  config.vocab_size = t.vocab_size(), config.num_hidden_layers = 2, config.initializer_range = 0.1;
  config.bos_token_id = t.bos_id(), config.eos_token_ids = {t.eos_id()}, config.pad_token_id = 0;
  config.lora_targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  llama<B> model(backend, config);
  REQUIRE(t.pad_id() != 0);  // id 0 is <unk>: never a sequence's first token
  std::vector<tokenized_example> tokenized;
  for (const auto& e : examples) tokenized.push_back(tokenize_example(t, e));
  std::vector<const tokenized_example*> pointers;
  for (const auto& e : tokenized) pointers.push_back(&e);
  const auto batch = make_token_batch(pointers, 0);
  const auto layout = left_padded_layout(batch.ids, batch.batch, batch.tokens, 0);
  const auto labels = next_token_labels(batch.ids, batch.counted, batch.tokens);
  CHECK(evaluate_text_task(model, t, examples, "exact_match").score < 1);
  auto params = parameters(model);
  parameter_list<B> adapters;
  for (auto& p : params)
    if (p.trainable) adapters.push_back(p);
  adam<B> optimiser(adapters, {.learning_rate = 1e-2});
  tensor<B> gradient;
  double loss = 0;
  for (int step = 0; step < 60; ++step) {
    zero_gradients(adapters);
    const auto logits = model.forward_tokens(batch.ids, layout);
    gradient.resize(backend, logits.shape());
    loss = token_cross_entropy_loss<B>(logits, labels, gradient);
    model.backward(gradient);
    optimiser.step();
  }
  const auto logits = model.forward_tokens(batch.ids, layout);
  gradient.resize(backend, logits.shape());
  const double trained = token_cross_entropy_loss<B>(logits, labels, gradient);
  CHECK(trained < 0.05);
  CHECK(trained < loss + 1e-6);
  for (std::string_view metric : {"accuracy", "exact_match", "edit_similarity", "rouge_l"}) {
    INFO(metric);
    const auto result = evaluate_text_task(model, t, examples, metric, {.batch_size = 3});
    CHECK(result.score == doctest::Approx(1.0));
    CHECK(result.predictions[0] == "Paris.");
  }
  const double together = answer_loss(model, t, examples, {.batch_size = 4});
  const double one_by_one = answer_loss(model, t, examples, {.batch_size = 1});
  CHECK(together == doctest::Approx(trained).epsilon(1e-5));
  CHECK(one_by_one == doctest::Approx(together).epsilon(1e-4));
}

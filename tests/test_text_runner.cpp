// The runner on text tasks (strategy/text_runner.hpp): the step equals one written by hand (loss on the answer and
// EOS only, built here without next_token_labels), every strategy trains a language model through run_stream, the
// same seed gives the same matrices, a run stopped inside a task resumes bit for bit (the held-out loss recorder's
// rows with it), bad streams are refused, the held-out answer loss recorder matches a loss computed by hand one
// example at a time.
#include "test_support.hpp"

#include <filesystem>

#include "treelora/models/llama.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/strategy/inflora.hpp"
#include "treelora/strategy/olora.hpp"
#include "treelora/strategy/text_runner.hpp"

#include "letters_stream.hpp"

using namespace treelora;
using D = cpu_backend<double>;

namespace {

using namespace treelora::testing::letters_stream;

auto adam_at(double lr) {
  return [lr](parameter_list<D> p) { return adam<D>(std::move(p), {.learning_rate = lr}); };
}

template <class M>
std::vector<std::vector<double>> trained_values(M& model) {
  std::vector<std::vector<double>> out;
  for (auto& p : parameters(model))
    if (p.trainable) out.push_back(p.value->to_host());
  return out;
}

}  // namespace

TEST_CASE("text runner: one step equals forward, the answer-only loss and backward written by hand") {
  const token_stream stream = make_stream(4, 2);
  D backend;
  llama<D> a(backend, tiny()), b(backend, tiny());
  // a: one task of one step (batch = the whole training set), SGD
  token_stream one = stream;
  one.tasks.resize(1);
  seq_lora strategy;
  const auto sgd_at = [](parameter_list<D> p) { return sgd<D>(std::move(p), {.learning_rate = 0.5}); };
  const run_result r = run_stream(a, one, strategy, sgd_at, {.batch_size = 4, .eval_batch_size = 2, .seed = 5});
  // b: the same step by hand. The runner's order is a seeded permutation; the mean loss over answer tokens does not
  // depend on the order of the examples, and neither does its gradient.
  const auto& train = one.tasks[0].train;
  index_t width = 0;
  for (const auto& e : train) width = std::max<index_t>(width, index_t(e.prompt.size() + e.answer.size()));
  std::vector<index_t> ids, labels;
  for (const auto& e : train) {
    const index_t padding = width - index_t(e.prompt.size() + e.answer.size());
    std::vector<index_t> row(std::size_t(padding), pad);
    row.insert(row.end(), e.prompt.begin(), e.prompt.end());
    row.insert(row.end(), e.answer.begin(), e.answer.end());
    // position p predicts token p + 1; it counts when token p + 1 is an answer token or EOS
    for (index_t p = 0; p < width; ++p) {
      const bool counts = p + 1 < width && p + 1 >= padding + index_t(e.prompt.size());
      labels.push_back(counts ? row[std::size_t(p + 1)] : ignored_label);
    }
    ids.insert(ids.end(), row.begin(), row.end());
  }
  auto params = parameters(b);
  zero_gradients(params);
  const auto logits = b.forward_tokens(ids, left_padded_layout(ids, index_t(train.size()), width, pad));
  // the loss by hand: mean over counted rows of logsumexp - logit[label]
  const auto host = logits.to_host();
  double loss = 0;
  index_t counted = 0;
  for (std::size_t row = 0; row < labels.size(); ++row) {
    if (labels[row] == ignored_label) continue;
    double m = -1e300, z = 0;
    for (index_t v = 0; v < vocabulary; ++v) m = std::max(m, host[row * vocabulary + std::size_t(v)]);
    for (index_t v = 0; v < vocabulary; ++v) z += std::exp(host[row * vocabulary + std::size_t(v)] - m);
    loss += m + std::log(z) - host[row * vocabulary + std::size_t(labels[row])];
    ++counted;
  }
  loss /= double(counted);
  CHECK(r.final_loss.at(0) == doctest::Approx(loss).epsilon(1e-12));
  tensor<D> gradient(backend, logits.shape());
  token_cross_entropy_loss<D>(logits, labels, gradient);
  b.backward(gradient);
  sgd<D>(params, {.learning_rate = 0.5}).step();
  const auto va = trained_values(a), vb = trained_values(b);
  REQUIRE(va.size() == vb.size());
  for (std::size_t i = 0; i < va.size(); ++i)
    for (std::size_t k = 0; k < va[i].size(); ++k) CHECK(va[i][k] == doctest::Approx(vb[i][k]).epsilon(1e-12));
}

TEST_CASE("text runner: the tasks are learned; the same seed gives the same matrices") {
  const token_stream stream = make_stream(48, 8);
  auto run = [&] {
    D backend;
    llama_config c = tiny();
    c.lora_targets = {};  // the whole (random) model trains: LoRA alone on a random base learns little
    llama<D> model(backend, c);
    seq_lora strategy;
    return run_stream(model, stream, strategy, adam_at(3e-2), {.epochs_per_task = 15, .batch_size = 8, .eval_batch_size = 4, .seed = 1});
  };
  const run_result first = run(), second = run();
  CHECK(first.final_loss.at(0) < 1.0);
  CHECK(first.final_loss.at(1) < 1.5);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 2; ++j) {
      CHECK(first.task_il(i, j) == second.task_il(i, j));
      if (j <= i) CHECK(first.class_il(i, j) == first.task_il(i, j));
    }
  CHECK(first.before.size() == 2);
  CHECK(first.task_il(1, 1) >= first.before[1]);
  CHECK(!first.class_incremental);
}

TEST_CASE("text runner: score_later_tasks = false scores tasks 0..n + 1 after task n, the rest stays NaN") {
  token_stream stream = make_stream(8, 2);
  stream.tasks.push_back(make_task("copy again", false, 3, 8, 2));
  D backend;
  llama<D> model(backend, tiny());
  seq_lora strategy;
  const run_result r = run_stream(model, stream, strategy, adam_at(1e-2),
                                  {.batch_size = 4, .eval_batch_size = 2, .score_later_tasks = false, .seed = 1});
  CHECK(std::isfinite(r.task_il(0, 1)));
  CHECK(std::isnan(r.task_il(0, 2)));
  for (index_t j = 0; j < 3; ++j) CHECK(std::isfinite(r.task_il(2, j)));
  CHECK(std::isfinite(forward_transfer(r.task_il, r.before)));
}

/// Task `task`'s held-out answer loss by hand: each test example alone (no padding), logsumexp - logit at every
/// position whose next token is an answer token or EOS, summed over the set and divided by the count.
double answer_loss_by_hand(llama<D>& model, const token_task& task) {
  double total = 0;
  index_t counted = 0;
  for (const auto& e : task.test) {
    std::vector<index_t> ids = e.prompt;
    ids.insert(ids.end(), e.answer.begin(), e.answer.end());
    const index_t width = index_t(ids.size());
    const auto host = model.forward_tokens(ids, left_padded_layout(ids, 1, width, pad)).to_host();
    for (index_t p = index_t(e.prompt.size()) - 1; p + 1 < width; ++p) {
      double m = -1e300, z = 0;
      for (index_t v = 0; v < vocabulary; ++v) m = std::max(m, host[std::size_t(p * vocabulary + v)]);
      for (index_t v = 0; v < vocabulary; ++v) z += std::exp(host[std::size_t(p * vocabulary + v)] - m);
      total += m + std::log(z) - host[std::size_t(p * vocabulary + ids[std::size_t(p + 1)])];
      ++counted;
    }
  }
  return total / double(counted);
}

TEST_CASE("text runner: held_out_loss records each task's answer loss after every task, equal to one computed by hand") {
  token_stream stream = make_stream(24, 5);
  stream.tasks.push_back(make_task("copy again", false, 3, 24, 5));
  D backend;
  llama<D> model(backend, tiny());
  seq_lora strategy;
  held_out_loss losses(model, stream, 2);  // batches of 2: padding and several batches, against one example at a time
  const double before = losses.loss(0);
  CHECK(before == doctest::Approx(answer_loss_by_hand(model, stream.tasks[0])).epsilon(1e-10));
  (void)run_stream(model, stream, strategy, adam_at(2e-2), {.epochs_per_task = 3, .batch_size = 4, .eval_batch_size = 5, .seed = 1},
                   losses);
  const accuracy_matrix& m = losses.losses();
  REQUIRE(m.tasks() == 3);
  CHECK(std::isfinite(m(0, 1)));
  CHECK(std::isnan(m(0, 2)));  // after task n: tasks 0..n + 1
  for (index_t j = 0; j < 3; ++j) CHECK(m(2, j) == doctest::Approx(answer_loss_by_hand(model, stream.tasks[std::size_t(j)])).epsilon(1e-10));
  CHECK(m(0, 0) < before);  // the first task taught its own answers
  // bad use is refused
  CHECK_THROWS_WITH_AS(held_out_loss(model, stream, 0), doctest::Contains("batch size 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(losses.record(3), doctest::Contains("task 3 outside the stream's 3 tasks"), std::invalid_argument);
}

TEST_CASE("text runner: every strategy trains a language model") {
  const token_stream stream = make_stream(16, 4);
  const runner_options options{.epochs_per_task = 1, .batch_size = 8, .eval_batch_size = 4, .seed = 2,
                               .guard = {.enabled = true}};
  D backend;
  auto check = [&](const run_result& r) {
    INFO(r.method);
    REQUIRE(r.final_loss.size() == 2);
    for (double l : r.final_loss) CHECK(std::isfinite(l));
    for (index_t j = 0; j < 2; ++j) CHECK(std::isfinite(r.task_il(1, j)));
  };
  SUBCASE("TreeLoRA reference and paper") {
    llama<D> m1(backend, tiny()), m2(backend, tiny());
    tree_lora_reference<D> reference({.seed = 1});
    check(run_stream(m1, stream, reference, adam_at(1e-2), options));
    CHECK(reference.tree().nodes().size() > 0);
    tree_lora_paper<D> paper({.tree = {.max_depth = index_t(m2.adapters().size())}, .seed = 1});
    check(run_stream(m2, stream, paper, adam_at(1e-2), options));
    llama<D> m3(backend, tiny());
    tree_lora_thompson<D> thompson({.seed = 1});
    check(run_stream(m3, stream, thompson, adam_at(1e-2), options));
  }
  SUBCASE("O-LoRA") {
    llama<D, olora> model(backend, tiny(), {.rank = 2, .alpha = 4, .seed = 1});
    olora_strategy<D> strategy;
    check(run_stream(model, stream, strategy, adam_at(1e-2), options));
    CHECK(strategy.state_bytes() > 0);
  }
  SUBCASE("InfLoRA: its passes over the task's training set go through the runner") {
    llama<D, inflora> model(backend, tiny({"k_proj", "v_proj"}), {.rank = 2, .seed = 1});
    inflora_strategy strategy;
    check(run_stream(model, stream, strategy, adam_at(1e-2), options));
    REQUIRE(strategy.memories().size() == model.factorized_adapters().size());
    for (const auto& m : strategy.memories()) CHECK(m.rank() > 0);
  }
  SUBCASE("DualLoRA: every token gated by its own input; the covariance pass goes through the runner") {
    llama<D, dual_lora> model(backend, tiny(), {.rank = 2, .feature = dual_feature::every_token, .seed = 1});
    dual_lora_strategy<D> strategy({.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last,
                                    .calibration = dual_calibration::none, .collection_batch_size = 8});
    check(run_stream(model, stream, strategy, adam_at(1e-2), options));
    REQUIRE(strategy.memories().size() == model.factorized_adapters().size());
    for (const auto& m : strategy.memories()) CHECK(m.rank() > 0);
    for (auto* a : model.factorized_adapters()) {
      CHECK(a->residual_tasks() == 2);
      // the last forward (a generation step) scored every token row, not one row per sample
      CHECK(a->scores().cols() == 2);
    }
    // without a stream nothing may need class labels
    CHECK_THROWS_WITH_AS(dual_lora_strategy<D>(dual_lora_options{}), doctest::Contains("without a task_stream"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(dual_lora_strategy<D>(dual_lora_options{.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last}),
                         doctest::Contains("calibration none"), std::invalid_argument);
  }
  SUBCASE("joint") {
    llama<D> model(backend, tiny());
    seq_lora strategy;
    const run_result r = run_joint(model, stream, strategy, adam_at(1e-2), options);
    CHECK(r.method == "Joint");
    for (index_t j = 0; j < 2; ++j) CHECK(std::isfinite(r.task_il(1, j)));
    CHECK(std::isnan(r.task_il(0, 0)));
  }
}

TEST_CASE("text runner: a run stopped inside a task resumes bit for bit, its held-out losses too") {
  const token_stream stream = make_stream(16, 4);
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_text_runner_", ::getpid());
  std::filesystem::create_directories(folder);
  const auto file = folder / "run.safetensors";
  runner_options options{.epochs_per_task = 2, .batch_size = 8, .eval_batch_size = 4, .seed = 4};
  D backend;
  llama<D> whole(backend, tiny());
  tree_lora_paper<D> s1({.seed = 3});
  held_out_loss whole_losses(whole, stream, 4, true);
  const run_result expected = run_stream(whole, stream, s1, adam_at(1e-2), options, whole_losses);
  const auto same_losses = [](const accuracy_matrix& a, const accuracy_matrix& b) {
    bool same = a.tasks() == b.tasks();
    for (index_t i = 0; same && i < a.tasks(); ++i)
      for (index_t j = 0; j < a.tasks(); ++j)
        same = same && (std::isnan(a(i, j)) ? std::isnan(b(i, j)) : a(i, j) == b(i, j));
    return same;
  };
  CHECK(std::isfinite(whole_losses.losses()(0, 0)));

  struct stop_at {
    index_t step;
    void on_step(const training_context& c, double) const {
      if (c.global_step + 1 == step) throw std::runtime_error("stopped");
    }
  } stop{7};
  options.checkpoint = file, options.checkpoint_every_steps = 3, options.resume = true;
  {
    llama<D> model(backend, tiny());
    tree_lora_paper<D> s({.seed = 3});
    held_out_loss losses(model, stream, 4, true);
    CHECK_THROWS_WITH(run_stream(model, stream, s, adam_at(1e-2), options, stop, losses), doctest::Contains("stopped"));
    CHECK(std::isfinite(losses.losses()(0, 0)));  // task 0's row was recorded before the stop (in task 1)
  }
  llama<D> resumed(backend, tiny());
  tree_lora_paper<D> s2({.seed = 3});
  held_out_loss resumed_losses(resumed, stream, 4, true);  // fresh: task 0's row must come from the checkpoint
  const run_result got = run_stream(resumed, stream, s2, adam_at(1e-2), options, resumed_losses);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 2; ++j) CHECK(got.task_il(i, j) == expected.task_il(i, j));
  CHECK(got.final_loss == expected.final_loss);
  CHECK(trained_values(resumed) == trained_values(whole));
  CHECK(same_losses(resumed_losses.losses(), whole_losses.losses()));
  {  // the finished run's checkpoint holds the recorder's rows: resumed without it, the unread part is named
    llama<D> model(backend, tiny());
    tree_lora_paper<D> s({.seed = 3});
    CHECK_THROWS_WITH(run_stream(model, stream, s, adam_at(1e-2), options), doctest::Contains("callback0.losses"));
  }
  // another stream: refused, naming the field
  token_stream other = stream;
  other.tasks[1].train[0].answer[0] = 5 + (other.tasks[1].train[0].answer[0] - 4) % (vocabulary - 5);
  llama<D> model(backend, tiny());
  tree_lora_paper<D> s3({.seed = 3});
  CHECK_THROWS_WITH(run_stream(model, other, s3, adam_at(1e-2), options), doctest::Contains("stream_fingerprint"));
  std::filesystem::remove_all(folder);
}

TEST_CASE("text runner: DualLoRA on a language model stopped inside its second task resumes bit for bit") {
  const token_stream stream = make_stream(16, 4);
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_text_runner_dual_", ::getpid());
  std::filesystem::create_directories(folder);
  runner_options options{.epochs_per_task = 2, .batch_size = 8, .eval_batch_size = 4, .seed = 4};
  const dual_lora::config adapters{.rank = 2, .feature = dual_feature::every_token, .seed = 1};
  const dual_lora_options settings{.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last,
                                   .calibration = dual_calibration::none, .collection_batch_size = 8};
  D backend;
  llama<D, dual_lora> whole(backend, tiny(), adapters);
  dual_lora_strategy<D> s1(settings);
  const run_result expected = run_stream(whole, stream, s1, adam_at(1e-2), options);
  struct stop_at {
    void on_step(const training_context& c, double) const {
      if (c.global_step + 1 == 7) throw std::runtime_error("stopped");  // task 1, its second epoch
    }
  } stop;
  options.checkpoint = folder / "run.safetensors", options.checkpoint_every_steps = 3, options.resume = true;
  {
    llama<D, dual_lora> model(backend, tiny(), adapters);
    dual_lora_strategy<D> s(settings);
    CHECK_THROWS_WITH(run_stream(model, stream, s, adam_at(1e-2), options, stop), doctest::Contains("stopped"));
  }
  llama<D, dual_lora> resumed(backend, tiny(), adapters);
  dual_lora_strategy<D> s2(settings);
  const run_result got = run_stream(resumed, stream, s2, adam_at(1e-2), options);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 2; ++j) CHECK(got.task_il(i, j) == expected.task_il(i, j));
  CHECK(got.final_loss == expected.final_loss);
  CHECK(trained_values(resumed) == trained_values(whole));
  std::filesystem::remove_all(folder);
}

TEST_CASE("text runner: bad streams are refused with the task and example named") {
  D backend;
  llama<D> model(backend, tiny());
  seq_lora strategy;
  const runner_options options{.batch_size = 4};
  auto refused = [&](token_stream s, const char* what) {
    CHECK_THROWS_WITH_AS(run_stream(model, s, strategy, adam_at(1e-2), options), doctest::Contains(what), std::invalid_argument);
  };
  token_stream s = make_stream(4, 2);
  s.tasks[1].train[2].answer[0] = vocabulary;
  refused(s, "task 1 'reverse' training example 2 holds the id 16");
  s = make_stream(4, 2);
  s.tasks[0].test[1].prompt[0] = pad;
  refused(s, "task 0 'copy' test example 1 has an empty prompt or one that starts with the pad id");
  s = make_stream(4, 2);
  s.tasks[0].metric = "bleu";
  refused(s, "unknown metric 'bleu'");
  s = make_stream(4, 2);
  s.tasks[1].test_answers.pop_back();
  refused(s, "2 test examples and 1 answers");
  s = make_stream(4, 2);
  s.vocabulary = 40;
  CHECK_THROWS_WITH(run_stream(model, s, strategy, adam_at(1e-2), options), doctest::Contains("the model's vocabulary 16"));
}

// tests/test_checkpoint.cpp: continual-learning checkpoints (io/checkpoint.hpp; runner_options::checkpoint and
// resume): the archive's round trips and refusals, a damaged file refused at every truncation and every flipped
// byte, and every strategy stopped before each task in turn, resumed from its checkpoint by a fresh process state
// (new backend, model and strategy), and compared with the run that did not stop, bit for bit.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include <unistd.h>

#include "test_inflora_stream.hpp"
#include "test_support.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/strategy/inflora.hpp"
#include "treelora/strategy/olora.hpp"

using namespace treelora;
using treelora::testing::contains;
using F = cpu_backend<float>;
using D = cpu_backend<double>;

namespace {

std::filesystem::path scratch(const std::string& name) {
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_test_checkpoint_", ::getpid());
  std::filesystem::create_directories(folder);
  return folder / name;
}

/// The message and field of the checkpoint_error `f` throws.
template <class Function>
std::pair<std::string, std::string> refusal_of(Function&& f) {
  try {
    f();
  } catch (const checkpoint_error& e) {
    return {e.what(), e.field()};
  }
  FAIL("expected a checkpoint_error");
  return {};
}

bool same_bits(double a, double b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits(const accuracy_matrix& a, const accuracy_matrix& b) {
  if (a.tasks() != b.tasks()) return false;
  for (index_t i = 0; i < a.tasks(); ++i)
    for (index_t j = 0; j < a.tasks(); ++j)
      if (!same_bits(a(i, j), b(i, j))) return false;
  return true;
}
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

template <class M>
std::vector<std::pair<std::string, std::vector<float>>> model_state(M& model) {
  parameter_list<F> all;
  model.collect_parameters(all, "");
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (auto& p : all) out.push_back({p.name, p.value->to_host()});
  return out;
}

/// Throws when task `task` is about to start: the run "crashes" right after task - 1's checkpoint was written.
struct stop_before_task {
  index_t task;
  void on_task_begin(const training_context& c) const {
    if (c.task == task) throw std::runtime_error("stopped on purpose");
  }
};

auto adam_1e2() {
  return [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); };
}

/// Throws at global step `step` (0-based): the run "crashes" one step after a mid-task checkpoint (every step).
struct stop_at_step {
  index_t step;
  void on_step(const training_context& c, double) const {
    if (c.global_step == step) throw std::runtime_error("stopped on purpose");
  }
};

/// Runs the stream without stopping, then for every k in [1, tasks): a fresh run stopped before task k, a fresh
/// model and strategy resumed from its checkpoint; the resumed run's results and final weights must equal the
/// uninterrupted run's bit for bit. With options.checkpoint_every_steps = 1, the runs stop at every step instead.
template <class MakeModel, class MakeStrategy>
void check_resume(const std::string& name, const task_stream& stream, MakeModel make_model, MakeStrategy make_strategy,
                  runner_options options = {.epochs_per_task = 2, .batch_size = 16, .seed = 3}) {
  INFO(name);
  const auto path = scratch(name + ".safetensors");
  options.checkpoint = path;
  F backend;
  auto model = make_model(backend);
  auto strategy = make_strategy();
  const run_result full = run_stream(*model, stream, *strategy, adam_1e2(), options);
  const auto full_state = model_state(*model);
  const index_t tasks = index_t(stream.tasks.size());
  const bool by_step = options.checkpoint_every_steps > 0;
  for (index_t k = 1; k < (by_step ? full.steps : tasks); ++k) {
    INFO(std::string(by_step ? "stopped at step " : "stopped before task "), k);
    std::filesystem::remove(path);
    {
      F b;
      auto m = make_model(b);
      auto s = make_strategy();
      stop_at_step at{k};
      stop_before_task before{k};
      if (by_step)
        CHECK_THROWS_WITH(run_stream(*m, stream, *s, adam_1e2(), options, at), doctest::Contains("stopped on purpose"));
      else
        CHECK_THROWS_WITH(run_stream(*m, stream, *s, adam_1e2(), options, before), doctest::Contains("stopped on purpose"));
    }
    REQUIRE(std::filesystem::exists(path));
    F b;
    auto m = make_model(b);
    auto s = make_strategy();
    runner_options resume = options;
    resume.resume = true;
    const run_result resumed = run_stream(*m, stream, *s, adam_1e2(), resume);
    CHECK(same_bits(full.task_il, resumed.task_il));
    CHECK(same_bits(full.class_il, resumed.class_il));
    CHECK(same_bits(full.task_identity, resumed.task_identity));
    CHECK(same_bits(full.before, resumed.before));
    CHECK(same_bits(full.final_loss, resumed.final_loss));
    CHECK(full.state_bytes == resumed.state_bytes);
    CHECK(full.steps == resumed.steps);
    CHECK(full.trainable_parameters == resumed.trainable_parameters);
    CHECK(resumed.train_seconds.size() == std::size_t(tasks));
    CHECK(model_state(*m) == full_state);
  }
  std::filesystem::remove(path);
}

vit_config dropout_vit(index_t classes) {
  auto c = treelora::testing::tiny_vit(classes, {"q", "v"});
  c.lora_dropout = 0.1;  // the resumed run must continue the dropout stream where it was
  return c;
}

}  // namespace

TEST_CASE("checkpoint archive: values, tensors and matrices round-trip exactly") {
  F fb;
  D db;
  auto t = treelora::testing::random_tensor(fb, shape{3, 5}, 1);
  auto td = treelora::testing::random_tensor(db, shape{2, 2, 2}, 2);
  tensor<F> empty;
  Eigen::MatrixXd m = treelora::testing::random_matrix(4, 3, 3), none(5, 0);
  double nan = std::nan(""), inf = -std::numeric_limits<double>::infinity(), third = 1.0 / 3.0;
  float f = 0.1f;
  std::uint64_t big = std::numeric_limits<std::uint64_t>::max();
  index_t negative = -7;
  std::string text = "a \"quoted\" \xc3\xa9 text";
  std::vector<std::vector<index_t>> nested = {{1, 2}, {}, {3}};
  tree_lora_mode mode = tree_lora_mode::paper;

  checkpoint_writer w;
  auto s = w.scope("part");
  s.value("nan", nan), s.value("inf", inf), s.value("third", third), s.value("f", f), s.value("big", big);
  s.value("negative", negative), s.value("text", text), s.value("nested", nested), s.value("mode", mode);
  s.tensor("t", t, fb), s.tensor("td", td, db), s.tensor("empty", empty, fb);
  s.host_matrix("m", m), s.host_matrix("none", none);
  s.expect("rank", index_t(8));
  const std::string bytes = w.serialize();

  checkpoint_reader r(bytes, "memory");
  auto q = r.scope("part");
  double nan2 = 0, inf2 = 0, third2 = 0;
  float f2 = 0;
  std::uint64_t big2 = 0;
  index_t negative2 = 0;
  std::string text2;
  std::vector<std::vector<index_t>> nested2;
  tree_lora_mode mode2 = tree_lora_mode::reference;
  tensor<F> t2, empty2 = treelora::testing::random_tensor(fb, shape{2}, 4);
  tensor<D> td2;
  Eigen::MatrixXd m2, none2;
  q.value("nan", nan2), q.value("inf", inf2), q.value("third", third2), q.value("f", f2), q.value("big", big2);
  q.value("negative", negative2), q.value("text", text2), q.value("nested", nested2), q.value("mode", mode2);
  q.tensor("t", t2, fb), q.tensor("td", td2, db), q.tensor("empty", empty2, fb);
  q.host_matrix("m", m2), q.host_matrix("none", none2);
  q.expect("rank", index_t(8));
  r.finish();
  CHECK(std::isnan(nan2));
  CHECK(inf2 == inf);
  CHECK(same_bits(third2, third));
  CHECK(f2 == f);
  CHECK(big2 == big);
  CHECK(negative2 == -7);
  CHECK(text2 == text);
  CHECK(nested2 == nested);
  CHECK(mode2 == tree_lora_mode::paper);
  CHECK(t2.shape() == t.shape());
  CHECK(t2.to_host() == t.to_host());
  CHECK(td2.to_host() == td.to_host());
  CHECK(empty2.empty());
  CHECK(m2 == m);
  CHECK((none2.rows() == 5 && none2.cols() == 0));
  // The same tensors and values serialize to the same bytes (the file is a function of its contents).
  checkpoint_writer again;
  auto s2 = again.scope("part");
  s2.value("nan", nan), s2.value("inf", inf), s2.value("third", third), s2.value("f", f), s2.value("big", big);
  s2.value("negative", negative), s2.value("text", text), s2.value("nested", nested), s2.value("mode", mode);
  s2.tensor("t", t, fb), s2.tensor("td", td, db), s2.tensor("empty", empty, fb);
  s2.host_matrix("m", m), s2.host_matrix("none", none);
  s2.expect("rank", index_t(8));
  CHECK(again.serialize() == bytes);
  // A field written twice is a programming error.
  CHECK_THROWS_AS(s2.value("f", f), std::logic_error);
}

TEST_CASE("checkpoint archive: every refusal names the file and the field") {
  F fb;
  D db;
  auto t = treelora::testing::random_tensor(fb, shape{3, 5}, 1);
  index_t steps = 12;
  checkpoint_writer w;
  w.value("steps", steps), w.tensor("t", t, fb), w.expect("rank", index_t(8)), w.expect("name", std::string("SeqLoRA"));
  std::size_t n = 3;
  w.count("n", n);
  const std::string bytes = w.serialize();

  {  // a configuration that differs: both values and the field
    checkpoint_reader r(bytes, "ck.safetensors");
    const auto [what, field] = refusal_of([&] { r.expect("rank", index_t(4)); });
    CHECK(field == "rank");
    CHECK(contains(what, "checkpoint 'ck.safetensors', field 'rank': the checkpoint was written with 8, this run has 4"));
    CHECK(refusal_of([&] { r.expect("name", std::string("O-LoRA")); }).second == "name");
    CHECK(refusal_of([&] { r.expect("missing", 1); }).second == "missing");
  }
  {  // state of the wrong type, a missing tensor, the wrong precision, the wrong shape, a tensor read as a value
    checkpoint_reader r(bytes, "ck");
    std::string s;
    CHECK(refusal_of([&] { r.value("steps", s); }).second == "steps");
    bool flag = false;
    CHECK(contains(refusal_of([&] { r.value("steps", flag); }).first, "which is not a boolean"));
    std::uint8_t small = 0;
    tensor<F> out;
    CHECK(refusal_of([&] { r.tensor("u", out, fb); }).second == "u");
    tensor<D> wrong;
    CHECK(contains(refusal_of([&] { r.tensor("t", wrong, db); }).first, "stored as F32 but this backend computes in F64"));
    CHECK(contains(refusal_of([&] { r.tensor_of_shape("t", out, fb, shape{5, 3}); }).first, "has shape [3, 5], expected [5, 3]"));
    CHECK(refusal_of([&] { r.value("t", small); }).second == "t");
    // the state nobody read
    CHECK(contains(refusal_of([&] { r.finish(); }).first, "field(s) this run does not read"));
  }
  {  // a count is bounded by the file's fields
    checkpoint_writer big;
    std::size_t claimed = 1000000000;
    big.value("n", claimed);
    const std::string b = big.serialize();
    checkpoint_reader r(b, "ck");
    std::size_t got = 0;
    CHECK(contains(refusal_of([&] { r.count("n", got); }).first, "count 1000000000 is more than the 1 fields the file holds"));
  }
  {  // another format version or library version (checksums re-stamped: a hand-made file)
    for (auto [from, to, field] : {std::tuple{"\\\"format_version\\\":1", "\\\"format_version\\\":2", "format_version"},
                                   std::tuple{"\\\"library_version\\\":\\\"", "\\\"library_version\\\":\\\"9", "library_version"},
                                   std::tuple{"treelora-checkpoint", "treelora-checkpoinT", "format"}}) {
      std::string edited = bytes;
      const auto at = edited.find(from);
      REQUIRE(at != std::string::npos);
      edited.replace(at, std::strlen(from), to);
      // keep the header length: re-serialise through a plain safetensors edit is not needed when lengths match
      if (std::strlen(from) != std::strlen(to)) {
        // adjust N (the header may now end inside padding) by rebuilding: only the padding changes
        std::uint64_t header = 0;
        std::memcpy(&header, edited.data(), 8);
        const auto grow = std::strlen(to) - std::strlen(from);
        const std::size_t padding_end = 8 + header + grow;
        std::size_t spaces = 0;
        while (spaces < grow && edited[padding_end - 1 - spaces] == ' ') ++spaces;
        if (spaces == grow) edited.erase(padding_end - grow, grow);
        else {
          edited.insert(padding_end, 8 - grow, ' ');
          header += 8;
          std::memcpy(edited.data(), &header, 8);
        }
      }
      REQUIRE(restamp_checkpoint_checksum(edited));
      CHECK(refusal_of([&] { checkpoint_reader(edited, "ck"); }).second == field);
    }
  }
  {  // not a checkpoint: a plain safetensors file, and not a safetensors file at all
    safetensors_writer plain;
    const std::vector<float> values = {1, 2};
    plain.add("x", std::vector<std::uint64_t>{2}, std::span<const float>(values));
    CHECK(contains(refusal_of([&] { checkpoint_reader(plain.serialize(), "plain"); }).first, "not a treelora checkpoint"));
    CHECK(contains(refusal_of([&] { checkpoint_reader(std::string("hello"), "text"); }).first, "not a readable safetensors file"));
    CHECK(contains(refusal_of([&] { checkpoint_reader(scratch("does-not-exist")); }).first, "cannot be read"));
  }
}

TEST_CASE("checkpoint archive: every truncation and every flipped byte is refused") {
  F fb;
  auto t = treelora::testing::random_tensor(fb, shape{4, 6}, 1);
  checkpoint_writer w;
  index_t steps = 5;
  w.value("steps", steps), w.tensor("t", t, fb), w.expect("rank", index_t(8));
  const std::string bytes = w.serialize();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("truncated to ", n, " bytes");
    CHECK_THROWS_AS(checkpoint_reader(bytes.substr(0, n), "ck"), checkpoint_error);
  }
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (unsigned char flip : {0x01, 0x80}) {
      INFO("byte ", i, " xor ", int(flip));
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(static_cast<unsigned char>(damaged[i]) ^ flip);
      CHECK_THROWS_AS(checkpoint_reader(damaged, "ck"), checkpoint_error);
    }
  // and the intact file reads
  checkpoint_reader r(bytes, "ck");
  index_t back = 0;
  r.value("steps", back);
  CHECK(back == 5);
}

TEST_CASE("checkpoint files are written atomically and read memory-mapped") {
  F fb;
  auto t = treelora::testing::random_tensor(fb, shape{4, 6}, 1);
  checkpoint_writer w;
  w.tensor("t", t, fb);
  const auto path = scratch("atomic.safetensors");
  w.write(path);
  checkpoint_reader r(path);
  tensor<F> back;
  r.tensor("t", back, fb);
  CHECK(back.to_host() == t.to_host());
  r.finish();
  CHECK_THROWS_AS(w.write(scratch("no/such/folder/x.safetensors")), std::runtime_error);
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path()))  // no temporary left behind
    CHECK((entry.path() == path || entry.path().filename().string().find(".tmp") == std::string::npos));
  std::filesystem::remove(path);
}

TEST_CASE("resume: SeqLoRA with adapter dropout continues bit for bit after every task") {
  const auto stream = treelora::testing::prototype_image_stream(3, 16, 8);
  check_resume("seqlora", stream, [&](F& b) { return std::make_unique<vit<F>>(b, dropout_vit(stream.total_classes)); },
               [] { return std::make_unique<seq_lora>(); });
}

TEST_CASE("resume: TreeLoRA, reference and paper mode, continues bit for bit after every task") {
  const auto stream = treelora::testing::prototype_image_stream(4, 16, 8);
  const auto make_model = [&](F& b) { return std::make_unique<vit<F>>(b, dropout_vit(stream.total_classes)); };
  check_resume("treelora-reference", stream, make_model, [] { return std::make_unique<tree_lora_reference<F>>(); });
  check_resume("treelora-paper", stream, make_model, [] { return std::make_unique<tree_lora_paper<F>>(); });
  check_resume("treelora-paper-budget", stream, make_model, [] {
    return std::make_unique<tree_lora_paper<F, top_k_rule>>(tree_lora_config{.tree = {.storage_budget = 2}}, top_k_rule{});
  });
}

TEST_CASE("resume: InfLoRA (merged and kept branches) and O-LoRA continue bit for bit after every task") {
  const auto stream = treelora::testing::prototype_image_stream(3, 16, 8);
  for (bool merge : {true, false}) {
    check_resume(concat("inflora-merge-", merge), stream,
                 [&](F& b) {
                   return std::make_unique<vit<F, inflora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"k", "v"}),
                                                            inflora::config{.rank = 4, .merge_finished = merge});
                 },
                 [&] { return std::make_unique<inflora_strategy>(stream); });
    check_resume(concat("olora-merge-", merge), stream,
                 [&](F& b) {
                   return std::make_unique<vit<F, olora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}),
                                                          olora::config{.rank = 4, .merge_finished = merge});
                 },
                 [] { return std::make_unique<olora_strategy<F>>(olora_options{.l2 = 1e-4}); });
  }
}

TEST_CASE("resume: DualLoRA (statistics and energy task scores, both orthogonal choices) continues bit for bit") {
  const auto stream = treelora::testing::prototype_image_stream(3, 16, 8);
  struct variant {
    std::string name;
    dual_lora::config adapter;
    dual_lora_options options;
  };
  for (const auto& v : std::vector<variant>{
           {"duallora", {.rank = 4}, {}},
           {"duallora-energy-fitted", {.rank = 4, .orthogonal = dual_orthogonal::shared_projected},
            {.task_score = dual_task_score::energy, .fit_temperature = true}}})
    check_resume(v.name, stream,
                 [&](F& b) {
                   return std::make_unique<vit<F, dual_lora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}),
                                                              v.adapter);
                 },
                 [&] { return std::make_unique<dual_lora_strategy<F>>(stream, v.options); });
}

TEST_CASE("resume refuses a checkpoint of another configuration, strategy, model or stream, naming the field") {
  const auto stream = treelora::testing::prototype_image_stream(2, 8, 4);
  const auto path = scratch("refusals.safetensors");
  runner_options options{.batch_size = 8, .seed = 1, .checkpoint = path};
  {
    F b;
    vit<F> model(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    seq_lora strategy;
    const stop_before_task stop{1};
    CHECK_THROWS(run_stream(model, stream, strategy, adam_1e2(), options, stop));
  }
  const auto field_of = [&](auto&& run) { return refusal_of(run).second; };
  runner_options resume = options;
  resume.resume = true;
  {
    F b;
    vit<F> model(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    seq_lora strategy;
    runner_options other = resume;
    other.batch_size = 4;
    CHECK(field_of([&] { run_stream(model, stream, strategy, adam_1e2(), other); }) == "run.batch_size");
    tree_lora_reference<F> tree;
    CHECK(field_of([&] { run_stream(model, stream, tree, adam_1e2(), resume); }) == "run.method");
  }
  {
    F b;
    auto config = treelora::testing::tiny_vit(stream.total_classes, {"q", "v"});
    config.seed = 6;  // other pre-trained weights
    vit<F> model(b, config);
    seq_lora strategy;
    CHECK(field_of([&] { run_stream(model, stream, strategy, adam_1e2(), resume); }) == "model.backbone_fingerprint");
    vit<F> narrow(b, treelora::testing::tiny_vit(stream.total_classes, {"q"}));
    CHECK(field_of([&] { run_stream(narrow, stream, strategy, adam_1e2(), resume); }) == "model.lora_targets");
  }
  {
    F b;
    vit<F> model(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    seq_lora strategy;
    const auto other_data = treelora::testing::prototype_image_stream(2, 8, 4, 0.5);
    CHECK(field_of([&] { run_stream(model, other_data, strategy, adam_1e2(), resume); }) == "run.stream_fingerprint");
  }
  {  // a damaged checkpoint is refused, not half-loaded
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    bytes[bytes.size() - 1] ^= 0x10;  // a bit of the last tensor's data: only the checksum can tell
    write_file_atomically(path, std::string_view(bytes));
    F b;
    vit<F> model(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    seq_lora strategy;
    CHECK(field_of([&] { run_stream(model, stream, strategy, adam_1e2(), resume); }) == "treelora.checksum");
  }
  // resume without a path is a bad option; resume with no file yet starts from the beginning
  CHECK(contains(treelora::testing::error_of([&] { runner_options{.resume = true}.validate(); }), "no checkpoint path"));
  std::filesystem::remove(path);
  {
    F b;
    vit<F> model(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    seq_lora strategy;
    const auto result = run_stream(model, stream, strategy, adam_1e2(), resume);
    CHECK(result.train_seconds.size() == 2);
    CHECK(std::filesystem::exists(path));
  }
  std::filesystem::remove_all(path.parent_path());
}

TEST_CASE("resume mid-task: every strategy stopped at every step continues bit for bit from its step checkpoint") {
  const auto stream = treelora::testing::prototype_image_stream(3, 16, 8);  // 2 steps per epoch, 2 epochs, 3 tasks
  const runner_options every_step{.epochs_per_task = 2, .batch_size = 16, .seed = 3, .checkpoint_every_steps = 1};
  const auto standard = [&](F& b) { return std::make_unique<vit<F>>(b, dropout_vit(stream.total_classes)); };
  check_resume("mid-seqlora", stream, standard, [] { return std::make_unique<seq_lora>(); }, every_step);
  check_resume("mid-treelora-reference", stream, standard, [] { return std::make_unique<tree_lora_reference<F>>(); }, every_step);
  check_resume("mid-treelora-paper", stream, standard, [] { return std::make_unique<tree_lora_paper<F>>(); }, every_step);
  check_resume("mid-treelora-exhaustive", stream, standard, [] {
    return std::make_unique<tree_lora<F, task_tree<F>, exhaustive, dense_rule>>(tree_lora_config{.mode = tree_lora_mode::paper});
  }, every_step);
  check_resume("mid-inflora", stream,
               [&](F& b) {
                 return std::make_unique<vit<F, inflora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"k", "v"}),
                                                          inflora::config{.rank = 4});
               },
               [&] { return std::make_unique<inflora_strategy>(stream, inflora_options{.memory_after_training = false}); },
               every_step);
  check_resume("mid-olora", stream,
               [&](F& b) {
                 return std::make_unique<vit<F, olora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}),
                                                        olora::config{.rank = 4});
               },
               [] { return std::make_unique<olora_strategy<F>>(); }, every_step);
  for (auto orthogonal : {dual_orthogonal::per_task_fixed_a, dual_orthogonal::shared_projected})
    check_resume(concat("mid-duallora-", int(orthogonal)), stream,
                 [&](F& b) {
                   return std::make_unique<vit<F, dual_lora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}),
                                                              dual_lora::config{.rank = 4, .orthogonal = orthogonal});
                 },
                 [&] { return std::make_unique<dual_lora_strategy<F>>(stream); }, every_step);
}

TEST_CASE("resume mid-task: SGD with momentum, and an optimiser without checkpoints is refused") {
  const auto stream = treelora::testing::prototype_image_stream(2, 16, 8);
  const auto path = scratch("sgd.safetensors");
  const runner_options every_step{.epochs_per_task = 2, .batch_size = 16, .seed = 3, .checkpoint = path,
                                  .checkpoint_every_steps = 1};
  const auto sgd_factory = [](parameter_list<F> p) { return sgd<F>(std::move(p), {.learning_rate = 1e-2, .momentum = 0.9}); };
  F b0;
  vit<F> straight(b0, dropout_vit(stream.total_classes));
  seq_lora s0;
  const auto full = run_stream(straight, stream, s0, sgd_factory, every_step);
  for (index_t k = 1; k < full.steps; ++k) {
    INFO("stopped at step ", k);
    std::filesystem::remove(path);
    {
      F b;
      vit<F> m(b, dropout_vit(stream.total_classes));
      seq_lora s;
      stop_at_step at{k};
      CHECK_THROWS(run_stream(m, stream, s, sgd_factory, every_step, at));
    }
    F b;
    vit<F> m(b, dropout_vit(stream.total_classes));
    seq_lora s;
    runner_options resume = every_step;
    resume.resume = true;
    const auto resumed = run_stream(m, stream, s, sgd_factory, resume);
    CHECK(same_bits(full.task_il, resumed.task_il));
    CHECK(model_state(m) == model_state(straight));
  }
  struct plain_optimizer {  // no checkpoint(archive)
    sgd<F> inner;
    void step() { inner.step(); }
  };
  F b;
  vit<F> m(b, dropout_vit(stream.total_classes));
  seq_lora s;
  CHECK(contains(treelora::testing::error_of([&] {
          run_stream(m, stream, s, [](parameter_list<F> p) { return plain_optimizer{sgd<F>(std::move(p))}; }, every_step);
        }),
        "need an optimiser with checkpoint(archive)"));
  std::filesystem::remove(path);
}

namespace {

/// `bytes` (a checkpoint) rebuilt with tensor `name` cut to its first elements in shape `dims` and, when `key` is
/// given, the state value `key` set to `value`; the checksum re-stamped: a hand-made file (tests/fuzz/fuzz_checkpoint).
std::string cut_checkpoint_tensor(const std::string& bytes, const std::string& name, const std::vector<std::uint64_t>& dims,
                                  const std::string& key = "", const json::value& value = {}) {
  const auto header = read_safetensors_header(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), "ck");
  REQUIRE(header.metadata);
  auto metadata = *header.metadata;
  if (!key.empty()) {
    auto doc = json::parse(metadata.at("treelora.checkpoint"));
    REQUIRE(doc["state"].contains(key));
    doc["state"][key] = value;
    metadata["treelora.checkpoint"] = json::dump(doc);
  }
  safetensors_writer out;
  out.set_metadata(metadata);
  bool found = false;
  for (const auto& t : header.tensors) {
    std::vector<std::uint64_t> shape = t.shape;
    std::uint64_t size = t.byte_size();
    if (t.name == name) {
      found = true;
      shape = dims;
      size = dtype_size(t.dtype);
      for (auto d : dims) size *= d;
      REQUIRE(size <= t.byte_size());
    }
    const char* data = bytes.data() + 8 + header.header_size + t.begin;
    out.add(t.name, t.dtype, shape, std::as_bytes(std::span<const char>(data, std::size_t(size))));
  }
  REQUIRE(found);
  std::string edited = out.serialize();
  REQUIRE(restamp_checkpoint_checksum(edited));
  return edited;
}

}  // namespace

TEST_CASE("resume refuses TreeLoRA task vectors and anchors of another shape than the model's (fuzz_checkpoint)") {
  // tests/fuzz/regressions/fuzz_checkpoint/treelora_*: the strategy checked its stored task vectors against its own
  // "modules" and "dim" only, and the paper mode's anchors not at all. An anchor with fewer rows than the model has
  // adapters was read past its end by the next task's first step (a heap buffer overflow); task vectors of fewer
  // modules stopped that step with std::invalid_argument from the bandit instead of a checkpoint_error on loading.
  const auto stream = treelora::testing::prototype_image_stream(2, 8, 4);
  const auto path = scratch("treelora-shapes.safetensors");
  const runner_options options{.batch_size = 8, .seed = 1, .checkpoint = path};
  const auto config = treelora::testing::tiny_vit(stream.total_classes, {"q", "v"});
  for (const bool paper : {true, false}) {
    INFO("paper mode: ", paper);
    std::filesystem::remove(path);
    const auto attempt = [&](const runner_options& o, const auto&... stop) {
      F b;
      vit<F> model(b, config);
      if (paper) {
        tree_lora_paper<F> strategy;
        return run_stream(model, stream, strategy, adam_1e2(), o, stop...);
      }
      tree_lora_reference<F> strategy;
      return run_stream(model, stream, strategy, adam_1e2(), o, stop...);
    };
    const stop_before_task stop{1};
    CHECK_THROWS_WITH(attempt(options, stop), doctest::Contains("stopped on purpose"));
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const auto header = read_safetensors_header(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), "ck");
    const auto shape_of = [&](const std::string& name) {
      for (const auto& t : header.tensors)
        if (t.name == name) return t.shape;
      FAIL("no tensor ", name);
      return std::vector<std::uint64_t>{};
    };
    const auto acc = shape_of("strategy.acc.0");  // [modules, dim]: 4 adapters (q and v of 2 blocks)
    REQUIRE(acc.size() == 2);
    REQUIRE(acc[0] == 4);
    runner_options resume = options;
    resume.resume = true;
    std::vector<std::pair<std::string, std::string>> files = {
        {cut_checkpoint_tensor(bytes, "strategy.acc.0", {acc[0] - 1, acc[1]}, "strategy.modules", json::value(acc[0] - 1)),
         "strategy.modules"}};
    if (paper) {
      const auto anchor = shape_of("strategy.snapshots.0");  // [modules, |A| + |B|]
      files.push_back({cut_checkpoint_tensor(bytes, "strategy.snapshots.0", {anchor[0] - 1, anchor[1]}), "strategy.snapshots"});
    }
    for (const auto& [file, field] : files) {
      write_file_atomically(path, std::string_view(file));
      const auto [what, refused] = refusal_of([&] { attempt(resume); });
      CHECK(refused == field);
      CHECK(contains(what, "must be"));
    }
  }
  std::filesystem::remove(path);
}

TEST_CASE("resume refuses DualLoRA state that does not fit the model or the stream") {
  const auto stream = treelora::testing::prototype_image_stream(3, 16, 8);
  const auto path = scratch("duallora-cross.safetensors");
  runner_options options{.epochs_per_task = 1, .batch_size = 16, .seed = 3, .checkpoint = path};
  const auto make_model = [&](F& b) {
    return std::make_unique<vit<F, dual_lora>>(b, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}),
                                               dual_lora::config{.rank = 4});
  };
  {
    F b;
    auto m = make_model(b);
    dual_lora_strategy<F> s(stream);
    stop_before_task stop{2};
    CHECK_THROWS(run_stream(*m, stream, s, adam_1e2(), options, stop));
  }
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // a hand-edited file (checksum re-stamped): more finished tasks than the stream has
  const std::string from = "\\\"strategy.finished\\\":2", to = "\\\"strategy.finished\\\":7";
  const auto at = bytes.find(from);
  REQUIRE(at != std::string::npos);
  bytes.replace(at, from.size(), to);
  REQUIRE(restamp_checkpoint_checksum(bytes));
  write_file_atomically(path, std::string_view(bytes));
  F b;
  auto m = make_model(b);
  dual_lora_strategy<F> s(stream);
  options.resume = true;
  CHECK(refusal_of([&] { run_stream(*m, stream, s, adam_1e2(), options); }).second == "strategy.finished");
  std::filesystem::remove(path);
}

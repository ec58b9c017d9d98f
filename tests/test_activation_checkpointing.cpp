// tests/test_activation_checkpointing.cpp: activation checkpointing per transformer block (vit::set_activation_
// checkpointing, transformer_block::set_recompute). The reference is the same model without it: logits, every
// parameter gradient, the input gradient and the adapters' dropout positions must be equal bit for bit over several
// training steps, for every factorisation; the tensors alive between forward and backward must shrink to the blocks'
// inputs and outputs; and a continual-learning run gives the same results.
#include <cstring>

#include "test_inflora_stream.hpp"
#include "test_support.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/strategy/inflora.hpp"
#include "treelora/strategy/olora.hpp"

using namespace treelora;
using F = cpu_backend<float>;
using D = cpu_backend<double>;

namespace {

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

vit_config small_vit(index_t classes) {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 4, .width = 16, .depth = 3, .heads = 2,
          .mlp_ratio = 2.0, .classes = classes, .lora_targets = {"q", "k", "v", "o", "fc1", "fc2"}, .lora_rank = 4,
          .lora_dropout = 0.2, .seed = 9};
}

/// Trains `plain` and `checkpointed` (the same model, one recomputing) side by side for a few Adam steps on random
/// batches and compares logits, gradients, input gradients and values after every step.
template <class M>
void check_same_training(M& plain, M& checkpointed) {
  using B = typename M::backend_type;
  checkpointed.set_activation_checkpointing(true);
  REQUIRE(checkpointed.activation_checkpointing());
  auto p1 = parameters(plain), p2 = parameters(checkpointed);
  REQUIRE(p1.size() == p2.size());
  adam<B> o1(p1, {.learning_rate = 1e-2}), o2(p2, {.learning_rate = 1e-2});
  tensor<B> gradient1, gradient2;
  for (index_t step = 0; step < 4; ++step) {
    INFO("step ", step);
    auto x = treelora::testing::random_tensor(plain.backend(), shape{5, 8, 8}, 100 + std::uint64_t(step));
    tensor<B> x2 = tensor<B>::from_host(checkpointed.backend(), x.shape(), x.to_host());
    zero_gradients(p1), zero_gradients(p2);
    const auto logits1 = plain.forward(x).to_host();
    const auto logits2 = checkpointed.forward(x2).to_host();
    CHECK(same_bits(logits1, logits2));
    gradient1 = treelora::testing::random_tensor(plain.backend(), shape{5, plain.classes()}, 200 + std::uint64_t(step));
    gradient2 = tensor<B>::from_host(checkpointed.backend(), gradient1.shape(), gradient1.to_host());
    const auto dx1 = plain.backward(gradient1).to_host();
    const auto dx2 = checkpointed.backward(gradient2).to_host();
    CHECK(same_bits(dx1, dx2));
    for (std::size_t i = 0; i < p1.size(); ++i)
      if (p1[i].trainable) {
        INFO(p1[i].name);
        CHECK(same_bits(p1[i].gradient->to_host(), p2[i].gradient->to_host()));
      }
    o1.step(), o2.step();
    for (std::size_t i = 0; i < p1.size(); ++i) CHECK(same_bits(p1[i].value->to_host(), p2[i].value->to_host()));
  }
}

}  // namespace

TEST_CASE_TEMPLATE("activation checkpointing: standard LoRA with dropout trains bit for bit as without", TestType, F, D) {
  TestType b1, b2;
  vit<TestType> plain(b1, small_vit(4)), checkpointed(b2, small_vit(4));
  check_same_training(plain, checkpointed);
  // the dropout streams advanced equally (the recomputation replayed the same masks and did not advance them again)
  const auto a1 = plain.factorized_adapters(), a2 = checkpointed.factorized_adapters();
  for (std::size_t i = 0; i < a1.size(); ++i) CHECK(a1[i]->dropout_position() == a2[i]->dropout_position());
  CHECK(a1.front()->dropout_position() > 0);
}

TEST_CASE("activation checkpointing: InfLoRA, O-LoRA and DualLoRA adapters train bit for bit as without") {
  const auto stream = treelora::testing::prototype_image_stream(2, 8, 4);
  {
    F b1, b2;
    auto c = small_vit(4);
    vit<F, inflora> plain(b1, c, {.rank = 4}), checkpointed(b2, c, {.rank = 4});
    check_same_training(plain, checkpointed);
  }
  {
    F b1, b2;
    auto c = small_vit(4);
    vit<F, olora> plain(b1, c, {.rank = 4}), checkpointed(b2, c, {.rank = 4});
    check_same_training(plain, checkpointed);
  }
  {  // DualLoRA with a residual task under way (its gate reads the CLS feature in forward)
    F b1, b2;
    auto c = small_vit(4);
    vit<F, dual_lora> plain(b1, c, {.rank = 4}), checkpointed(b2, c, {.rank = 4});
    for (auto* model : {&plain, &checkpointed})
      for (auto* a : model->factorized_adapters()) a->add_residual_task(treelora::testing::orthonormal(a->in_features(), 3, 5).transpose());
    check_same_training(plain, checkpointed);
  }
}

TEST_CASE("activation checkpointing keeps only the blocks' inputs and outputs between forward and backward") {
  auto c = small_vit(4);
  c.width = 32, c.depth = 4, c.image_height = c.image_width = 16;
  // Each model alone: its tensors (parameters included) between a training forward and its backward, and the peak
  // during that backward, both above what was allocated before the model existed.
  const auto measure = [&](bool checkpointing) {
    const std::size_t before = host_memory::current();
    F backend;
    vit<F> model(backend, c);
    model.set_activation_checkpointing(checkpointing);
    auto x = treelora::testing::random_tensor(backend, shape{32, 16, 16}, 1);
    auto g = treelora::testing::random_tensor(backend, shape{32, 4}, 2);
    (void)model.forward(x);
    (void)model.backward(g);  // every buffer sized once
    (void)model.forward(x);
    const std::size_t between = host_memory::current() - before;
    host_memory::reset_peak();
    (void)model.backward(g);
    return std::pair{between, host_memory::peak() - before};
  };
  const auto [plain_between, plain_peak] = measure(false);
  const auto [checkpointed_between, checkpointed_peak] = measure(true);
  MESSAGE("tensors between forward and backward: ", plain_between, " B plain, ", checkpointed_between,
          " B checkpointed; peak during backward ", plain_peak, " / ", checkpointed_peak);
  CHECK(double(checkpointed_between) < 0.5 * double(plain_between));
  CHECK(double(checkpointed_peak) < 0.6 * double(plain_peak));
}

TEST_CASE("activation checkpointing: a continual-learning run gives the same results") {
  const auto stream = treelora::testing::prototype_image_stream(2, 16, 8);
  const runner_options options{.epochs_per_task = 2, .batch_size = 16, .seed = 2};
  const auto factory = [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); };
  F b1, b2;
  auto c = small_vit(stream.total_classes);
  c.lora_targets = {"q", "v"};  // TreeLoRA stacks equal-sized modules
  vit<F> plain(b1, c), checkpointed(b2, c);
  checkpointed.set_activation_checkpointing(true);
  tree_lora_reference<F> s1, s2;
  const auto r1 = run_stream(plain, stream, s1, factory, options);
  const auto r2 = run_stream(checkpointed, stream, s2, factory, options);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 2; ++j) CHECK(r1.task_il(i, j) == r2.task_il(i, j));
  CHECK(same_bits(r1.final_loss, r2.final_loss));
}

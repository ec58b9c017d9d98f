// Must NOT compile: a ViT with standard LoRA adapters handed to inflora_strategy. The test compile_fail_inflora
// (tests/CMakeLists.txt) passes when the compiler stops with the strategy's static_assert, which names the
// factorisation the strategy needs, instead of pages of "has no member named covariance".
#include <treelora/models/vit.hpp>
#include <treelora/optim/adam.hpp>
#include <treelora/strategy/inflora.hpp>

using namespace treelora;
using F = cpu_backend<float>;

int main() {
  F backend;
  vit<F> model(backend, vit_config{});  // standard LoRA: the wrong factorisation
  task_stream stream;
  inflora_strategy strategy(stream);
  const auto optimizer = [](parameter_list<F> p) { return adam<F>(std::move(p)); };
  (void)run_stream(model, stream, strategy, optimizer, runner_options{});
}

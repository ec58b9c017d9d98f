// Built against an installed treelora by tests/packaging_test.cmake.
#include <cstdio>
#include <treelora/treelora.hpp>

int main() {
  treelora::cpu_backend<float> backend;
  treelora::lora_layer<treelora::linear<treelora::cpu_backend<float>>> layer(
      backend, treelora::linear<treelora::cpu_backend<float>>(backend, 8, 8), {.rank = 2});
  treelora::tensor<treelora::cpu_backend<float>> x(backend, treelora::shape{3, 8});
  auto y = layer.forward(x);
  std::printf("treelora %d.%d.%d consumer ok: output %s\n", treelora::version_major, treelora::version_minor,
              treelora::version_patch, y.shape().to_string().c_str());
  return y.shape() == treelora::shape{3, 8} ? 0 : 1;
}

// quickstart: write your own linear layer, wrap it with LoRA, and fit a low-rank change of a frozen model.
#include <cstdio>
#include <treelora/treelora.hpp>

using namespace treelora;
using B = cpu_backend<float>;

// A user-written layer: y = x W^T, no bias. Modelling treelora::LinearLike takes five members.
class my_dense {
 public:
  using backend_type = B;
  my_dense(B& backend, index_t in, index_t out, std::uint64_t seed)
      : weight_(backend, shape{out, in}), gradient_(backend, shape{out, in}) {
    fill_normal<B>(weight_, 0.0f, 1.0f / std::sqrt(float(in)), seed);
  }
  index_t in_features() const { return weight_.cols(); }
  index_t out_features() const { return weight_.rows(); }
  tensor<B>& weight() { return weight_; }
  void set_trainable(bool trainable) { trainable_ = trainable; }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    input_ = x;
    output_.resize(weight_.backend(), x.shape().with_last(out_features()));
    matmul<B>(x, transpose::no, weight_, transpose::yes, output_);  // y = x W^T
    return output_;
  }
  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (trainable_) matmul<B>(dy, transpose::yes, input_, transpose::no, gradient_, 1, 1);  // dW += dy^T x
    input_gradient_.resize(weight_.backend(), input_.shape());
    matmul<B>(dy, transpose::no, weight_, transpose::no, input_gradient_);  // dx = dy W
    return input_gradient_;
  }
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    out.push_back({join_name(prefix, "weight"), &weight_, &gradient_, trainable_});
  }

 private:
  tensor<B> weight_, gradient_, output_, input_gradient_;
  const_tensor_view<B> input_;
  bool trainable_ = true;
};

int main() {
  B backend;
  const index_t d_in = 64, d_out = 32, batch = 128;
  // The "pre-trained" model and a teacher that differs from it by a rank-2 change.
  my_dense teacher(backend, d_in, d_out, 1);
  tensor<B> u(backend, shape{d_out, 2}), v(backend, shape{2, d_in});
  fill_normal<B>(u, 0.0f, 0.3f, 2);
  fill_normal<B>(v, 0.0f, 0.3f, 3);
  matmul<B>(u, transpose::no, v, transpose::no, teacher.weight(), 1.0f, 1.0f);

  // The student: the same pre-trained weights (seed 1), frozen, plus a rank-4 LoRA adapter.
  lora_layer<my_dense> student(backend, my_dense(backend, d_in, d_out, 1), {.rank = 4, .alpha = 8, .seed = 4});
  auto params = parameters(student, "student");
  std::printf("trainable parameters: %lld of %lld\n", (long long)trainable_parameter_count(params),
              (long long)(trainable_parameter_count(params) + d_in * d_out));
  adam<B> optimizer(params, {.learning_rate = 1e-2});

  tensor<B> x(backend, shape{batch, d_in}), target(backend, shape{batch, d_out}), gradient(backend, shape{batch, d_out});
  for (int step = 0; step <= 300; ++step) {
    fill_normal<B>(x, 0.0f, 1.0f, 100, std::uint64_t(step) * batch * d_in);  // a fresh batch each step
    copy<B>(teacher.forward(x), target);
    optimizer.zero_grad();
    const double loss = mse_loss<B>(student.forward(x), target, gradient);
    student.backward(gradient);
    optimizer.step();
    if (step % 50 == 0) std::printf("step %3d  loss %.6f\n", step, loss);
  }
  student.merge();  // fold the adapter into the weight: inference is one GEMM again
  std::printf("merged: %s\n", student.merged() ? "yes" : "no");
}

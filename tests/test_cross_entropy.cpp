// Softmax cross-entropy: value against a naive formula, gradient by finite differences, class masking (a task's
// classes on a shared head), label errors, a non-finite loss, and argmax with and without a class subset. The device
// path (a backend with the optional BackendDeviceLosses members, as the CUDA one) against the host loops, through a
// backend that runs those members on the CPU.
#include "test_support.hpp"

#include "treelora/layers/cross_entropy.hpp"
#include "treelora/optim/clip.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;

TEST_CASE_TEMPLATE("cross entropy value equals the naive formula", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto logits = random_tensor(backend, shape{4, 5}, 1, 3.0);
  tensor<B> gradient(backend, shape{4, 5});
  const std::vector<index_t> labels{0, 4, 2, 2};
  const double loss = cross_entropy_loss<B>(logits, labels, gradient);
  const auto z = logits.to_host();
  double expected = 0;
  for (std::size_t r = 0; r < 4; ++r) {
    double total = 0;
    for (std::size_t c = 0; c < 5; ++c) total += std::exp(double(z[r * 5 + c]));
    expected += (std::log(total) - z[r * 5 + static_cast<std::size_t>(labels[r])]) / 4;
  }
  CHECK(loss == doctest::Approx(expected).epsilon(1e-6));
  // Each gradient row sums to zero (softmax minus one-hot).
  const auto g = gradient.to_host();
  for (std::size_t r = 0; r < 4; ++r) {
    double s = 0;
    for (std::size_t c = 0; c < 5; ++c) s += g[r * 5 + c];
    CHECK(std::abs(s) < 1e-6);
  }
}

TEST_CASE("cross entropy gradient matches finite differences, with and without a class mask") {
  D backend;
  auto logits = random_tensor(backend, shape{3, 6}, 2, 2.0);
  tensor<D> gradient(backend, shape{3, 6}), scratch(backend, shape{3, 6});
  const std::vector<index_t> labels{1, 5, 3};
  cross_entropy_loss<D>(logits, labels, gradient);
  double error = finite_difference_error(logits, [&] { return cross_entropy_loss<D>(logits, labels, scratch); },
                                         gradient.to_host());
  MESSAGE("finite-difference error (all classes) ", error);
  CHECK(error < 1e-6);

  const std::vector<index_t> allowed{1, 3, 5};
  cross_entropy_loss<D>(logits, labels, gradient, allowed);
  error = finite_difference_error(logits, [&] { return cross_entropy_loss<D>(logits, labels, scratch, allowed); },
                                  gradient.to_host());
  MESSAGE("finite-difference error (classes {1, 3, 5}) ", error);
  CHECK(error < 1e-6);
  const auto g = gradient.to_host();
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t c : {0u, 2u, 4u}) CHECK(g[r * 6 + c] == 0.0);  // masked classes get no gradient
}

TEST_CASE("a masked class behaves as a logit of minus infinity") {
  D backend;
  auto logits = random_tensor(backend, shape{2, 4}, 3);
  tensor<D> gradient(backend, shape{2, 4});
  const std::vector<index_t> labels{2, 3};
  const std::vector<index_t> allowed{2, 3};
  const double masked = cross_entropy_loss<D>(logits, labels, gradient, allowed);
  // The unmasked loss with those logits pushed to -1e6 (exp underflows to exactly 0) is the same number.
  for (index_t r = 0; r < 2; ++r)
    for (index_t c = 0; c < 2; ++c) logits.data()[r * 4 + c] = -1e6;
  CHECK(cross_entropy_loss<D>(logits, labels, gradient) == doctest::Approx(masked).epsilon(1e-12));
  // A huge logit on a masked class changes nothing.
  logits.data()[0] = 1e30;
  CHECK(cross_entropy_loss<D>(logits, labels, gradient, allowed) == doctest::Approx(masked).epsilon(1e-12));
}

TEST_CASE("cross entropy rejects bad labels and shapes, and a non-finite loss throws") {
  D backend;
  auto logits = random_tensor(backend, shape{3, 4}, 1);
  tensor<D> gradient(backend, shape{3, 4});
  const std::vector<index_t> out_of_range{0, 4, 1};
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, out_of_range, gradient),
                       "treelora::cross_entropy_loss: row 1: label 4 outside [0, 4)", std::invalid_argument);
  const std::vector<index_t> negative{0, 1, -1};
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, negative, gradient),
                       "treelora::cross_entropy_loss: row 2: label -1 outside [0, 4)", std::invalid_argument);
  const std::vector<index_t> labels{0, 1, 2}, allowed{0, 1};
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, labels, gradient, allowed),
                       "treelora::cross_entropy_loss: row 2: label 2 is not in the allowed classes {0, 1}",
                       std::invalid_argument);
  const std::vector<index_t> bad_allowed{0, 7};
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, labels, gradient, bad_allowed),
                       doctest::Contains("allowed class 7 outside [0, 4)"), std::invalid_argument);
  const std::vector<index_t> two{0, 1};
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, two, gradient),
                       "treelora::cross_entropy_loss: logits [3, 4], 2 labels, gradient [3, 4]", std::invalid_argument);
  tensor<D> wrong(backend, shape{3, 5});
  CHECK_THROWS_AS(cross_entropy_loss<D>(logits, labels, wrong), std::invalid_argument);
  logits.data()[5] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(cross_entropy_loss<D>(logits, labels, gradient),
                       doctest::Contains("treelora::cross_entropy_loss: loss is not finite"), std::runtime_error);
}

TEST_CASE_TEMPLATE("argmax over all classes and over a subset", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const std::vector<typename B::scalar_type> z{0.1f, 0.9f, 0.3f, 0.2f,   //
                                               2.0f, -1.0f, 0.5f, 3.0f,  //
                                               1.0f, 1.0f, 0.0f, 0.0f};
  auto logits = tensor<B>::from_host(backend, shape{3, 4}, z);
  CHECK(argmax_rows<B>(logits) == std::vector<index_t>{1, 3, 0});  // ties go to the lower index
  const std::vector<index_t> subset{2, 3};
  CHECK(argmax_rows<B>(logits, subset) == std::vector<index_t>{2, 3, 2});
}

TEST_CASE_TEMPLATE("token cross-entropy: the mean over counted rows only, ignored rows get no gradient", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto logits = random_tensor(backend, shape{6, 7}, 4, 3.0);
  tensor<B> gradient(backend, shape{6, 7});
  const std::vector<index_t> labels{3, ignored_label, 0, ignored_label, 6, 6};
  const double loss = token_cross_entropy_loss<B>(logits, labels, gradient);
  const auto z = logits.to_host();
  double expected = 0;
  for (std::size_t r = 0; r < 6; ++r) {
    if (labels[r] == ignored_label) continue;
    double total = 0;
    for (std::size_t c = 0; c < 7; ++c) total += std::exp(double(z[r * 7 + c]));
    expected += (std::log(total) - z[r * 7 + static_cast<std::size_t>(labels[r])]) / 4;  // 4 rows count
  }
  CHECK(loss == doctest::Approx(expected).epsilon(1e-6));
  const auto g = gradient.to_host();
  for (std::size_t c = 0; c < 7; ++c) CHECK((g[7 + c] == 0 && g[21 + c] == 0));
  // equals the class cross-entropy of the counted rows alone
  std::vector<index_t> kept_labels;
  std::vector<typename B::scalar_type> kept;
  for (std::size_t r = 0; r < 6; ++r)
    if (labels[r] != ignored_label) {
      kept_labels.push_back(labels[r]);
      kept.insert(kept.end(), z.begin() + std::ptrdiff_t(r * 7), z.begin() + std::ptrdiff_t(r * 7 + 7));
    }
  auto kept_logits = tensor<B>::from_host(backend, shape{4, 7}, kept);
  tensor<B> kept_gradient(backend, shape{4, 7});
  const double close = std::is_same_v<typename B::scalar_type, float> ? 1e-6 : 1e-12;
  CHECK(cross_entropy_loss<B>(kept_logits, kept_labels, kept_gradient) == doctest::Approx(loss).epsilon(close));
  CHECK(relative_error(gradient.to_host(), [&] {  // the gradient rows of the counted rows, scaled by 4 / 4
          auto full = std::vector<typename B::scalar_type>(42, 0);
          const auto k = kept_gradient.to_host();
          for (std::size_t r = 0, j = 0; r < 6; ++r)
            if (labels[r] != ignored_label) {
              std::copy(k.begin() + std::ptrdiff_t(j * 7), k.begin() + std::ptrdiff_t(j * 7 + 7), full.begin() + std::ptrdiff_t(r * 7));
              ++j;
            }
          return full;
        }()) < close);
  // a label whose probability underflows float (e^-200): the loss is still exact (200), the gradient finite
  const std::vector<typename B::scalar_type> extreme{0, 200, 0, 0, 0, 0, 0};
  auto extreme_logits = tensor<B>::from_host(backend, shape{1, 7}, extreme);
  tensor<B> extreme_gradient(backend, shape{1, 7});
  CHECK(token_cross_entropy_loss<B>(extreme_logits, std::vector<index_t>{0}, extreme_gradient) == doctest::Approx(200.0).epsilon(1e-6));
  CHECK(extreme_gradient.to_host()[0] == doctest::Approx(-1.0));
  CHECK(extreme_gradient.to_host()[1] == doctest::Approx(1.0));
  CHECK_THROWS_WITH_AS(token_cross_entropy_loss<B>(logits, std::vector<index_t>(6, ignored_label), gradient),
                       doctest::Contains("none of the 6 rows counts"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(token_cross_entropy_loss<B>(logits, std::vector<index_t>{0, 1, 2, 3, 4, 7}, gradient),
                       doctest::Contains("row 5: label 7 outside [0, 7)"), std::invalid_argument);
}

TEST_CASE("token cross-entropy gradient matches finite differences; next-token labels count the answer and EOS") {
  D backend;
  auto logits = random_tensor(backend, shape{5, 6}, 8, 2.0);
  tensor<D> gradient(backend, shape{5, 6}), scratch(backend, shape{5, 6});
  const std::vector<index_t> labels{ignored_label, 2, 5, ignored_label, 0};
  token_cross_entropy_loss<D>(logits, labels, gradient);
  const double error = finite_difference_error(logits, [&] { return token_cross_entropy_loss<D>(logits, labels, scratch); },
                                               gradient.to_host());
  CHECK(error < 1e-6);
  // two left-padded sequences of 5: [pad, BOS, prompt, answer, EOS] and [BOS, prompt, prompt, answer, EOS]
  const std::vector<index_t> ids{0, 1, 17, 23, 2, 1, 11, 12, 29, 2};
  const std::vector<unsigned char> counted{0, 0, 0, 1, 1, 0, 0, 0, 1, 1};
  const auto next = next_token_labels(ids, counted, 5);
  CHECK(next == std::vector<index_t>{ignored_label, ignored_label, 23, 2, ignored_label, ignored_label, ignored_label, 29,
                                     2, ignored_label});
  CHECK_THROWS_AS(next_token_labels(ids, counted, 3), std::invalid_argument);
}

namespace {
/// The CPU backend, declared out of the host's reach (is_host_accessible = false) and given the optional
/// BackendDeviceLosses members as plain loops written from their contract (backend/backend.hpp). It drives
/// cross_entropy.hpp's and clip.hpp's device paths on the CPU: what they pass (labels, classes, scales), what they do
/// with the result, and that they call each member once. The CUDA kernels themselves are tested on a GPU
/// (tests/gpu/test_cuda_backend.cu).
template <class S>
struct far_backend : cpu_backend<S> {
  static constexpr bool is_host_accessible = false;
  int calls = 0;

  double cross_entropy_rows(index_t rows, index_t cols, const S* z, std::span<const index_t> labels,
                            std::span<const index_t> allowed, double scale, S* g) {
    ++calls;
    REQUIRE(static_cast<index_t>(labels.size()) == rows);
    std::vector<bool> in(static_cast<std::size_t>(cols), allowed.empty());
    for (const index_t c : allowed) in[static_cast<std::size_t>(c)] = true;
    double total = 0;
    for (index_t r = 0; r < rows; ++r) {
      const S* zr = z + r * cols;
      S* gr = g + r * cols;
      const index_t label = labels[static_cast<std::size_t>(r)];
      if (label < 0) {
        std::fill(gr, gr + cols, S(0));
        continue;
      }
      double normaliser = 0;
      for (index_t c = 0; c < cols; ++c)
        if (in[static_cast<std::size_t>(c)]) normaliser += std::exp(double(zr[c]));
      total += std::log(normaliser) - double(zr[label]);
      for (index_t c = 0; c < cols; ++c) {
        const double p = in[static_cast<std::size_t>(c)] ? std::exp(double(zr[c])) / normaliser : 0.0;
        gr[c] = static_cast<S>((p - (c == label)) * scale);
      }
    }
    return total;
  }
  std::vector<index_t> argmax_rows(index_t rows, index_t cols, const S* z, std::span<const index_t> allowed) {
    ++calls;
    std::vector<index_t> best(static_cast<std::size_t>(rows), -1);
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = cols - 1; c >= 0; --c)  // from the right, >= : the lowest index wins ties
        if ((allowed.empty() || std::find(allowed.begin(), allowed.end(), c) != allowed.end()) &&
            (best[std::size_t(r)] < 0 || z[r * cols + c] >= z[r * cols + best[std::size_t(r)]]))
          best[std::size_t(r)] = c;
    return best;
  }
  double squared_norm_total(std::span<const S* const> arrays, std::span<const index_t> sizes) {
    ++calls;
    double total = 0;
    for (std::size_t i = 0; i < arrays.size(); ++i)
      for (index_t k = 0; k < sizes[i]; ++k) total += double(arrays[i][k]) * double(arrays[i][k]);
    return total;
  }
};
using Far = far_backend<double>;
static_assert(Backend<Far> && BackendDeviceLosses<Far> && !BackendDeviceLosses<D>);

template <class To, class From>
tensor<To> same_values(To& backend, const tensor<From>& t) {
  return tensor<To>::from_host(backend, t.shape(), t.to_host());
}
}  // namespace

TEST_CASE("the device path: cross-entropy, token cross-entropy and argmax through BackendDeviceLosses equal the host loops") {
  D host;
  Far far;
  const auto logits = random_tensor(host, shape{6, 9}, 21, 3.0);
  const auto far_logits = same_values(far, logits);
  tensor<D> gradient(host, shape{6, 9});
  tensor<Far> far_gradient(far, shape{6, 9});
  const std::vector<index_t> labels{0, 8, 4, 4, 2, 6};
  for (const std::vector<index_t>& allowed : {std::vector<index_t>{}, std::vector<index_t>{8, 0, 2, 4, 6, 6}}) {
    INFO("allowed classes: ", allowed.size());
    const int before = far.calls;
    const double expected = cross_entropy_loss<D>(logits, labels, gradient, allowed);
    CHECK(cross_entropy_loss<Far>(far_logits, labels, far_gradient, allowed) == doctest::Approx(expected).epsilon(1e-12));
    CHECK(relative_error(far_gradient.to_host(), gradient.to_host()) < 1e-12);
    CHECK(argmax_rows<Far>(far_logits, allowed) == argmax_rows<D>(logits, allowed));
    CHECK(far.calls == before + 2);
  }
  const std::vector<index_t> tokens{ignored_label, 3, 8, ignored_label, 0, 5};
  const double expected = token_cross_entropy_loss<D>(logits, tokens, gradient);
  CHECK(token_cross_entropy_loss<Far>(far_logits, tokens, far_gradient) == doctest::Approx(expected).epsilon(1e-12));
  CHECK(relative_error(far_gradient.to_host(), gradient.to_host()) < 1e-12);
  // labels are checked on the host, before the backend is asked
  const int before = far.calls;
  CHECK_THROWS_WITH_AS(cross_entropy_loss<Far>(far_logits, std::vector<index_t>{0, 1, 2, 3, 4, 9}, far_gradient),
                       doctest::Contains("row 5: label 9 outside [0, 9)"), std::invalid_argument);
  CHECK_THROWS_AS(cross_entropy_loss<Far>(far_logits, labels, far_gradient, std::vector<index_t>{0, 4}), std::invalid_argument);
  CHECK_THROWS_AS(token_cross_entropy_loss<Far>(far_logits, std::vector<index_t>(6, ignored_label), far_gradient),
                  std::invalid_argument);
  CHECK(far.calls == before);
  // a non-finite loss is refused on this path too
  auto nan_logits = same_values(far, logits);
  auto values = nan_logits.to_host();
  values[10] = std::numeric_limits<double>::quiet_NaN();
  nan_logits = tensor<Far>::from_host(far, shape{6, 9}, values);
  CHECK_THROWS_AS(cross_entropy_loss<Far>(nan_logits, labels, far_gradient), std::runtime_error);
}

TEST_CASE("the device path: the clipping norm is one call for every trainable gradient and clips as the host loop") {
  D host;
  Far far;
  std::vector<tensor<D>> values, gradients;
  std::vector<tensor<Far>> far_values, far_gradients;
  for (std::uint64_t i = 0; i < 4; ++i) {
    values.push_back(random_tensor(host, shape{index_t(3 + 5 * i)}, 30 + i));
    gradients.push_back(random_tensor(host, shape{index_t(3 + 5 * i)}, 40 + i, 2.0));
    far_values.push_back(same_values(far, values.back()));
    far_gradients.push_back(same_values(far, gradients.back()));
  }
  parameter_list<D> params;
  parameter_list<Far> far_params;
  for (std::size_t i = 0; i < 4; ++i) {
    params.push_back({concat("p", i), &values[i], &gradients[i], i != 2});  // p2 frozen: not counted
    far_params.push_back({concat("p", i), &far_values[i], &far_gradients[i], i != 2});
  }
  const double norm = clip_gradient_norm(params, 1.5);
  CHECK(norm > 1.5);  // so it clips
  CHECK(clip_gradient_norm(far_params, 1.5) == doctest::Approx(norm).epsilon(1e-12));
  CHECK(far.calls == 1);
  for (std::size_t i = 0; i < 4; ++i) CHECK(relative_error(far_gradients[i].to_host(), gradients[i].to_host()) < 1e-12);
  CHECK(clip_gradient_norm(far_params, 1.5) == doctest::Approx(1.5).epsilon(1e-6));
}

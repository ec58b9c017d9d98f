// Continual-learning metrics on hand-computed accuracy matrices.
#include "test_support.hpp"

#include "treelora/metrics/continual_metrics.hpp"

using namespace treelora;

namespace {
// Three tasks. Row i = after training task i.
const auto example = accuracy_matrix::from_rows({{0.90, 0.10, 0.20},
                                                 {0.70, 0.80, 0.30},
                                                 {0.60, 0.85, 0.95}});
}  // namespace

TEST_CASE("ACC and AIA") {
  CHECK(final_average_accuracy(example) == doctest::Approx((0.60 + 0.85 + 0.95) / 3));
  // AIA = mean(0.90, (0.70 + 0.80) / 2, (0.60 + 0.85 + 0.95) / 3) = mean(0.9, 0.75, 0.8)
  CHECK(average_incremental_accuracy(example) == doctest::Approx((0.9 + 0.75 + 0.8) / 3));
}

TEST_CASE("BWT in the paper's sign and as the released script computes it") {
  // paper: ((0.90 - 0.60) + (0.80 - 0.85)) / 2 = (0.30 - 0.05) / 2 = 0.125
  CHECK(backward_transfer(example) == doctest::Approx(0.125));
  // released: (min(0.60 - 0.90, 0) + min(0.85 - 0.80, 0) + min(0.95 - 0.95, 0)) / 3 = -0.30 / 3 = -0.1
  CHECK(backward_transfer_released(example) == doctest::Approx(-0.1));
}

TEST_CASE("FWT and forgetting") {
  // FWT with b = (0.1, 0.1, 0.1): ((0.10 - 0.1) + (0.30 - 0.1)) / 2 = 0.1
  CHECK(forward_transfer(example, {0.1, 0.1, 0.1}) == doctest::Approx(0.1));
  // forgetting: task 0: max(0.90, 0.70) - 0.60 = 0.30; task 1: max(0.80) - 0.85 = -0.05; mean 0.125
  CHECK(forgetting(example) == doctest::Approx(0.125));
  // forgetting differs from BWT when the peak is not at the diagonal
  const auto peak_later = accuracy_matrix::from_rows({{0.5, 0.0, 0.0}, {0.9, 0.8, 0.0}, {0.4, 0.8, 0.7}});
  CHECK(forgetting(peak_later) == doctest::Approx(((0.9 - 0.4) + 0.0) / 2));
  CHECK(backward_transfer(peak_later) == doctest::Approx(((0.5 - 0.4) + 0.0) / 2));
}

TEST_CASE("bad inputs throw; the table prints percentages") {
  CHECK_THROWS_WITH_AS(backward_transfer(accuracy_matrix(1)), "treelora::backward_transfer: needs at least 2 tasks, got 1",
                       std::invalid_argument);
  CHECK_THROWS_AS(forward_transfer(example, {0.1}), std::invalid_argument);
  CHECK_THROWS_AS(accuracy_matrix::from_rows({{1.0, 2.0}}), std::invalid_argument);
  CHECK_THROWS_AS(example(3, 0), std::invalid_argument);
  const auto table = example.to_table();
  CHECK(table.find("90.00") != std::string::npos);
  CHECK(table.find("T2") != std::string::npos);
  accuracy_matrix partial(2);
  partial(0, 0) = 0.5;
  CHECK(partial.to_table().find('-') != std::string::npos);
  CHECK(peak_resident_bytes() > 0);
}

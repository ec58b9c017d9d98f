// DualLoRA: the gates and the calibration on hand-built cases, the gate's backward and the whole adapter's backward
// (every gate, both orthogonal choices, [batch, tokens, in] gated by the CLS row or by every token, and [rows, in]
// inputs) by finite differences in
// double, the closed-form protection of earlier tasks' subspace; the task scores on hand-built subspaces, the
// Gaussian task statistics against a brute-force LDA on class clusters with known tasks, drift compensation on
// hand-built displacements, the fitted temperature against its closed form; bad input, and the strategy end to end
// on a tiny ViT over the prototype-image stream for each option.
#include "test_support.hpp"
#include "test_inflora_stream.hpp"

#include <random>

#include "treelora/models/vit.hpp"
#include "treelora/strategy/duallora.hpp"

using namespace treelora;
using treelora::testing::relative_error;
using D = cpu_backend<double>;
using F = cpu_backend<float>;
using matrix = Eigen::MatrixXd;

using treelora::testing::orthonormal;
using treelora::testing::random_matrix;

namespace {
const std::vector<dual_gate> all_gates = {dual_gate::energy, dual_gate::softmax, dual_gate::per_basis, dual_gate::top1};
const char* gate_name(dual_gate g) {
  switch (g) {
    case dual_gate::energy: return "energy";
    case dual_gate::softmax: return "softmax";
    case dual_gate::per_basis: return "per-basis";
    case dual_gate::top1: return "top-1";
  }
  return "?";
}
}  // namespace

TEST_CASE("DualLoRA gates on hand-built cases") {
  // Tasks: 0 owns e1, 1 owns e2 and e3 (columns [0, 1) and [1, 3)); d = 4.
  const std::vector<index_t> offsets = {0, 1, 3};
  const matrix u = matrix::Identity(4, 3).transpose();  // U^T [K = 3, d = 4]
  auto gates_of = [&](dual_gate mode, Eigen::RowVector4d c, double temperature = 0.05) {
    const matrix cls = c;
    const matrix p = cls * u.transpose();
    const Eigen::VectorXd n2 = cls.rowwise().squaredNorm();
    matrix scores, gates;
    dual_gating::forward(mode, temperature, p, n2, offsets, scores, gates);
    return std::pair{scores, gates};
  };
  const double h = 1 / std::sqrt(2.0);
  {  // c = e1: all its energy in task 0
    auto [s, g] = gates_of(dual_gate::energy, {1, 0, 0, 0});
    CHECK(s(0, 0) == doctest::Approx(1));
    CHECK(s(0, 1) == doctest::Approx(0));
    CHECK(g(0, 0) == doctest::Approx(1));
    CHECK(g(0, 1) == doctest::Approx(0));
    CHECK(g(0, 2) == doctest::Approx(0));
  }
  {  // c = (e1 + e2) / sqrt 2: half and half; per-basis gates e2 and e3 separately
    auto [s, g] = gates_of(dual_gate::energy, {h, h, 0, 0});
    CHECK(s(0, 0) == doctest::Approx(0.5));
    CHECK(s(0, 1) == doctest::Approx(0.5));
    auto [s2, gp] = gates_of(dual_gate::per_basis, {h, h, 0, 0});
    CHECK(gp(0, 0) == doctest::Approx(0.5));
    CHECK(gp(0, 1) == doctest::Approx(0.5));
    CHECK(gp(0, 2) == doctest::Approx(0));
    auto [s3, gs] = gates_of(dual_gate::softmax, {h, h, 0, 0});
    CHECK(gs(0, 0) == doctest::Approx(0.5));
    CHECK(gs(0, 2) == doctest::Approx(0.5));
  }
  {  // c = 0.8 e1 + 0.6 e3 with half its energy off every basis: s = [0.32, 0.18] after scaling by 1 / ||c||^2
    auto [s, g] = gates_of(dual_gate::energy, {0.8, 0, 0.6, 1});
    CHECK(s(0, 0) == doctest::Approx(0.64 / 2));
    CHECK(s(0, 1) == doctest::Approx(0.36 / 2));
    auto [s1, g1] = gates_of(dual_gate::top1, {0.8, 0, 0.6, 1});
    CHECK(g1(0, 0) == 1);
    CHECK(g1(0, 1) == 0);
    CHECK(g1(0, 2) == 0);
    auto [s2, g2] = gates_of(dual_gate::softmax, {0.8, 0, 0.6, 1}, 0.1);
    const double expected = 1 / (1 + std::exp((0.18 - 0.32) / 0.1));
    CHECK(g2(0, 0) == doctest::Approx(expected));
    CHECK(g2(0, 1) == doctest::Approx(1 - expected));
  }
  {  // c outside every basis, and c = 0: no energy anywhere
    auto [s, g] = gates_of(dual_gate::energy, {0, 0, 0, 3});
    CHECK(s.norm() == 0);
    CHECK(g.norm() == 0);
    auto [s0, g0] = gates_of(dual_gate::softmax, {0, 0, 0, 0});
    CHECK(g0.norm() == 0);
  }
  {  // a task without a basis (k = 0) takes no part in the softmax or top-1
    const std::vector<index_t> with_empty = {0, 1, 1, 3};
    const matrix cls = Eigen::RowVector4d(h, h, 0, 0);
    matrix scores, gates;
    dual_gating::forward(dual_gate::softmax, 0.05, matrix(cls * u.transpose()), cls.rowwise().squaredNorm(), with_empty,
                         scores, gates);
    CHECK(scores.cols() == 3);
    CHECK(scores(0, 1) == 0);
    CHECK(gates(0, 0) == doctest::Approx(0.5));
    CHECK(gates(0, 1) == doctest::Approx(0.5));
  }
}

TEST_CASE("the gate's backward against central differences (host maths)") {
  const std::vector<index_t> offsets = {0, 2, 3, 5};
  const matrix p = random_matrix(4, 5, 3);
  const Eigen::VectorXd n2 = p.rowwise().squaredNorm() + Eigen::VectorXd::Constant(4, 0.7);  // ||c||^2 >= ||P||^2
  const matrix weight = random_matrix(4, 5, 4);  // loss = <weight, gates>
  for (dual_gate mode : {dual_gate::energy, dual_gate::softmax, dual_gate::per_basis}) {
    auto loss = [&](const matrix& pp, const Eigen::VectorXd& nn) {
      matrix s, g;
      dual_gating::forward(mode, 0.3, pp, nn, offsets, s, g);
      return (g.array() * weight.array()).sum();
    };
    matrix s, g, dp;
    Eigen::VectorXd dn;
    dual_gating::forward(mode, 0.3, p, n2, offsets, s, g);
    dual_gating::backward(mode, 0.3, p, n2, offsets, s, g, weight, dp, dn);
    double worst = 0;
    const double step = 1e-6;
    for (index_t i = 0; i < p.size(); ++i) {
      matrix up = p, down = p;
      up.data()[i] += step;
      down.data()[i] -= step;
      const double fd = (loss(up, n2) - loss(down, n2)) / (2 * step);
      worst = std::max(worst, std::abs(fd - dp.data()[i]) / std::max({std::abs(fd), 1e-3}));
    }
    for (index_t i = 0; i < n2.size(); ++i) {
      Eigen::VectorXd up = n2, down = n2;
      up(i) += step;
      down(i) -= step;
      const double fd = (loss(p, up) - loss(p, down)) / (2 * step);
      worst = std::max(worst, std::abs(fd - dn(i)) / std::max({std::abs(fd), 1e-3}));
    }
    MESSAGE("gate backward (", std::string(gate_name(mode)), ") FD worst relative error ", worst);
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("DualLoRA adapter backward by finite differences (double): every gate, both orthogonal choices") {
  const index_t d = 6, out = 5;
  double overall = 0;
  for (dual_orthogonal orthogonal : {dual_orthogonal::per_task_fixed_a, dual_orthogonal::shared_projected})
    for (dual_gate gate : all_gates)
      for (int input : {0, 1, 2}) {  // [batch, tokens, d] gated by the CLS row; [rows, d]; [batch, tokens, d] every token
        const bool tokens = input != 1;
        const dual_feature feature = input == 2 ? dual_feature::every_token : dual_feature::first_token;
        D backend;
        lora_layer<linear<D>, dual_lora> layer(backend, linear<D>(backend, d, out, true, 1),
                                               {.rank = 2, .orthogonal = orthogonal, .gate = gate, .feature = feature,
                                                .gate_temperature = 0.2});
        auto& adapter = layer.adapter();
        const matrix bases = orthonormal(d, 3, 9);
        // task 0 (k = 2) trained and frozen, task 1 (k = 1) training
        for (int task = 0; task < 2; ++task) {
          if (orthogonal == dual_orthogonal::per_task_fixed_a) adapter.start_orthogonal_task(random_matrix(2, d, unsigned(10 + task)));
          adapter.add_residual_task(task == 0 ? matrix(bases.leftCols(2).transpose()) : matrix(bases.col(2).transpose()));
          fill_normal<D>(adapter.b(), 0, 1, std::uint64_t(20 + task));
          fill_normal<D>(adapter.residual_b(task), 0, 1, std::uint64_t(30 + task));
          if (task == 0) adapter.finish_task();
        }
        auto x = treelora::testing::random_tensor(backend, tokens ? shape{3, 4, d} : shape{5, d}, 3);
        const shape output_shape = layer.forward(x).shape();
        auto probe = treelora::testing::random_tensor(backend, output_shape, 77);
        const auto probe_host = probe.to_host();
        auto loss = [&] { return treelora::testing::host_dot<D>(layer.forward(x), probe_host); };
        for (auto* g : {&adapter.a_gradient(), &adapter.b_gradient(), &adapter.residual_b_gradient(0), &adapter.residual_b_gradient(1)})
          g->fill(0);
        (void)layer.forward(x);
        const auto dx = layer.backward(probe).to_host();
        std::vector<double> worst;
        worst.push_back(treelora::testing::finite_difference_error(x, loss, dx));
        worst.push_back(treelora::testing::finite_difference_error(adapter.b(), loss, adapter.b_gradient().to_host()));
        worst.push_back(treelora::testing::finite_difference_error(adapter.residual_b(1), loss, adapter.residual_b_gradient(1).to_host()));
        if (orthogonal == dual_orthogonal::shared_projected)
          worst.push_back(treelora::testing::finite_difference_error(adapter.a(), loss, adapter.a_gradient().to_host()));
        else
          CHECK(adapter.a_gradient().to_host() == std::vector<double>(std::size_t(2 * d), 0.0));  // A_o is fixed
        const auto frozen = adapter.residual_b_gradient(0).to_host();  // task 0's B_r is frozen: no gradient
        CHECK(*std::max_element(frozen.begin(), frozen.end()) == 0);
        const double w = *std::max_element(worst.begin(), worst.end());
        overall = std::max(overall, w);
        INFO("orthogonal ", int(orthogonal), " gate ", gate_name(gate), " input ", input);
        CHECK(w < 1e-6);
      }
  MESSAGE("DualLoRA adapter FD worst relative error over every variant: ", overall);
}

TEST_CASE("every_token: [batch, tokens, d] gated token by token equals the same rows as [rows, d] samples") {
  const index_t d = 6, out = 5;
  std::vector<std::vector<double>> y, dx, db;
  std::vector<index_t> scored_rows;
  for (bool every_token : {true, false}) {
    D backend;
    lora_layer<linear<D>, dual_lora> layer(backend, linear<D>(backend, d, out, true, 1),
                                           {.rank = 2, .feature = every_token ? dual_feature::every_token : dual_feature::first_token});
    layer.adapter().add_residual_task(orthonormal(d, 2, 9).transpose());
    fill_normal<D>(layer.adapter().residual_b(0), 0, 1, 30);
    // every_token reads x as [3, 4, d]; the reference reads the same 12 rows as [12, d], each row its own sample
    auto x = treelora::testing::random_tensor(backend, every_token ? shape{3, 4, d} : shape{12, d}, 3);
    auto probe = treelora::testing::random_tensor(backend, every_token ? shape{3, 4, out} : shape{12, out}, 77);
    y.push_back(layer.forward(x).to_host());
    dx.push_back(layer.backward(probe).to_host());
    db.push_back(layer.adapter().residual_b_gradient(0).to_host());
    scored_rows.push_back(index_t(layer.adapter().scores().rows()));
  }
  CHECK(relative_error(y[0], y[1]) < 1e-14);
  CHECK(relative_error(dx[0], dx[1]) < 1e-14);
  CHECK(relative_error(db[0], db[1]) < 1e-14);
  CHECK(scored_rows[0] == 12);
  CHECK(scored_rows[1] == 12);
}

TEST_CASE("a stop-gradient gate changes dx only in the CLS rows, and none of the parameter gradients") {
  const index_t d = 6, out = 5;
  std::vector<std::vector<double>> dx, db;
  for (bool through_gate : {true, false}) {
    D backend;
    lora_layer<linear<D>, dual_lora> layer(backend, linear<D>(backend, d, out, true, 1), {.rank = 2, .gate_gradient = through_gate});
    layer.adapter().add_residual_task(orthonormal(d, 2, 9).transpose());
    fill_normal<D>(layer.adapter().residual_b(0), 0, 1, 30);
    auto x = treelora::testing::random_tensor(backend, shape{3, 4, d}, 3);
    auto probe = treelora::testing::random_tensor(backend, shape{3, 4, out}, 77);
    (void)layer.forward(x);
    dx.push_back(layer.backward(probe).to_host());
    db.push_back(layer.adapter().residual_b_gradient(0).to_host());
  }
  CHECK(relative_error(db[0], db[1]) < 1e-14);
  double cls_change = 0, other_change = 0;
  for (index_t row = 0; row < 12; ++row)
    for (index_t c = 0; c < d; ++c) {
      const double change = std::abs(dx[0][std::size_t(row * d + c)] - dx[1][std::size_t(row * d + c)]);
      (row % 4 == 0 ? cls_change : other_change) += change;
    }
  CHECK(cls_change > 1e-3);
  CHECK(other_change == 0);
}

TEST_CASE_TEMPLATE("a later task leaves outputs unchanged for inputs in the earlier tasks' subspace", B, TREELORA_TEST_BACKENDS) {
  // Rows are samples (their own CLS feature). Task 0 lives in a 4-dimensional subspace S0 of R^12.
  B backend;
  const index_t d = 12, out = 7, rank = 3;
  lora_layer<linear<B>, dual_lora> layer(backend, linear<B>(backend, d, out, true, 1), {.rank = rank});
  auto& adapter = layer.adapter();
  auto to_tensor = [&](const matrix& rows) {
    tensor<B> t;
    assign_from_host(t, backend, rows);
    return t;
  };
  gpm_memory memory(d, {.dual = false, .max_new_bases = 32});
  auto start_task = [&](const tensor<B>& x) {  // what the strategy does at a task start
    adapter.covariance().collect(true, true);
    (void)layer.forward(x);
    adapter.covariance().collect(false);
    const matrix c = adapter.covariance().to_host();
    adapter.start_orthogonal_task(detail::projected_top_directions(memory, c, rank) / std::sqrt(3.0));
    memory.update_from_covariance(c, 0.999);
    adapter.add_residual_task(memory.last_added().transpose());
  };
  const matrix s0 = orthonormal(d, 4, 1);
  start_task(to_tensor((s0 * random_matrix(4, 64, 2)).transpose()));
  CHECK(adapter.basis_size(0) == 4);
  fill_normal<B>(adapter.b(), 0, 1, 4);  // task 0 "trained"
  fill_normal<B>(adapter.residual_b(0), 0, 1, 5);
  adapter.finish_task();
  const auto probe = to_tensor((s0 * random_matrix(4, 10, 3)).transpose());
  const auto before = layer.forward(probe).to_host();
  start_task(to_tensor(random_matrix(64, d, 5)));  // task 1: generic inputs
  CHECK(adapter.basis_size(1) > 0);
  fill_normal<B>(adapter.b(), 0, 10, 6);  // task 1 "trained", hard
  fill_normal<B>(adapter.residual_b(1), 0, 10, 7);
  const double change = relative_error(layer.forward(probe).to_host(), before);
  MESSAGE("old-subspace output change after task 1 (", B::name(), "): ", change);
  CHECK(change < 100 * treelora::testing::tolerance_v<B>);
  const auto& s = adapter.scores();  // the probe is all in task 0's basis
  for (index_t i = 0; i < s.rows(); ++i) {
    CHECK(s(i, 0) == doctest::Approx(1).epsilon(1e-4));
    CHECK(s(i, 1) == doctest::Approx(0).epsilon(1e-4));
  }
  const auto generic = to_tensor(random_matrix(10, d, 8));  // a generic input does change
  const auto g1 = layer.forward(generic).to_host();
  fill_normal<B>(adapter.residual_b(1), 0, 10, 9);
  CHECK(relative_error(layer.forward(generic).to_host(), g1) > 0.1);
}

TEST_CASE("task prediction and calibration on hand-built cases") {
  const auto p = predict_task(std::vector<double>{0.9, 0.1}, 0.05);
  CHECK(p.task == 0);
  CHECK(p.confidence == doctest::Approx(1 / (1 + std::exp(-16.0))));
  CHECK(p.probabilities[0] + p.probabilities[1] == doctest::Approx(1));
  const std::vector<std::vector<index_t>> classes = {{0, 1}, {2, 3}};
  auto argmax = [](const std::vector<float>& row) { return index_t(std::max_element(row.begin(), row.end()) - row.begin()); };
  const std::vector<float> logits = {1, 0, 5, 3};  // raw argmax: class 2 (task 1), while p says task 0
  auto calibrated = [&](dual_lora_options o, const task_prediction& q) {
    auto row = logits;
    calibrate_logits(std::span<float>(row), classes, q, o);
    return row;
  };
  CHECK(argmax(calibrated({.calibration = dual_calibration::none}, p)) == 2);
  const auto bayes = calibrated({}, p);
  CHECK(argmax(bayes) == 0);
  CHECK(bayes[0] == doctest::Approx(-std::log(1 + std::exp(-1.0)) + std::log(p.probabilities[0])));
  CHECK(bayes[2] == doctest::Approx(-std::log(1 + std::exp(-2.0)) + std::log(p.probabilities[1])).epsilon(1e-4));
  CHECK(argmax(calibrated({.beta = 0}, p)) == 2);  // within-task softmax alone prefers task 1's sharper scores
  const auto confident = calibrated({.calibration = dual_calibration::confident_task}, p);
  CHECK(argmax(confident) == 0);
  CHECK(std::isinf(confident[2]));
  const auto unsure = predict_task(std::vector<double>{0.51, 0.49}, 0.5);  // confidence 0.51 < 0.6: raw logits
  CHECK(argmax(calibrated({.calibration = dual_calibration::confident_task, .confidence_threshold = 0.6}, unsure)) == 2);
  std::vector<float> short_row = {1, 2, 3};
  CHECK_THROWS_WITH_AS(calibrate_logits(std::span<float>(short_row), classes, p, {}),
                       doctest::Contains("class 3 outside 3 scores"), std::invalid_argument);
}

TEST_CASE("energy task scores on hand-built subspaces: which normalisation finds the right task") {
  // d = 16. Task 0 owns 8 directions (e1..e8), task 1 one (e9), task 2 one (e10). An image of task 1 has 0.45 of its
  // CLS energy spread over task 0's 8 directions (a shared dominant subspace, as on the main job) and 0.3 in e9.
  const index_t d = 16;
  const std::vector<index_t> offsets = {0, 8, 9, 10}, sizes = {8, 1, 1};
  const matrix u = matrix::Identity(d, 10).transpose();
  Eigen::RowVectorXd c = Eigen::RowVectorXd::Zero(d);
  for (index_t i = 0; i < 8; ++i) c(i) = std::sqrt(0.45 / 8);
  c(8) = std::sqrt(0.3);
  c(12) = std::sqrt(0.25);  // the rest off every basis
  matrix s, gates;
  dual_gating::forward(dual_gate::energy, 0.05, matrix(c * u.transpose()), Eigen::VectorXd::Constant(1, c.squaredNorm()), offsets, s, gates);
  auto best = [](const matrix& m) {
    index_t arg;
    m.row(0).maxCoeff(&arg);
    return arg;
  };
  const std::vector<double> own = {0.9, 0.5, 0.5};  // e_j: the share of task j's own energy its basis held
  CHECK(best(energy_task_scores(dual_task_score::energy, s, own, sizes, d)) == 0);  // the raw energy: the big basis wins
  const matrix dim = energy_task_scores(dual_task_score::dimension, s, own, sizes, d);
  CHECK(dim(0, 0) == doctest::Approx(0.45 * 16 / 8));
  CHECK(dim(0, 1) == doctest::Approx(0.3 * 16));
  CHECK(best(dim) == 1);
  const matrix rel = energy_task_scores(dual_task_score::relative, s, own, sizes, d);
  CHECK(rel(0, 0) == doctest::Approx(0.45 / 0.9));
  CHECK(rel(0, 1) == doctest::Approx(0.3 / 0.5));
  CHECK(best(rel) == 1);
  // a task without basis scores 0 whatever the normalisation
  const matrix none = energy_task_scores(dual_task_score::dimension, s, std::vector<double>{0.9, 0, 0.5},
                                         std::vector<index_t>{8, 0, 1}, d);
  CHECK(none(0, 1) == 0);
}

TEST_CASE("Gaussian task statistics against a brute-force LDA, and on class clusters with known tasks") {
  // 3 tasks x 2 classes in d = 5, two layers (d = 5 and d = 3); every class a Gaussian cluster with one shared
  // covariance L L^T. The brute force: pooled covariance by loops, explicit inverse, full log-densities.
  const index_t tasks = 3, per_class = 150;
  const std::vector<index_t> dims = {5, 3};
  std::vector<matrix> mix, centres;
  for (std::size_t l = 0; l < dims.size(); ++l) {
    mix.push_back(random_matrix(dims[l], dims[l], unsigned(10 + l)) + 1.5 * matrix::Identity(dims[l], dims[l]));
    centres.push_back(4 * random_matrix(dims[l], 2 * tasks, unsigned(20 + l)));
  }
  std::mt19937_64 generator(7);
  std::normal_distribution<double> normal;
  auto draw = [&](index_t task, index_t count, std::vector<index_t>& labels) {
    std::vector<matrix> x(dims.size());
    for (std::size_t l = 0; l < dims.size(); ++l) x[l].resize(2 * count, dims[l]);
    labels.clear();
    for (index_t i = 0; i < 2 * count; ++i) {
      const index_t c = 2 * task + i % 2;
      labels.push_back(c);
      for (std::size_t l = 0; l < dims.size(); ++l) {
        Eigen::VectorXd z(dims[l]);
        for (index_t k = 0; k < dims[l]; ++k) z(k) = normal(generator);
        x[l].row(i) = (centres[l].col(c) + mix[l] * z).transpose();
      }
    }
    return x;
  };
  gaussian_task_statistics stats(dims, 0.0);
  std::vector<std::vector<matrix>> train(tasks);
  std::vector<std::vector<index_t>> train_labels(tasks);
  for (index_t t = 0; t < tasks; ++t) {
    train[std::size_t(t)] = draw(t, per_class, train_labels[std::size_t(t)]);
    stats.add_task({&train[std::size_t(t)][0], &train[std::size_t(t)][1]}, train_labels[std::size_t(t)],
                   std::vector<index_t>{2 * t, 2 * t + 1});
  }
  CHECK(stats.tasks() == 3);
  CHECK(stats.task_classes(1) == 2);
  CHECK(stats.bytes() == std::size_t(5 * 6 + 25 + 3 * 6 + 9) * sizeof(float));
  // brute force, layer by layer
  std::vector<matrix> means(dims.size()), inverse(dims.size());
  for (std::size_t l = 0; l < dims.size(); ++l) {
    means[l] = matrix::Zero(dims[l], 2 * tasks);
    matrix scatter = matrix::Zero(dims[l], dims[l]);
    for (index_t t = 0; t < tasks; ++t)
      for (index_t i = 0; i < 2 * per_class; ++i)
        means[l].col(train_labels[std::size_t(t)][std::size_t(i)]) += train[std::size_t(t)][l].row(i).transpose() / double(per_class);
    for (index_t t = 0; t < tasks; ++t)
      for (index_t i = 0; i < 2 * per_class; ++i) {
        const Eigen::VectorXd centred = train[std::size_t(t)][l].row(i).transpose() - means[l].col(train_labels[std::size_t(t)][std::size_t(i)]);
        scatter += centred * centred.transpose();
      }
    const matrix sigma = scatter / double(2 * tasks * per_class - 2 * tasks);
    CHECK((stats.covariance(index_t(l)) - sigma).norm() < 1e-10 * sigma.norm());
    CHECK((stats.mean(index_t(l), 2, 1) - means[l].col(5)).norm() < 1e-12 * means[l].norm());
    inverse[l] = sigma.inverse();
  }
  std::vector<index_t> test_labels;
  std::vector<matrix> test;
  for (index_t t = 0; t < tasks; ++t) {
    auto part = draw(t, 40, test_labels);
    for (std::size_t l = 0; l < dims.size(); ++l) {
      if (test.size() <= l) test.emplace_back(0, dims[l]);
      test[l].conservativeResize(test[l].rows() + part[l].rows(), dims[l]);
      test[l].bottomRows(part[l].rows()) = part[l];
    }
  }
  const matrix s = stats.scores({&test[0], &test[1]});
  const matrix s0 = stats.scores({&test[0], nullptr});  // one layer only
  REQUIRE(s.rows() == 3 * 80);
  REQUIRE(s.cols() == 3);
  double worst = 0, worst_single = 0;
  index_t right = 0;
  for (index_t i = 0; i < s.rows(); ++i) {
    // log p(x | task j) = log mean_c exp(sum_l -(x_l - mu)^T S^-1 (x_l - mu) / 2) + a constant of x
    std::vector<double> brute(tasks), single(tasks);
    for (index_t j = 0; j < tasks; ++j) {
      double total = 0, total0 = 0;
      for (index_t c = 2 * j; c < 2 * j + 2; ++c) {
        double exponent = 0, exponent0 = 0;
        for (std::size_t l = 0; l < dims.size(); ++l) {
          const Eigen::VectorXd delta = test[l].row(i).transpose() - means[l].col(c);
          const double q = -0.5 * delta.dot(inverse[l] * delta);
          exponent += q;
          if (l == 0) exponent0 = q;
        }
        total += std::exp(exponent) / 2, total0 += std::exp(exponent0) / 2;
      }
      brute[std::size_t(j)] = std::log(total), single[std::size_t(j)] = std::log(total0);
    }
    for (index_t j = 1; j < tasks; ++j) {  // equal up to a constant of the sample: compare differences
      worst = std::max(worst, std::abs((s(i, j) - s(i, 0)) - (brute[std::size_t(j)] - brute[0])));
      worst_single = std::max(worst_single, std::abs((s0(i, j) - s0(i, 0)) - (single[std::size_t(j)] - single[0])));
    }
    index_t arg;
    s.row(i).maxCoeff(&arg);
    right += arg == i / 80;
  }
  MESSAGE("statistics vs brute-force LDA: worst score difference ", worst, " (two layers), ", worst_single,
          " (one); task identity on the clusters ", double(right) / double(s.rows()));
  CHECK(worst < 1e-8);
  CHECK(worst_single < 1e-8);
  CHECK(double(right) / double(s.rows()) > 0.9);
  // a task with a class that had no sample keeps only its other class; shrinkage makes a singular covariance usable
  gaussian_task_statistics flat({2}, 1e-3);
  matrix first(4, 2), second(4, 2);
  first << 0, 1, 0.2, 1, 4, 1, 4.2, 1;  // the second feature never varies: Sigma is singular
  second << 2.5, 1, 2.7, 1, 2.5, 1, 2.7, 1;
  flat.add_task({&first}, std::vector<index_t>{0, 0, 1, 1}, std::vector<index_t>{0, 1, 7});
  CHECK(flat.task_classes(0) == 2);
  flat.add_task({&second}, std::vector<index_t>{3, 3, 3, 3}, std::vector<index_t>{2, 3});
  CHECK(flat.task_classes(1) == 1);
  const matrix probe = (matrix(2, 2) << 0.1, 1, 2.6, 1).finished();
  const matrix fs = flat.scores({&probe});
  CHECK(fs.allFinite());
  CHECK(fs(0, 0) > fs(0, 1));  // at class 0's mean (0.1): task 0; at 2.6, task 1's single mean
  CHECK(fs(1, 1) > fs(1, 0));
}

TEST_CASE("drift compensation moves the kept means with the current task's displacement") {
  // Kept: task 0 with class 0 around (-5, 0), task 1 with class 1 around (5, 0) (spread 0.1). The current task's
  // images sit near both; those near class 0 move by (0, 1), those near class 1 by (0, -1) while it trains.
  matrix kept0(4, 2), kept1(4, 2);
  kept0 << -5.1, 0, -4.9, 0, -5, 0.1, -5, -0.1;
  kept1 << 4.9, 0, 5.1, 0, 5, 0.1, 5, -0.1;
  matrix before(6, 2), after(6, 2);
  before << -4.8, 0.05, -5.2, -0.05, -5.0, 0.0, 4.8, 0.05, 5.2, -0.05, 5.0, 0.0;
  after = before;
  after.topRows(3).col(1).array() += 1;
  after.bottomRows(3).col(1).array() -= 1;
  auto fresh = [&] {
    gaussian_task_statistics stats({2});
    stats.add_task({&kept0}, std::vector<index_t>{0, 0, 0, 0}, std::vector<index_t>{0});
    stats.add_task({&kept1}, std::vector<index_t>{1, 1, 1, 1}, std::vector<index_t>{1});
    return stats;
  };
  {  // local: each mean follows the images that look like its class
    auto stats = fresh();
    stats.compensate_drift({&before}, {&after}, true);
    CHECK((stats.mean(0, 0, 0) - Eigen::Vector2d(-5, 1)).norm() < 1e-6);
    CHECK((stats.mean(0, 1, 0) - Eigen::Vector2d(5, -1)).norm() < 1e-6);
  }
  {  // mean: both move by the average displacement, (0, 0) here
    auto stats = fresh();
    stats.compensate_drift({&before}, {&after}, false);
    CHECK((stats.mean(0, 0, 0) - Eigen::Vector2d(-5, 0)).norm() < 1e-12);
    CHECK((stats.mean(0, 1, 0) - Eigen::Vector2d(5, 0)).norm() < 1e-12);
  }
  {  // a uniform shift moves every mean by it either way; the shifted images keep their score differences
    const Eigen::RowVector2d shift(0.3, -2);
    const matrix moved = before.rowwise() + shift;
    for (bool local : {true, false}) {
      auto stats = fresh();
      const matrix s_before = stats.scores({&before});
      stats.compensate_drift({&before}, {&moved}, local);
      CHECK((stats.mean(0, 0, 0) - Eigen::Vector2d(-5 + 0.3, -2)).norm() < 1e-9);
      CHECK((stats.mean(0, 1, 0) - Eigen::Vector2d(5 + 0.3, -2)).norm() < 1e-9);
      const matrix s_after = stats.scores({&moved});
      CHECK(((s_after.col(1) - s_after.col(0)) - (s_before.col(1) - s_before.col(0))).norm() < 1e-6 * s_before.norm());
    }
  }
  auto stats = fresh();
  CHECK_THROWS_WITH_AS(stats.compensate_drift({&before}, {&kept0}, true), doctest::Contains("differ in shape"), std::invalid_argument);
}

TEST_CASE("the temperature fitted on one task's scores, against its closed form") {
  // Two tasks, true task 1, score differences s_1 - s_0 = +1 on 3 rows and -1 on 1: the NLL
  //   3/4 log(1 + e^{-1/tau}) + 1/4 log(1 + e^{1/tau}) is smallest where sigmoid(1/tau) = 3/4: tau = 1 / ln 3.
  matrix s(4, 2);
  s << 0, 1, 0.5, 1.5, 2, 3, 1, 0;
  CHECK(fit_task_temperature(s, 1) == doctest::Approx(1 / std::log(3.0)).epsilon(1e-6));
  // scaling the scores scales tau
  CHECK(fit_task_temperature(7 * s, 1) == doctest::Approx(7 / std::log(3.0)).epsilon(1e-6));
  // every row right: the search ends at its lower end
  matrix right(2, 2);
  right << 0, 1, 0, 2;
  CHECK(fit_task_temperature(right, 1, 1e-3, 10) < 1.01e-3);
}

TEST_CASE("DualLoRA rejects bad input with messages") {
  D backend;
  CHECK_THROWS_WITH_AS((lora_layer<linear<D>, dual_lora>(backend, linear<D>(backend, 4, 3), {.rank = 5})),
                       doctest::Contains("rank 5 must be in [1, in 4]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((lora_layer<linear<D>, dual_lora>(backend, linear<D>(backend, 4, 3), {.rank = 2, .gate = dual_gate::softmax, .gate_temperature = 0})),
                       doctest::Contains("gate temperature"), std::invalid_argument);
  lora_layer<linear<D>, dual_lora> layer(backend, linear<D>(backend, 4, 3), {.rank = 2});
  CHECK_THROWS_WITH_AS(layer.adapter().add_residual_task(matrix::Identity(2, 5)), doctest::Contains("5 columns, expected 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(layer.adapter().start_orthogonal_task(matrix::Identity(3, 4)), doctest::Contains("expected 2 x 4"),
                       std::invalid_argument);
  layer.adapter().add_residual_task(matrix::Identity(2, 4));
  CHECK_THROWS_WITH_AS(layer.adapter().add_residual_task(matrix::Identity(1, 4)), doctest::Contains("not finished"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(layer.merge(), doctest::Contains("cannot be merged"), std::invalid_argument);
  lora_layer<linear<D>, dual_lora> shared(backend, linear<D>(backend, 4, 3), {.rank = 2, .orthogonal = dual_orthogonal::shared_projected});
  CHECK_THROWS_WITH_AS(shared.adapter().start_orthogonal_task(matrix::Identity(2, 4)), doctest::Contains("no per-task A"),
                       std::invalid_argument);
  const auto stream = treelora::testing::prototype_image_stream(2, 4, 2);
  CHECK_THROWS_WITH_AS(dual_lora_strategy<D>(stream, {.task_temperature = -1}), doctest::Contains("task temperature"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(dual_lora_strategy<D>(stream, {.statistics_shrinkage = -1}), doctest::Contains("statistics shrinkage"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(gaussian_task_statistics({4, 0}), doctest::Contains("layer dimension 0"), std::invalid_argument);
  gaussian_task_statistics stats({3});
  const matrix x = random_matrix(4, 5, 1);
  const std::vector<index_t> labels = {0, 0, 1, 1};
  CHECK_THROWS_WITH_AS(stats.add_task({&x}, labels, std::vector<index_t>{0, 1}), doctest::Contains("of dimension 3"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(fit_task_temperature(matrix::Zero(3, 2), 2), doctest::Contains("task 2 outside"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(energy_task_scores(dual_task_score::statistics, matrix::Zero(1, 1), std::vector<double>{1},
                                          std::vector<index_t>{1}, 4),
                       doctest::Contains("not an energy score"), std::invalid_argument);
}

TEST_CASE("DualLoRA end to end on a tiny ViT for each option") {
  const auto stream = treelora::testing::prototype_image_stream(4, 48, 24);
  struct variant {
    const char* name;
    dual_lora::config adapter;
    dual_lora_options options;
  };
  const std::vector<variant> variants = {
      {"default (choice A, energy gate, bayes calibration)", {.rank = 4}, {}},
      {"choice B: shared LoRA, projected A-gradient", {.rank = 4, .orthogonal = dual_orthogonal::shared_projected}, {}},
      {"softmax gate", {.rank = 4, .gate = dual_gate::softmax}, {}},
      {"per-basis gate", {.rank = 4, .gate = dual_gate::per_basis}, {}},
      {"top-1 gate", {.rank = 4, .gate = dual_gate::top1}, {}},
      {"stop-gradient gate, branches kept", {.rank = 4, .gate_gradient = false, .merge_finished = false}, {}},
      {"confident-task calibration, k <= 4", {.rank = 4},
       {.memory = {.dual = false, .max_new_bases = 4}, .calibration = dual_calibration::confident_task}},
      {"no calibration", {.rank = 4}, {.calibration = dual_calibration::none}},
      {"relative task score, last adapter (the first reconstruction's predictor)", {.rank = 4},
       {.task_score = dual_task_score::relative, .task_layers = dual_task_layers::last}},
      {"energy task score, all layers", {.rank = 4}, {.task_score = dual_task_score::energy}},
      {"dimension task score, fitted temperature", {.rank = 4}, {.task_score = dual_task_score::dimension, .fit_temperature = true}},
      {"statistics, last adapter, fitted temperature", {.rank = 4},
       {.task_layers = dual_task_layers::last, .fit_temperature = true}},
      {"statistics, mean drift compensation", {.rank = 4}, {.drift_compensation = dual_drift::mean}},
      {"statistics, no drift compensation", {.rank = 4}, {.drift_compensation = dual_drift::none}},
      {"energy, last adapter, fixed temperature (no task-end pass)", {.rank = 4},
       {.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last}},
  };
  for (const auto& v : variants) {
    F backend;
    vit<F, dual_lora> model(backend, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}), v.adapter);
    dual_lora_strategy<F> strategy(stream, v.options);
    {  // before any task there is no task to predict
      const auto& first = stream.tasks[0].test;
      tensor<F> x = tensor<F>::from_host(backend, shape::batched(4, first.example_shape),
                                         std::span<const float>(first.features).subspan(0, std::size_t(4 * first.example_size())));
      const auto none = strategy.predict_tasks(model, x);
      REQUIRE(none.size() == 4);
      for (const auto& p : none) CHECK(p.probabilities.empty());
    }
    auto result = run_stream(model, stream, strategy,
                             [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); },
                             {.epochs_per_task = 2, .batch_size = 16});
    INFO(std::string(v.name));
    REQUIRE(result.task_il.tasks() == 4);
    CHECK(strategy.finished_tasks() == 4);
    for (index_t i = 0; i < 4; ++i)
      for (index_t j = 0; j <= i; ++j) {
        CHECK(std::isfinite(result.task_il(i, j)));
        CHECK(std::isfinite(result.task_identity(i, j)));
      }
    CHECK(result.task_il(0, 0) > 0.8);
    CHECK(final_average_accuracy(result.task_il) > 0.8);
    CHECK(result.state_bytes.back() > 0);
    index_t bases = 0;
    for (const auto& m : strategy.memories()) bases += m.rank();
    CHECK(bases > 0);
    REQUIRE(strategy.own_energy().size() == 4);
    CHECK(strategy.own_energy()[0] > 0.5);  // task 0's basis holds at least eps_0 of its own energy, capped by k
    for (double e : strategy.own_energy()) CHECK((e >= 0 && e <= 1 + 1e-9));
    for (auto* a : model.factorized_adapters()) {
      CHECK(a->residual_tasks() == 4);
      CHECK(a->training_task() == -1);
      if (v.options.memory.max_new_bases > 0)
        for (index_t j = 0; j < 4; ++j) CHECK(a->basis_size(j) <= v.options.memory.max_new_bases);
    }
    // the task predictor: one probability per task, summing to 1, confidence = max
    const auto& test = stream.tasks[3].test;
    tensor<F> x = tensor<F>::from_host(backend, shape::batched(8, test.example_shape),
                                       std::span<const float>(test.features).subspan(0, std::size_t(8 * test.example_size())));
    const auto predictions = strategy.predict_tasks(model, x);
    REQUIRE(predictions.size() == 8);
    for (const auto& p : predictions) {
      REQUIRE(p.probabilities.size() == 4);
      double total = 0;
      for (double q : p.probabilities) total += q;
      CHECK(total == doctest::Approx(1));
      CHECK(p.confidence == doctest::Approx(*std::max_element(p.probabilities.begin(), p.probabilities.end())));
    }
    // the task-end pass: block 0's CLS input is the same for every image and v reads q's input, so the distinct
    // varying layers are the q adapters of blocks 1.. (adapters q0 v0 q1 v1: only adapter 2)
    const bool pass = v.options.task_score == dual_task_score::statistics || v.options.task_layers == dual_task_layers::all ||
                      v.options.fit_temperature;
    if (pass) CHECK(strategy.distinct_layers() == std::vector<index_t>{2});
    if (v.options.task_score == dual_task_score::statistics) {
      CHECK(strategy.statistics().tasks() == 4);
      CHECK(strategy.statistics_layers() == std::vector<index_t>{2});  // v1 (the last) reads q1's statistics
      CHECK(result.state_bytes.back() > strategy.statistics().bytes());
      // the prototype tasks are far apart (measured: 0.92 with the default local drift compensation, 0.85 with
      // mean, 0.74 without; 0.30 for the energy score)
      CHECK(final_average_accuracy(result.task_identity) > 0.6);
    } else {
      CHECK(strategy.statistics().tasks() == 0);
    }
    CHECK(strategy.temperature() > 0);
    if (!v.options.fit_temperature)
      CHECK(strategy.temperature() == (v.options.task_score == dual_task_score::statistics ? 1.0 : 0.05));
    MESSAGE("DualLoRA [", std::string(v.name), "]: ACC ", final_average_accuracy(result.task_il), " BWT ",
            backward_transfer(result.task_il), " class-IL ", final_average_accuracy(result.class_il), " task-id ",
            final_average_accuracy(result.task_identity), " state ", result.state_bytes.back(), " B, ", result.seconds, " s");
  }
}

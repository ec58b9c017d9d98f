// duallora_diagnostics: why DualLoRA's task predictor works or not on the main job (Split Fashion-MNIST, the
// default preset of split_fashion_mnist), printed as Markdown.
//   1. The ceiling: how far the FROZEN pre-trained backbone's CLS features separate the 5 tasks at all: a linear
//      probe (multinomial logistic regression on every task's training features, a diagnostic that no continual
//      method may use), per layer and on the layers DualLoRA reads concatenated; next to it the Gaussian statistics
//      (class means + one shared covariance, LDA) fitted on the same frozen features.
//   2. DualLoRA trained as in the main job (default options: its statistics task score keeps the per-task numbers),
//      then on every task's test images: the energy scores s_j and s_j / e_j per layer (mean and std, 5 x 5 per
//      layer), and the task-identity accuracy of each task score and layer choice on the same trained model; the
//      statistics refitted on the final model's features of all tasks (an oracle: the cost of their drift).
//   duallora_diagnostics [--seed N] [--data DIR] [--cache DIR] [--train-per-class N] [--test-per-class N]
#include <cstdio>
#include <string>
#include <vector>

#include <treelora/io/cli.hpp>
#include <treelora/strategy/duallora.hpp>
#include <treelora/treelora.hpp>
#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using F = cpu_backend<float>;
using matrix = Eigen::MatrixXd;

namespace {

struct features {  // one row per image: every adapter's CLS input, the final CLS feature, the labels
  std::vector<matrix> layers;
  matrix final_cls;
  std::vector<index_t> labels, tasks;
};

/// Every image of `sets` (task j's set is sets[j]) through `model`: the adapters' CLS rows and the head's output.
template <class Model>
features extract(Model& model, const std::vector<const labelled_set*>& sets) {
  features out;
  std::vector<std::vector<matrix>> parts;
  std::vector<matrix> finals;
  for (std::size_t j = 0; j < sets.size(); ++j) {
    const labelled_set& set = *sets[j];
    for (index_t first = 0; first < set.size(); first += 256) {
      const index_t n = std::min<index_t>(256, set.size() - first);
      tensor<F> x = tensor<F>::from_host(model.backend(), shape::batched(n, set.example_shape),
                                         std::span<const float>(set.features).subspan(std::size_t(first * set.example_size()),
                                                                                       std::size_t(n * set.example_size())));
      model.set_training(false);
      const auto logits = model.forward(x).to_host();
      finals.push_back(Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(logits.data(), n, model.classes()).cast<double>());
      parts.emplace_back();
      for (auto* a : model.factorized_adapters()) parts.back().push_back(a->cls_features());
      for (index_t i = 0; i < n; ++i) out.labels.push_back(set.labels[std::size_t(first + i)]), out.tasks.push_back(index_t(j));
    }
  }
  const auto stack = [](const std::vector<matrix>& blocks) {
    index_t rows = 0;
    for (const auto& b : blocks) rows += b.rows();
    matrix m(rows, blocks.front().cols());
    for (index_t r = 0; const auto& b : blocks) m.middleRows(r, b.rows()) = b, r += b.rows();
    return m;
  };
  out.final_cls = stack(finals);
  for (std::size_t l = 0; l < parts.front().size(); ++l) {
    std::vector<matrix> layer;
    for (const auto& p : parts) layer.push_back(p[l]);
    out.layers.push_back(stack(layer));
  }
  return out;
}

matrix columns(const std::vector<const matrix*>& parts) {
  index_t cols = 0;
  for (const auto* p : parts) cols += p->cols();
  matrix m(parts.front()->rows(), cols);
  for (index_t c = 0; const auto* p : parts) m.middleCols(c, p->cols()) = *p, c += p->cols();
  return m;
}

/// Test accuracy of a multinomial logistic regression (standardised features, L2 1e-4, 800 full-batch Adam steps).
double linear_probe(const matrix& train, const std::vector<index_t>& train_y, const matrix& test,
                    const std::vector<index_t>& test_y, index_t classes) {
  const Eigen::RowVectorXd mean = train.colwise().mean();
  const Eigen::RowVectorXd scale =
      ((train.rowwise() - mean).colwise().squaredNorm() / double(train.rows())).cwiseSqrt().cwiseMax(1e-8).cwiseInverse();
  const auto standardise = [&](const matrix& x) {
    matrix z(x.rows(), x.cols() + 1);
    z.leftCols(x.cols()) = (x.rowwise() - mean).array().rowwise() * scale.array();
    z.col(x.cols()).setOnes();
    return z;
  };
  const matrix x = standardise(train), xt = standardise(test);
  matrix w = matrix::Zero(x.cols(), classes), m1 = w, m2 = w, target = matrix::Zero(x.rows(), classes);
  for (index_t i = 0; i < x.rows(); ++i) target(i, train_y[std::size_t(i)]) = 1;
  const auto softmax = [](matrix z) {
    for (index_t i = 0; i < z.rows(); ++i) {
      z.row(i).array() -= z.row(i).maxCoeff();
      z.row(i) = z.row(i).array().exp().matrix() / z.row(i).array().exp().sum();
    }
    return z;
  };
  for (int step = 1; step <= 800; ++step) {
    const matrix g = x.transpose() * (softmax(x * w) - target) / double(x.rows()) + 1e-4 * w;
    m1 = 0.9 * m1 + 0.1 * g;
    m2 = 0.999 * m2 + 0.001 * g.cwiseProduct(g);
    w -= (0.05 * (m1 / (1 - std::pow(0.9, step))).array() / ((m2 / (1 - std::pow(0.999, step))).array().sqrt() + 1e-8)).matrix();
  }
  const matrix z = xt * w;
  index_t right = 0;
  for (index_t i = 0; i < z.rows(); ++i) {
    index_t arg;
    z.row(i).maxCoeff(&arg);
    right += arg == test_y[std::size_t(i)];
  }
  return double(right) / double(z.rows());
}

/// Task-identity accuracy of the per-task Gaussian statistics fitted on `train` (all tasks), on `test`.
double statistics_accuracy(const task_stream& stream, const std::vector<const matrix*>& train, const features& train_f,
                           const std::vector<const matrix*>& test, const features& test_f) {
  std::vector<index_t> dims;
  for (const auto* m : train) dims.push_back(index_t(m->cols()));
  gaussian_task_statistics stats(dims);
  for (index_t j = 0; j < index_t(stream.tasks.size()); ++j) {
    std::vector<index_t> rows;
    for (index_t i = 0; i < index_t(train_f.tasks.size()); ++i)
      if (train_f.tasks[std::size_t(i)] == j) rows.push_back(i);
    std::vector<matrix> parts;
    std::vector<index_t> labels;
    for (const auto* m : train) parts.push_back((*m)(rows, Eigen::all));
    for (index_t r : rows) labels.push_back(train_f.labels[std::size_t(r)]);
    std::vector<const matrix*> views;
    for (const auto& p : parts) views.push_back(&p);
    stats.add_task(views, labels, stream.tasks[std::size_t(j)].classes);
  }
  const matrix s = stats.scores(test);
  index_t right = 0;
  for (index_t i = 0; i < s.rows(); ++i) {
    index_t arg;
    s.row(i).maxCoeff(&arg);
    right += arg == test_f.tasks[std::size_t(i)];
  }
  return double(right) / double(s.rows());
}

}  // namespace

int main(int argc, char** argv) try {
#if defined(_OPENMP)
  omp_set_num_threads(1);  // the main job's default; a 2-thread Eigen product stalls on a shared machine
#endif
  std::uint64_t seed = 0;
  std::string data_dir(fashion_mnist_directory), cache = "treelora-cache";
  index_t train_per_class = 1200, test_per_class = 500;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--seed") seed = cli::parse_unsigned(key, value);
    else if (key == "--data") data_dir = value;
    else if (key == "--cache") cache = value;
    else if (key == "--train-per-class") train_per_class = cli::parse_integer(key, value, 0, 6000);
    else if (key == "--test-per-class") test_per_class = cli::parse_integer(key, value, 0, 1000);
    else throw_invalid_argument("duallora_diagnostics", concat("unknown option ", key));
  }
  if (argc % 2 == 0) throw_invalid_argument("duallora_diagnostics", "every option takes a value");
  const auto data = load_fashion_mnist(data_dir);
  // the main job's default preset: the same backbone cache file, configuration and pre-training
  vit_config config{.patch_size = 7, .width = 64, .depth = 4, .heads = 4, .mlp_ratio = 2.0, .classes = 10, .lora_rank = 8,
                    .lora_alpha = 16, .seed = 1000};
  labelled_set unlabelled{data.train.example_shape, data.train.features, std::vector<index_t>(data.train.labels.size(), 0)};
  const auto backbone = load_or_pretrain(std::filesystem::path(cache) / "vit-backbone-w64-d4-p7-h4.bin", config, unlabelled,
                                         {.epochs = 3, .max_images = 20000, .seed = 1000});
  const task_stream stream = split_fashion_mnist(data, {.train_per_class = train_per_class, .test_per_class = test_per_class,
                                                        .subsample_seed = seed});
  const index_t tasks = index_t(stream.tasks.size());
  std::vector<const labelled_set*> train_sets, test_sets;
  for (const auto& t : stream.tasks) train_sets.push_back(&t.train), test_sets.push_back(&t.test);
  config.seed = seed;
  std::printf("# DualLoRA diagnostics, Split Fashion-MNIST, seed %llu\n\n", (unsigned long long)seed);

  // ---- 1. the ceiling: the frozen backbone's CLS features
  F backend;
  {
    vit<F, dual_lora> frozen(backend, config, {.rank = 8, .seed = seed});
    frozen.load_backbone_state(backbone);
    frozen.reset_head(config.width, 0);  // identity head: the logits are the final LN(CLS) feature
    std::vector<float> eye(std::size_t(config.width * config.width), 0.0f);
    for (index_t i = 0; i < config.width; ++i) eye[std::size_t(i * config.width + i)] = 1;
    backend.copy_from_host(eye.data(), frozen.head().weight().data(), index_t(eye.size()));
    frozen.head().bias().fill(0.0f);
    const features train = extract(frozen, train_sets), test = extract(frozen, test_sets);
    std::printf("## 1. Frozen backbone: how far its CLS features separate the tasks (test images)\n\n");
    std::printf("| CLS feature | linear probe, task (5-way) %% | linear probe, class (10-way) %% | Gaussian statistics, task %% |\n|---|---|---|---|\n");
    const auto row = [&](const std::string& name, std::vector<const matrix*> tr, std::vector<const matrix*> te) {
      std::printf("| %s | %.2f | %.2f | %.2f |\n", name.c_str(), 100 * linear_probe(columns(tr), train.tasks, columns(te), test.tasks, tasks),
                  100 * linear_probe(columns(tr), train.labels, columns(te), test.labels, stream.total_classes),
                  100 * statistics_accuracy(stream, tr, train, te, test));
      std::fflush(stdout);
    };
    std::vector<const matrix*> blocks_train, blocks_test;
    for (index_t b = 0; b < config.depth; ++b) {  // adapters q, v per block: the q adapter's input is the block's LN1(CLS)
      row(concat("block ", b, " input (LN1)"), {&train.layers[std::size_t(2 * b)]}, {&test.layers[std::size_t(2 * b)]});
      if (b > 0) blocks_train.push_back(&train.layers[std::size_t(2 * b)]), blocks_test.push_back(&test.layers[std::size_t(2 * b)]);
    }
    row("final LN(CLS) (the head's input)", {&train.final_cls}, {&test.final_cls});
    row("blocks 1-3 together (what DualLoRA reads)", blocks_train, blocks_test);
    blocks_train.push_back(&train.final_cls), blocks_test.push_back(&test.final_cls);
    row("blocks 1-3 + final", blocks_train, blocks_test);
    std::printf("\n");
  }

  // ---- 2. DualLoRA as in the main job, then its scores on every task's test images
  vit<F, dual_lora> model(backend, config, {.rank = 8, .seed = seed});
  model.load_backbone_state(backbone);
  dual_lora_strategy<F> strategy(stream);
  progress_bar progress(concat("[DualLoRA seed ", seed, "]"));
  const auto result = run_stream(model, stream, strategy,
                                 [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-3}); },
                                 {.epochs_per_task = 2, .batch_size = 64, .seed = seed, .guard = {.enabled = true}}, progress);
  std::printf("## 2. DualLoRA (defaults), after the last task\n\ntask-IL ACC %.2f, class-IL ACC %.2f, task identity %.2f %%\n\n",
              100 * final_average_accuracy(result.task_il), 100 * final_average_accuracy(result.class_il),
              100 * final_average_accuracy(result.task_identity));
  const auto layers = strategy.distinct_layers();
  const auto adapters = model.factorized_adapters();
  // every test image once through the final model: its scores for each task score and layer choice
  std::vector<std::vector<index_t>> chosen;  // [variant][image]
  std::vector<std::string> names;
  std::vector<std::vector<matrix>> energy(layers.size());  // [layer][true task] s rows
  const auto variant = [&](const std::string& name, dual_task_score score, const std::vector<index_t>& which) {
    names.push_back(name);
    chosen.emplace_back();
    return std::pair{score, which};
  };
  std::vector<std::pair<dual_task_score, std::vector<index_t>>> variants;
  const std::pair<const char*, dual_task_score> kinds[] = {{"energy", dual_task_score::energy}, {"relative", dual_task_score::relative},
                                                           {"dimension", dual_task_score::dimension},
                                                           {"statistics", dual_task_score::statistics}};
  for (const auto& [kind, score] : kinds) {
    for (index_t l : layers) variants.push_back(variant(concat(kind, ", adapter ", l), score, {l}));
    variants.push_back(variant(concat(kind, ", last adapter"), score, {index_t(adapters.size()) - 1}));
    variants.push_back(variant(concat(kind, ", all distinct layers"), score, layers));
  }
  std::vector<index_t> truth;
  for (index_t j = 0; j < tasks; ++j) {
    const auto& set = stream.tasks[std::size_t(j)].test;
    for (std::size_t l = 0; l < layers.size(); ++l) energy[l].emplace_back(0, tasks);
    for (index_t first = 0; first < set.size(); first += 256) {
      const index_t n = std::min<index_t>(256, set.size() - first);
      tensor<F> x = tensor<F>::from_host(backend, shape::batched(n, set.example_shape),
                                         std::span<const float>(set.features).subspan(std::size_t(first * set.example_size()),
                                                                                       std::size_t(n * set.example_size())));
      model.set_training(false);
      (void)model.forward(x);
      for (std::size_t v = 0; v < variants.size(); ++v) {
        const matrix s = strategy.task_scores(model, variants[v].first, variants[v].second);
        for (index_t i = 0; i < n; ++i) {
          index_t arg;
          s.row(i).maxCoeff(&arg);
          chosen[v].push_back(arg);
        }
      }
      for (std::size_t l = 0; l < layers.size(); ++l) {
        matrix& m = energy[l][std::size_t(j)];
        m.conservativeResize(m.rows() + n, tasks);
        m.bottomRows(n) = adapters[std::size_t(layers[l])]->scores();
      }
      for (index_t i = 0; i < n; ++i) truth.push_back(j);
    }
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const index_t a = layers[l];
    std::printf("### Adapter %lld: k_j =", (long long)a);
    for (index_t j = 0; j < tasks; ++j) std::printf(" %lld", (long long)adapters[std::size_t(a)]->basis_size(j));
    std::printf(", e_j =");
    for (double e : strategy.own_energy(a)) std::printf(" %.3f", e);
    std::printf("\n\n| test images of | s_0 | s_1 | s_2 | s_3 | s_4 | s_j / e_j: 0 | 1 | 2 | 3 | 4 |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (index_t i = 0; i < tasks; ++i) {
      const matrix& m = energy[l][std::size_t(i)];
      std::printf("| T%lld |", (long long)i);
      for (int relative = 0; relative < 2; ++relative)
        for (index_t j = 0; j < tasks; ++j) {
          const double e = relative ? strategy.own_energy(a)[std::size_t(j)] : 1.0;
          const Eigen::ArrayXd c = m.col(j).array() / e;
          std::printf(" %.3f ± %.3f |", c.mean(), std::sqrt((c - c.mean()).square().mean()));
        }
      std::printf("\n");
    }
    std::printf("\n");
  }
  std::printf("### Task identity on the final model (test images of every task, argmax_j S_j)\n\n| task score | task identity %% | per task %% |\n|---|---|---|\n");
  for (std::size_t v = 0; v < variants.size(); ++v) {
    std::vector<double> right(std::size_t(tasks), 0), count(std::size_t(tasks), 0);
    for (std::size_t i = 0; i < truth.size(); ++i) right[std::size_t(truth[i])] += chosen[v][i] == truth[i], ++count[std::size_t(truth[i])];
    double total = 0;
    std::string per;
    for (index_t j = 0; j < tasks; ++j) total += right[std::size_t(j)], per += concat(j ? " / " : "", int(100 * right[std::size_t(j)] / count[std::size_t(j)] + 0.5));
    std::printf("| %s | %.2f | %s |\n", names[v].c_str(), 100 * total / double(truth.size()), per.c_str());
  }
  // the oracle: statistics refitted on the final model's features of every task (no drift), same layers
  const features train = extract(model, train_sets), test = extract(model, test_sets);
  std::vector<const matrix*> tr, te;
  for (index_t l : layers) tr.push_back(&train.layers[std::size_t(l)]), te.push_back(&test.layers[std::size_t(l)]);
  std::printf("\nOracle (not replay-free: every task's training features through the final model): statistics %.2f %%, "
              "linear probe %.2f %% (all distinct layers)\n",
              100 * statistics_accuracy(stream, tr, train, te, test), 100 * linear_probe(columns(tr), train.tasks, columns(te), test.tasks, tasks));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "duallora_diagnostics: %s\n", e.what());
  return 1;
}

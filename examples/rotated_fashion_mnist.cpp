// rotated_fashion_mnist: domain-incremental learning. Every task holds the same ten Fashion-MNIST classes,
// turned by its own angle, on disjoint images. A small ViT with LoRA on q and v (backbone pre-trained by
// rotation prediction without labels, cached in treelora-cache/) learns them in order with SeqLoRA and
// TreeLoRA (paper mode). The tasks share their classes: only task-IL accuracy is meaningful. See --help.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <treelora/data/domain_incremental.hpp>
#include <treelora/io/cli.hpp>
#include <treelora/treelora.hpp>
#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using F = cpu_backend<float>;

const char* usage =
    "usage: rotated_fashion_mnist [options]\n"
    "  --data DIR           Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --angles A,B,...     one task per angle, degrees counter-clockwise (default 0,45,90,135)\n"
    "  --train-per-task N   training images per task, 0 = an even share of all 60000 (default 2000)\n"
    "  --test-per-task N    test images per task, 0 = an even share of all 10000 (default 500)\n"
    "  --epochs N           epochs per task (default 2)\n"
    "  --threads N          OpenMP threads (default 1)\n";

struct options {
  std::string data = std::string(fashion_mnist_directory);
  std::vector<double> angles = {0, 45, 90, 135};
  index_t train_per_task = 2000, test_per_task = 500, epochs = 2, threads = 1;
};

options parse(int argc, char** argv) {
  options o;
  const std::string known = " --data --angles --train-per-task --test-per-task --epochs --threads ";
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "--help" || key == "-h") std::printf("%s", usage), std::exit(0);
    const bool is_known = known.find(" " + key + " ") != std::string::npos;
    if (!is_known || i + 1 == argc)
      throw_invalid_argument("rotated_fashion_mnist",
                             concat(is_known ? "no value for " : "unknown option ", key, "\n", usage));
    const std::string value = argv[++i];
    const auto count = [&](index_t low) { return cli::parse_integer(key, value, low, 1'000'000); };
    if (key == "--data") o.data = value;
    else if (key == "--train-per-task") o.train_per_task = count(0);
    else if (key == "--test-per-task") o.test_per_task = count(0);
    else if (key == "--epochs") o.epochs = count(1);
    else if (key == "--threads") o.threads = count(1);
    else {  // --angles
      o.angles.clear();
      for (const auto& angle : cli::parse_list(key, value)) o.angles.push_back(cli::parse_real(key, angle));
    }
  }
  return o;
}

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
#if defined(_OPENMP)
  omp_set_num_threads(static_cast<int>(o.threads));
#endif
  const auto data = load_fashion_mnist(o.data);  // normalised: a black pixel is black_pixel_value(), the fill
  const task_stream stream = rotated_stream(data.train, data.test, {.angles = o.angles,
                                                                    .train_per_task = o.train_per_task,
                                                                    .test_per_task = o.test_per_task});
  std::printf("%s, %lld training / %lld test images per task; tasks share classes: %s\n", stream.name.c_str(),
              (long long)stream.tasks[0].train.size(), (long long)stream.tasks[0].test.size(),
              tasks_share_classes(stream) ? "yes" : "no");
  const vit_config config{.width = 64, .depth = 2, .heads = 4, .mlp_ratio = 2.0, .classes = 10, .seed = 0};
  std::filesystem::create_directories("treelora-cache");  // pre-training reads the images, never the labels
  const auto backbone = load_or_pretrain("treelora-cache/vit-rotated-example.bin", config, data.train,
                                         {.epochs = 3, .max_images = 10000, .seed = 1000});
  const auto run = [&](const char* method, auto strategy) {
    F backend;
    vit<F> model(backend, config);
    model.load_backbone_state(backbone);
    progress_bar progress(concat("[", method, "]"));
    const auto optimizer = [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-3}); };
    const auto r = run_stream(model, stream, strategy, optimizer, {.epochs_per_task = o.epochs}, progress);
    std::printf("\n%s, task-IL accuracy (%%) after task i (rows) on task j (columns):\n%s", method,
                r.task_il.to_table().c_str());
    std::printf("%s: ACC %.2f %%, BWT %.2f %% (forgetting positive), %.1f s training\n", method,
                100 * final_average_accuracy(r.task_il),
                r.task_il.tasks() > 1 ? 100 * backward_transfer(r.task_il) : std::nan(""), r.seconds);
  };
  run("SeqLoRA", seq_lora{});
  run("TreeLoRA-paper", tree_lora_paper<F>({}));  // the tree as deep as the 4 adapted modules
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());  // "treelora::<where>: <what>"
  return 1;
}

// treelora/models/pretrain.hpp: offline pre-training of the ViT backbone WITHOUT the continual tasks' labels, and
// its cache on disk.
// Rotation prediction (Gidaris et al. 2018): each image is turned by k quarter turns, k in {0, 1, 2, 3} drawn per
// image and epoch, and a 4-way head learns k; the whole backbone trains with Adam (linear warm-up, then cosine
// decay). Only the images are read: the labels of the data set are never touched.
//
// Cache file (little-endian), written atomically (temporary file, then rename):
//   offset  0  8 bytes  magic "TLVITBB1"
//           8  u32      format version (backbone_cache_format_version)
//          12  u32      0 (reserved)
//          16  u64      fingerprint: FNV-1a-64 of the backbone-shaping vit_config fields, the pre-training
//                       settings and a sample of the images (backbone_fingerprint)
//          24  u64      payload size in bytes
//          32  u64      checksum: FNV-1a-64 over bytes 16..23 (the fingerprint) and the payload
//          40  payload  u32 parameter count, then per parameter: u32 name length, name bytes, u32 rank,
//                       rank x u64 extents, numel x f32 values
// load_or_pretrain loads when the file is valid and its fingerprint matches; otherwise it says why on the progress
// stream (missing / unreadable / corrupt / config mismatch), pre-trains, and writes the file (when it cannot, it says
// so and carries on). The reader trusts nothing in the file, a valid checksum included: every count and size is
// checked against the bytes left before anything is allocated (fuzzed by tests/fuzz/fuzz_backbone_cache.cpp).
#pragma once

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "treelora/core/hash.hpp"
#include "treelora/data/batching.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/io/atomic_file.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/optim/adam.hpp"

namespace treelora {

static_assert(std::endian::native == std::endian::little, "treelora: the backbone cache format assumes a little-endian host");

inline constexpr std::uint32_t backbone_cache_format_version = 1;
/// Part of the fingerprint, bumped when the same configuration, settings and images pre-train other bits, so that
/// older caches are pre-trained again. 2: the CPU GEMM cuts C into tiles fixed by the shape, and results no longer
/// follow the thread count (a cache written before held whichever thread count's backbone ran first).
inline constexpr std::uint32_t backbone_numerics_revision = 2;

struct pretrain_settings {
  index_t epochs = 3;
  index_t batch_size = 128;
  double learning_rate = 1e-3;   ///< peak learning rate of Adam
  double weight_decay = 0.0;     ///< decoupled (AdamW) when positive
  index_t warmup_steps = 100;    ///< linear warm-up, then cosine decay to 0 over the remaining steps
  index_t max_images = 0;        ///< use at most this many images, a seeded choice (0: all)
  std::uint64_t seed = 0;        ///< image choice, rotations, batch order and the rotation head
  std::ostream* progress = &std::cerr;  ///< one line per epoch and the cache decisions; nullptr: silent (not hashed)
};

struct pretrain_report {
  index_t images = 0;
  index_t steps = 0;
  double final_loss = 0;      ///< mean loss of the last epoch
  double final_accuracy = 0;  ///< rotation accuracy over the last epoch (while training)
  double seconds = 0;
};

/// Turns a square image ([channels, n, n] row-major) by `quarter_turns` x 90 degrees counter-clockwise.
///   k = 1: out[y][x] = in[x][n-1-y];  k = 2: out[y][x] = in[n-1-y][n-1-x];  k = 3: out[y][x] = in[n-1-x][y]
inline void rotate_quarter_turns(const float* in, float* out, index_t channels, index_t n, int quarter_turns) {
  for (index_t c = 0; c < channels; ++c) {
    const float* src = in + c * n * n;
    float* dst = out + c * n * n;
    for (index_t y = 0; y < n; ++y)
      for (index_t x = 0; x < n; ++x) {
        index_t sy = y, sx = x;
        switch (quarter_turns & 3) {
          case 1: sy = x; sx = n - 1 - y; break;
          case 2: sy = n - 1 - y; sx = n - 1 - x; break;
          case 3: sy = n - 1 - x; sx = y; break;
          default: break;
        }
        dst[y * n + x] = src[sy * n + sx];
      }
  }
}

/// A hash of everything that determines the pre-trained backbone: the architecture and initialisation fields of
/// the config (not classes and not the LoRA settings: one cache serves every adapter configuration), the
/// pre-training settings, and the image count, shape and 4096 evenly spaced pixel values.
inline std::uint64_t backbone_fingerprint(const vit_config& config, const pretrain_settings& settings,
                                          image_view images) {
  std::uint64_t h = fnv1a64("treelora vit backbone", 21);
  auto mix = [&h](auto value) { h = fnv1a64(&value, sizeof(value), h); };
  mix(backbone_cache_format_version);
  mix(backbone_numerics_revision);
  for (index_t v : {config.image_height, config.image_width, config.channels, config.patch_size, config.width,
                    config.depth, config.heads, config.mlp_hidden()})
    mix(v);
  mix(config.layer_norm_epsilon);
  mix(config.seed);
  for (index_t v : {settings.epochs, settings.batch_size, settings.warmup_steps, settings.max_images}) mix(v);
  mix(settings.learning_rate);
  mix(settings.weight_decay);
  mix(settings.seed);
  const std::size_t count = images.features.size();
  mix(static_cast<std::uint64_t>(count));
  for (int axis = 0; axis < images.example_shape.rank(); ++axis) mix(images.example_shape[axis]);
  const std::size_t samples = std::min<std::size_t>(count, 4096);
  for (std::size_t i = 0; i < samples; ++i) mix(images.features[i * count / samples]);
  return h;
}

/// Why a cache file could not be used. `unreadable`: a directory or another non-file at the path, an I/O
/// error, or not enough memory to hold it.
class backbone_cache_error : public std::runtime_error {
 public:
  enum class reason { missing, corrupt, mismatch, unreadable };
  backbone_cache_error(reason r, const std::string& what) : std::runtime_error(what), reason_(r) {}
  reason why() const { return reason_; }

 private:
  reason reason_;
};

namespace detail {
template <class T>
void put(std::vector<char>& out, T value) {
  const auto* p = reinterpret_cast<const char*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}
template <class T>
T take(const std::vector<char>& in, std::size_t& at, const std::filesystem::path& path) {
  if (at > in.size() || in.size() - at < sizeof(T))
    throw backbone_cache_error(backbone_cache_error::reason::corrupt,
                               concat("treelora::load_backbone: ", path.string(), ": corrupt (payload ends early)"));
  T value;
  std::memcpy(&value, in.data() + at, sizeof(T));
  at += sizeof(T);
  return value;
}
inline std::uint64_t cache_checksum(std::uint64_t fingerprint, const char* payload, std::size_t bytes) {
  return fnv1a64(payload, bytes, fnv1a64(&fingerprint, sizeof(fingerprint)));
}
inline std::uint64_t cache_checksum(std::uint64_t fingerprint, const std::vector<char>& payload) {
  return cache_checksum(fingerprint, payload.data(), payload.size());
}
}  // namespace detail

/// Writes backbone parameters with their fingerprint (see the format above).
inline void save_backbone(const std::filesystem::path& path, std::uint64_t fingerprint,
                          const std::vector<host_parameter>& state) {
  constexpr std::size_t u32_max = 0xffffffffu;
  if (state.size() > u32_max)
    throw_invalid_argument("save_backbone", concat(state.size(), " parameters (at most 2^32 - 1)"));
  std::vector<char> payload;
  detail::put(payload, static_cast<std::uint32_t>(state.size()));
  for (const auto& p : state) {
    if (static_cast<index_t>(p.values.size()) != p.value_shape.numel())
      throw_invalid_argument("save_backbone", concat(p.name, ": ", p.values.size(), " values for ", p.value_shape.to_string()));
    if (p.name.size() > u32_max)
      throw_invalid_argument("save_backbone", concat("a name of ", p.name.size(), " bytes"));
    detail::put(payload, static_cast<std::uint32_t>(p.name.size()));
    payload.insert(payload.end(), p.name.begin(), p.name.end());
    detail::put(payload, static_cast<std::uint32_t>(p.value_shape.rank()));
    for (int axis = 0; axis < p.value_shape.rank(); ++axis) detail::put(payload, static_cast<std::uint64_t>(p.value_shape[axis]));
    const auto* bytes = reinterpret_cast<const char*>(p.values.data());
    payload.insert(payload.end(), bytes, bytes + p.values.size() * sizeof(float));
  }
  std::vector<char> file(8);
  std::memcpy(file.data(), "TLVITBB1", 8);
  detail::put(file, backbone_cache_format_version);
  detail::put(file, std::uint32_t(0));
  detail::put(file, fingerprint);
  detail::put(file, static_cast<std::uint64_t>(payload.size()));
  detail::put(file, detail::cache_checksum(fingerprint, payload));
  file.insert(file.end(), payload.begin(), payload.end());
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) throw_runtime_error("save_backbone", concat("cannot create ", path.parent_path().string(), " (", ec.message(), ")"));
  write_file_atomically(path, std::string_view(file.data(), file.size()));  // unique temporary, fsync, rename
}

/// Reads a backbone file. Every failure throws backbone_cache_error, a std::runtime_error whose message names
/// the path and the fault: missing, unreadable, corrupt, or a fingerprint other than `expected` (mismatch).
inline std::vector<host_parameter> load_backbone(const std::filesystem::path& path, std::uint64_t expected) {
  using reason = backbone_cache_error::reason;
  auto error = [&](reason r, const std::string& what) {
    return backbone_cache_error(r, concat("treelora::load_backbone: ", path.string(), ": ", what));
  };
  auto corrupt = [&](const std::string& what) {
    return error(reason::corrupt, concat("corrupt (", what, ")"));
  };
  try {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (status.type() == std::filesystem::file_type::not_found) throw error(reason::missing, "missing");
    if (ec) throw error(reason::unreadable, concat("unreadable (", ec.message(), ")"));
    if (std::filesystem::is_directory(status))
      throw error(reason::unreadable, "unreadable (a directory, not a cache file)");
    if (!std::filesystem::is_regular_file(status))
      throw error(reason::unreadable, "unreadable (not a regular file)");
    std::ifstream in(path, std::ios::binary);
    const auto bytes = std::filesystem::file_size(path, ec);
    if (!in || ec)
      throw error(reason::unreadable, concat("unreadable (", ec ? ec.message() : "cannot open", ")"));
    std::vector<char> file(static_cast<std::size_t>(bytes));  // what the file holds, nothing it merely claims
    in.read(file.data(), static_cast<std::streamsize>(file.size()));
    if (static_cast<std::uint64_t>(in.gcount()) != bytes)
      throw error(reason::unreadable, concat("unreadable (read ", in.gcount(), " of its ", bytes, " bytes)"));

    if (file.size() < 40) throw corrupt(concat("truncated header: ", file.size(), " bytes"));
    if (std::memcmp(file.data(), "TLVITBB1", 8) != 0) throw corrupt("bad magic");
    std::size_t at = 8;
    const auto version = detail::take<std::uint32_t>(file, at, path);
    if (version != backbone_cache_format_version)
      throw corrupt(concat("format version ", version, ", this build reads ", backbone_cache_format_version));
    at += 4;
    const auto fingerprint = detail::take<std::uint64_t>(file, at, path);
    const auto size = detail::take<std::uint64_t>(file, at, path);
    const auto checksum = detail::take<std::uint64_t>(file, at, path);
    if (file.size() - 40 != size)
      throw corrupt(concat("payload of ", file.size() - 40, " bytes, the header says ", size));
    if (detail::cache_checksum(fingerprint, file.data() + 40, file.size() - 40) != checksum)
      throw corrupt("checksum mismatch");
    if (fingerprint != expected)
      throw error(reason::mismatch,
                  "config mismatch (the file was pre-trained with another configuration, settings or data)");

    // The payload. A valid checksum says only that these are the bytes that were written: every count and
    // size is still checked against the bytes left, with checked arithmetic, before anything is allocated.
    const auto left = [&] { return file.size() - at; };
    const auto count = detail::take<std::uint32_t>(file, at, path);
    if (count > left() / 8)  // a name length and a rank at least
      throw corrupt(concat(count, " parameters cannot fit in the ", left(), " bytes left"));
    std::vector<host_parameter> state;
    for (std::uint32_t i = 0; i < count; ++i) {
      host_parameter p;
      const auto length = detail::take<std::uint32_t>(file, at, path);
      if (length > left()) throw corrupt("a parameter name runs past the payload");
      p.name.assign(file.data() + at, length);
      at += length;
      const auto rank = detail::take<std::uint32_t>(file, at, path);
      if (rank > static_cast<std::uint32_t>(shape::max_rank))
        throw corrupt(concat(p.name, ": rank ", rank, " (at most ", shape::max_rank, ")"));
      index_t dims[shape::max_rank] = {};
      std::uint64_t values = 1;
      bool overflow = false, empty = false;
      for (std::uint32_t axis = 0; axis < rank; ++axis) {
        const auto extent = detail::take<std::uint64_t>(file, at, path);
        if (extent > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
          throw corrupt(concat(p.name, ": extent ", extent, " does not fit in index_t"));
        dims[axis] = static_cast<index_t>(extent);
        empty = empty || extent == 0;
        overflow = overflow || __builtin_mul_overflow(values, extent, &values);
      }
      p.value_shape = rank == 0   ? shape{}
                      : rank == 1 ? shape{dims[0]}
                      : rank == 2 ? shape{dims[0], dims[1]}
                      : rank == 3 ? shape{dims[0], dims[1], dims[2]}
                                  : shape{dims[0], dims[1], dims[2], dims[3]};
      if (empty)
        values = 0;  // whatever the other extents
      else if (overflow)
        values = std::numeric_limits<std::uint64_t>::max();  // more than any payload holds
      if (values > left() / sizeof(float))
        throw corrupt(concat(p.name, ": ", p.value_shape.to_string(), " runs past the payload (", left(),
                             " bytes left)"));
      p.values.resize(static_cast<std::size_t>(values));
      if (values > 0) std::memcpy(p.values.data(), file.data() + at, p.values.size() * sizeof(float));
      at += p.values.size() * sizeof(float);
      state.push_back(std::move(p));
    }
    if (at != file.size()) throw corrupt("trailing bytes after the last parameter");
    return state;
  } catch (const backbone_cache_error&) {
    throw;
  } catch (const std::exception& e) {  // an I/O error from the stream, or no memory for a (large, valid) file
    throw error(reason::unreadable, concat("unreadable (", e.what(), ")"));
  }
}

/// Accuracy of rotation prediction over all four rotations of (up to) `max_images` images of `images`.
template <Backend B>
double rotation_accuracy(vit<B>& model, image_view images, index_t max_images = 0, index_t batch_size = 256) {
  const index_t size = model.config().image_features(), n_all = static_cast<index_t>(images.features.size()) / size;
  const index_t n = max_images > 0 ? std::min(max_images, n_all) : n_all;
  const index_t side = model.config().image_height;
  std::vector<float> staging;
  std::vector<typename B::scalar_type> converted;
  tensor<B> batch;
  index_t correct = 0, total = 0;
  model.set_training(false);
  for (index_t first = 0; first < n; first += batch_size) {
    const index_t count = std::min(batch_size, n - first);
    staging.resize(static_cast<std::size_t>(4 * count * size));
    std::vector<index_t> labels;
    for (int k = 0; k < 4; ++k)
      for (index_t i = 0; i < count; ++i) {
        rotate_quarter_turns(images.features.data() + (first + i) * size, staging.data() + (k * count + i) * size,
                             model.config().channels, side, k);
        labels.push_back(k);
      }
    converted.assign(staging.begin(), staging.end());
    batch.resize(model.backend(), shape{4 * count, size});
    model.backend().copy_from_host(converted.data(), batch.data(), batch.numel());
    const auto predicted = argmax_rows<B>(model.forward(batch));
    for (std::size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
    total += static_cast<index_t>(labels.size());
  }
  model.set_training(true);
  return total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0;
}

/// Trains `model`'s whole backbone and a fresh 4-way head on rotation prediction. The images' labels are not read.
template <Backend B>
pretrain_report pretrain_rotation(vit<B>& model, image_view images, const pretrain_settings& settings) {
  using S = typename B::scalar_type;
  const vit_config& config = model.config();
  if (config.image_height != config.image_width)
    throw_invalid_argument("pretrain_rotation", concat("rotation needs square images, got ", config.image_height, " x ",
                                                       config.image_width));
  const index_t size = config.image_features();
  if (images.example_size() != size)
    throw_invalid_argument("pretrain_rotation", concat("examples ", images.example_shape.to_string(), " do not match the ",
                                                       config.channels, " x ", config.image_height, " x ",
                                                       config.image_width, " images of the model"));
  if (settings.epochs < 0 || settings.batch_size <= 0)
    throw_invalid_argument("pretrain_rotation", concat("epochs ", settings.epochs, ", batch size ", settings.batch_size));
  const index_t available = static_cast<index_t>(images.features.size()) / size;
  std::vector<index_t> chosen = epoch_permutation(available, settings.seed, -1);
  if (settings.max_images > 0 && settings.max_images < available) chosen.resize(static_cast<std::size_t>(settings.max_images));
  const index_t n = static_cast<index_t>(chosen.size());
  if (n == 0) throw_invalid_argument("pretrain_rotation", "no images");

  model.reset_head(4, random::mix64(settings.seed + 4));
  model.set_backbone_trainable(true);
  model.set_training(true);
  auto params = parameters(model);
  adam_options options{.learning_rate = settings.learning_rate, .weight_decay = settings.weight_decay,
                       .decoupled_weight_decay = settings.weight_decay > 0};
  adam<B> optimizer(params, options);
  const index_t steps_per_epoch = (n + settings.batch_size - 1) / settings.batch_size;
  const index_t total_steps = std::max<index_t>(steps_per_epoch * settings.epochs, 1);
  auto learning_rate = [&](index_t step) {  // linear warm-up, then cosine decay to 0
    if (step < settings.warmup_steps) return settings.learning_rate * static_cast<double>(step + 1) / static_cast<double>(settings.warmup_steps);
    const double progress = static_cast<double>(step - settings.warmup_steps) /
                            static_cast<double>(std::max<index_t>(total_steps - settings.warmup_steps, 1));
    return settings.learning_rate * 0.5 * (1 + std::cos(std::numbers::pi * std::min(progress, 1.0)));
  };

  std::vector<float> staging;
  std::vector<S> converted;
  std::vector<index_t> rotations;
  tensor<B> batch, gradient;
  pretrain_report report;
  report.images = n;
  const auto start = std::chrono::steady_clock::now();
  for (index_t epoch = 0; epoch < settings.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    const auto order = epoch_permutation(n, settings.seed, epoch);
    random::generator turns(random::mix64(settings.seed ^ (0x7074ULL + static_cast<std::uint64_t>(epoch))));
    double loss_sum = 0;
    index_t correct = 0;
    for (index_t first = 0; first < n; first += settings.batch_size) {
      const index_t count = std::min(settings.batch_size, n - first);
      staging.resize(static_cast<std::size_t>(count * size));
      rotations.resize(static_cast<std::size_t>(count));
      for (index_t i = 0; i < count; ++i) {
        const int k = static_cast<int>(turns.below(4));
        rotations[static_cast<std::size_t>(i)] = k;
        const index_t image = chosen[static_cast<std::size_t>(order[static_cast<std::size_t>(first + i)])];
        rotate_quarter_turns(images.features.data() + image * size, staging.data() + i * size, config.channels,
                             config.image_height, k);
      }
      converted.assign(staging.begin(), staging.end());
      batch.resize(model.backend(), shape{count, size});
      model.backend().copy_from_host(converted.data(), batch.data(), batch.numel());
      gradient.resize(model.backend(), shape{count, 4});
      optimizer.set_learning_rate(learning_rate(report.steps));
      optimizer.zero_grad();
      const auto logits = model.forward(batch);
      loss_sum += cross_entropy_loss<B>(logits, rotations, gradient) * static_cast<double>(count);
      const auto predicted = argmax_rows<B>(logits);
      for (index_t i = 0; i < count; ++i) correct += predicted[static_cast<std::size_t>(i)] == rotations[static_cast<std::size_t>(i)];
      model.backward(gradient);
      optimizer.step();
      ++report.steps;
    }
    report.final_loss = loss_sum / static_cast<double>(n);
    report.final_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    const auto now = std::chrono::steady_clock::now();
    report.seconds = std::chrono::duration<double>(now - start).count();
    if (settings.progress)
      *settings.progress << "treelora: rotation pre-training epoch " << epoch + 1 << "/" << settings.epochs << ": loss "
                         << std::fixed << std::setprecision(4) << report.final_loss << ", rotation accuracy "
                         << report.final_accuracy << " (" << std::setprecision(1)
                         << std::chrono::duration<double>(now - epoch_start).count() << " s this epoch, "
                         << report.seconds << " s in all, " << n << " images)" << std::defaultfloat << std::endl;
  }
  return report;
}

/// Pre-trains a backbone for `config` (its LoRA targets and classes do not matter) and returns its state.
template <Backend B>
std::vector<host_parameter> pretrain_backbone(B& backend, const vit_config& config, image_view images,
                                              const pretrain_settings& settings, pretrain_report* report = nullptr) {
  vit_config plain = config;
  plain.lora_targets.clear();
  plain.classes = 4;
  vit<B> model(backend, plain);
  const pretrain_report r = pretrain_rotation(model, images, settings);
  if (report) *report = r;
  return model.backbone_state();
}

/// The cached backbone at `path` when it is valid and matches (config, settings, images); otherwise says why on
/// settings.progress, pre-trains on `backend`, writes the cache, and returns the new state. Load the result into a
/// model with vit::load_backbone_state.
template <Backend B>
std::vector<host_parameter> load_or_pretrain(B& backend, const std::filesystem::path& path, const vit_config& config,
                                             image_view images, const pretrain_settings& settings) {
  const std::uint64_t fingerprint = backbone_fingerprint(config, settings, images);
  try {
    auto state = load_backbone(path, fingerprint);
    if (settings.progress) *settings.progress << "treelora: loaded the pre-trained backbone from " << path.string() << std::endl;
    return state;
  } catch (const std::exception& e) {  // backbone_cache_error by contract; whatever the failure, rebuild
    if (settings.progress) *settings.progress << e.what() << "; pre-training" << std::endl;
  }
  auto state = pretrain_backbone(backend, config, images, settings);
  try {
    save_backbone(path, fingerprint, state);
    if (settings.progress)
      *settings.progress << "treelora: wrote the pre-trained backbone to " << path.string() << std::endl;
  } catch (const std::runtime_error& e) {
    // The cache only saves time: a path that cannot be written (a directory in the way, a full or read-only
    // disk) costs the next run a pre-training, not this run its backbone.
    if (settings.progress)
      *settings.progress << "treelora: cannot write the pre-trained backbone (" << e.what()
                         << "); continuing without the cache" << std::endl;
  }
  return state;
}

#if defined(TREELORA_COMPILED)
// Pre-training the float CPU ViT is compiled once in treelora::compiled (src/models.cpp; docs/build_time.md).
extern template pretrain_report pretrain_rotation(vit<cpu_backend<float>>&, image_view, const pretrain_settings&);
extern template double rotation_accuracy(vit<cpu_backend<float>>&, image_view, index_t, index_t);
#endif

/// The same on a new backend B, by default the CPU in float. A template (B is never deduced) rather than an inline
/// function, so that a program that includes this header without calling it does not instantiate the ViT and its
/// pre-training (about 4 s of compiling in every translation unit, measured in bench/compile_time.sh).
template <Backend B = cpu_backend<float>>
std::vector<host_parameter> load_or_pretrain(const std::filesystem::path& path, const vit_config& config,
                                             image_view images, const pretrain_settings& settings) {
  B backend;
  return load_or_pretrain(backend, path, config, images, settings);
}

}  // namespace treelora

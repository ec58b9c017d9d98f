// treelora/models/peft.hpp: the library's ViT adapters as PEFT LoRA adapters (huggingface/peft), and back.
//
// A PEFT adapter is a folder: adapter_config.json (written with sorted keys) and adapter_model.safetensors
// (metadata {"format": "pt"}) holding, per adapted module,
//   base_model.model.<module path>.lora_A.weight [r, in]    base_model.model.<module path>.lora_B.weight
//   [out, r]
// where the module path is the one transformers' ViTModel or ViTForImageClassification ("vit." prefix) uses:
// encoder.layer.<i>.attention.attention.{query,key,value}, encoder.layer.<i>.attention.output.dense,
// encoder.layer.<i>.intermediate.dense, encoder.layer.<i>.output.dense (the projections q, k, v, o, fc1,
// fc2). PEFT computes y = W x + b + scaling B A dropout(x), scaling = lora_alpha / r (lora_alpha / sqrt(r)
// with use_rslora).
//
//   treelora::export_peft(model, "adapter", {.base_model_name_or_path =
//   "google/vit-base-patch16-224-in21k"}); auto adapter = treelora::read_peft_adapter("adapter");
//   treelora::vit<B> loaded(backend, treelora::peft_vit_config(adapter, architecture),
//                           treelora::peft_lora_config(adapter, architecture));
//   loaded.load_backbone_state(...);  treelora::load_peft_adapter(loaded, adapter);
//
// What each factorisation exports to (docs/interop.md, section "PEFT adapters"):
// - standard LoRA: itself, exactly. An rsLoRA adapter (rank_stabilized) is written portably by default:
//   use_rslora false with lora_alpha = alpha sqrt(r), the same scaling (several consumers ignore use_rslora).
// - InfLoRA and O-LoRA keep per task t a branch s_t B_t A_t (InfLoRA s_t = 1, O-LoRA s_t = alpha / r). Their
// sum
//   is ONE LoRA of rank r' = sum r_t: A' = the A_t stacked along rows, B' = the (s_t / s') B_t stacked along
//   columns, lora_alpha = s' r' (so scaling = s'):  s' B' A' = sum_t s_t B_t A_t exactly (merged,
//   export_peft), or one adapter per task (export_peft_per_task, folder/task_<t>). The finished tasks must
//   have been kept as branches (merge_finished = false): a history folded into one dense delta has no factors
//   left to export.
// - DualLoRA: refused. Its residual adapters are gated per sample by the input's CLS feature, which no weight
//   delta (hence no LoRA) reproduces; exporting a part of it would silently change the model.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "treelora/io/atomic_file.hpp"
#include "treelora/io/json.hpp"
#include "treelora/io/safetensors.hpp"
#include "treelora/lora/duallora.hpp"
#include "treelora/lora/inflora.hpp"
#include "treelora/lora/olora.hpp"
#include "treelora/lora/standard_lora.hpp"
#include "treelora/models/hf_vit.hpp"
#include "treelora/models/vit.hpp"

namespace treelora {

/// What export_peft writes besides the adapters themselves.
struct peft_export_options {
  /// adapter_config.json's base_model_name_or_path: the Hugging Face model the adapter applies to (a hub name
  /// or a folder; PeftModel.from_pretrained takes the base model from its caller and only records this).
  std::string base_model_name_or_path = {};
  /// The base model's class: ViTModel (task_type "FEATURE_EXTRACTION") or ViTForImageClassification (module
  /// paths under "vit.", no task_type, as PEFT's image-classification recipe writes it).
  hf_vit_naming naming = hf_vit_naming::vit_model;
  /// An rsLoRA adapter as use_rslora false with lora_alpha = alpha sqrt(r) (the same scaling for every
  /// consumer); false: use_rslora true with lora_alpha = alpha.
  bool portable_rslora = true;
  /// ViTForImageClassification naming only: the head as PEFT's modules_to_save ["classifier"]
  /// (base_model.model.classifier.weight / .bias), so the loaded model gives the library's logits. Per-task
  /// exports never hold it (the head is shared by every task).
  bool save_classifier = true;
};

/// A PEFT adapter in memory: adapter_config.json and the tensors of adapter_model.safetensors.
struct peft_adapter {
  nlohmann::json config;    ///< an object; nlohmann::json keeps keys sorted, as PEFT writes them
  host_tensor_map tensors;  ///< "base_model.model.<module path>.lora_A.weight" -> [r, in], ...
};

namespace peft_detail {

/// A projection of the library's transformer block and its module path inside a Hugging Face ViT layer.
struct projection_path {
  std::string_view ours;   ///< vit_config::lora_targets' name
  std::string_view block;  ///< transformer_block::projections()' name
  std::string_view hf;     ///< the path below encoder.layer.<i>.
  /// The shortest target_modules name that picks it (PEFT: the path ends with ".<name>"); "output.dense" also
  /// picks attention.output.dense.
  std::string_view target;
};
inline constexpr std::array<projection_path, 6> projections = {
    {{"q", "attn.q", "attention.attention.query", "query"},
     {"k", "attn.k", "attention.attention.key", "key"},
     {"v", "attn.v", "attention.attention.value", "value"},
     {"o", "attn.o", "attention.output.dense", "attention.output.dense"},
     {"fc1", "mlp.fc1", "intermediate.dense", "intermediate.dense"},
     {"fc2", "mlp.fc2", "output.dense", "output.dense"}}};

inline constexpr std::string_view key_prefix = "base_model.model.";

inline std::string layer_prefix(hf_vit_naming naming) {
  return naming == hf_vit_naming::vit_model ? "encoder.layer." : "vit.encoder.layer.";
}
inline std::string module_path(hf_vit_naming naming, index_t layer, std::string_view hf) {
  return concat(layer_prefix(naming), layer, ".", hf);
}
inline std::string lora_key(const std::string& path, char which) {
  return concat(key_prefix, path, ".lora_", which, ".weight");
}

/// One low-rank branch of one module on the host: adds scale * B A, A [rank, in], B [out, rank] row-major.
struct branch {
  double scale = 1;
  index_t rank = 0;
  std::vector<float> a, b;
};

/// Every branch of one adapted module, in task order, with the module's PEFT path.
struct module_branches {
  std::string path;
  const projection_path* projection = nullptr;
  index_t in = 0, out = 0;
  std::vector<branch> branches;
  /// standard LoRA only: lora_alpha and use_rslora as configured (the rest export lora_alpha = scale x rank).
  double alpha = 0;
  bool rank_stabilized = false;
  double dropout = 0;  ///< standard LoRA's lora_dropout (the others have none)
};

template <class Scalar>
std::vector<float> to_float(const std::vector<Scalar>& values) {
  return std::vector<float>(values.begin(), values.end());
}

template <Backend B>
branch host_branch(double scale, const tensor<B>& a, const tensor<B>& b) {
  return {scale, a.rows(), to_float(a.to_host()), to_float(b.to_host())};
}

/// A number for adapter_config.json: an integer when it is one (lora_alpha 16, not 16.0, as people write it).
inline nlohmann::json number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9.0e15) return static_cast<std::int64_t>(v);
  return v;
}

/// Every adapted module's branches, in model order. F decides what a branch is (see the top of this file).
template <Backend B, class F>
std::vector<module_branches> collect_branches(vit<B, F>& model, hf_vit_naming naming, std::string_view who) {
  if constexpr (std::is_same_v<F, dual_lora>) {
    throw_invalid_argument(
        who,
        "DualLoRA adapters cannot be exported as a PEFT LoRA: DualLoRA's residual adapters "
        "are a gated residual (each sample's CLS feature scales them), not a LoRA, and no "
        "weight delta reproduces them; exporting only the orthogonal branch would silently "
        "change the model");
  } else {
    static_assert(std::is_same_v<F, standard_lora> || std::is_same_v<F, inflora> || std::is_same_v<F, olora>,
                  "export_peft knows standard_lora, inflora and olora (dual_lora is refused at run time)");
    std::vector<module_branches> out;
    auto& blocks = model.blocks();
    for (std::size_t i = 0; i < blocks.size(); ++i)
      for (auto& [name, projection] : blocks[i].projections()) {
        if (!projection->has_adapter()) continue;
        const auto* path = std::find_if(projections.begin(), projections.end(),
                                        [&](const projection_path& p) { return p.block == name; });
        if (path == projections.end())
          throw_runtime_error(who,
                              concat("internal: the block's projection ", name, " has no PEFT module path"));
        auto& adapter = projection->adapter();
        module_branches m;
        m.path = module_path(naming, static_cast<index_t>(i), path->hf);
        m.projection = &*path;
        m.in = projection->in_features();
        m.out = projection->out_features();
        if constexpr (std::is_same_v<F, standard_lora>) {
          m.alpha = adapter.configuration().alpha;
          m.rank_stabilized = adapter.configuration().rank_stabilized;
          m.dropout = adapter.configuration().dropout;
          m.branches.push_back(host_branch(static_cast<double>(adapter.scaling()), adapter.a(), adapter.b()));
        } else {
          const auto& history = adapter.history();
          if (history.merged() && !history.empty())
            throw_invalid_argument(
                who,
                concat(
                    "module ", m.path, " (blocks.", i, ".", name, ") has folded its ", history.tasks(),
                    " finished task(s) into one dense delta (merge_finished = true): no low-rank factors are "
                    "left to export; build the adapters with merge_finished = false"));
          for (const auto& finished : history.branches())
            m.branches.push_back(host_branch(static_cast<double>(finished.scale), finished.a, finished.b));
          double scale = 1;  // InfLoRA: no alpha / r
          if constexpr (std::is_same_v<F, olora>) scale = static_cast<double>(adapter.scaling());
          m.branches.push_back(host_branch(scale, adapter.a(), adapter.b()));
        }
        out.push_back(std::move(m));
      }
    if (out.empty())
      throw_invalid_argument(who, "the model has no LoRA adapters (vit_config::lora_targets is empty)");
    // Every module has lived through the same tasks; the current branch (the last) is left out when it adds
    // nothing anywhere (B = 0 in every module: the state between finish_task and the next task's training).
    const std::size_t tasks = out.front().branches.size();
    for (const auto& m : out)
      if (m.branches.size() != tasks)
        throw_invalid_argument(
            who, concat("module ", m.path, " has ", m.branches.size(), " task branches, module ",
                        out.front().path, " has ", tasks, ": finish every task in every module"));
    if (tasks > 1) {
      bool current_is_zero = true;
      for (const auto& m : out)
        for (float v : m.branches.back().b) current_is_zero = current_is_zero && v == 0.0f;
      if (current_is_zero)
        for (auto& m : out) m.branches.pop_back();
    }
    return out;
  }
}

/// What adapter_config.json says of a LoRA adapter; lora_config_json writes every field PEFT's save_pretrained does.
struct lora_config_fields {
  nlohmann::json alpha_pattern, rank_pattern, target_modules, task_type;
  std::string base_model_name_or_path;
  double alpha = 0, dropout = 0;
  index_t rank = 0;
  bool rank_stabilized = false, fan_in_fan_out = false;
};
inline nlohmann::json lora_config_json(const lora_config_fields& f) {
  nlohmann::json c = nlohmann::json::object();
  c["alpha_pattern"] = f.alpha_pattern;
  c["auto_mapping"] = nullptr;
  c["base_model_name_or_path"] = f.base_model_name_or_path;
  c["bias"] = "none";
  c["fan_in_fan_out"] = f.fan_in_fan_out;
  c["inference_mode"] = true;
  c["init_lora_weights"] = true;
  c["layers_pattern"] = nullptr;
  c["layers_to_transform"] = nullptr;
  c["lora_alpha"] = number(f.alpha);
  c["lora_dropout"] = f.dropout;
  c["modules_to_save"] = nullptr;
  c["peft_type"] = "LORA";
  c["r"] = f.rank;
  c["rank_pattern"] = f.rank_pattern;
  c["revision"] = nullptr;
  c["target_modules"] = f.target_modules;
  c["task_type"] = f.task_type;
  c["use_rslora"] = f.rank_stabilized;
  return c;
}

/// The adapter of `modules` restricted to task `task` (or all tasks concatenated along the rank when task <
/// 0).
inline peft_adapter build(const std::vector<module_branches>& modules, const peft_export_options& options,
                          bool save_classifier, const std::vector<float>* head_weight,
                          const std::vector<float>* head_bias, index_t classes, index_t width, index_t task) {
  struct module_setting {
    index_t rank;
    double alpha;
    bool rank_stabilized;
  };
  peft_adapter out;
  std::vector<module_setting> settings;
  std::set<const projection_path*> targets;
  for (const auto& m : modules) {
    std::vector<const branch*> chosen;
    for (std::size_t t = 0; t < m.branches.size(); ++t)
      if (task < 0 || static_cast<index_t>(t) == task) chosen.push_back(&m.branches[t]);
    index_t rank = 0;
    for (const auto* b : chosen) rank += b->rank;
    // s' = the first branch's scale; every other branch's B is multiplied by s_t / s' (1 for the library's
    // factorisations, whose branches share one scale).
    const double scale = chosen.front()->scale;
    std::vector<float> a, b(static_cast<std::size_t>(m.out * rank));
    index_t column = 0;
    for (const auto* br : chosen) {
      a.insert(a.end(), br->a.begin(), br->a.end());  // A' = [A_0; A_1; ...] (rows)
      const double ratio = br->scale / scale;
      for (index_t row = 0; row < m.out; ++row)
        for (index_t j = 0; j < br->rank; ++j) {
          const float v = br->b[static_cast<std::size_t>(row * br->rank + j)];
          b[static_cast<std::size_t>(row * rank + column + j)] =
              ratio == 1.0
                  ? v
                  : static_cast<float>(static_cast<double>(v) * ratio);  // B' = [B_0, B_1, ...] (columns)
        }
      column += br->rank;
    }
    module_setting s{rank, scale * static_cast<double>(rank), false};
    if (m.alpha != 0 || m.rank_stabilized) {  // standard LoRA: its own alpha (one branch)
      s.alpha = m.alpha;
      if (m.rank_stabilized) {
        if (options.portable_rslora)
          s.alpha = m.alpha * std::sqrt(static_cast<double>(rank));
        else
          s.rank_stabilized = true;
      }
    }
    settings.push_back(s);
    out.tensors[lora_key(m.path, 'A')] = host_tensor{{rank, m.in}, std::move(a)};
    out.tensors[lora_key(m.path, 'B')] = host_tensor{{m.out, rank}, std::move(b)};
    targets.insert(m.projection);
  }
  // r and lora_alpha: the first module's; a module that differs is listed in rank_pattern / alpha_pattern
  // under "layer.<i>.<path>" (PEFT matches a pattern against the end of the module path, after a dot).
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  for (std::size_t i = 1; i < modules.size(); ++i) {
    const std::string key = modules[i].path.substr(modules[i].path.find("layer."));
    if (settings[i].rank != settings[0].rank) rank_pattern[key] = settings[i].rank;
    if (settings[i].alpha != settings[0].alpha) alpha_pattern[key] = number(settings[i].alpha);
    if (settings[i].rank_stabilized != settings[0].rank_stabilized)
      throw_invalid_argument("export_peft",
                             concat("module ", modules[i].path, " and module ", modules[0].path,
                                    " disagree on rsLoRA: export with portable_rslora"));
  }
  // target_modules: PEFT adapts a module whose path ends with ".<target>". "output.dense" alone would also
  // take attention.output.dense, so fc2 without o is written as PEFT's other form, one regular expression
  // that must match the whole module path.
  const auto targeted = [&](std::string_view ours) {
    return std::any_of(targets.begin(), targets.end(),
                       [&](const projection_path* p) { return p->ours == ours; });
  };
  nlohmann::json target_modules = nlohmann::json::array();
  if (targeted("fc2") && !targeted("o")) {
    std::string alternatives;
    for (const auto& p : projections) {
      if (!targeted(p.ours)) continue;
      std::string escaped;
      for (char c : p.hf) escaped += c == '.' ? std::string("\\.") : std::string(1, c);
      alternatives += concat(alternatives.empty() ? "" : "|", escaped);
    }
    target_modules = concat(options.naming == hf_vit_naming::vit_model ? "" : "vit\\.",
                            "encoder\\.layer\\.\\d+\\.(", alternatives, ")");
  } else {
    std::vector<std::string> names;
    for (const auto* p : targets) names.emplace_back(p->target);
    std::sort(names.begin(), names.end());  // PEFT keeps a set; sorted, the file is reproducible
    for (auto& name : names) target_modules.push_back(std::move(name));
  }

  out.config = lora_config_json({.alpha_pattern = alpha_pattern, .rank_pattern = rank_pattern,
                                 .target_modules = target_modules,
                                 .task_type = options.naming == hf_vit_naming::vit_model ? nlohmann::json("FEATURE_EXTRACTION")
                                                                                         : nlohmann::json(),
                                 .base_model_name_or_path = options.base_model_name_or_path, .alpha = settings[0].alpha,
                                 .dropout = modules[0].dropout, .rank = settings[0].rank,
                                 .rank_stabilized = settings[0].rank_stabilized, .fan_in_fan_out = false});
  nlohmann::json& c = out.config;
  if (save_classifier) {
    c["modules_to_save"] = nlohmann::json::array({"classifier"});
    out.tensors[concat(key_prefix, "classifier.weight")] = host_tensor{{classes, width}, *head_weight};
    out.tensors[concat(key_prefix, "classifier.bias")] = host_tensor{{classes}, *head_bias};
  }
  return out;
}

}  // namespace peft_detail

/// The model's adapters as ONE PEFT adapter (InfLoRA and O-LoRA: every task's branch concatenated along the
/// rank, an exact identity). Throws std::invalid_argument for DualLoRA, for a history merged into a dense
/// delta, and for a model without adapters. lora_dropout is written as 0 (the adapter is exported for
/// inference).
template <Backend B, class F>
peft_adapter make_peft_adapter(vit<B, F>& model, const peft_export_options& options = {}) {
  const auto modules = peft_detail::collect_branches(model, options.naming, "export_peft");
  const bool classifier =
      options.save_classifier && options.naming == hf_vit_naming::vit_for_image_classification;
  std::vector<float> weight, bias;
  if (classifier) {
    weight = peft_detail::to_float(model.head().weight().to_host());
    bias = peft_detail::to_float(model.head().bias().to_host());
  }
  return peft_detail::build(modules, options, classifier, &weight, &bias, model.classes(),
                            model.config().width, -1);
}

/// One PEFT adapter per task, in task order (standard LoRA: one). Their sum is the model's adapters: load
/// them all and activate them together (PEFT sums active adapters). Never holds the classifier.
template <Backend B, class F>
std::vector<peft_adapter> make_peft_adapters_per_task(vit<B, F>& model,
                                                      const peft_export_options& options = {}) {
  const auto modules = peft_detail::collect_branches(model, options.naming, "export_peft_per_task");
  std::vector<peft_adapter> out;
  for (std::size_t t = 0; t < modules.front().branches.size(); ++t)
    out.push_back(
        peft_detail::build(modules, options, false, nullptr, nullptr, 0, 0, static_cast<index_t>(t)));
  return out;
}

/// Writes `adapter` into `folder` (created if needed): adapter_model.safetensors (F32, metadata
/// {"format": "pt"}) and adapter_config.json (2-space indented, sorted keys, ASCII, no final newline: what
/// PEFT's save_pretrained writes). Each file is written atomically.
inline void write_peft_adapter(const peft_adapter& adapter, const std::filesystem::path& folder) {
  require_writable_folder(folder, "PEFT adapter folder");
  safetensors_writer writer;
  writer.set_metadata("format", "pt");
  for (const auto& [name, t] : adapter.tensors) {
    std::vector<std::uint64_t> dims;
    for (const auto d : t.shape) dims.push_back(static_cast<std::uint64_t>(d));
    writer.add(name, dims, std::span<const float>(t.values));
  }
  writer.write(folder / "adapter_model.safetensors");
  write_file_atomically(
      folder / "adapter_config.json",
      std::string_view(adapter.config.dump(2, ' ', true, nlohmann::json::error_handler_t::replace)));
}

/// make_peft_adapter, written into `folder`. Returns what was written.
template <Backend B, class F>
peft_adapter export_peft(vit<B, F>& model, const std::filesystem::path& folder,
                         const peft_export_options& options = {}) {
  peft_adapter adapter = make_peft_adapter(model, options);
  write_peft_adapter(adapter, folder);
  return adapter;
}

/// make_peft_adapters_per_task, task t written into `folder`/task_<t>. Returns the folders in task order.
template <Backend B, class F>
std::vector<std::filesystem::path> export_peft_per_task(vit<B, F>& model, const std::filesystem::path& folder,
                                                        const peft_export_options& options = {}) {
  std::vector<std::filesystem::path> out;
  const auto adapters = make_peft_adapters_per_task(model, options);
  for (std::size_t t = 0; t < adapters.size(); ++t) {
    out.push_back(folder / concat("task_", t));
    write_peft_adapter(adapters[t], out.back());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- import

/// One adapted module of a PEFT adapter, as the library's ViT reads it.
struct peft_module {
  std::string
      path;  ///< "encoder.layer.0.attention.attention.query" ("vit." first in the classification naming)
  std::string parameter;  ///< vit::adapters()' name: "blocks.0.attn.q"
  index_t rank = 0;       ///< r, or its rank_pattern entry
  double alpha = 0;       ///< lora_alpha, or its alpha_pattern entry
  double scaling = 0;     ///< lora_alpha (or its alpha_pattern entry) / r, or / sqrt(r) with use_rslora
  index_t in = 0, out = 0;
};

/// What a PEFT adapter adapts in a ViT of a given architecture.
struct peft_layout {
  hf_vit_naming naming = hf_vit_naming::vit_model;
  std::vector<std::string>
      targets;  ///< vit_config::lora_targets' names, in block order (q, k, v, o, fc1, fc2)
  std::vector<peft_module> modules;  ///< model order, as vit::adapters()
  index_t max_rank = 0;
  bool classifier = false;  ///< modules_to_save ["classifier"]: the head is in the adapter
};

namespace peft_detail {

[[noreturn]] inline void bad_config(std::string_view field, const nlohmann::json& value,
                                    std::string_view why) {
  throw_invalid_argument("validate_peft_config",
                         concat("adapter_config.json: ", field, " ", hf_vit_detail::quote(value), " ", why));
}

/// The JSON value of `field`, or null when absent.
inline const nlohmann::json& field(const nlohmann::json& config, std::string_view name) {
  static const nlohmann::json null_value;
  const auto it = config.find(name);
  return it == config.end() ? null_value : *it;
}

inline index_t rank_value(std::string_view field_name, const nlohmann::json& v) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > hf_vit_detail::max_size)
    bad_config(field_name, v, concat("is not an integer in [1, ", hf_vit_detail::max_size, "]"));
  return v.get<std::int64_t>();
}

inline double alpha_value(std::string_view field_name, const nlohmann::json& v) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) bad_config(field_name, v, "is not a finite number");
  return v.get<double>();
}

/// PEFT's pattern lookup (rank_pattern, alpha_pattern): the first key K with re.match(r"(.*\.)?(K)$", path).
inline const nlohmann::json* pattern_entry(const nlohmann::json& patterns, std::string_view field_name,
                                           const std::string& path) {
  for (const auto& [key, value] : patterns.items()) {
    try {
      if (std::regex_match(path, std::regex(concat("(.*\\.)?(", key, ")")))) return &value;
    } catch (const std::regex_error& e) {
      bad_config(concat(field_name, " key"), key, concat("is not a regular expression: ", e.what()));
    }
  }
  return nullptr;
}

/// PEFT's target test: a list of names matches a path equal to one or ending with ".name"; one string is a
/// regular expression that must match the whole path ("all-linear": every projection).
inline bool is_target(const nlohmann::json& target_modules, const std::string& path) {
  if (target_modules.is_string()) {
    const auto pattern = target_modules.get<std::string>();
    if (pattern == "all-linear") return true;
    try {
      return std::regex_match(path, std::regex(pattern));
    } catch (const std::regex_error& e) {
      bad_config("target_modules", target_modules, concat("is not a regular expression: ", e.what()));
    }
  }
  for (const auto& t : target_modules) {
    const auto name = t.get<std::string>();
    if (path == name || path.ends_with(concat(".", name))) return true;
  }
  return false;
}

}  // namespace peft_detail

/// Checks what the library's loader relies on in an adapter_config.json; each problem is a
/// std::invalid_argument naming the field and its value: peft_type other than "LORA" (or absent); r,
/// lora_alpha, lora_dropout, use_rslora, rank_pattern, alpha_pattern of the wrong type or range;
/// target_modules absent or neither a list of names nor a string; bias other than "none" (the adapter would
/// carry trained biases); use_dora true (DoRA rescales the weight: not a LoRA); layers_to_transform or
/// layers_pattern set (the library's ViT adapts every layer); modules_to_save naming anything but
/// "classifier".
inline void validate_peft_config(const nlohmann::json& c) {
  using peft_detail::bad_config;
  using peft_detail::field;
  if (!c.is_object()) bad_config("(the document)", c, "is not a JSON object");
  if (!c.is_object()) bad_config("(the document)", c, "is not a JSON object");
  if (const auto& v = field(c, "peft_type"); !(v.is_string() && v.get<std::string>() == "LORA"))
    bad_config("peft_type", v, "is not \"LORA\": only LoRA adapters are read");
  if (const auto& v = field(c, "r"); !v.is_null()) peft_detail::rank_value("r", v);
  if (const auto& v = field(c, "lora_alpha"); !v.is_null()) peft_detail::alpha_value("lora_alpha", v);
  if (const auto& v = field(c, "lora_dropout");
      !v.is_null() && !(v.is_number() && v.get<double>() >= 0 && v.get<double>() < 1))
    bad_config("lora_dropout", v, "is not a number in [0, 1)");
  if (const auto& v = field(c, "use_rslora"); !v.is_null() && !v.is_boolean())
    bad_config("use_rslora", v, "is not true or false");
  if (const auto& v = field(c, "bias"); !v.is_null() && !(v.is_string() && v.get<std::string>() == "none"))
    bad_config("bias", v, "is not \"none\": the library's adapters carry no trained biases");
  if (const auto& v = field(c, "use_dora"); !v.is_null() && !(v.is_boolean() && !v.get<bool>()))
    bad_config("use_dora", v, "is set: DoRA rescales each weight's columns, which is not a LoRA");
  for (std::string_view name : {"layers_to_transform", "layers_pattern"})
    if (const auto& v = field(c, name); !v.is_null() && !(v.is_array() && v.empty()))
      bad_config(name, v, "is set: the library's ViT adapts the same projections in every layer");
  if (const auto& v = field(c, "target_modules"); v.is_null())
    bad_config("target_modules", v, "is absent: write the adapted module names into adapter_config.json");
  else if (!v.is_string() &&
           !(v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& t) { return t.is_string(); })))
    bad_config("target_modules", v, "is neither a list of module names nor one regular expression");
  for (std::string_view name : {"rank_pattern", "alpha_pattern"}) {
    const auto& v = field(c, name);
    if (v.is_null()) continue;
    if (!v.is_object()) bad_config(name, v, "is not an object");
    for (const auto& [key, value] : v.items()) {
      const std::string entry = concat(name, "[\"", key, "\"]");
      if (name == "rank_pattern")
        peft_detail::rank_value(entry, value);
      else
        peft_detail::alpha_value(entry, value);
    }
  }
  if (const auto& v = field(c, "modules_to_save"); !v.is_null()) {
    if (!v.is_array()) bad_config("modules_to_save", v, "is not a list");
    for (const auto& m : v)
      if (!(m.is_string() && m.get<std::string>() == "classifier"))
        bad_config("modules_to_save", v,
                   "names a module other than \"classifier\": the library's ViT has no other "
                   "trained module");
  }
}

/// Reads `folder`/adapter_config.json and `folder`/adapter_model.safetensors and checks the config
/// (validate_peft_config). A missing file is a std::runtime_error naming it; an unreadable safetensors file a
/// safetensors_error.
inline peft_adapter read_peft_adapter(const std::filesystem::path& folder) {
  const auto config_path = folder / "adapter_config.json",
             weights_path = folder / "adapter_model.safetensors";
  if (!std::filesystem::is_regular_file(config_path))
    throw_runtime_error("read_peft_adapter", concat(folder.string(), " has no adapter_config.json"));
  if (!std::filesystem::is_regular_file(weights_path))
    throw_runtime_error("read_peft_adapter",
                        concat(folder.string(), " has no adapter_model.safetensors",
                               std::filesystem::exists(folder / "adapter_model.bin")
                                   ? " (only adapter_model.bin: save with safe_serialization=True)"
                                   : ""));
  peft_adapter out;
  out.config = nlohmann::json::parse(json::dump(json::parse_file(config_path.string())));  // sorted keys
  validate_peft_config(out.config);
  out.tensors = read_safetensors_tensors(weights_path);
  return out;
}

/// What `adapter` adapts in a ViT of `architecture` (its sizes and depth; its LoRA fields are not read). The
/// naming is ViTForImageClassification when a key starts with "base_model.model.vit." or
/// "base_model.model.classifier.", else ViTModel. Throws std::invalid_argument when the adapted projections
/// differ between layers, or when nothing the library's ViT has is adapted.
inline peft_layout describe_peft_adapter(const peft_adapter& adapter, const vit_config& architecture) {
  using peft_detail::field;
  const nlohmann::json& c = adapter.config;
  validate_peft_config(c);
  peft_layout out;
  for (const auto& [name, t] : adapter.tensors)
    if (name.starts_with(concat(peft_detail::key_prefix, "vit.")) ||
        name.starts_with(concat(peft_detail::key_prefix, "classifier.")))
      out.naming = hf_vit_naming::vit_for_image_classification;
  const auto& modules_to_save = field(c, "modules_to_save");
  out.classifier = modules_to_save.is_array() && !modules_to_save.empty();
  const index_t default_rank =
      field(c, "r").is_null() ? 8 : field(c, "r").get<std::int64_t>();  // PEFT's defaults
  const double default_alpha = field(c, "lora_alpha").is_null() ? 8.0 : field(c, "lora_alpha").get<double>();
  const bool rslora = field(c, "use_rslora").is_boolean() && field(c, "use_rslora").get<bool>();
  const nlohmann::json empty = nlohmann::json::object();
  const auto& rank_pattern = field(c, "rank_pattern").is_object() ? field(c, "rank_pattern") : empty;
  const auto& alpha_pattern = field(c, "alpha_pattern").is_object() ? field(c, "alpha_pattern") : empty;
  const auto& target_modules = field(c, "target_modules");

  std::vector<std::string> layer0;
  for (index_t i = 0; i < architecture.depth; ++i) {
    std::vector<std::string> here;
    for (const auto& p : peft_detail::projections) {
      const std::string path = peft_detail::module_path(out.naming, i, p.hf);
      if (!peft_detail::is_target(target_modules, path)) continue;
      here.emplace_back(p.ours);
      peft_module m;
      m.path = path;
      m.parameter = concat("blocks.", i, ".", p.block);
      const auto* r = peft_detail::pattern_entry(rank_pattern, "rank_pattern", path);
      const auto* a = peft_detail::pattern_entry(alpha_pattern, "alpha_pattern", path);
      m.rank = r ? r->get<std::int64_t>() : default_rank;
      m.alpha = a ? a->get<double>() : default_alpha;
      m.scaling =
          rslora ? m.alpha / std::sqrt(static_cast<double>(m.rank)) : m.alpha / static_cast<double>(m.rank);
      const bool widening = p.ours == "fc1", narrowing = p.ours == "fc2";
      m.in = narrowing ? architecture.mlp_hidden() : architecture.width;
      m.out = widening ? architecture.mlp_hidden() : architecture.width;
      out.max_rank = std::max(out.max_rank, m.rank);
      out.modules.push_back(std::move(m));
    }
    if (i == 0)
      layer0 = here;
    else if (here != layer0)
      throw_invalid_argument(
          "describe_peft_adapter",
          concat("target_modules ", hf_vit_detail::quote(target_modules), " adapts ",
                 hf_vit_detail::quote(nlohmann::json(here)), " in layer ", i, " but ",
                 hf_vit_detail::quote(nlohmann::json(layer0)),
                 " in layer 0: the library's ViT adapts the same projections in every layer"));
  }
  out.targets = layer0;
  if (out.modules.empty())
    throw_invalid_argument("describe_peft_adapter",
                           concat("target_modules ", hf_vit_detail::quote(target_modules),
                                  " adapts none of the ", to_string(out.naming),
                                  " projections (query, key, value, attention.output.dense, "
                                  "intermediate.dense, output.dense) of a ",
                                  architecture.depth, "-layer ViT"));
  return out;
}

/// `architecture` with the adapter's LoRA fields: lora_targets, lora_rank (the largest module rank R),
/// lora_alpha and lora_dropout. lora_alpha is the first module's when its rank is R (the model computes
/// PEFT's scaling from the same numbers), else the alpha that gives the first module's scaling at rank R.
/// Build the model with peft_lora_config too: it carries use_rslora, which vit_config has no field for.
inline vit_config peft_vit_config(const peft_adapter& adapter, vit_config architecture) {
  const peft_layout layout = describe_peft_adapter(adapter, architecture);
  const auto& c = adapter.config;
  architecture.lora_targets = layout.targets;
  architecture.lora_rank = layout.max_rank;
  const bool rslora = c.contains("use_rslora") && c["use_rslora"].is_boolean() && c["use_rslora"].get<bool>();
  const peft_module& first = layout.modules.front();
  const auto rank = static_cast<double>(layout.max_rank);
  architecture.lora_alpha = first.rank == layout.max_rank ? first.alpha
                            : rslora                      ? first.scaling * std::sqrt(rank)
                                                          : first.scaling * rank;
  architecture.lora_dropout =
      c.contains("lora_dropout") && c["lora_dropout"].is_number() ? c["lora_dropout"].get<double>() : 0.0;
  return architecture;
}

/// The standard LoRA configuration for the adapter (rank, alpha, use_rslora, dropout; seed from
/// `architecture`).
inline standard_lora::config peft_lora_config(const peft_adapter& adapter, const vit_config& architecture) {
  const vit_config c = peft_vit_config(adapter, architecture);
  const auto& rs = adapter.config.contains("use_rslora") ? adapter.config["use_rslora"] : nlohmann::json();
  return {.rank = c.lora_rank,
          .alpha = c.lora_alpha,
          .rank_stabilized = rs.is_boolean() && rs.get<bool>(),
          .dropout = c.lora_dropout,
          .seed = architecture.seed};
}

/// Copies `adapter` into `model`'s standard LoRA adapters (and, with modules_to_save ["classifier"], its
/// head). Nothing is copied unless everything fits: otherwise ONE std::invalid_argument lists every missing
/// key (with the shape it should have), every unexpected key, every mis-shaped one (expected vs found), every
/// malformed one (a value count that disagrees with its shape, a non-finite value), and every module whose
/// adapter is absent from the model or narrower than the file's rank. A module of rank r below the model's
/// rank R fills the first r rows of A and columns of B (the rest zero); B is multiplied by the file's scaling
/// / the model's when they differ (rank_pattern, alpha_pattern): the model computes the same function.
template <Backend B>
void load_peft_adapter(vit<B, standard_lora>& model, const peft_adapter& adapter) {
  using hf_vit_detail::shape_text;
  using scalar_type = typename B::scalar_type;
  vit_config architecture = model.config();
  architecture.classes = model.classes();
  const peft_layout layout = describe_peft_adapter(adapter, architecture);

  std::map<std::string, standard_lora::adapter<B>*, std::less<>> ours;
  {
    auto views = model.adapters();
    auto typed = model.factorized_adapters();
    for (std::size_t i = 0; i < views.size(); ++i) ours[views[i].name] = typed[i];
  }
  struct copy_job {
    const host_tensor* a;
    const host_tensor* b;
    standard_lora::adapter<B>* target;
    index_t rank;
    double ratio;
  };
  std::vector<copy_job> jobs;
  std::vector<std::string> missing, unexpected, mis_shaped, malformed, unfit;
  std::set<std::string, std::less<>> used;
  const auto check = [&](const std::string& key,
                         const std::vector<std::int64_t>& shape) -> const host_tensor* {
    const auto found = adapter.tensors.find(key);
    if (found == adapter.tensors.end()) {
      missing.push_back(concat(key, " ", shape_text(shape)));
      return nullptr;
    }
    used.insert(key);
    const host_tensor& t = found->second;
    std::string why;
    const std::int64_t numel = hf_vit_detail::checked_numel(t.shape, why);
    if (numel < 0 || static_cast<std::uint64_t>(numel) != t.values.size()) {
      malformed.push_back(
          concat(key, ": shape ", shape_text(t.shape), " ",
                 numel < 0 ? why : concat("has ", numel, " values, the tensor holds ", t.values.size())));
      return nullptr;
    }
    if (t.shape != shape) {
      mis_shaped.push_back(concat(key, ": expected ", shape_text(shape), ", found ", shape_text(t.shape)));
      return nullptr;
    }
    for (std::size_t i = 0; i < t.values.size(); ++i)
      if (!std::isfinite(t.values[i])) {
        malformed.push_back(concat(key, ": value ", i, " is ", t.values[i]));
        return nullptr;
      }
    return &t;
  };
  for (const auto& m : layout.modules) {
    const auto* a = check(peft_detail::lora_key(m.path, 'A'), {m.rank, m.in});
    const auto* b = check(peft_detail::lora_key(m.path, 'B'), {m.out, m.rank});
    const auto target = ours.find(m.parameter);
    if (target == ours.end()) {
      unfit.push_back(concat(m.path, ": the model has no adapter on ", m.parameter,
                             " (build it with peft_vit_config's lora_targets)"));
      continue;
    }
    if (target->second->rank() < m.rank) {
      unfit.push_back(concat(m.path, ": rank ", m.rank, ", the model's adapter ", m.parameter, " has rank ",
                             target->second->rank()));
      continue;
    }
    const auto model_scaling = static_cast<double>(target->second->scaling());
    const double ratio = static_cast<double>(static_cast<scalar_type>(m.scaling)) == model_scaling
                             ? 1.0
                             : m.scaling / model_scaling;
    if (a && b) jobs.push_back({a, b, target->second, m.rank, ratio});
  }
  for (const auto& [name, parameter] : ours)
    if (std::none_of(layout.modules.begin(), layout.modules.end(),
                     [&](const auto& m) { return m.parameter == name; }))
      unfit.push_back(concat(name, ": the model has an adapter the file does not adapt (target_modules ",
                             hf_vit_detail::quote(adapter.config.value("target_modules", nlohmann::json())),
                             ")"));
  const host_tensor *head_weight = nullptr, *head_bias = nullptr;
  if (layout.classifier) {
    head_weight =
        check(concat(peft_detail::key_prefix, "classifier.weight"), {model.classes(), architecture.width});
    head_bias = check(concat(peft_detail::key_prefix, "classifier.bias"), {model.classes()});
  }
  for (const auto& [name, t] : adapter.tensors)
    if (!used.contains(name)) {
      std::string note;
      if (name.find("pooler.") != std::string::npos)
        note = " (the library's ViT has no pooler)";
      else if (name.find(".classifier.") != std::string::npos)
        note = " (modules_to_save does not list \"classifier\")";
      else if (layout.naming == hf_vit_naming::vit_for_image_classification &&
               name.find("base_model.model.encoder.") == 0)
        note = " (ViTModel naming among ViTForImageClassification keys)";
      unexpected.push_back(concat(name, " ", shape_text(t.shape), note));
    }

  hf_vit_detail::throw_problems(
      "load_peft_adapter",
      concat("the ", to_string(layout.naming), " PEFT adapter (", adapter.tensors.size(), " tensors, ",
             layout.modules.size(), " adapted modules) does not fit the model (", hf_vit_detail::describe(architecture),
             ", LoRA rank ", ours.empty() ? index_t(0) : ours.begin()->second->rank(), ")"),
      {{"missing", &missing},
       {"unexpected", &unexpected},
       {"mis-shaped", &mis_shaped},
       {"malformed", &malformed},
       {"does not fit", &unfit}});

  B& backend = model.backend();
  for (const auto& job : jobs) {
    const index_t rank = job.target->rank(), in = job.a->shape[1], out = job.b->shape[0];
    std::vector<scalar_type> a(static_cast<std::size_t>(rank * in), scalar_type(0)),
        b(static_cast<std::size_t>(out * rank), scalar_type(0));
    std::copy(job.a->values.begin(), job.a->values.end(), a.begin());  // the first r rows
    for (index_t row = 0; row < out; ++row)
      for (index_t j = 0; j < job.rank; ++j) {
        const double v = job.b->values[static_cast<std::size_t>(row * job.rank + j)];
        b[static_cast<std::size_t>(row * rank + j)] =
            static_cast<scalar_type>(job.ratio == 1.0 ? v : v * job.ratio);
      }
    backend.copy_from_host(a.data(), job.target->a().data(), job.target->a().numel());
    backend.copy_from_host(b.data(), job.target->b().data(), job.target->b().numel());
  }
  if (head_weight && head_bias) {
    const std::vector<scalar_type> w(head_weight->values.begin(), head_weight->values.end()),
        bias(head_bias->values.begin(), head_bias->values.end());
    backend.copy_from_host(w.data(), model.head().weight().data(), model.head().weight().numel());
    backend.copy_from_host(bias.data(), model.head().bias().data(), model.head().bias().numel());
  }
}

}  // namespace treelora

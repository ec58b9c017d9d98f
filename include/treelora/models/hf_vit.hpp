// treelora/models/hf_vit.hpp: Hugging Face ViT checkpoints (transformers' ViTModel and
// ViTForImageClassification) into vit<B, F>. config.json maps onto vit_config (hf_vit_config); every tensor
// name maps onto one parameter of vit::collect_parameters (hf_vit_tensor_names); load_hf_vit copies a whole
// checkpoint in, or throws ONE exception listing every missing, unexpected, mis-shaped and malformed tensor.
//
//   auto config_json = treelora::json::parse_file("vit/config.json");
//   treelora::vit<treelora::cpu_backend<float>> model(backend, treelora::hf_vit_config(config_json));
//   auto report = treelora::load_hf_vit(model, tensors, config_json);  // tensors: name -> {shape, values}
//
// The two models compute the same function (tests/test_hf_vit.cpp checks it against a numpy transcription
// of modeling_vit.py): pre-LN blocks x + attn(LN(x)), x + mlp(LN(x)) with the exact erf GELU,
// softmax(q k^T / sqrt(d_h)) per head, the final LayerNorm, the classifier on the CLS row. The layouts
// differ only by reshapes: Conv2d [d, c, p, p] = patch_embed.weight [d, c p p] (a patch feature is
// (channel, row, column) in both), position_embeddings [1, tokens, d] = position_embedding [tokens, d],
// cls_token [1, 1, d] = cls_token [d]. The pooler (ViTModel's dense + tanh on the CLS row) and the mask
// token (masked image modelling) have no place in the library's ViT: they are reported as ignored, never as
// errors. LoRA adapters are not in a Hugging Face checkpoint: they keep their initialisation (B = 0, so the
// adapted model starts equal to the checkpoint).
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/io/json.hpp"
#include "treelora/io/safetensors.hpp"
#include "treelora/models/vit.hpp"

namespace treelora {

/// One tensor of a checkpoint on the host, row-major float values: what a checkpoint reader (safetensors, or
/// the tests' raw files) hands a loader. The loader checks that `values` holds product(shape) numbers.
struct host_tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

/// A checkpoint's tensors by name (the names of the model's PyTorch state dict).
using host_tensor_map = std::map<std::string, host_tensor, std::less<>>;

/// Which transformers class saved the checkpoint: ViTModel ("embeddings.*", "encoder.*", "layernorm.*",
/// "pooler.*") or ViTForImageClassification (the same under "vit.", plus "classifier.*").
enum class hf_vit_naming { vit_model, vit_for_image_classification };

inline std::string_view to_string(hf_vit_naming naming) {
  return naming == hf_vit_naming::vit_model ? "ViTModel" : "ViTForImageClassification";
}

/// ViTForImageClassification when any name starts with "vit." or "classifier.", else ViTModel.
inline hf_vit_naming detect_hf_vit_naming(const host_tensor_map& tensors) {
  for (const auto& [name, tensor] : tensors)
    if (name.starts_with("vit.") || name.starts_with("classifier."))
      return hf_vit_naming::vit_for_image_classification;
  return hf_vit_naming::vit_model;
}

namespace hf_vit_detail {

/// A field's JSON value as text for an error message (invalid UTF-8 replaced, never a second exception).
inline std::string quote(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

[[noreturn]] inline void bad_field(std::string_view field, const nlohmann::json& value, std::string_view why,
                                   std::string_view where = "hf_vit_config") {
  throw_invalid_argument(where, concat("config.json: ", field, " ", quote(value), " ", why));
}

/// Sizes above this are rejected before any product is formed: c p^2, h w and tokens x width stay far below
/// 2^63.
inline constexpr std::int64_t max_size = std::int64_t{1} << 20;

/// An integer field in [minimum, max_size], or `fallback` (transformers' default) when absent.
inline std::int64_t size_field(const nlohmann::json& config, std::string_view field, std::int64_t fallback,
                               std::int64_t minimum = 1) {
  const auto it = config.find(field);
  if (it == config.end()) return fallback;
  if (!it->is_number_integer()) bad_field(field, *it, "is not an integer");
  if (it->is_number_unsigned() ? it->get<std::uint64_t>() > static_cast<std::uint64_t>(max_size)
                               : it->get<std::int64_t>() > max_size)
    bad_field(field, *it, concat("is larger than ", max_size));
  const auto v = it->get<std::int64_t>();
  if (v < minimum) bad_field(field, *it, concat("must be at least ", minimum));
  return v;
}

/// image_size or patch_size: one integer (square) or [height, width], as ViTPatchEmbeddings reads it.
inline std::array<std::int64_t, 2> size_pair(const nlohmann::json& config, std::string_view field,
                                             std::int64_t fallback) {
  const auto it = config.find(field);
  if (it == config.end() || !it->is_array()) {
    const std::int64_t v = size_field(config, field, fallback);
    return {v, v};
  }
  if (it->size() != 2) bad_field(field, *it, "is neither an integer nor a [height, width] pair");
  std::array<std::int64_t, 2> out{};
  for (std::size_t i = 0; i < 2; ++i) {
    const std::string element = concat(field, "[", i, "]");
    nlohmann::json one = nlohmann::json::object();
    one[element] = (*it)[i];
    out[i] = size_field(one, element, 0);
  }
  return out;
}

}  // namespace hf_vit_detail

/// Maps a Hugging Face ViT config.json onto vit_config. The architecture comes from the file (fields absent
/// from it take transformers' ViTConfig defaults, as from_pretrained does); everything the file does not
/// describe (LoRA targets, rank, alpha, dropout, seed) comes from `defaults`. classes = the number of labels
/// in id2label (or num_labels), else defaults.classes (a ViTModel checkpoint has no classifier: the head
/// stays initialised). Rejected, with std::invalid_argument naming the field and its value: a model_type
/// other than "vit"; a hidden_act other than the exact erf GELU ("gelu", "gelu_python"); non-square patches;
/// an image not divisible into patches (transformers' Conv2d would drop the remainder); hidden_size not
/// divisible by num_attention_heads; a non-positive or non-finite layer_norm_eps; a non-boolean qkv_bias;
/// id2label keys other than "0" .. "n-1"; num_labels disagreeing with id2label; pruned heads; wrong JSON
/// types; sizes above 2^20.
inline vit_config hf_vit_config(const nlohmann::json& config_json, const vit_config& defaults = {}) {
  using hf_vit_detail::bad_field;
  using hf_vit_detail::size_field;
  if (!config_json.is_object())
    throw_invalid_argument("hf_vit_config",
                           concat("config.json is not a JSON object but ", config_json.type_name()));
  const auto& c = config_json;
  if (const auto it = c.find("model_type");
      it != c.end() && !(it->is_string() && it->get<std::string>() == "vit"))
    bad_field("model_type", *it,
              "is not \"vit\" (DeiT, BEiT, DINOv2 and other ViT variants differ in layout)");
  if (const auto it = c.find("hidden_act"); it != c.end()) {
    if (!it->is_string()) bad_field("hidden_act", *it, "is not a string");
    const auto act = it->get<std::string>();
    if (act != "gelu" && act != "gelu_python")
      bad_field("hidden_act", *it,
                "is not supported: the library's ViT uses the exact erf GELU (\"gelu\" or \"gelu_python\")");
  }
  if (const auto it = c.find("qkv_bias"); it != c.end() && !it->is_boolean())
    bad_field("qkv_bias", *it, "is not true or false");
  if (const auto it = c.find("pruned_heads"); it != c.end() && !it->is_null() && !it->empty())
    bad_field("pruned_heads", *it, "is not supported: every layer of the library's ViT has all its heads");

  vit_config out = defaults;
  const auto image = hf_vit_detail::size_pair(c, "image_size", 224);
  const auto patch = hf_vit_detail::size_pair(c, "patch_size", 16);
  if (patch[0] != patch[1])
    bad_field("patch_size", c.at("patch_size"), "is not square: the library's ViT has square patches");
  if (image[0] % patch[0] != 0 || image[1] % patch[0] != 0)
    throw_invalid_argument("hf_vit_config",
                           concat("config.json: image_size ", image[0], " x ", image[1],
                                  " is not divisible into patches of patch_size ", patch[0],
                                  " (Hugging Face's Conv2d drops the remainder; the library's ViT "
                                  "does not)"));
  out.image_height = image[0];
  out.image_width = image[1];
  out.patch_size = patch[0];
  out.channels = size_field(c, "num_channels", 3);
  out.width = size_field(c, "hidden_size", 768);
  out.depth = size_field(c, "num_hidden_layers", 12, 0);
  out.heads = size_field(c, "num_attention_heads", 12);
  if (out.width % out.heads != 0)
    throw_invalid_argument("hf_vit_config", concat("config.json: hidden_size ", out.width,
                                                   " is not divisible by num_attention_heads ", out.heads));
  const std::int64_t intermediate = size_field(c, "intermediate_size", 3072);
  out.mlp_ratio = static_cast<double>(intermediate) / static_cast<double>(out.width);
  // mlp_hidden() rounds mlp_ratio x width back exactly for sizes up to 2^20; the check guards the rounding.
  if (out.mlp_hidden() != intermediate)
    throw_invalid_argument("hf_vit_config", concat("config.json: intermediate_size ", intermediate,
                                                   " is not representable as mlp_ratio x hidden_size"));
  out.layer_norm_epsilon = 1e-12;  // ViTConfig's default (timm's ViT, and vit_config's default, use 1e-6)
  if (const auto it = c.find("layer_norm_eps"); it != c.end()) {
    if (!it->is_number()) bad_field("layer_norm_eps", *it, "is not a number");
    out.layer_norm_epsilon = it->get<double>();
    if (!std::isfinite(out.layer_norm_epsilon) || !(out.layer_norm_epsilon > 0))
      bad_field("layer_norm_eps", *it, "must be positive and finite");
  }

  std::int64_t labels = 0;
  if (const auto it = c.find("id2label"); it != c.end()) {
    if (!it->is_object()) bad_field("id2label", *it, "is not an object");
    labels = static_cast<std::int64_t>(it->size());
    if (labels > hf_vit_detail::max_size)
      throw_invalid_argument("hf_vit_config", concat("config.json: id2label has ", labels,
                                                     " labels, more than ", hf_vit_detail::max_size));
    for (const auto& [key, label] : it->items()) {
      std::int64_t id = -1;
      if (!key.empty() && key.size() <= 9 && key.find_first_not_of("0123456789") == std::string::npos &&
          (key == "0" || key[0] != '0'))
        id = std::stoll(key);
      if (id < 0 || id >= labels)
        throw_invalid_argument("hf_vit_config", concat("config.json: id2label key \"", key,
                                                       "\" is not a class index in 0 .. ", labels - 1));
      if (!label.is_string()) bad_field(concat("id2label[\"", key, "\"]"), label, "is not a string");
    }
  }
  if (const auto it = c.find("num_labels"); it != c.end()) {
    const std::int64_t n = size_field(c, "num_labels", 0, 0);
    if (c.contains("id2label") && n != labels)
      bad_field("num_labels", *it, concat("disagrees with id2label's ", labels, " labels"));
    labels = n;
  }
  if (labels > 0) out.classes = labels;
  // Not read: the dropout probabilities (transformers applies them in training mode only; the library's
  // backbone has none), initializer_range (initialisation), encoder_stride (masked image modelling), the
  // pooler's fields.
  out.validate();
  return out;
}

/// What load_hf_vit needs from config.json beyond the shapes.
struct hf_vit_load_options {
  /// config.json's qkv_bias. False: the checkpoint has no query/key/value biases; they load as zeros.
  bool qkv_bias = true;
};

/// qkv_bias from config.json (true when absent, transformers' default); a non-boolean value throws.
inline hf_vit_load_options hf_vit_load_options_from(const nlohmann::json& config_json) {
  hf_vit_load_options out;
  if (!config_json.is_object()) return out;
  if (const auto it = config_json.find("qkv_bias"); it != config_json.end()) {
    if (!it->is_boolean())
      hf_vit_detail::bad_field("qkv_bias", *it, "is not true or false", "hf_vit_load_options_from");
    out.qkv_bias = it->get<bool>();
  }
  return out;
}

/// One tensor of a Hugging Face ViT checkpoint and where it goes.
struct hf_vit_tensor {
  std::string name;       ///< the Hugging Face name: "vit.encoder.layer.0.attention.attention.query.weight"
  std::string parameter;  ///< vit::collect_parameters' name: "blocks.0.attn.q.weight"; empty: ignored
  std::vector<std::int64_t> shape;  ///< the shape in the checkpoint (a reshape of the parameter's)
};

/// Every tensor a checkpoint of `naming` holds for a model of `config`, in state-dict order: the required
/// ones (a parameter each) and the optional ignored ones (pooler.dense.*, embeddings.mask_token; empty
/// parameter). Without qkv_bias the query/key/value biases are not listed.
inline std::vector<hf_vit_tensor> hf_vit_tensor_names(const vit_config& config, hf_vit_naming naming,
                                                      bool qkv_bias = true) {
  const std::string prefix = naming == hf_vit_naming::vit_model ? "" : "vit.";
  const std::int64_t d = config.width, p = config.patch_size, hidden = config.mlp_hidden();
  std::vector<hf_vit_tensor> out;
  const auto add = [&](std::string name, std::string parameter, std::vector<std::int64_t> shape) {
    out.push_back({prefix + std::move(name), std::move(parameter), std::move(shape)});
  };
  add("embeddings.cls_token", "cls_token", {1, 1, d});
  add("embeddings.mask_token", "", {1, 1, d});
  add("embeddings.position_embeddings", "position_embedding", {1, config.tokens(), d});
  add("embeddings.patch_embeddings.projection.weight", "patch_embed.weight", {d, config.channels, p, p});
  add("embeddings.patch_embeddings.projection.bias", "patch_embed.bias", {d});
  for (index_t i = 0; i < config.depth; ++i) {
    const std::string hf = concat("encoder.layer.", i, "."), ours = concat("blocks.", i, ".");
    const auto linear_pair = [&](const std::string& hf_module, const std::string& module,
                                 std::int64_t out_features, std::int64_t in_features, bool bias) {
      add(hf + hf_module + ".weight", ours + module + ".weight", {out_features, in_features});
      if (bias) add(hf + hf_module + ".bias", ours + module + ".bias", {out_features});
    };
    linear_pair("attention.attention.query", "attn.q", d, d, qkv_bias);
    linear_pair("attention.attention.key", "attn.k", d, d, qkv_bias);
    linear_pair("attention.attention.value", "attn.v", d, d, qkv_bias);
    linear_pair("attention.output.dense", "attn.o", d, d, true);
    linear_pair("intermediate.dense", "mlp.fc1", hidden, d, true);
    linear_pair("output.dense", "mlp.fc2", d, hidden, true);
    add(hf + "layernorm_before.weight", ours + "norm1.weight", {d});
    add(hf + "layernorm_before.bias", ours + "norm1.bias", {d});
    add(hf + "layernorm_after.weight", ours + "norm2.weight", {d});
    add(hf + "layernorm_after.bias", ours + "norm2.bias", {d});
  }
  add("layernorm.weight", "norm.weight", {d});
  add("layernorm.bias", "norm.bias", {d});
  add("pooler.dense.weight", "", {d, d});
  add("pooler.dense.bias", "", {d});
  if (naming == hf_vit_naming::vit_for_image_classification) {
    out.push_back({"classifier.weight", "head.weight", {config.classes, d}});
    out.push_back({"classifier.bias", "head.bias", {config.classes}});
  }
  return out;
}

/// What load_hf_vit did.
struct hf_vit_load_report {
  hf_vit_naming naming = hf_vit_naming::vit_model;
  /// Hugging Face names copied into the model.
  std::vector<std::string> loaded;
  /// Present but unused by the library's ViT: pooler.dense.*, embeddings.mask_token.
  std::vector<std::string> ignored;
  /// classifier.* -> head; false (ViTModel naming): the head keeps its initialisation.
  bool head_loaded = false;
};

namespace hf_vit_detail {

inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += concat(i ? ", " : "", shape[i]);
  return out + "]";
}

/// product(shape), or why there is none: a negative dimension, or a product above 2^63 - 1.
inline std::int64_t checked_numel(const std::vector<std::int64_t>& shape, std::string& why) {
  std::int64_t n = 1;
  for (const std::int64_t dim : shape)
    if (dim < 0) why = "has a negative dimension";
  if (!why.empty()) return -1;
  for (const std::int64_t dim : shape) {
    if (dim > 0 && n > std::numeric_limits<std::int64_t>::max() / dim) {
      why = "has more than 2^63 - 1 elements";
      return -1;
    }
    n *= dim;
  }
  return n;
}

/// The one error a checkpoint loader throws: `header` and ": N problem(s)", then one "\n  kind: item" line per item
/// of every group, so the whole list arrives at once.
inline void throw_problems(std::string_view where, const std::string& header,
                           std::initializer_list<std::pair<std::string_view, const std::vector<std::string>*>> groups) {
  std::size_t problems = 0;
  for (const auto& [kind, items] : groups) problems += items->size();
  if (problems == 0) return;
  std::string message = concat(header, ": ", problems, " problem", problems == 1 ? "" : "s");
  for (const auto& [kind, items] : groups)
    for (const auto& item : *items) message += concat("\n  ", kind, ": ", item);
  throw_invalid_argument(where, message);
}

inline std::string describe(const vit_config& c) {
  return concat("image ", c.channels, " x ", c.image_height, " x ", c.image_width, ", patch ", c.patch_size,
                ", width ", c.width, ", depth ", c.depth, ", heads ", c.heads, ", MLP ", c.mlp_hidden(),
                ", classes ", c.classes);
}

}  // namespace hf_vit_detail

/// Copies a Hugging Face ViT checkpoint (either naming, detected from the names) into `model`: the backbone,
/// and the head from classifier.* when the checkpoint has one. Nothing is copied unless everything fits:
/// otherwise ONE std::invalid_argument lists every missing tensor (with the shape it should have), every
/// unexpected one, every mis-shaped one (expected vs found) and every malformed one (a value count that
/// disagrees with its shape, a negative dimension, a non-finite value). The adapters keep their
/// initialisation. Returns what was loaded and what was ignored (the pooler, the mask token).
template <Backend B, class F>
hf_vit_load_report load_hf_vit(vit<B, F>& model, const host_tensor_map& tensors,
                               const hf_vit_load_options& options = {}) {
  using hf_vit_detail::shape_text;
  using scalar_type = typename vit<B, F>::scalar_type;
  hf_vit_load_report report;
  report.naming = detect_hf_vit_naming(tensors);
  vit_config config = model.config();
  config.classes = model.classes();  // the head as it is now (reset_head may have changed it)
  const auto expected = hf_vit_tensor_names(config, report.naming, options.qkv_bias);

  parameter_list<B> params;
  model.collect_parameters(params, "");
  std::map<std::string, tensor<B>*, std::less<>> by_name;
  for (auto& p : params) by_name[p.name] = p.value;

  std::vector<std::string> missing, mis_shaped, malformed, unexpected;
  std::vector<std::pair<const host_tensor*, tensor<B>*>> copies;
  std::map<std::string_view, bool> used;
  for (const auto& entry : expected) {
    const auto found = tensors.find(entry.name);
    if (found == tensors.end()) {
      if (!entry.parameter.empty()) missing.push_back(concat(entry.name, " ", shape_text(entry.shape)));
      continue;
    }
    used[found->first] = true;
    const host_tensor& t = found->second;
    std::string why;
    const std::int64_t numel = hf_vit_detail::checked_numel(t.shape, why);
    if (numel < 0) {
      malformed.push_back(concat(entry.name, ": shape ", shape_text(t.shape), " ", why));
      continue;
    }
    if (static_cast<std::uint64_t>(numel) != t.values.size()) {
      malformed.push_back(concat(entry.name, ": shape ", shape_text(t.shape), " has ", numel,
                                 " values, the tensor holds ", t.values.size()));
      continue;
    }
    if (t.shape != entry.shape) {
      mis_shaped.push_back(
          concat(entry.name, ": expected ", shape_text(entry.shape), ", found ", shape_text(t.shape)));
      continue;
    }
    for (std::size_t i = 0; i < t.values.size(); ++i)
      if (!std::isfinite(t.values[i])) {
        malformed.push_back(concat(entry.name, ": value ", i, " is ", t.values[i]));
        break;
      }
    if (entry.parameter.empty()) {
      report.ignored.push_back(entry.name);
      continue;
    }
    // A parameter that is absent or of another size means the name map and vit disagree: a bug here.
    const auto target = by_name.find(entry.parameter);
    if (target == by_name.end() || target->second->numel() != numel)
      throw_runtime_error("load_hf_vit", concat("internal: ", entry.name, " maps to ", entry.parameter,
                                                ", which the model does not hold with ", numel, " values"));
    copies.emplace_back(&t, target->second);
    report.loaded.push_back(entry.name);
  }
  for (const auto& [name, t] : tensors) {
    if (used.contains(name)) continue;
    std::string note;
    if (!options.qkv_bias && name.find(".attention.attention.") != std::string::npos &&
        name.ends_with(".bias"))
      note = " (config.json's qkv_bias is false)";
    else if (report.naming == hf_vit_naming::vit_for_image_classification &&
             (name.starts_with("embeddings.") || name.starts_with("encoder.") ||
              name.starts_with("layernorm.")))
      note = " (ViTModel naming in a ViTForImageClassification checkpoint: expected the \"vit.\" prefix)";
    unexpected.push_back(concat(name, " ", shape_text(t.shape), note));
  }

  hf_vit_detail::throw_problems(
      "load_hf_vit",
      concat("the ", to_string(report.naming), " checkpoint (", tensors.size(), " tensors) does not fit the model (",
             hf_vit_detail::describe(config), options.qkv_bias ? "" : ", no q/k/v biases", ")"),
      {{"missing", &missing}, {"unexpected", &unexpected}, {"mis-shaped", &mis_shaped}, {"malformed", &malformed}});

  B& backend = model.backend();
  std::vector<scalar_type> staging;
  for (const auto& [source, target] : copies) {
    staging.assign(source->values.begin(), source->values.end());
    backend.copy_from_host(staging.data(), target->data(), target->numel());
  }
  if (!options.qkv_bias)
    for (auto& block : model.blocks())
      for (auto* projection : {&block.attention().q(), &block.attention().k(), &block.attention().v()})
        projection->base().bias().fill(scalar_type(0));
  report.head_loaded = report.naming == hf_vit_naming::vit_for_image_classification;
  return report;
}

/// load_hf_vit with the checks config.json allows beyond shapes: the model must have been built for this
/// configuration (hf_vit_config's architecture fields and LayerNorm epsilon; a difference throws naming the
/// field), and qkv_bias is read from it.
template <Backend B, class F>
hf_vit_load_report load_hf_vit(vit<B, F>& model, const host_tensor_map& tensors,
                               const nlohmann::json& config_json) {
  const vit_config file = hf_vit_config(config_json, model.config());
  const vit_config& ours = model.config();
  const auto differ = [](std::string_view field, auto from_file, std::string_view member, auto in_model) {
    throw_invalid_argument(
        "load_hf_vit", concat("config.json's ", field, " is ", from_file, ", the model's ", member, " is ",
                              in_model, ": build the model from hf_vit_config"));
  };
  if (file.image_height != ours.image_height)
    differ("image_size (height)", file.image_height, "image_height", ours.image_height);
  if (file.image_width != ours.image_width)
    differ("image_size (width)", file.image_width, "image_width", ours.image_width);
  if (file.channels != ours.channels) differ("num_channels", file.channels, "channels", ours.channels);
  if (file.patch_size != ours.patch_size)
    differ("patch_size", file.patch_size, "patch_size", ours.patch_size);
  if (file.width != ours.width) differ("hidden_size", file.width, "width", ours.width);
  if (file.depth != ours.depth) differ("num_hidden_layers", file.depth, "depth", ours.depth);
  if (file.heads != ours.heads) differ("num_attention_heads", file.heads, "heads", ours.heads);
  if (file.mlp_hidden() != ours.mlp_hidden())
    differ("intermediate_size", file.mlp_hidden(), "MLP width", ours.mlp_hidden());
  if (file.layer_norm_epsilon != ours.layer_norm_epsilon)
    differ("layer_norm_eps", file.layer_norm_epsilon, "layer_norm_epsilon", ours.layer_norm_epsilon);
  return load_hf_vit(model, tensors, hf_vit_load_options_from(config_json));
}

/// Every tensor of a safetensors checkpoint as floats: `path` is one .safetensors file, or the
/// model.safetensors.index.json of a sharded one (each shard checked against the weight map). F32, F16, BF16 and
/// F64 convert; another dtype is an error naming the tensor (safetensors_error).
inline host_tensor_map read_safetensors_tensors(const std::filesystem::path& path) {
  host_tensor_map out;
  const auto add = [&](const auto& file, const std::string& name) {
    const safetensors_tensor_info& info = file.info(name);
    host_tensor t;
    for (const std::uint64_t d : info.shape) t.shape.push_back(static_cast<std::int64_t>(d));  // checked < 2^63
    t.values = file.to_float(name);
    out.emplace(name, std::move(t));
  };
  if (path.filename().string().ends_with(".index.json")) {
    const sharded_safetensors sharded(path);
    for (const auto& name : sharded.names()) add(sharded, name);
  } else {
    const safetensors_file file(path);
    for (const auto& name : file.names()) add(file, name);
  }
  return out;
}

/// A Hugging Face model folder as saved by save_pretrained: config.json and the weights.
struct hf_checkpoint {
  nlohmann::json config;
  host_tensor_map tensors;
};

/// Reads `folder`/config.json and `folder`/model.safetensors, or, when that file is absent,
/// `folder`/model.safetensors.index.json and its shards. A missing config.json or weights file is an error naming
/// the folder and what it looked for (PyTorch's pytorch_model.bin is not read: convert it to safetensors first).
inline hf_checkpoint read_hf_checkpoint(const std::filesystem::path& folder) {
  const auto config = folder / "config.json", single = folder / "model.safetensors",
             index = folder / "model.safetensors.index.json";
  if (!std::filesystem::is_regular_file(config))
    throw_runtime_error("read_hf_checkpoint", concat(folder.string(), " has no config.json"));
  hf_checkpoint out;
  out.config = json::parse_file(config.string());
  if (std::filesystem::is_regular_file(single)) out.tensors = read_safetensors_tensors(single);
  else if (std::filesystem::is_regular_file(index)) out.tensors = read_safetensors_tensors(index);
  else
    throw_runtime_error("read_hf_checkpoint", concat(folder.string(), " has neither model.safetensors nor ",
                                                     "model.safetensors.index.json",
                                                     std::filesystem::exists(folder / "pytorch_model.bin")
                                                         ? " (only pytorch_model.bin: convert it to safetensors)"
                                                         : ""));
  return out;
}

/// A ViT for a Hugging Face checkpoint folder, built from its config.json (the rest of the configuration, LoRA
/// targets and seed included, from `defaults`) with the checkpoint's weights loaded. `report`, when given, says what
/// was loaded and what was ignored.
template <Backend B, class F = standard_lora>
vit<B, F> load_hf_vit_folder(B& backend, const std::filesystem::path& folder, const vit_config& defaults = {},
                             hf_vit_load_report* report = nullptr) {
  const hf_checkpoint checkpoint = read_hf_checkpoint(folder);
  vit<B, F> model(backend, hf_vit_config(checkpoint.config, defaults));
  const hf_vit_load_report r = load_hf_vit(model, checkpoint.tensors, checkpoint.config);
  if (report) *report = r;
  return model;
}

}  // namespace treelora

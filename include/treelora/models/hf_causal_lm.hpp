// treelora/models/hf_causal_lm.hpp: Hugging Face language-model checkpoints (LlamaForCausalLM and its family,
// GPT2LMHeadModel) into llama<B, F> and gpt2<B, F>, and their LoRA adapters to and from PEFT.
//
//   treelora::cpu_backend<float> backend;
//   auto model = treelora::load_hf_llama_folder(backend, "SmolLM-135M");   // config.json + safetensors (or shards)
//   ... train the adapters ...
//   treelora::export_peft_lm(model, "adapter", {.base_model_name_or_path = "HuggingFaceTB/SmolLM-135M"});
//
// config.json maps onto llama_config / gpt2_config (the architecture from the file, fields absent from it taking
// transformers' defaults; LoRA targets, rank, alpha and seed from the caller's defaults). Every tensor name maps onto
// one parameter of collect_parameters, which uses the same names; the loader copies a whole checkpoint in or throws
// ONE exception listing every missing, unexpected, mis-shaped and malformed tensor. Tied heads: lm_head.weight is
// absent from a tied checkpoint (and ignored when a file carries it anyway). GPT-2's Conv1D weights [in, out] are
// transposed into the library's [out, in]; names may carry the "transformer." prefix or not (the original GPT-2
// files have none). Buffers transformers saved in some versions (rotary_emb.inv_freq, attn.bias, attn.masked_bias)
// are ignored.
// PEFT: adapter_model.safetensors holds base_model.model.<module path>.lora_A.weight [r, in] and .lora_B.weight
// [out, r], where the module path is the library's adapter name (model.layers.0.self_attn.q_proj,
// transformer.h.0.attn.c_attn): the export is a prefix and a suffix. GPT-2's adapters are written with
// fan_in_fan_out = true, which is how PEFT applies a LoRA to a Conv1D (the factors themselves are the same).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "treelora/models/gpt2.hpp"
#include "treelora/models/hf_vit.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/models/peft.hpp"

namespace treelora {

namespace hf_lm_detail {

using hf_vit_detail::bad_field;
using hf_vit_detail::size_field;

inline double real_field(const nlohmann::json& c, std::string_view field, double fallback, std::string_view where) {
  const auto it = c.find(field);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number() || !std::isfinite(it->get<double>())) bad_field(field, *it, "is not a finite number", where);
  return it->get<double>();
}
inline bool bool_field(const nlohmann::json& c, std::string_view field, bool fallback, std::string_view where) {
  const auto it = c.find(field);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad_field(field, *it, "is not true or false", where);
  return it->get<bool>();
}
/// A token id: absent or null gives `fallback`.
inline index_t id_field(const nlohmann::json& c, std::string_view field, index_t fallback, std::string_view where) {
  const auto it = c.find(field);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > hf_vit_detail::max_size * 4)
    bad_field(field, *it, "is not a token id", where);
  return it->get<std::int64_t>();
}
/// eos_token_id: one id or a list of them.
inline std::vector<index_t> id_list_field(const nlohmann::json& c, std::string_view field, std::vector<index_t> fallback,
                                          std::string_view where) {
  const auto it = c.find(field);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_array()) return {id_field(c, field, 0, where)};
  std::vector<index_t> out;
  for (const auto& v : *it) {
    nlohmann::json one = {{std::string(field), v}};
    out.push_back(id_field(one, field, 0, where));
  }
  if (out.empty()) bad_field(field, *it, "is an empty list", where);
  return out;
}
inline void require_model_type(const nlohmann::json& c, std::initializer_list<std::string_view> accepted, std::string_view where) {
  if (!c.is_object()) bad_field("(the document)", c, "is not a JSON object", where);
  const auto it = c.find("model_type");
  if (it == c.end()) return;
  for (auto a : accepted)
    if (it->is_string() && it->get<std::string>() == a) return;
  bad_field("model_type", *it, concat("is not one this loader reads (", *accepted.begin(), ")"), where);
}

/// One tensor of a checkpoint and where it goes.
struct entry {
  std::string name;       ///< the name in the file
  std::string parameter;  ///< collect_parameters' name; empty: ignored when present
  std::vector<std::int64_t> shape;  ///< its shape in the file
  bool transpose = false;           ///< [in, out] in the file (Conv1D), [out, in] in the model
  bool optional = false;            ///< may be absent
};


}  // namespace hf_lm_detail

/// What load_hf_llama / load_hf_gpt2 did.
struct hf_lm_load_report {
  std::vector<std::string> loaded;   ///< names copied into the model
  std::vector<std::string> ignored;  ///< present but not used (buffers, a tied head saved anyway)
};

namespace hf_lm_detail {

/// Copies `tensors` into `params` through `expected`, or throws ONE std::invalid_argument listing every problem.
template <Backend B>
hf_lm_load_report load_entries(parameter_list<B>& params, const std::vector<entry>& expected, const host_tensor_map& tensors,
                               std::string_view where, const std::string& header, B& backend) {
  using hf_vit_detail::shape_text;
  std::map<std::string, tensor<B>*, std::less<>> by_name;
  for (auto& p : params) by_name[p.name] = p.value;
  hf_lm_load_report report;
  std::vector<std::string> missing, mis_shaped, malformed, unexpected;
  std::vector<std::pair<const host_tensor*, const entry*>> copies;
  std::set<std::string_view> used;
  for (const auto& e : expected) {
    const auto found = tensors.find(e.name);
    if (found == tensors.end()) {
      if (!e.optional) missing.push_back(concat(e.name, " ", shape_text(e.shape)));
      continue;
    }
    used.insert(found->first);
    const host_tensor& t = found->second;
    std::string why;
    const std::int64_t numel = hf_vit_detail::checked_numel(t.shape, why);
    if (numel < 0 || static_cast<std::uint64_t>(numel) != t.values.size()) {
      malformed.push_back(concat(e.name, ": shape ", shape_text(t.shape), " ", why.empty() ? concat("holds ", t.values.size(), " values") : why));
      continue;
    }
    if (t.shape != e.shape) {
      mis_shaped.push_back(concat(e.name, ": expected ", shape_text(e.shape), ", found ", shape_text(t.shape)));
      continue;
    }
    if (e.parameter.empty()) {
      report.ignored.push_back(e.name);
      continue;
    }
    bool finite = true;
    for (std::size_t i = 0; i < t.values.size() && finite; ++i)
      if (!std::isfinite(t.values[i])) {
        malformed.push_back(concat(e.name, ": value ", i, " is ", t.values[i]));
        finite = false;
      }
    if (!finite) continue;
    const auto target = by_name.find(e.parameter);
    if (target == by_name.end() || target->second->numel() != numel)
      throw_runtime_error(where, concat("internal: ", e.name, " maps to ", e.parameter, ", which the model does not hold with ",
                                        numel, " values"));
    copies.emplace_back(&t, &e);
    report.loaded.push_back(e.name);
  }
  for (const auto& [name, t] : tensors)
    if (!used.contains(name)) unexpected.push_back(concat(name, " ", shape_text(t.shape)));
  hf_vit_detail::throw_problems(where, header,
                                {{"missing", &missing}, {"unexpected", &unexpected}, {"mis-shaped", &mis_shaped}, {"malformed", &malformed}});
  std::vector<typename B::scalar_type> staging;
  for (const auto& [source, e] : copies) {
    tensor<B>* target = by_name.find(e->parameter)->second;
    if (e->transpose) {  // file [in, out] -> model [out, in]
      const auto in = e->shape[0], out = e->shape[1];
      staging.resize(source->values.size());
      for (std::int64_t i = 0; i < in; ++i)
        for (std::int64_t o = 0; o < out; ++o) staging[std::size_t(o * in + i)] = source->values[std::size_t(i * out + o)];
    } else {
      staging.assign(source->values.begin(), source->values.end());
    }
    backend.copy_from_host(staging.data(), target->data(), target->numel());
  }
  return report;
}

}  // namespace hf_lm_detail

// ------------------------------------------------------------------------------------------------- Llama

/// config.json of a Llama-family model (model_type "llama"; SmolLM and TinyLlama are) onto llama_config. Rejected,
/// naming the field: another model_type, a hidden_act other than "silu", wrong JSON types, sizes above 2^20, a
/// rope_scaling other than null or llama3 (both the "rope_scaling" and the newer "rope_parameters" spelling).
inline llama_config hf_llama_config(const nlohmann::json& c, const llama_config& defaults = {}) {
  constexpr std::string_view where = "hf_llama_config";
  using namespace hf_lm_detail;
  require_model_type(c, {"llama"}, where);
  if (const auto it = c.find("hidden_act"); it != c.end() && !(it->is_string() && it->get<std::string>() == "silu"))
    bad_field("hidden_act", *it, "is not \"silu\" (the Llama MLP)", where);
  llama_config out = defaults;
  out.vocab_size = size_field(c, "vocab_size", 32000);
  out.hidden_size = size_field(c, "hidden_size", 4096);
  out.intermediate_size = size_field(c, "intermediate_size", 11008);
  out.num_hidden_layers = size_field(c, "num_hidden_layers", 32, 0);
  out.num_attention_heads = size_field(c, "num_attention_heads", 32);
  out.num_key_value_heads = size_field(c, "num_key_value_heads", out.num_attention_heads);
  out.head_dim = size_field(c, "head_dim", 0, 0);
  out.max_position_embeddings = size_field(c, "max_position_embeddings", 2048);
  out.rms_norm_eps = real_field(c, "rms_norm_eps", 1e-6, where);
  out.initializer_range = real_field(c, "initializer_range", 0.02, where);
  out.tie_word_embeddings = bool_field(c, "tie_word_embeddings", false, where);
  out.attention_bias = bool_field(c, "attention_bias", false, where);
  out.mlp_bias = bool_field(c, "mlp_bias", false, where);
  out.bos_token_id = id_field(c, "bos_token_id", 1, where);
  out.eos_token_ids = id_list_field(c, "eos_token_id", {2}, where);
  out.pad_token_id = id_field(c, "pad_token_id", defaults.pad_token_id, where);
  // rope: "rope_theta" + "rope_scaling", or both inside "rope_parameters" (newer transformers)
  const nlohmann::json* rope = &c;
  if (const auto it = c.find("rope_parameters"); it != c.end() && !it->is_null()) {
    if (!it->is_object()) bad_field("rope_parameters", *it, "is not an object", where);
    rope = &*it;
  }
  out.rope_theta = real_field(*rope, "rope_theta", real_field(c, "rope_theta", 10000.0, where), where);
  const nlohmann::json* scaling = nullptr;
  if (const auto it = c.find("rope_scaling"); it != c.end() && !it->is_null()) scaling = &*it;
  if (rope != &c) scaling = rope;
  out.rope_scaling.reset();
  if (scaling) {
    if (!scaling->is_object()) bad_field("rope_scaling", *scaling, "is not an object", where);
    std::string type = "default";
    for (const char* key : {"rope_type", "type"})
      if (const auto t = scaling->find(key); t != scaling->end() && t->is_string()) type = t->get<std::string>();
    if (type == "llama3") {
      rope_llama3_scaling s;
      s.factor = real_field(*scaling, "factor", 8.0, where);
      s.low_freq_factor = real_field(*scaling, "low_freq_factor", 1.0, where);
      s.high_freq_factor = real_field(*scaling, "high_freq_factor", 4.0, where);
      s.original_max_position_embeddings = real_field(*scaling, "original_max_position_embeddings", 8192, where);
      out.rope_scaling = s;
    } else if (type != "default") {
      bad_field("rope_scaling", *scaling, "is not llama3 scaling (the only kind this loader computes)", where);
    }
  }
  out.validate();
  return out;
}

/// Every tensor a LlamaForCausalLM checkpoint holds for `c`, in state-dict order.
inline std::vector<hf_lm_detail::entry> hf_llama_tensor_names(const llama_config& c) {
  std::vector<hf_lm_detail::entry> out;
  const std::int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_width(), kv = c.num_key_value_heads * c.head_width(),
                     inner = c.intermediate_size;
  const auto add = [&](std::string name, std::vector<std::int64_t> shape, bool optional = false, bool ignored = false) {
    out.push_back({name, ignored ? std::string() : name, std::move(shape), false, optional});
  };
  add("model.embed_tokens.weight", {c.vocab_size, d});
  for (index_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = concat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {d});
    const auto projection = [&](const std::string& name, std::int64_t out_features, std::int64_t in_features, bool bias) {
      add(p + name + ".weight", {out_features, in_features});
      if (bias) add(p + name + ".bias", {out_features});
    };
    projection("self_attn.q_proj", q, d, c.attention_bias);
    projection("self_attn.k_proj", kv, d, c.attention_bias);
    projection("self_attn.v_proj", kv, d, c.attention_bias);
    projection("self_attn.o_proj", d, q, c.attention_bias);
    add(p + "self_attn.rotary_emb.inv_freq", {c.head_width() / 2}, true, true);
    add(p + "post_attention_layernorm.weight", {d});
    projection("mlp.gate_proj", inner, d, c.mlp_bias);
    projection("mlp.up_proj", inner, d, c.mlp_bias);
    projection("mlp.down_proj", d, inner, c.mlp_bias);
  }
  add("model.norm.weight", {d});
  add("lm_head.weight", {c.vocab_size, d}, c.tie_word_embeddings, c.tie_word_embeddings);
  return out;
}

/// Copies a LlamaForCausalLM checkpoint into `model` (nothing unless everything fits). The adapters keep their
/// initialisation (B = 0: the adapted model starts equal to the checkpoint).
template <Backend B, class F>
hf_lm_load_report load_hf_llama(llama<B, F>& model, const host_tensor_map& tensors) {
  parameter_list<B> params;
  model.collect_parameters(params, "");
  const auto& c = model.config();
  return hf_lm_detail::load_entries(params, hf_llama_tensor_names(c), tensors, "load_hf_llama",
                                    concat("the Llama checkpoint (", tensors.size(), " tensors) does not fit the model (d ",
                                           c.hidden_size, ", ", c.num_hidden_layers, " layers, ", c.num_attention_heads, "/",
                                           c.num_key_value_heads, " heads, I ", c.intermediate_size, ", V ", c.vocab_size,
                                           c.tie_word_embeddings ? ", tied" : ", untied", ")"),
                                    model.backend());
}

/// A Llama for a Hugging Face folder (config.json + model.safetensors or its shards): the architecture from the
/// file, the rest (LoRA targets, rank, alpha, pad id, seed) from `defaults`.
template <Backend B, class F = standard_lora>
llama<B, F> load_hf_llama_folder(B& backend, const std::filesystem::path& folder, const llama_config& defaults = {},
                                 hf_lm_load_report* report = nullptr) {
  const hf_checkpoint checkpoint = read_hf_checkpoint(folder);
  llama<B, F> model(backend, hf_llama_config(checkpoint.config, defaults));
  const auto r = load_hf_llama(model, checkpoint.tensors);
  if (report) *report = r;
  return model;
}

/// config.json of a LlamaForCausalLM for `c` (every field hf_llama_config reads; float32 weights).
inline nlohmann::json hf_llama_config_json(const llama_config& c) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_act", "silu"},
                      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                      {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                      {"num_key_value_heads", c.num_key_value_heads}, {"head_dim", c.head_width()},
                      {"max_position_embeddings", c.max_position_embeddings}, {"rms_norm_eps", c.rms_norm_eps},
                      {"rope_theta", c.rope_theta}, {"initializer_range", c.initializer_range},
                      {"tie_word_embeddings", c.tie_word_embeddings}, {"attention_bias", c.attention_bias},
                      {"mlp_bias", c.mlp_bias}, {"bos_token_id", c.bos_token_id}, {"torch_dtype", "float32"}};
  j["eos_token_id"] = c.eos_token_ids.size() == 1 ? nlohmann::json(c.eos_token_ids[0]) : nlohmann::json(c.eos_token_ids);
  j["pad_token_id"] = c.pad_token_id >= 0 ? nlohmann::json(c.pad_token_id) : nlohmann::json(nullptr);
  if (c.rope_scaling)
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", c.rope_scaling->factor},
                         {"low_freq_factor", c.rope_scaling->low_freq_factor},
                         {"high_freq_factor", c.rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling->original_max_position_embeddings}};
  else
    j["rope_scaling"] = nullptr;
  return j;
}

/// Writes `model`'s base weights (not its adapters) as a Hugging Face folder that transformers' LlamaForCausalLM and
/// load_hf_llama_folder read: config.json and model.safetensors (float32, state-dict names; a tied head is not
/// written), each atomically.
template <Backend B, class F>
void save_hf_llama(llama<B, F>& model, const std::filesystem::path& folder) {
  require_writable_folder(folder, "Hugging Face model folder");
  parameter_list<B> params;
  model.collect_parameters(params, "");
  std::map<std::string, const tensor<B>*, std::less<>> by_name;
  for (auto& p : params) by_name[p.name] = p.value;
  safetensors_writer writer;
  writer.set_metadata("format", "pt");
  for (const auto& e : hf_llama_tensor_names(model.config())) {
    if (e.parameter.empty()) continue;
    const auto found = by_name.find(e.parameter);
    if (found == by_name.end()) throw_runtime_error("save_hf_llama", concat("internal: the model holds no ", e.parameter));
    const auto values = found->second->to_host();
    const std::vector<std::uint64_t> dims(e.shape.begin(), e.shape.end());
    writer.add(e.name, dims, std::span<const typename B::scalar_type>(values), safetensors_dtype::F32);
  }
  writer.write(folder / "model.safetensors");
  write_file_atomically(folder / "config.json", std::string_view(hf_llama_config_json(model.config()).dump(2)));
}

// ------------------------------------------------------------------------------------------------- GPT-2

/// config.json of GPT-2 (model_type "gpt2") onto gpt2_config. Rejected, naming the field: another model_type, an
/// activation_function other than "gelu_new", wrong JSON types, sizes above 2^20.
inline gpt2_config hf_gpt2_config(const nlohmann::json& c, const gpt2_config& defaults = {}) {
  constexpr std::string_view where = "hf_gpt2_config";
  using namespace hf_lm_detail;
  require_model_type(c, {"gpt2"}, where);
  if (const auto it = c.find("activation_function"); it != c.end() && !(it->is_string() && it->get<std::string>() == "gelu_new"))
    bad_field("activation_function", *it, "is not \"gelu_new\" (the tanh approximation GPT-2 uses)", where);
  gpt2_config out = defaults;
  out.vocab_size = size_field(c, "vocab_size", 50257);
  out.n_positions = size_field(c, "n_positions", 1024);
  out.n_embd = size_field(c, "n_embd", 768);
  out.n_layer = size_field(c, "n_layer", 12, 0);
  out.n_head = size_field(c, "n_head", 12);
  out.n_inner = c.contains("n_inner") && !c["n_inner"].is_null() ? size_field(c, "n_inner", 0) : 0;
  out.layer_norm_epsilon = real_field(c, "layer_norm_epsilon", 1e-5, where);
  out.initializer_range = real_field(c, "initializer_range", 0.02, where);
  out.bos_token_id = id_field(c, "bos_token_id", 50256, where);
  out.eos_token_ids = id_list_field(c, "eos_token_id", {50256}, where);
  out.pad_token_id = id_field(c, "pad_token_id", defaults.pad_token_id, where);
  if (bool_field(c, "scale_attn_by_inverse_layer_idx", false, where) || bool_field(c, "reorder_and_upcast_attn", false, where))
    bad_field("scale_attn_by_inverse_layer_idx", c.value("scale_attn_by_inverse_layer_idx", nlohmann::json(true)),
              "(or reorder_and_upcast_attn) is set: the library's GPT-2 attention is the original one", where);
  out.validate();
  return out;
}

/// Every tensor a GPT-2 checkpoint holds for `c`: `prefix` is "" (the original files) or "transformer."
/// (GPT2LMHeadModel's state dict).
inline std::vector<hf_lm_detail::entry> hf_gpt2_tensor_names(const gpt2_config& c, const std::string& prefix) {
  std::vector<hf_lm_detail::entry> out;
  const std::int64_t d = c.n_embd, inner = c.inner();
  const auto add = [&](const std::string& name, std::vector<std::int64_t> shape, bool transpose = false) {
    out.push_back({prefix + name, "transformer." + name, std::move(shape), transpose, false});
  };
  const auto ignore = [&](const std::string& name, std::vector<std::int64_t> shape) {
    out.push_back({name, "", std::move(shape), false, true});
  };
  add("wte.weight", {c.vocab_size, d});
  add("wpe.weight", {c.n_positions, d});
  for (index_t i = 0; i < c.n_layer; ++i) {
    const std::string p = concat("h.", i, ".");
    add(p + "ln_1.weight", {d}), add(p + "ln_1.bias", {d});
    add(p + "attn.c_attn.weight", {d, 3 * d}, true), add(p + "attn.c_attn.bias", {3 * d});
    add(p + "attn.c_proj.weight", {d, d}, true), add(p + "attn.c_proj.bias", {d});
    ignore(prefix + p + "attn.bias", {1, 1, c.n_positions, c.n_positions});
    ignore(prefix + p + "attn.masked_bias", {});
    add(p + "ln_2.weight", {d}), add(p + "ln_2.bias", {d});
    add(p + "mlp.c_fc.weight", {d, inner}, true), add(p + "mlp.c_fc.bias", {inner});
    add(p + "mlp.c_proj.weight", {inner, d}, true), add(p + "mlp.c_proj.bias", {d});
  }
  add("ln_f.weight", {d}), add("ln_f.bias", {d});
  ignore("lm_head.weight", {c.vocab_size, d});  // tied to wte
  return out;
}

template <Backend B, class F>
hf_lm_load_report load_hf_gpt2(gpt2<B, F>& model, const host_tensor_map& tensors) {
  std::string prefix;
  for (const auto& [name, t] : tensors)
    if (name.starts_with("transformer.")) prefix = "transformer.";
  parameter_list<B> params;
  model.collect_parameters(params, "");
  const auto& c = model.config();
  return hf_lm_detail::load_entries(params, hf_gpt2_tensor_names(c, prefix), tensors, "load_hf_gpt2",
                                    concat("the GPT-2 checkpoint (", tensors.size(), " tensors", prefix.empty() ? "" : ", \"transformer.\" names",
                                           ") does not fit the model (d ", c.n_embd, ", ", c.n_layer, " layers, ", c.n_head,
                                           " heads, ", c.n_positions, " positions, V ", c.vocab_size, ")"),
                                    model.backend());
}

template <Backend B, class F = standard_lora>
gpt2<B, F> load_hf_gpt2_folder(B& backend, const std::filesystem::path& folder, const gpt2_config& defaults = {},
                               hf_lm_load_report* report = nullptr) {
  const hf_checkpoint checkpoint = read_hf_checkpoint(folder);
  gpt2<B, F> model(backend, hf_gpt2_config(checkpoint.config, defaults));
  const auto r = load_hf_gpt2(model, checkpoint.tensors);
  if (report) *report = r;
  return model;
}

// ------------------------------------------------------------------------------------------------- PEFT

struct peft_lm_export_options {
  std::string base_model_name_or_path = {};
  /// An rsLoRA adapter as use_rslora false with lora_alpha = alpha sqrt(r) (the same scaling everywhere).
  bool portable_rslora = true;
};

/// The model's standard LoRA adapters as ONE PEFT adapter (task_type CAUSAL_LM). Throws std::invalid_argument for a
/// model without adapters.
template <class LM>
peft_adapter make_peft_adapter_lm(LM& model, const peft_lm_export_options& options = {}) {
  static_assert(std::is_same_v<typename LM::factorization, standard_lora>,
                "export_peft_lm writes standard LoRA adapters (the continual factorisations export through their ViT path)");
  auto views = model.adapters();
  if (views.empty()) throw_invalid_argument("export_peft_lm", "the model has no LoRA adapters (lora_targets is empty)");
  const auto modules = model.factorized_adapters();
  peft_adapter out;
  std::set<std::string> targets;
  double alpha0 = 0;
  index_t rank0 = 0;
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  for (std::size_t i = 0; i < views.size(); ++i) {
    const auto& cfg = modules[i]->configuration();
    const index_t rank = views[i].a->rows();
    const double alpha = cfg.rank_stabilized && options.portable_rslora ? cfg.alpha * std::sqrt(double(rank)) : cfg.alpha;
    if (i == 0) alpha0 = alpha, rank0 = rank;
    if (rank != rank0) rank_pattern[views[i].name] = rank;
    if (alpha != alpha0) alpha_pattern[views[i].name] = peft_detail::number(alpha);
    const auto a = views[i].a->to_host(), b = views[i].b->to_host();
    out.tensors[peft_detail::lora_key(views[i].name, 'A')] = host_tensor{{rank, views[i].a->cols()}, peft_detail::to_float(a)};
    out.tensors[peft_detail::lora_key(views[i].name, 'B')] = host_tensor{{views[i].b->rows(), rank}, peft_detail::to_float(b)};
    targets.insert(views[i].name.substr(views[i].name.rfind('.') + 1));
  }
  const auto& first = modules.front()->configuration();
  out.config = peft_detail::lora_config_json(
      {.alpha_pattern = alpha_pattern, .rank_pattern = rank_pattern,
       .target_modules = nlohmann::json(std::vector<std::string>(targets.begin(), targets.end())), .task_type = "CAUSAL_LM",
       .base_model_name_or_path = options.base_model_name_or_path, .alpha = alpha0, .dropout = first.dropout, .rank = rank0,
       .rank_stabilized = first.rank_stabilized && !options.portable_rslora,
       .fan_in_fan_out = views.front().name.starts_with("transformer.")});  // GPT-2's Conv1D
  return out;
}

/// make_peft_adapter_lm written into `folder` (adapter_config.json + adapter_model.safetensors, atomically).
template <class LM>
peft_adapter export_peft_lm(LM& model, const std::filesystem::path& folder, const peft_lm_export_options& options = {}) {
  peft_adapter adapter = make_peft_adapter_lm(model, options);
  write_peft_adapter(adapter, folder);
  return adapter;
}

/// The LoRA configuration a model needs to hold `adapter`: its targets (module names), r and lora_alpha (use_rslora
/// kept). Throws std::invalid_argument for rank or alpha patterns (per-module ranks need per-module configs).
inline std::pair<std::vector<std::string>, standard_lora::config> peft_lm_lora_config(const peft_adapter& adapter) {
  const auto& c = adapter.config;
  for (std::string_view name : {"rank_pattern", "alpha_pattern"})
    if (const auto& v = peft_detail::field(c, name); !v.is_null() && !v.empty())
      throw_invalid_argument("peft_lm_lora_config", concat("adapter_config.json's ", name, " is set: build the model's adapters per module"));
  const auto& targets = peft_detail::field(c, "target_modules");
  if (!targets.is_array())
    throw_invalid_argument("peft_lm_lora_config", "adapter_config.json's target_modules is a regular expression: list the module names");
  standard_lora::config lora;
  lora.rank = peft_detail::rank_value("r", peft_detail::field(c, "r"));
  lora.alpha = peft_detail::alpha_value("lora_alpha", peft_detail::field(c, "lora_alpha"));
  lora.rank_stabilized = peft_detail::field(c, "use_rslora").is_boolean() && peft_detail::field(c, "use_rslora").get<bool>();
  return {targets.get<std::vector<std::string>>(), lora};
}

/// Copies a PEFT adapter's factors into a model built with its configuration (peft_lm_lora_config). Throws ONE
/// std::invalid_argument listing every adapted module the adapter lacks, every tensor the model has no place for,
/// and every mis-shaped one; the model is unchanged then.
template <class LM>
void load_peft_adapter_lm(LM& model, const peft_adapter& adapter) {
  using B = typename LM::backend_type;
  auto views = model.adapters();
  const auto modules = model.factorized_adapters();
  const auto [targets, lora] = peft_lm_lora_config(adapter);
  std::vector<std::string> missing, mis_shaped, unexpected, problems;
  std::set<std::string> used;
  std::vector<std::pair<const host_tensor*, tensor<B>*>> copies;
  for (std::size_t i = 0; i < views.size(); ++i) {
    const auto& cfg = modules[i]->configuration();
    if (cfg.rank != lora.rank || cfg.alpha != lora.alpha || cfg.rank_stabilized != lora.rank_stabilized)
      problems.push_back(concat(views[i].name, ": the model's adapter has rank ", cfg.rank, ", alpha ", cfg.alpha,
                                ", the file's r ", lora.rank, ", lora_alpha ", lora.alpha));
    for (char which : {'A', 'B'}) {
      const std::string key = peft_detail::lora_key(views[i].name, which);
      tensor<B>* target = which == 'A' ? views[i].a : views[i].b;
      const auto it = adapter.tensors.find(key);
      if (it == adapter.tensors.end()) {
        missing.push_back(key);
        continue;
      }
      used.insert(key);
      const std::vector<std::int64_t> expected = {target->rows(), target->cols()};
      if (it->second.shape != expected || it->second.values.size() != std::size_t(target->numel()))
        mis_shaped.push_back(concat(key, ": expected ", hf_vit_detail::shape_text(expected), ", found ",
                                    hf_vit_detail::shape_text(it->second.shape)));
      else
        copies.emplace_back(&it->second, target);
    }
  }
  for (const auto& [name, t] : adapter.tensors)
    if (!used.contains(name)) unexpected.push_back(name);
  hf_vit_detail::throw_problems("load_peft_adapter_lm", concat("the PEFT adapter (", adapter.tensors.size(), " tensors) does not fit the model"),
                                {{"missing", &missing}, {"unexpected", &unexpected}, {"mis-shaped", &mis_shaped}, {"configuration", &problems}});
  std::vector<typename B::scalar_type> staging;
  for (const auto& [source, target] : copies) {
    staging.assign(source->values.begin(), source->values.end());
    model.backend().copy_from_host(staging.data(), target->data(), target->numel());
  }
}

}  // namespace treelora

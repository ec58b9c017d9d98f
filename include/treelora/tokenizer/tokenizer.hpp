// treelora/tokenizer/tokenizer.hpp: what a language model needs from a tokenizer (docs/language-models.md).
// byte_level_bpe (GPT-2, Llama-3, SmolLM tokenizer.json files) and sentencepiece_tokenizer (Llama-2 style
// .model files) both satisfy it; a model or data pipeline takes `Tokenizer auto&` and never names either.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace treelora {

/// A text <-> token id mapping. encode adds no BOS/EOS (the caller decides where sequences start and end);
/// bos_id/eos_id/pad_id are -1 when the tokenizer has no such token; vocab_size is the number of rows an
/// embedding table needs (every id encode returns is below it).
template <class T>
concept Tokenizer = requires(const T& tokenizer, std::string_view text, std::span<const std::int32_t> ids) {
  { tokenizer.encode(text) } -> std::same_as<std::vector<std::int32_t>>;
  { tokenizer.decode(ids) } -> std::same_as<std::string>;
  { tokenizer.bos_id() } -> std::same_as<std::int32_t>;
  { tokenizer.eos_id() } -> std::same_as<std::int32_t>;
  { tokenizer.pad_id() } -> std::same_as<std::int32_t>;
  { tokenizer.vocab_size() } -> std::same_as<std::int32_t>;
};

}  // namespace treelora

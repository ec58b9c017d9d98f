// treelora/tokenizer/sentencepiece.hpp: SentencePiece models (Llama-2's tokenizer.model and the like), loaded
// and trained through Google's library (docs/language-models.md, "Tokenizers").
//
//   sentencepiece_training_options options;            // BPE, byte fallback, digits split: Llama-2's layout
//   options.vocab_size = 4000;
//   std::string model = train_sentencepiece(std::vector<std::string>{...}, options);   // the .model file's
//   bytes auto tokenizer = sentencepiece_tokenizer::from_serialized(model);                  // or
//   from_file("x.model") std::vector<std::int32_t> ids = tokenizer.encode("Hello world");                  //
//   no BOS/EOS added
//
// Every sentencepiece::util::Status that is not OK becomes an exception naming the call and the library's
// message.
#pragma once

#ifndef TREELORA_HAS_SENTENCEPIECE
#error \
    "treelora/tokenizer/sentencepiece.hpp needs SentencePiece: configure treelora with TREELORA_SENTENCEPIECE=AUTO or ON and link treelora::treelora (Debian: libsentencepiece-dev), or define TREELORA_HAS_SENTENCEPIECE and link -lsentencepiece -lsentencepiece_train yourself"
#endif

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/tokenizer/tokenizer.hpp"

namespace treelora {

namespace detail::tokenizer {

/// Throws std::runtime_error("treelora::<where>: <what>: <SentencePiece's message>") unless `status` is OK.
inline void check_sentencepiece(const sentencepiece::util::Status& status, std::string_view where,
                                std::string_view what) {
  if (!status.ok()) throw_runtime_error(where, concat(what, ": ", status.ToString()));
}

}  // namespace detail::tokenizer

/// A loaded SentencePiece model; satisfies Tokenizer. encode/decode call the library's const methods, which
/// it documents as safe to call from several threads on one processor.
class sentencepiece_tokenizer {
 public:
  /// Loads a .model file (a serialized ModelProto).
  static sentencepiece_tokenizer from_file(const std::filesystem::path& path) {
    sentencepiece_tokenizer tokenizer;
    detail::tokenizer::check_sentencepiece(tokenizer.processor_->Load(path.string()),
                                           "sentencepiece_tokenizer", concat("cannot load ", path.string()));
    return tokenizer;
  }
  /// Loads a model from the bytes of a .model file (what train_sentencepiece returns).
  static sentencepiece_tokenizer from_serialized(std::string_view bytes) {
    sentencepiece_tokenizer tokenizer;
    detail::tokenizer::check_sentencepiece(tokenizer.processor_->LoadFromSerializedProto(bytes),
                                           "sentencepiece_tokenizer",
                                           concat("cannot load a model from ", bytes.size(), " bytes"));
    return tokenizer;
  }

  /// The ids of `text`, without BOS/EOS (the model's normalizer applies first, e.g. the dummy prefix space).
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<int> ids;
    detail::tokenizer::check_sentencepiece(processor_->Encode(text, &ids), "sentencepiece_tokenizer::encode",
                                           concat("a text of ", text.size(), " bytes"));
    return {ids.begin(), ids.end()};
  }
  /// The pieces of `text` (e.g. "▁Hello", "<0x0A>").
  std::vector<std::string> encode_pieces(std::string_view text) const {
    std::vector<std::string> pieces;
    detail::tokenizer::check_sentencepiece(processor_->Encode(text, &pieces),
                                           "sentencepiece_tokenizer::encode_pieces",
                                           concat("a text of ", text.size(), " bytes"));
    return pieces;
  }
  /// The text of `ids`. Throws std::invalid_argument for an id outside the vocabulary (the library would
  /// reject it too, with a less specific message).
  std::string decode(std::span<const std::int32_t> ids) const {
    for (const std::int32_t id : ids)
      if (id < 0 || id >= vocab_size())
        throw_invalid_argument("sentencepiece_tokenizer::decode",
                               concat("id ", id, " is outside the vocabulary (size ", vocab_size(), ")"));
    std::string text;
    detail::tokenizer::check_sentencepiece(
        processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text),
        "sentencepiece_tokenizer::decode", concat(ids.size(), " ids"));
    return text;
  }

  std::int32_t bos_id() const { return processor_->bos_id(); }  // -1 where the model has none
  std::int32_t eos_id() const { return processor_->eos_id(); }
  std::int32_t pad_id() const { return processor_->pad_id(); }
  std::int32_t unk_id() const { return processor_->unk_id(); }
  std::int32_t vocab_size() const { return processor_->GetPieceSize(); }

  /// The id of a piece ("▁the", "<0x41>"); the unknown id when the model lacks it.
  std::int32_t piece_to_id(std::string_view piece) const { return processor_->PieceToId(piece); }
  /// The piece of an id; throws std::invalid_argument outside the vocabulary.
  const std::string& id_to_piece(std::int32_t id) const {
    if (id < 0 || id >= vocab_size())
      throw_invalid_argument("sentencepiece_tokenizer::id_to_piece",
                             concat("id ", id, " is outside the vocabulary (size ", vocab_size(), ")"));
    return processor_->IdToPiece(id);
  }
  bool is_byte(std::int32_t id) const { return processor_->IsByte(id); }
  bool is_control(std::int32_t id) const { return processor_->IsControl(id); }

  /// The library's processor, for what this class does not wrap (sampling, n-best).
  const sentencepiece::SentencePieceProcessor& processor() const { return *processor_; }

 private:
  sentencepiece_tokenizer() : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;  // the library's class is not movable
};

static_assert(Tokenizer<sentencepiece_tokenizer>);

/// The trainer's settings that matter for a language model's tokenizer. The defaults give Llama-2's layout:
/// <unk> 0, <s> 1, </s> 2, then the 256 byte pieces <0x00>..<0xFF> (3..258), then the learned pieces; digits
/// are single pieces, no character is mapped to <unk> (byte fallback covers the rest), no Unicode
/// normalization.
struct sentencepiece_training_options {
  std::string model_type = "bpe";  // "bpe", "unigram", "char" or "word"
  int vocab_size = 8000;
  bool byte_fallback = true;
  bool split_digits = true;
  double character_coverage = 1.0;
  std::string normalization_rule_name = "identity";  // "nmt_nfkc" is the library's default
  bool add_dummy_prefix = true;                      // "▁" before the first word, as Llama-2
  bool remove_extra_whitespaces = false;
  int max_sentence_length = 1 << 16;  // bytes; longer sentences are skipped by the trainer
  int num_threads = 1;
  /// The trainer samples sentences with this seed (it is process-wide in the library).
  unsigned seed = 0;
  /// Any other trainer flag, by its spm_train name without dashes ("user_defined_symbols": "<tab>,<br>").
  std::unordered_map<std::string, std::string> extra = {};
};

namespace detail::tokenizer {

inline std::unordered_map<std::string, std::string> trainer_arguments(
    const sentencepiece_training_options& o) {
  const auto flag = [](bool value) { return std::string(value ? "true" : "false"); };
  std::unordered_map<std::string, std::string> args{
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", flag(o.byte_fallback)},
      {"split_digits", flag(o.split_digits)},
      {"character_coverage", concat(o.character_coverage)},
      {"normalization_rule_name", o.normalization_rule_name},
      {"add_dummy_prefix", flag(o.add_dummy_prefix)},
      {"remove_extra_whitespaces", flag(o.remove_extra_whitespaces)},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"num_threads", std::to_string(o.num_threads)},
      {"minloglevel", "1"},  // the trainer's progress lines on stderr: warnings and errors only
  };
  for (const auto& [key, value] : o.extra) args[key] = value;
  return args;
}

/// Feeds the trainer from memory (SentencePieceTrainer::Train's sentence iterator), without a temporary file.
class vector_sentence_iterator final : public sentencepiece::SentenceIterator {
 public:
  explicit vector_sentence_iterator(const std::vector<std::string>& sentences) : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& sentences_;
  std::size_t index_ = 0;
};

inline std::string train_sentencepiece(std::unordered_map<std::string, std::string> args,
                                       sentencepiece::SentenceIterator* sentences, const std::string& source,
                                       unsigned seed) {
  sentencepiece::SetRandomGeneratorSeed(seed);
  std::string model;
  check_sentencepiece(sentencepiece::SentencePieceTrainer::Train(args, sentences, &model),
                      "train_sentencepiece", concat("training on ", source));
  if (model.empty())
    throw_runtime_error("train_sentencepiece", concat("training on ", source, " made no model"));
  return model;
}

}  // namespace detail::tokenizer

/// Trains a model on `sentences` (one string each; training reads them in order) and returns the .model
/// file's bytes (write them to a file, or pass them to sentencepiece_tokenizer::from_serialized). Throws
/// std::runtime_error with SentencePiece's message when training fails (e.g. a vocabulary larger than the
/// text allows), std::invalid_argument for no sentences.
inline std::string train_sentencepiece(const std::vector<std::string>& sentences,
                                       const sentencepiece_training_options& options = {}) {
  if (sentences.empty()) throw_invalid_argument("train_sentencepiece", "no sentences to train on");
  detail::tokenizer::vector_sentence_iterator iterator(sentences);
  return detail::tokenizer::train_sentencepiece(detail::tokenizer::trainer_arguments(options), &iterator,
                                                concat(sentences.size(), " sentences"), options.seed);
}

/// Trains a model on a text file, one sentence per line, and returns the .model file's bytes.
inline std::string train_sentencepiece(const std::filesystem::path& input,
                                       const sentencepiece_training_options& options = {}) {
  if (!std::filesystem::is_regular_file(input))
    throw_runtime_error("train_sentencepiece", concat("cannot read ", input.string(), ": not a file"));
  auto args = detail::tokenizer::trainer_arguments(options);
  args["input"] = input.string();
  return detail::tokenizer::train_sentencepiece(std::move(args), nullptr, input.string(), options.seed);
}

}  // namespace treelora

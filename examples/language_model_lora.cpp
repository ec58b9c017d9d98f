// examples/language_model_lora.cpp: LoRA on a decoder-only language model: load it, fine-tune the adapters on a few
// prompts, generate, and export the adapters for PEFT (docs/language-models.md).
//   language_model_lora [out]                                  a tiny Llama and a SentencePiece tokenizer made here
//   language_model_lora out <Llama folder> <tokenizer.json>    a Hugging Face model (config.json + safetensors)
// Then, in Python: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), out + "/adapter").
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>
#include "treelora/models/hf_causal_lm.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/tokenizer/byte_level_bpe.hpp"
#include "treelora/tokenizer/sentencepiece.hpp"

using namespace treelora;
using B = cpu_backend<float>;
const std::vector<std::pair<std::string, std::string>> examples = {
    {"The capital of France is", " Paris."}, {"The capital of Italy is", " Rome."},
    {"Two plus two is", " four."},           {"The opposite of hot is", " cold."}};

template <Tokenizer T>
int fine_tune(llama<B>& model, const T& tokenizer, const std::filesystem::path& out) {
  const auto ids = [&](const std::string& text) {
    const auto v = tokenizer.encode(text);
    return std::vector<index_t>(v.begin(), v.end());
  };
  // One left-padded batch: BOS + prompt + answer + EOS; the loss counts the answer and EOS only.
  const index_t bos = model.config().bos_token_id, eos = model.eos_token_ids().front(), pad = model.pad_token_id();
  std::vector<std::vector<index_t>> sequences, prompts;
  std::vector<std::vector<unsigned char>> answers;
  index_t tokens = 0;
  for (const auto& [prompt, answer] : examples) {
    prompts.push_back({bos}), answers.emplace_back();
    for (index_t id : ids(prompt)) prompts.back().push_back(id);
    std::vector<index_t> s = prompts.back(), a = ids(answer);
    s.insert(s.end(), a.begin(), a.end()), s.push_back(eos);
    answers.back().assign(s.size(), 0);
    std::fill(answers.back().end() - std::ptrdiff_t(a.size() + 1), answers.back().end(), 1);
    sequences.push_back(s), tokens = std::max<index_t>(tokens, index_t(s.size()));
  }
  std::vector<index_t> batch;
  std::vector<unsigned char> counted;
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    const std::size_t padding = std::size_t(tokens) - sequences[i].size();
    batch.insert(batch.end(), padding, pad), counted.insert(counted.end(), padding, 0);
    batch.insert(batch.end(), sequences[i].begin(), sequences[i].end());
    counted.insert(counted.end(), answers[i].begin(), answers[i].end());
  }
  const index_t rows = index_t(sequences.size());
  const auto layout = left_padded_layout(batch, rows, tokens, pad);
  const auto labels = next_token_labels(batch, counted, tokens);
  auto params = parameters(model);
  parameter_list<B> adapters;
  for (auto& p : params)
    if (p.trainable) adapters.push_back(p);
  adam<B> optimiser(adapters, {.learning_rate = 1e-2});
  tensor<B> gradient;
  for (int step = 0; step <= 60; ++step) {
    zero_gradients(adapters);
    const auto logits = model.forward_tokens(batch, layout);
    gradient.resize(model.backend(), logits.shape());
    const double loss = token_cross_entropy_loss<B>(logits, labels, gradient);
    if (step % 20 == 0) std::printf("step %2d  loss %.4f\n", step, loss);
    model.backward(gradient);
    optimiser.step();
  }
  const auto generated = generate_greedy(model, prompts, {.max_new_tokens = 8});
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<std::int32_t> answer(generated.tokens[i].begin(), generated.tokens[i].end());
    std::printf("%s ->%s\n", examples[i].first.c_str(), tokenizer.decode(answer).c_str());
  }
  export_peft_lm(model, out / "adapter");
  std::printf("PEFT adapter written to %s\n", (out / "adapter").string().c_str());
  return 0;
}

int main(int argc, char** argv) try {
  const std::filesystem::path out = argc > 1 ? argv[1] : "language_model_lora_out";
  B backend;
  llama_config config = llama_config::tiny();  // LoRA r 8, alpha 32 (here on every projection)
  config.lora_targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  if (argc > 3) {
    auto tokenizer = byte_level_bpe::from_file(argv[3]);
    config.pad_token_id = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
    auto model = load_hf_llama_folder<B>(backend, argv[2], config);
    return fine_tune(model, tokenizer, out);
  }
  std::vector<std::string> text;
  for (const auto& [prompt, answer] : examples) text.push_back(prompt + answer);
  const auto tokenizer = sentencepiece_tokenizer::from_serialized(train_sentencepiece(text, {.vocab_size = 300}));
  config.vocab_size = tokenizer.vocab_size(), config.num_hidden_layers = 2, config.initializer_range = 0.1;
  config.bos_token_id = tokenizer.bos_id(), config.eos_token_ids = {tokenizer.eos_id()}, config.pad_token_id = 0;
  llama<B> model(backend, config);
  return fine_tune(model, tokenizer, out);
} catch (const std::exception& e) {
  std::fprintf(stderr, "language_model_lora: %s\n", e.what());
  return 1;
}

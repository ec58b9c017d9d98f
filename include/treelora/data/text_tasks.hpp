// treelora/data/text_tasks.hpp: a TRACE-like stream of eight {prompt, answer} text tasks built from the text
// of Debian packages (no download), and a reader for TRACE's own task folders. docs/text-benchmark.md has the
// table.
//
// Each builder reads its files under options.root (default "/": a test points it at a folder holding the same
// relative paths), turns every record into a text_example with a stable key, and split_text_task sends each
// record to test or train by a hash of its key alone: the same files give the same split in the same order,
// whatever order the files or their lines are read in. Prompts end with a newline; answers have no
// surrounding whitespace. A missing file throws std::runtime_error naming the Debian package to install; a
// malformed one names the file, the line (or entry) and what was wrong. Needs zlib (dictzip and man pages are
// gzip).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/core/error.hpp"
#include "treelora/core/hash.hpp"
#include "treelora/core/utf8.hpp"
#include "treelora/data/idx.hpp"
#include "treelora/io/json.hpp"

namespace treelora {

/// One example: the model reads `prompt` and should generate `answer`; `key` names the record in its source
/// (a synset offset, a file and line) and alone decides the example's side of the split.
struct text_example {
  std::string prompt, answer, key;
};

/// One task of the stream: its examples and the metric that scores it (one of text_metric_names).
struct text_task {
  std::string name, metric;
  std::vector<text_example> train, test;
};

/// The metrics a text_task may name (metrics/text_metrics.hpp computes them).
inline constexpr std::array<std::string_view, 4> text_metric_names = {"accuracy", "edit_similarity",
                                                                      "exact_match", "rouge_l"};

struct text_task_options {
  std::filesystem::path root = "/";  ///< the Debian files are read under root / "usr/share/..."
  std::size_t train_size = 500;      ///< examples per task in train (fewer when the source has fewer)
  std::size_t test_size = 200;       ///< examples per task in test
  std::size_t max_text_bytes =
      768;  ///< a prompt's variable text (gloss, code, definition) is cut to this many bytes
  std::size_t max_answer_bytes =
      256;  ///< longer answers are dropped, not cut: a cut answer would be a wrong target
};

/// Splits `records` into a task. Order: by mix64(fnv1a64(key)) (FNV-1a alone moves only the low ~48 bits for
/// keys that differ in their last byte, such as "file:20" and "file:40"; the SplitMix64 finaliser spreads
/// them), then by key; of records sharing a key only the first in that order (ties broken by prompt, then
/// answer) is kept. The first test_size records are the test set, the next train_size the training set. When
/// fewer than train_size + test_size records exist, test gets floor(n * test_size / (train_size + test_size))
/// and train the rest.
inline text_task split_text_task(std::string name, std::string metric, std::vector<text_example> records,
                                 const text_task_options& options) {
  constexpr std::string_view where = "split_text_task";
  if (std::find(text_metric_names.begin(), text_metric_names.end(), metric) == text_metric_names.end())
    throw_invalid_argument(where, concat("task '", name, "': unknown metric '", metric,
                                         "' (accuracy, edit_similarity, exact_match or rouge_l)"));
  if (records.empty()) throw_runtime_error(where, concat("task '", name, "' has no examples"));
  std::vector<std::pair<std::uint64_t, text_example>> ranked;
  ranked.reserve(records.size());
  for (auto& record : records)
    ranked.emplace_back(random::mix64(fnv1a64(record.key.data(), record.key.size())), std::move(record));
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return std::tie(a.first, a.second.key, a.second.prompt, a.second.answer) <
           std::tie(b.first, b.second.key, b.second.prompt, b.second.answer);
  });
  ranked.erase(std::unique(ranked.begin(), ranked.end(),
                           [](const auto& a, const auto& b) { return a.second.key == b.second.key; }),
               ranked.end());
  const std::size_t n = ranked.size(), wanted = options.train_size + options.test_size;
  const std::size_t test_count =
      n >= wanted ? options.test_size : (wanted == 0 ? 0 : n * options.test_size / wanted);
  const std::size_t train_count = std::min(options.train_size, n - test_count);
  text_task task{std::move(name), std::move(metric), {}, {}};
  for (std::size_t i = 0; i < test_count + train_count; ++i)
    (i < test_count ? task.test : task.train).push_back(std::move(ranked[i].second));
  return task;
}

namespace detail::text {

/// Throws when `path` is missing, naming the Debian package that installs it.
inline void require_path(const std::filesystem::path& path, std::string_view where,
                         std::string_view package) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw_runtime_error(where, concat(path.string(), " not found: install the Debian package ", package,
                                      " (apt-get install ", package, ")"));
}

inline std::string read_file(const std::filesystem::path& path, std::string_view where,
                             std::string_view package) {
  require_path(path, where, package);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_runtime_error(where, concat("cannot open ", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw_runtime_error(where, concat("cannot read ", path.string()));
  return std::move(text).str();
}

/// The whole decompressed content of a gzip file (dictzip is gzip with an index in an extra field, which
/// gzread skips); a corrupt or truncated stream throws naming the file.
inline std::string read_gzip_file(const std::filesystem::path& path, std::string_view where,
                                  std::string_view package) {
  require_path(path, where, package);
  detail::gz_file file(path, "rb");
  if (!file) throw_runtime_error(where, concat("cannot open ", path.string()));
  std::string out;
  std::array<char, 1 << 16> chunk;
  while (const std::size_t got = file.read(chunk.data(), chunk.size(), where)) out.append(chunk.data(), got);
  return out;
}

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

/// Runs of whitespace become one space; the ends are trimmed.
inline std::string collapse_whitespace(std::string_view s) {
  std::string out;
  for (char c : trim(s)) {
    if (!is_space(c))
      out += c;
    else if (out.back() != ' ')
      out += ' ';
  }
  return out;
}

/// The lines of `text` without their "\n" (and a "\r" before it).
inline std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.push_back(line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return out;
}

inline std::string clip(std::string_view text, std::size_t max_bytes) {
  return std::string(utf8::prefix(text, max_bytes));
}

/// Adds an example unless its answer is empty or over the budget, or either side is not valid UTF-8.
inline void add_example(std::vector<text_example>& out, std::string prompt, std::string answer,
                        std::string key, const text_task_options& options) {
  if (answer.empty() || answer.size() > options.max_answer_bytes) return;
  if (!utf8::valid(prompt) || !utf8::valid(answer)) return;
  out.push_back({std::move(prompt), std::move(answer), std::move(key)});
}

/// "line N: what" for a file's errors.
[[noreturn]] inline void malformed(std::string_view where, const std::filesystem::path& path,
                                   std::size_t line, const std::string& what) {
  throw_runtime_error(where, concat(path.string(), " line ", line, ": ", what));
}

inline bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace detail::text

// ----------------------------------------------------------------------------------------------------
// wn-sense
/// wn-sense (wordnet-base, /usr/share/wordnet/data.noun): "<lemma>: <gloss>\nSupersense:\n" -> one of 8
/// supersense words, the synset's lexicographer file (05 animal, 06 artifact, 08 body, 13 food, 15 location,
/// 18 person, 20 plant, 27 substance; synsets of other files are left out). Metric: accuracy. Key: the synset
/// offset. A data line is "offset lex_filenum ss_type w_cnt(hex) word lex_id ... | gloss"; license lines
/// start with spaces.
inline text_task wordnet_sense_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "wordnet_sense_task";
  static const std::map<int, std::string> supersense = {{5, "animal"}, {6, "artifact"},  {8, "body"},
                                                        {13, "food"},  {15, "location"}, {18, "person"},
                                                        {20, "plant"}, {27, "substance"}};
  const auto path = options.root / "usr/share/wordnet/data.noun";
  const std::string text = detail::text::read_file(path, where, "wordnet-base");
  std::vector<text_example> records;
  std::size_t number = 0;
  for (std::string_view line : detail::text::lines(text)) {
    ++number;
    if (line.empty() || line.front() == ' ') continue;  // the license header
    const std::size_t bar = line.find(" | ");
    if (bar == std::string_view::npos)
      detail::text::malformed(where, path, number, "no \" | \" before the gloss");
    std::vector<std::string_view> fields;
    for (std::string_view rest = line.substr(0, bar); !rest.empty();) {
      const std::size_t space = rest.find(' ');
      if (space != 0) fields.push_back(rest.substr(0, space));
      if (space == std::string_view::npos) break;
      rest.remove_prefix(space + 1);
    }
    if (fields.size() < 6)
      detail::text::malformed(where, path, number, concat("only ", fields.size(), " fields"));
    if (fields[0].size() != 8 || !detail::text::all_digits(fields[0]))
      detail::text::malformed(where, path, number, concat("synset offset '", fields[0], "' is not 8 digits"));
    if (fields[1].size() != 2 || !detail::text::all_digits(fields[1]))
      detail::text::malformed(where, path, number,
                              concat("lexicographer file '", fields[1], "' is not 2 digits"));
    if (fields[2] != "n")
      detail::text::malformed(where, path, number, concat("synset type '", fields[2], "', not n"));
    const auto lexicographer_file = std::stoi(std::string(fields[1]));
    const auto label = supersense.find(lexicographer_file);
    if (label == supersense.end()) continue;
    std::string lemma(fields[4]);
    std::replace(lemma.begin(), lemma.end(), '_', ' ');
    const std::string gloss = detail::text::collapse_whitespace(line.substr(bar + 3));
    detail::text::add_example(
        records, lemma + ": " + detail::text::clip(gloss, options.max_text_bytes) + "\nSupersense:\n",
        label->second, std::string(fields[0]), options);
  }
  return split_text_task("wn-sense", "accuracy", std::move(records), options);
}

// -------------------------------------------------------------------------------------------------
// py-nextline
/// The Python standard library folder under root: usr/lib/python3.N holding os.py, the highest N when
/// several.
inline std::filesystem::path python_stdlib_folder(const std::filesystem::path& root = "/") {
  std::optional<std::pair<int, std::filesystem::path>> best;
  std::error_code ec;
  const auto lib = root / "usr/lib";
  if (std::filesystem::is_directory(lib, ec))
    for (const auto& entry : std::filesystem::directory_iterator(lib, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("python3.", 0) != 0 || !detail::text::all_digits(std::string_view(name).substr(8)))
        continue;
      if (!std::filesystem::exists(entry.path() / "os.py", ec)) continue;
      const int minor = std::stoi(name.substr(8));
      if (!best || minor > best->first) best.emplace(minor, entry.path());
    }
  if (!best)
    throw_runtime_error("python_stdlib_folder",
                        concat("no python3.N folder with os.py in ", lib.string(),
                               ": install the Debian package libpython3-stdlib (libpython3.N-stdlib)"));
  return best->second;
}

/// py-nextline (libpython3.N-stdlib, /usr/lib/python3.N/**/*.py): each file is cut into windows of 20 lines;
/// the prompt is a window (each line with its "\n", cut from the front to max_text_bytes), the answer the
/// next non-blank line after it, indentation kept. Metric: edit similarity. Key: "<path in the folder>:<first
/// line after the window>". site-packages, dist-packages and __pycache__ are skipped, and so are files that
/// are not UTF-8.
inline text_task python_next_line_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "python_next_line_task";
  constexpr std::size_t window = 20;
  const auto folder = python_stdlib_folder(options.root);
  std::vector<text_example> records;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(folder, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw_runtime_error(where, concat("cannot list ", folder.string(), ": ", ec.message()));
    const std::string name = it->path().filename().string();
    if (it->is_directory(ec) &&
        (name == "site-packages" || name == "dist-packages" || name == "__pycache__")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || it->path().extension() != ".py") continue;
    const std::string text = detail::text::read_file(it->path(), where, "libpython3-stdlib");
    if (!utf8::valid(text)) continue;
    const auto file_lines = detail::text::lines(text);
    const std::string relative = it->path().lexically_relative(folder).generic_string();
    for (std::size_t start = window; start < file_lines.size(); start += window) {
      std::size_t next = start;
      while (next < file_lines.size() && detail::text::trim(file_lines[next]).empty()) ++next;
      if (next == file_lines.size()) break;
      std::string prompt;
      for (std::size_t i = start - window; i < start; ++i) (prompt += file_lines[i]) += '\n';
      if (detail::text::trim(prompt).empty()) continue;
      std::string_view answer = file_lines[next];
      while (!answer.empty() && detail::text::is_space(answer.back())) answer.remove_suffix(1);
      detail::text::add_example(records, std::string(utf8::suffix(prompt, options.max_text_bytes)),
                                std::string(answer), concat(relative, ":", start), options);
    }
  }
  return split_text_task("py-nextline", "edit_similarity", std::move(records), options);
}

// ------------------------------------------------------------------------------------------------------
// de-en
namespace detail::text {
/// The first alternative of a trans-de-en side: before the first " | " (inflected forms follow) and the first
/// ";" (synonyms follow), without {gender}, [domain] and (comment) annotations.
inline std::string first_dictionary_term(std::string_view side) {
  side = side.substr(0, side.find('|'));
  side = side.substr(0, side.find(';'));
  std::string out;
  int depth = 0;
  for (char c : side) {
    if (c == '{' || c == '[' || c == '(')
      ++depth;
    else if (c == '}' || c == ']' || c == ')')
      depth = std::max(0, depth - 1);
    else if (depth == 0)
      out += c;
  }
  return collapse_whitespace(out);
}
}  // namespace detail::text

/// de-en (trans-de-en, /usr/share/trans/de-en, lines "German :: English", "#" comments): "German: <term>\n
/// English:\n" -> the first English alternative. Metric: exact match. Key: the German term.
inline text_task german_english_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "german_english_task";
  const auto path = options.root / "usr/share/trans/de-en";
  const std::string text = detail::text::read_file(path, where, "trans-de-en");
  std::vector<text_example> records;
  std::size_t number = 0;
  for (std::string_view line : detail::text::lines(text)) {
    ++number;
    if (detail::text::trim(line).empty() || line.front() == '#') continue;
    const std::size_t separator = line.find(" :: ");
    if (separator == std::string_view::npos)
      detail::text::malformed(where, path, number, "no \" :: \" between the German and the English side");
    const std::string german = detail::text::first_dictionary_term(line.substr(0, separator));
    const std::string english = detail::text::first_dictionary_term(line.substr(separator + 4));
    if (german.empty()) continue;
    detail::text::add_example(
        records, "German: " + detail::text::clip(german, options.max_text_bytes) + "\nEnglish:\n", english,
        german, options);
  }
  return split_text_task("de-en", "exact_match", std::move(records), options);
}

// -----------------------------------------------------------------------------------------------
// foldoc-topic
/// The eight most frequent first categories of FOLDOC entries (dict-foldoc 20230119), the labels of
/// foldoc-topic.
inline constexpr std::array<std::string_view, 8> foldoc_topics = {
    "language",         "networking", "programming",    "jargon",
    "operating system", "hardware",   "communications", "company"};

namespace detail::text {
/// A dictd index number: base 64 with the alphabet A-Z a-z 0-9 + /, most significant digit first.
inline std::optional<std::uint64_t> dictd_number(std::string_view digits) {
  if (digits.empty() || digits.size() > 10) return std::nullopt;  // 10 digits = 60 bits
  std::uint64_t value = 0;
  for (char c : digits) {
    int digit = -1;
    if (c >= 'A' && c <= 'Z')
      digit = c - 'A';
    else if (c >= 'a' && c <= 'z')
      digit = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      digit = c - '0' + 52;
    else if (c == '+')
      digit = 62;
    else if (c == '/')
      digit = 63;
    if (digit < 0) return std::nullopt;
    value = value * 64 + static_cast<std::uint64_t>(digit);
  }
  return value;
}
}  // namespace detail::text

/// foldoc-topic (dict-foldoc, /usr/share/dictd/foldoc.{index,dict.dz}): "<headword>: <definition>\nTopic:\n"
/// -> the entry's first category when it is one of foldoc_topics. An index line is "headword\toffset\tlength"
/// (dictd base 64) into the decompressed dictionary; an entry is its headword line(s), a blank line, then the
/// body, which starts with "<category, category>". Cross-reference braces {like this} are dropped. Metric:
/// accuracy. Key: the entry's first line.
inline text_task foldoc_topic_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "foldoc_topic_task";
  const auto index_path = options.root / "usr/share/dictd/foldoc.index";
  const auto dict_path = options.root / "usr/share/dictd/foldoc.dict.dz";
  const std::string index = detail::text::read_file(index_path, where, "dict-foldoc");
  const std::string dictionary = detail::text::read_gzip_file(dict_path, where, "dict-foldoc");
  std::vector<text_example> records;
  std::size_t number = 0;
  for (std::string_view line : detail::text::lines(index)) {
    ++number;
    if (line.empty()) continue;
    const std::size_t tab1 = line.find('\t'),
                      tab2 = line.find('\t', tab1 == line.npos ? line.npos : tab1 + 1);
    if (tab2 == std::string_view::npos)
      detail::text::malformed(where, index_path, number, "not \"headword<TAB>offset<TAB>length\"");
    const auto offset = detail::text::dictd_number(line.substr(tab1 + 1, tab2 - tab1 - 1));
    const auto length = detail::text::dictd_number(line.substr(tab2 + 1));
    if (!offset || !length)
      detail::text::malformed(where, index_path, number, "offset or length is not dictd base 64");
    if (*offset > dictionary.size() || *length > dictionary.size() - *offset)
      detail::text::malformed(where, index_path, number,
                              concat("entry [", *offset, ", ", *offset + *length, ") lies outside ",
                                     dict_path.string(), " (", dictionary.size(), " bytes decompressed)"));
    const std::string_view entry = std::string_view(dictionary).substr(*offset, *length);
    const std::size_t blank = entry.find("\n\n");
    if (blank == std::string_view::npos) continue;  // the dictd header entries (00-database-...) have no body
    const std::string_view body = detail::text::trim(entry.substr(blank + 2));
    if (body.empty() || body.front() != '<') continue;
    const std::size_t close = body.find('>');
    if (close == std::string_view::npos) continue;
    const std::string_view categories = body.substr(1, close - 1);
    const std::string topic = detail::text::collapse_whitespace(categories.substr(0, categories.find(',')));
    if (std::find(foldoc_topics.begin(), foldoc_topics.end(), topic) == foldoc_topics.end()) continue;
    std::string definition;
    for (char c : body.substr(close + 1))
      if (c != '{' && c != '}') definition += c;
    const std::string headword(detail::text::trim(entry.substr(0, entry.find('\n'))));
    detail::text::add_example(
        records,
        headword + ": " +
            detail::text::clip(detail::text::collapse_whitespace(definition), options.max_text_bytes) +
            "\nTopic:\n",
        topic, headword, options);
  }
  return split_text_task("foldoc-topic", "accuracy", std::move(records), options);
}

// -----------------------------------------------------------------------------------------------
// fortune-lang
/// fortune-lang (fortunes-min and fortunes: /usr/share/games/fortunes/*, English; fortunes-de, -es, -it, -ru:
/// the de/, es/, it/, ru/ folders): "<text>\nLanguage:\n" -> English, German, Spanish, Italian or Russian. A
/// fortune file holds records separated by lines "%"; the .dat indexes, the symbolic links (fortunes-it links
/// its files into the English folder, .u8 names) and the off/ folders (offensive fortunes) are not read.
/// Whitespace is collapsed; records with control characters (overstriking, escape sequences) are left out.
/// Metric: accuracy. Key: the collapsed text.
inline text_task fortune_language_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "fortune_language_task";
  struct language {
    std::string_view folder, name, package, probe;  // probe: a path the package installs
  };
  static constexpr std::array<language, 5> languages = {{{"", "English", "fortunes-min", "fortunes"},
                                                         {"de", "German", "fortunes-de", "de"},
                                                         {"es", "Spanish", "fortunes-es", "es"},
                                                         {"it", "Italian", "fortunes-it", "it"},
                                                         {"ru", "Russian", "fortunes-ru", "ru"}}};
  const auto base = options.root / "usr/share/games/fortunes";
  std::vector<text_example> records;
  for (const auto& lang : languages) {
    detail::text::require_path(base / lang.probe, where, lang.package);
    const auto folder = base / lang.folder;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
      const auto& path = entry.path();
      if (entry.is_symlink(ec) || !entry.is_regular_file(ec) || path.extension() == ".dat" ||
          path.extension() == ".u8")
        continue;
      const std::string text = detail::text::read_file(path, where, lang.package);
      std::string record;
      const auto flush = [&] {
        const bool control = std::any_of(record.begin(), record.end(), [](char c) {
          return (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') || c == 0x7f;
        });
        std::string collapsed = detail::text::collapse_whitespace(record);
        record.clear();
        if (control || collapsed.empty()) return;
        detail::text::add_example(records,
                                  detail::text::clip(collapsed, options.max_text_bytes) + "\nLanguage:\n",
                                  std::string(lang.name), collapsed, options);
      };
      for (std::string_view line : detail::text::lines(text)) {
        if (line == "%")
          flush();
        else
          (record += line) += '\n';
      }
      flush();
    }
    if (ec) throw_runtime_error(where, concat("cannot list ", folder.string(), ": ", ec.message()));
  }
  return split_text_task("fortune-lang", "accuracy", std::move(records), options);
}

// ----------------------------------------------------------------------------------------------------
// ui-l10n
/// One message of a GNU MO catalogue: msgid (with "context\x04" before it when it has one) and its
/// translation; of plural forms only the first (singular) of each side.
struct mo_message {
  std::string original, translation;
};

/// Reads a GNU MO file: magic 0x950412de in the file's byte order (either), revision (major 0 or 1), count N,
/// offsets of the original and translation tables; each table holds N (length, offset) pairs locating
/// NUL-terminated strings. Every offset and length is checked against the file size.
inline std::vector<mo_message> read_gnu_mo(const std::filesystem::path& path,
                                           std::string_view package = "gettext") {
  constexpr std::string_view where = "read_gnu_mo";
  const std::string bytes = detail::text::read_file(path, where, package);
  const auto fail = [&](const std::string& what) {
    throw_runtime_error(where, concat(path.string(), ": ", what));
  };
  if (bytes.size() < 28) fail(concat("only ", bytes.size(), " bytes, fewer than the 28-byte header"));
  const auto u32 = [&](std::uint64_t at, bool big_endian) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const std::uint32_t b = static_cast<unsigned char>(bytes[at + (big_endian ? i : 3 - i)]);
      v = (v << 8) | b;
    }
    return v;
  };
  bool big_endian = false;
  if (u32(0, false) != 0x950412deu) {
    if (u32(0, true) != 0x950412deu) fail("bad magic number: not a GNU MO file");
    big_endian = true;
  }
  const auto word = [&](std::uint64_t at) { return u32(at, big_endian); };
  if (const std::uint32_t major = word(4) >> 16; major > 1)
    fail(concat("unsupported revision major ", major));
  const std::uint64_t count = word(8), originals = word(12), translations = word(16);
  const auto string_at = [&](std::uint64_t table, std::uint64_t i, std::string_view which) {
    const std::uint64_t at = table + 8 * i;
    if (at + 8 > bytes.size()) fail(concat(which, " table entry ", i, " lies outside the file"));
    const std::uint64_t length = word(at), offset = word(at + 4);
    if (offset + length + 1 > bytes.size() || bytes[offset + length] != '\0')
      fail(concat(which, " string ", i, " [", offset, ", ", offset + length,
                  "] lies outside the file or lacks its NUL"));
    const std::string_view text = std::string_view(bytes).substr(offset, length);
    return std::string(text.substr(0, text.find('\0')));  // the first plural form
  };
  if (count > bytes.size() / 8)
    fail(concat("message count ", count, " cannot fit in ", bytes.size(), " bytes"));
  std::vector<mo_message> out;
  out.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i)
    out.push_back({string_at(originals, i, "original"), string_at(translations, i, "translation")});
  return out;
}

/// ui-l10n (coreutils, /usr/share/locale/fr/LC_MESSAGES/coreutils.mo): "English: <message>\nFrench:\n" -> the
/// French translation, both trimmed of surrounding whitespace. Left out: the header (empty msgid),
/// untranslated messages and messages over the byte budgets (a cut message would not match its translation).
/// Context prefixes are not shown. Metric: ROUGE-L. Key: the msgid with its context.
inline text_task ui_translation_task(const text_task_options& options = {}) {
  const auto path = options.root / "usr/share/locale/fr/LC_MESSAGES/coreutils.mo";
  std::vector<text_example> records;
  for (auto& message : read_gnu_mo(path, "coreutils")) {
    const std::string_view english =
        detail::text::trim(std::string_view(message.original).substr(message.original.find('\x04') + 1));
    const std::string_view french = detail::text::trim(message.translation);
    if (english.empty() || english.size() > options.max_text_bytes) continue;
    detail::text::add_example(records, "English: " + std::string(english) + "\nFrench:\n",
                              std::string(french), message.original, options);
  }
  return split_text_task("ui-l10n", "rouge_l", std::move(records), options);
}

// ------------------------------------------------------------------------------------------------
// man-section
namespace detail::text {
/// The text of a man page's NAME section ("open, openat, creat - open and possibly create a file"), empty
/// when it has none. Understands man(7) (.SH NAME, then text and font macros) and mdoc(7) (.Sh NAME, .Nm,
/// .Nd); drops comments and other requests, font escapes (\fB, \f[I]) and \&, and writes \- and \(em as "-".
inline std::string man_name_section(std::string_view page) {
  std::string joined;
  bool inside = false;
  for (std::string_view line : lines(page)) {
    const bool heading = line.starts_with(".SH") || line.starts_with(".Sh") || line.starts_with(".SS") ||
                         line.starts_with(".Ss");
    if (heading) {
      if (inside) break;
      std::string title(trim(line.substr(3)));
      std::erase(title, '"');
      inside = title == "NAME";
      continue;
    }
    if (!inside || line.starts_with(".\\\"") || line.starts_with("'\\\"")) continue;
    if (line.starts_with(".Nd "))
      joined += "- " + std::string(line.substr(4)) + " ";
    else if (line.starts_with(".Nm "))
      joined += std::string(line.substr(4)) + " ";
    else if (line.starts_with(".")) {
      const std::size_t space = line.find(' ');
      const std::string_view request = line.substr(1, space == line.npos ? line.npos : space - 1);
      static constexpr std::array<std::string_view, 9> fonts = {"B",  "I",  "BR", "IR", "RB",
                                                                "RI", "BI", "IB", "SM"};
      if (space != line.npos && std::find(fonts.begin(), fonts.end(), request) != fonts.end()) {
        std::string arguments(line.substr(space + 1));
        std::erase(arguments, '"');
        joined += arguments + " ";
      }
    } else if (!line.starts_with("'")) {
      joined += std::string(line) + " ";
    }
  }
  std::string out;
  for (std::size_t i = 0; i < joined.size(); ++i) {
    if (joined[i] != '\\' || i + 1 == joined.size()) {
      out += joined[i];
      continue;
    }
    const char escape = joined[++i];
    if (escape == '-' || escape == 'e')
      out += escape == '-' ? '-' : '\\';
    else if (escape == ' ')
      out += ' ';
    else if (escape == 'f') {  // \fB, \f(BI, \f[BI]
      if (i + 1 < joined.size() && joined[i + 1] == '[')
        i = std::min(joined.find(']', i), joined.size() - 1);
      else if (i + 1 < joined.size() && joined[i + 1] == '(')
        i += 3;
      else
        ++i;
    } else if (escape == '(' || escape == '[') {  // \(em, \[em]: dashes stay dashes, other glyphs are dropped
      const std::size_t end = escape == '(' ? std::min(i + 2, joined.size() - 1) : joined.find(']', i);
      if (end == std::string::npos) break;
      const std::string_view glyph = std::string_view(joined).substr(i + 1, escape == '(' ? 2 : end - i - 1);
      if (glyph == "em" || glyph == "en") out += '-';
      i = end;
    }
    // \& (a zero-width break) and any other escape: dropped
  }
  return collapse_whitespace(out);
}
}  // namespace detail::text

/// man-section (manpages-dev: man2, man3; manpages: man5, man7): "<NAME line>\nSection:\n" -> system call,
/// library function, file format or overview. Pages are /usr/share/man/manN/<page>.N.gz (suffixed sections
/// such as 3pm or 5WN are left out); ".so" pages and symbolic links (redirections to another page: Debian
/// turns most .so pages into links) and pages without a NAME section are skipped. Metric: accuracy. Key: the
/// file name without ".gz".
inline text_task man_section_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "man_section_task";
  struct section {
    std::string_view number, kind, package;
  };
  static constexpr std::array<section, 4> sections = {{{"2", "system call", "manpages-dev"},
                                                       {"3", "library function", "manpages-dev"},
                                                       {"5", "file format", "manpages"},
                                                       {"7", "overview", "manpages"}}};
  std::vector<text_example> records;
  for (const auto& s : sections) {
    const auto folder = options.root / "usr/share/man" / concat("man", s.number);
    detail::text::require_path(folder, where, s.package);
    const std::string suffix = concat(".", s.number, ".gz");
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_symlink(ec) || !entry.is_regular_file(ec) || name.size() <= suffix.size() ||
          !name.ends_with(suffix))
        continue;
      const std::string page = detail::text::read_gzip_file(entry.path(), where, s.package);
      const auto page_lines = detail::text::lines(page);
      if (std::any_of(page_lines.begin(), page_lines.end(), [](auto l) { return l.starts_with(".so "); }))
        continue;
      const std::string name_line = detail::text::man_name_section(page);
      if (name_line.empty()) continue;
      detail::text::add_example(records,
                                detail::text::clip(name_line, options.max_text_bytes) + "\nSection:\n",
                                std::string(s.kind), name.substr(0, name.size() - 3), options);
    }
    if (ec) throw_runtime_error(where, concat("cannot list ", folder.string(), ": ", ec.message()));
  }
  return split_text_task("man-section", "accuracy", std::move(records), options);
}

// -------------------------------------------------------------------------------------------------
// quiz-facts
namespace detail::text {
/// The canonical spelling of a quiz(6) pattern: at "a|b" the first alternative, {optional} text included, and
/// in a [choice] the first alternative that does not spell a diacritic with ASCII marks (the files write é as
/// 'e, e' or e, so "R['e|e'|e]union" reads "Reunion"); "\" quotes the next character. Throws
/// std::invalid_argument for unbalanced brackets.
inline std::string quiz_canonical(std::string_view pattern) {
  const auto expand = [&](auto& self, std::size_t& i, char close) -> std::vector<std::string> {
    std::vector<std::string> alternatives(1);
    while (i < pattern.size()) {
      const char c = pattern[i++];
      if (c == close) return alternatives;
      if (c == '\\' && i < pattern.size())
        alternatives.back() += pattern[i++];
      else if (c == '|')
        alternatives.emplace_back();
      else if (c == '{')
        alternatives.back() += self(self, i, '}').front();
      else if (c == '[') {
        const auto choices = self(self, i, ']');
        const auto plain = std::find_if(choices.begin(), choices.end(), [](const std::string& choice) {
          return choice.find_first_of("'`^~,/\"") == std::string::npos &&
                 choice.find("\xC2\xB0") == std::string::npos;
        });
        alternatives.back() += plain != choices.end() ? *plain : choices.front();
      } else if (c == '}' || c == ']') {
        throw_invalid_argument("quiz_canonical", concat("unbalanced '", c, "' in \"", pattern, "\""));
      } else {
        alternatives.back() += c;
      }
    }
    if (close != 0)
      throw_invalid_argument("quiz_canonical", concat("missing '", close, "' in \"", pattern, "\""));
    return alternatives;
  };
  std::size_t i = 0;
  return collapse_whitespace(expand(expand, i, '\0').front());
}

/// The categories of each line of a quiz(6) data file: lines joined at a trailing "\", split at ":" not
/// quoted by
/// "\". Each entry: the line number where the record starts, and its raw categories.
inline std::vector<std::pair<std::size_t, std::vector<std::string>>> quiz_records(std::string_view text) {
  std::vector<std::pair<std::size_t, std::vector<std::string>>> out;
  std::string joined;
  std::size_t number = 0, start = 0;
  for (std::string_view line : lines(text)) {
    ++number;
    if (joined.empty()) start = number;
    std::size_t backslashes = 0;
    while (backslashes < line.size() && line[line.size() - 1 - backslashes] == '\\') ++backslashes;
    if (backslashes % 2 == 1) {  // an unquoted "\" at the end: the record continues on the next line
      joined += line.substr(0, line.size() - 1);
      continue;
    }
    joined += line;
    if (trim(joined).empty()) {
      joined.clear();
      continue;
    }
    std::vector<std::string> categories(1);
    for (std::size_t i = 0; i < joined.size(); ++i) {
      if (joined[i] == '\\' && i + 1 < joined.size())
        (categories.back() += '\\') += joined[++i];
      else if (joined[i] == ':')
        categories.emplace_back();
      else
        categories.back() += joined[i];
    }
    out.emplace_back(start, std::move(categories));
    joined.clear();
  }
  return out;
}
}  // namespace detail::text

/// quiz-facts (bsdgames, /usr/share/games/bsdgames/quiz/): "<question>\n" -> its answer, from the capitals of
/// africa, america, asia, europe (countries), state (US states) and province (Canadian provinces), both ways,
/// and from elements (symbol -> name, name -> symbol, name -> atomic number). Data lines are categories
/// separated by
/// ":" whose patterns quiz_canonical spells out; a record with an empty question or answer is skipped (as
/// quiz does). Metric: exact match. Key: the question.
inline text_task quiz_facts_task(const text_task_options& options = {}) {
  constexpr std::string_view where = "quiz_facts_task";
  struct question {
    std::string_view file;
    std::size_t asked, answered;     // category numbers
    std::string_view before, after;  // the question is before + category + after
  };
  static constexpr std::array<question, 15> questions = {{
      {"africa", 0, 1, "What is the capital of ", "?"},
      {"africa", 1, 0, "", " is the capital of which country?"},
      {"america", 0, 1, "What is the capital of ", "?"},
      {"america", 1, 0, "", " is the capital of which country?"},
      {"asia", 0, 1, "What is the capital of ", "?"},
      {"asia", 1, 0, "", " is the capital of which country?"},
      {"europe", 0, 1, "What is the capital of ", "?"},
      {"europe", 1, 0, "", " is the capital of which country?"},
      {"state", 0, 1, "What is the capital of the US state ", "?"},
      {"state", 1, 0, "", " is the capital of which US state?"},
      {"province", 0, 1, "What is the capital of the Canadian province ", "?"},
      {"province", 1, 0, "", " is the capital of which Canadian province?"},
      {"elements", 0, 3, "Which chemical element has the symbol ", "?"},
      {"elements", 3, 0, "What is the chemical symbol of ", "?"},
      {"elements", 3, 1, "What is the atomic number of ", "?"},
  }};
  const auto folder = options.root / "usr/share/games/bsdgames/quiz";
  std::map<std::string_view, std::vector<std::pair<std::size_t, std::vector<std::string>>>> files;
  std::vector<text_example> records;
  for (const auto& q : questions) {
    const auto path = folder / q.file;
    auto& file = files[q.file];
    if (file.empty()) file = detail::text::quiz_records(detail::text::read_file(path, where, "bsdgames"));
    for (const auto& [number, categories] : file) {
      if (std::max(q.asked, q.answered) >= categories.size())
        detail::text::malformed(
            where, path, number,
            concat(categories.size(), " categories, expected at least ", std::max(q.asked, q.answered) + 1));
      std::string asked, answered;
      try {
        asked = detail::text::quiz_canonical(categories[q.asked]);
        answered = detail::text::quiz_canonical(categories[q.answered]);
      } catch (const std::invalid_argument& e) {
        detail::text::malformed(where, path, number, e.what());
      }
      if (asked.empty()) continue;
      std::string prompt = concat(q.before, asked, q.after);
      detail::text::add_example(records, prompt + "\n", answered, prompt, options);
    }
  }
  return split_text_task("quiz-facts", "exact_match", std::move(records), options);
}

// ---------------------------------------------------------------------------------------------------- the
// stream
/// The eight tasks in the order of the stream: classification and generation alternate.
inline std::vector<text_task> debian_text_tasks(const text_task_options& options = {}) {
  std::vector<text_task> tasks;
  tasks.push_back(wordnet_sense_task(options));
  tasks.push_back(python_next_line_task(options));
  tasks.push_back(german_english_task(options));
  tasks.push_back(foldoc_topic_task(options));
  tasks.push_back(fortune_language_task(options));
  tasks.push_back(ui_translation_task(options));
  tasks.push_back(man_section_task(options));
  tasks.push_back(quiz_facts_task(options));
  return tasks;
}

// ---------------------------------------------------------------------------------------------------- the
// pre-training corpus
/// The pre-training corpus of the text benchmark's base model (dict-gcide, /usr/share/dictd/gcide.dict.dz, the
/// Collaborative International Dictionary of English): Webster's 1913 entries as paragraphs of plain text, in the
/// file's order. A paragraph is a run of text ended by a blank line or by a source mark (a bracketed mark naming the
/// source, at the end of a line or before the next entry's words); it is kept when its marks name Webster and not WordNet ("[1913 Webster]", "[Webster 1913 Suppl.]", "[1913 Webster
/// +PJC]"), and dropped otherwise ("[WordNet 1.5]": the wn-sense task reads WordNet, so the corpus leaves its
/// entries out; "[PJC]" alone: later additions). The marks, the pronunciation between
/// backslashes and the cross-reference braces are removed, whitespace collapsed; paragraphs under 32 bytes and the
/// dictd header entries are left out. `every`: keep one paragraph in every `every` (1: all); `max_bytes`: stop
/// after this many bytes of text (0: no limit).
inline std::vector<std::string> gcide_paragraphs(const std::filesystem::path& root = "/", std::size_t every = 1,
                                                 std::size_t max_bytes = 0) {
  constexpr std::string_view where = "gcide_paragraphs";
  if (every == 0) throw_invalid_argument(where, "every must be >= 1");
  const std::string text = detail::text::read_gzip_file(root / "usr/share/dictd/gcide.dict.dz", where, "dict-gcide");
  std::vector<std::string> out;
  std::size_t bytes = 0, seen = 0;
  std::string paragraph;
  bool webster = false, other = false;
  const auto flush = [&] {
    std::string clean;
    bool in_pronunciation = false;
    for (char c : paragraph) {
      if (c == '\\') in_pronunciation = !in_pronunciation;
      else if (!in_pronunciation && c != '{' && c != '}') clean += c;
    }
    clean = detail::text::collapse_whitespace(clean);
    if (webster && !other && clean.size() >= 32 && utf8::valid(clean) && seen++ % every == 0) {
      bytes += clean.size();
      out.push_back(std::move(clean));
    }
    paragraph.clear();
    webster = other = false;
  };
  for (std::string_view line : detail::text::lines(text)) {
    if (max_bytes > 0 && bytes >= max_bytes) {
      paragraph.clear(), webster = false;  // (nothing more is kept)
      break;
    }
    const std::string_view t = detail::text::trim(line);
    if (t.empty()) {
      flush();
      continue;
    }
    if (t.starts_with("00-database") || t.starts_with("00database")) continue;
    // A source mark ("[1913 Webster]", "[WordNet 1.5]", "[PJC]", "[Webster 1913 Suppl.]") ends a paragraph, at the
    // end of a line or before the next entry's first words on the same line; a usage label ("[Obs.]") is text.
    std::string_view rest = t;
    for (std::size_t from = 0;;) {
      const std::size_t open = rest.find('[', from);
      const std::size_t close = open == std::string_view::npos ? open : rest.find(']', open);
      if (close == std::string_view::npos) break;
      const std::string_view mark = rest.substr(open, close + 1 - open);
      const auto has = [&](std::string_view word) { return mark.find(word) != std::string_view::npos; };
      if (!(has("WordNet") || has("Webster") || has("PJC") || has("Century") || has("Suppl"))) {
        from = close + 1;
        continue;
      }
      paragraph += rest.substr(0, open);
      (has("Webster") && !has("WordNet") ? webster : other) = true;
      flush();
      rest = rest.substr(close + 1), from = 0;
    }
    paragraph += rest;
    paragraph += '\n';
  }
  flush();
  if (out.empty()) throw_runtime_error(where, "no 1913 Webster paragraph found in gcide.dict.dz");
  return out;
}

// ---------------------------------------------------------------------------------------------------- TRACE
/// Reads a TRACE task folder: train.json and test.json, each a JSON list of {"prompt": string, "answer":
/// string} (other members are ignored). The split is the files' own; keys are "train/<index>" and
/// "test/<index>". The task is named after the folder. Errors name the file and the element index.
inline text_task load_trace_task(const std::filesystem::path& folder, std::string metric) {
  constexpr std::string_view where = "load_trace_task";
  if (std::find(text_metric_names.begin(), text_metric_names.end(), metric) == text_metric_names.end())
    throw_invalid_argument(
        where, concat("unknown metric '", metric, "' (accuracy, edit_similarity, exact_match or rouge_l)"));
  text_task task{folder.filename().string(), std::move(metric), {}, {}};
  if (task.name.empty()) task.name = folder.parent_path().filename().string();
  for (const auto* part : {"train", "test"}) {
    const auto path = folder / concat(part, ".json");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw_runtime_error(where, concat(path.string(), ": no such file"));
    const json::value list = json::parse_file(path.string());
    if (!list.is_array()) throw_runtime_error(where, concat(path.string(), ": not a JSON list"));
    auto& examples = std::string_view(part) == "train" ? task.train : task.test;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const json::value& item = list[i];
      const auto field = [&](const char* name) {
        if (!item.is_object())
          throw_runtime_error(where, concat(path.string(), ": element ", i, " is not an object"));
        const auto it = item.find(name);
        if (it == item.end())
          throw_runtime_error(where, concat(path.string(), ": element ", i, " has no \"", name, "\""));
        if (!it->is_string())
          throw_runtime_error(where,
                              concat(path.string(), ": element ", i, ": \"", name, "\" is not a string"));
        return it->template get<std::string>();
      };
      examples.push_back({field("prompt"), field("answer"), concat(part, "/", i)});
    }
  }
  return task;
}

}  // namespace treelora

// Text tasks (data/text_tasks.hpp): the deterministic split, UTF-8 cuts, each Debian builder on small files
// written here in the package's format (WordNet data lines, a fake Python tree, trans-de-en lines, a dictzip
// dictionary and its index, fortune files, GNU MO files in both byte orders, gzipped man pages with a .so
// page and a link, quiz files), every malformed-file and missing-package error, TRACE's json folders with
// hostile input, and the installed Debian packages when present (counts and known records).
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include "treelora/core/utf8.hpp"
#include "treelora/data/text_tasks.hpp"

using namespace treelora;
namespace fs = std::filesystem;

namespace {

/// A fresh directory under the system temp directory, removed at the end of the test.
struct temp_directory {
  fs::path path;
  temp_directory() {
    path = fs::temp_directory_path() /
           concat("treelora_test_text_", ::getpid(), "_", reinterpret_cast<std::uintptr_t>(this));
    fs::create_directories(path);
  }
  ~temp_directory() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void write_gzip(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}

/// The message of the std::runtime_error `f` throws (fails when it throws nothing or something else).
template <class Function>
std::string runtime_error_of(Function&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("expected std::runtime_error");
  return {};
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

text_task_options options_at(const fs::path& root, std::size_t train = 500, std::size_t test = 200) {
  text_task_options o;
  o.root = root;
  o.train_size = train;
  o.test_size = test;
  return o;
}

/// Every example of a task, test first, by key.
std::map<std::string, text_example> by_key(const text_task& task) {
  std::map<std::string, text_example> out;
  for (const auto* part : {&task.test, &task.train})
    for (const auto& e : *part) CHECK(out.emplace(e.key, e).second);  // keys are unique across the split
  return out;
}

/// A GNU MO file holding `messages` (original, translation), in little- or big-endian byte order.
std::string make_mo(const std::vector<std::pair<std::string, std::string>>& messages, bool big_endian) {
  std::string out;
  const auto put = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (big_endian ? 24 - 8 * i : 8 * i)) & 0xFF);
  };
  const auto n = static_cast<std::uint32_t>(messages.size());
  const std::uint32_t originals = 28, translations = 28 + 8 * n;
  std::uint32_t offset = 28 + 16 * n;
  std::string strings;
  std::vector<std::uint32_t> table;
  for (int side = 0; side < 2; ++side)
    for (const auto& m : messages) {
      const std::string& s = side == 0 ? m.first : m.second;
      table.push_back(static_cast<std::uint32_t>(s.size()));
      table.push_back(offset + static_cast<std::uint32_t>(strings.size()));
      strings += s;
      strings += '\0';
    }
  put(0x950412de);
  put(0);
  put(n);
  put(originals);
  put(translations);
  put(0);
  put(0);
  for (std::uint32_t v : table) put(v);
  return out + strings;
}

/// dictd's base-64 number (A-Z a-z 0-9 + /), most significant digit first.
std::string dictd_base64(std::uint64_t v) {
  static const std::string digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  do {
    out.insert(out.begin(), digits[v % 64]);
    v /= 64;
  } while (v);
  return out;
}

bool installed(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return true;
  MESSAGE("skipped: ", path.string(), " is not installed");
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------
// split
TEST_CASE("split_text_task: by hashed key, independent of input order, duplicates dropped, test set stable") {
  std::vector<text_example> records;
  for (int i = 0; i < 1000; ++i) records.push_back({concat("p", i), concat("a", i), concat("key", i)});
  records.push_back({"other prompt", "a7", "key7"});  // a duplicate key: one of the two is kept
  text_task_options o;
  o.train_size = 50;
  o.test_size = 20;
  const text_task task = split_text_task("t", "accuracy", records, o);
  CHECK(task.name == "t");
  CHECK(task.metric == "accuracy");
  REQUIRE(task.train.size() == 50);
  REQUIRE(task.test.size() == 20);
  std::set<std::string> keys;
  for (const auto* part : {&task.train, &task.test})
    for (const auto& e : *part) CHECK(keys.insert(e.key).second);

  // The order is that of mix64(fnv1a64(key)): recomputed here.
  std::vector<std::pair<std::uint64_t, std::string>> ranks;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = concat("key", i);
    ranks.emplace_back(random::mix64(fnv1a64(key.data(), key.size())), key);
  }
  std::sort(ranks.begin(), ranks.end());
  for (std::size_t i = 0; i < 20; ++i) CHECK(task.test[i].key == ranks[i].second);
  for (std::size_t i = 0; i < 50; ++i) CHECK(task.train[i].key == ranks[20 + i].second);

  // The same records in another order give the same task.
  auto shuffled = records;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  const text_task again = split_text_task("t", "accuracy", shuffled, o);
  for (std::size_t i = 0; i < 20; ++i) CHECK(again.test[i].prompt == task.test[i].prompt);
  for (std::size_t i = 0; i < 50; ++i) CHECK(again.train[i].prompt == task.train[i].prompt);

  // A larger training set keeps the test set.
  o.train_size = 300;
  const text_task bigger = split_text_task("t", "accuracy", records, o);
  for (std::size_t i = 0; i < 20; ++i) CHECK(bigger.test[i].key == task.test[i].key);
  for (std::size_t i = 0; i < 50; ++i) CHECK(bigger.train[i].key == task.train[i].key);
}

TEST_CASE("split_text_task: too few records are shared in proportion; bad metric and no records are errors") {
  std::vector<text_example> records;
  for (int i = 0; i < 70; ++i) records.push_back({"p", "a", concat(i)});
  const text_task task = split_text_task("t", "rouge_l", records, {});  // 500 / 200 wanted, 70 found
  CHECK(task.test.size() == 20);                                        // floor(70 * 200 / 700)
  CHECK(task.train.size() == 50);
  CHECK_THROWS_AS(split_text_task("t", "bleu", records, {}), std::invalid_argument);
  CHECK(contains(runtime_error_of([] { split_text_task("empty", "accuracy", {}, {}); }),
                 "'empty' has no examples"));
}

TEST_CASE("utf8: prefix and suffix never cut a character; code points keep invalid bytes apart") {
  const std::string text = "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80!";  // héllo € 😀!
  REQUIRE(utf8::valid(text));
  for (std::size_t budget = 0; budget <= text.size() + 1; ++budget) {
    const auto head = utf8::prefix(text, budget), tail = utf8::suffix(text, budget);
    CHECK(head.size() <= budget);
    CHECK(tail.size() <= budget);
    CHECK(utf8::valid(head));
    CHECK(utf8::valid(tail));
    CHECK(budget - head.size() < 4);  // only the partial character at the cut is dropped
    CHECK(budget - std::min(budget, tail.size()) < 4 + (budget > text.size() ? budget - text.size() : 0));
  }
  CHECK(utf8::prefix(text, 2) == "h");
  CHECK(utf8::suffix(text, 3) == "!");
  CHECK(utf8::code_points(text) ==
        std::vector<char32_t>{U'h', U'é', U'l', U'l', U'o', U' ', U'€', U' ', U'😀', U'!'});
  CHECK_FALSE(utf8::valid("\xC0\xAF"));      // overlong "/"
  CHECK_FALSE(utf8::valid("\xED\xA0\x80"));  // a surrogate
  CHECK_FALSE(utf8::valid("\xE2\x82"));      // truncated
  CHECK(utf8::code_points("a\xFF\xFE") ==
        std::vector<char32_t>{U'a', utf8::invalid_byte_base + 0xFF, utf8::invalid_byte_base + 0xFE});
}

// ------------------------------------------------------------------------------------------------ wn-sense
TEST_CASE("wordnet_sense_task: data.noun lines -> supersense labels; malformed lines and a missing file") {
  temp_directory dir;
  const auto path = dir.path / "usr/share/wordnet/data.noun";
  const std::string license = "  1 This software and database is being provided to you, the LICENSEE, by  \n";
  write_file(
      path,
      license +
          "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member of "
          "the genus Canis; \"the dog barked all night\"  \n"
          "03001627 06 n 01 chair 0 001 @ 04161981 n 0000 | a seat for one person  \n"
          "00001740 03 n 01 entity 0 000 | that which is perceived  \n");
  const text_task task = wordnet_sense_task(options_at(dir.path));
  CHECK(task.name == "wn-sense");
  CHECK(task.metric == "accuracy");
  const auto all = by_key(task);
  REQUIRE(all.size() == 2);  // entity (file 03, tops) has no supersense label here
  CHECK(all.at("02084071").prompt ==
        "dog: a member of the genus Canis; \"the dog barked all night\"\nSupersense:\n");
  CHECK(all.at("02084071").answer == "animal");
  CHECK(all.at("03001627").answer == "artifact");

  write_file(path, license + "0208407x 05 n 01 dog 0 000 | a dog\n");
  CHECK(contains(runtime_error_of([&] { wordnet_sense_task(options_at(dir.path)); }),
                 "data.noun line 2: synset offset"));
  write_file(path, "02084071 05 n 01 dog 0 000 a dog without a bar\n");
  CHECK(contains(runtime_error_of([&] { wordnet_sense_task(options_at(dir.path)); }), "line 1: no \" | \""));
  write_file(path, "02084071 5x n 01 dog 0 000 | a dog\n");
  CHECK(contains(runtime_error_of([&] { wordnet_sense_task(options_at(dir.path)); }),
                 "lexicographer file '5x'"));
  fs::remove(path);
  CHECK(contains(runtime_error_of([&] { wordnet_sense_task(options_at(dir.path)); }),
                 "install the Debian package wordnet-base"));
}

// ---------------------------------------------------------------------------------------------- py-nextline
TEST_CASE("python_next_line_task: the newest python3.N folder, 20-line windows, skipped folders and files") {
  temp_directory dir;
  CHECK(contains(runtime_error_of([&] { python_next_line_task(options_at(dir.path)); }), "libpython3"));
  const auto old_folder = dir.path / "usr/lib/python3.9", folder = dir.path / "usr/lib/python3.12";
  write_file(old_folder / "os.py", "x = 1\n");
  write_file(dir.path / "usr/lib/python3.13/README", "no os.py here\n");
  std::string module;
  for (int i = 0; i < 45; ++i) module += i == 20 || i == 21 ? "\n" : concat("line_", i, " = ", i, "\n");
  write_file(folder / "os.py", module);
  write_file(folder / "json/decoder.py", module);
  write_file(folder / "site-packages/third_party.py", module);
  write_file(folder / "__pycache__/cached.py", module);
  write_file(folder / "latin1.py", std::string(30, '#') + "\n\xE9\n" + module);  // not UTF-8: skipped
  CHECK(python_stdlib_folder(dir.path) == folder);

  const text_task task = python_next_line_task(options_at(dir.path));
  CHECK(task.metric == "edit_similarity");
  const auto all = by_key(task);
  // Windows [0, 20) and [20, 40) in each file; [40, 45) has no line after it.
  REQUIRE(all.size() == 4);
  const auto& first = all.at("json/decoder.py:20");
  CHECK(first.answer == "line_22 = 22");  // lines 20 and 21 are blank
  std::string expected_prompt;
  for (int i = 0; i < 20; ++i) expected_prompt += concat("line_", i, " = ", i, "\n");
  CHECK(first.prompt == expected_prompt);
  CHECK(all.at("os.py:40").answer == "line_40 = 40");
  CHECK(all.at("os.py:40").prompt.starts_with("\n\nline_22 = 22\n"));

  text_task_options small = options_at(dir.path);
  small.max_text_bytes = 26;  // the prompt keeps its end: the lines just before the answer
  CHECK(by_key(python_next_line_task(small)).at("os.py:20").prompt == "line_18 = 18\nline_19 = 19\n");
}

// ------------------------------------------------------------------------------------------------------
// de-en
TEST_CASE("german_english_task: first alternatives without annotations; malformed lines") {
  temp_directory dir;
  const auto path = dir.path / "usr/share/trans/de-en";
  write_file(path,
             "# Version :: devel 2023-01-30\n"
             "\n"
             "Aal {m} (auf der Speisekarte) [cook.] | Aal blau :: Eel (on a menu) | Eel au bleu\n"
             "Abholservice {m} :: pick-up service\n"
             "Abhöranlage {f}; Abhörsystem {n} | Abhöranlagen {pl} :: listening facility; bugging system | "
             "listening facilities\n");
  const text_task task = german_english_task(options_at(dir.path));
  CHECK(task.metric == "exact_match");
  const auto all = by_key(task);
  REQUIRE(all.size() == 3);
  CHECK(all.at("Aal").answer == "Eel");
  CHECK(all.at("Aal").prompt == "German: Aal\nEnglish:\n");
  CHECK(all.at("Abholservice").answer == "pick-up service");
  CHECK(all.at("Abhöranlage").answer == "listening facility");

  write_file(path, "Aal {m} :: eel\nAbholservice {m} -- pick-up service\n");
  CHECK(contains(runtime_error_of([&] { german_english_task(options_at(dir.path)); }),
                 "de-en line 2: no \" :: \""));
  fs::remove(path);
  CHECK(contains(runtime_error_of([&] { german_english_task(options_at(dir.path)); }), "trans-de-en"));
}

// -----------------------------------------------------------------------------------------------
// foldoc-topic
TEST_CASE("foldoc_topic_task: dictzip dictionary and base-64 index; first category; bad index lines") {
  temp_directory dir;
  const auto folder = dir.path / "usr/share/dictd";
  const std::vector<std::pair<std::string, std::string>> entries = {
      {"00-database-info", "00-database-info\n   This file was converted from the original database\n"},
      {"JEAN", "JEAN\n\n   <language> A dialect of {JOSS}.\n\n   (1997-09-14)\n\n"},
      {"@-party", "@-party\n\n   <event, history> A gathering of {hackers}.\n\n"},
      {"TCP",
       "Transmission Control Protocol\nTCP\n\n   <networking, protocol> The most common {transport layer}\n"
       "   protocol.\n\n"},
  };
  std::string dictionary, index;
  for (const auto& [headword, text] : entries) {
    index += concat(headword, "\t", dictd_base64(dictionary.size()), "\t", dictd_base64(text.size()), "\n");
    dictionary += text;
  }
  index +=
      concat("Transmission Control Protocol\t", dictd_base64(dictionary.size() - entries[3].second.size()),
             "\t", dictd_base64(entries[3].second.size()), "\n");  // a second headword of one entry
  write_gzip(folder / "foldoc.dict.dz", dictionary);
  write_file(folder / "foldoc.index", index);
  const text_task task = foldoc_topic_task(options_at(dir.path));
  CHECK(task.metric == "accuracy");
  const auto all = by_key(task);
  REQUIRE(all.size() == 2);  // the header has no body, "event" is not one of the eight topics
  CHECK(all.at("JEAN").prompt == "JEAN: A dialect of JOSS. (1997-09-14)\nTopic:\n");
  CHECK(all.at("JEAN").answer == "language");
  CHECK(all.at("Transmission Control Protocol").answer == "networking");
  CHECK(all.at("Transmission Control Protocol").prompt ==
        "Transmission Control Protocol: The most common transport layer protocol.\nTopic:\n");

  write_file(folder / "foldoc.index", index + concat("far\t", dictd_base64(dictionary.size()), "\tB\n"));
  CHECK(contains(runtime_error_of([&] { foldoc_topic_task(options_at(dir.path)); }),
                 "foldoc.index line 6: entry"));
  write_file(folder / "foldoc.index", "JEAN\tA*\tB\n");
  CHECK(contains(runtime_error_of([&] { foldoc_topic_task(options_at(dir.path)); }),
                 "line 1: offset or length"));
  write_file(folder / "foldoc.index", "JEAN A B\n");
  CHECK(
      contains(runtime_error_of([&] { foldoc_topic_task(options_at(dir.path)); }), "line 1: not \"headword"));
  write_file(folder / "foldoc.dict.dz", std::string("\x1f\x8b\x08\x00garbage", 11));
  CHECK(contains(runtime_error_of([&] { foldoc_topic_task(options_at(dir.path)); }), "foldoc.dict.dz"));
  fs::remove(folder / "foldoc.dict.dz");
  CHECK(contains(runtime_error_of([&] { foldoc_topic_task(options_at(dir.path)); }), "dict-foldoc"));
}

// -----------------------------------------------------------------------------------------------
// fortune-lang
TEST_CASE("fortune_language_task: %-separated records per language folder; links, indexes and off/ unread") {
  temp_directory dir;
  const auto base = dir.path / "usr/share/games/fortunes";
  write_file(base / "fortunes", "A fool and\n  his money.\n%\nSecond English\n%\n\nBold\b\bBo\n%\n");
  write_file(base / "fortunes.dat", std::string("\0\0\0\2binary", 10));
  write_file(base / "off/rude", "Not read\n%\n");
  write_file(base / "de/witze", "Ein Witz\n%\nNoch einer");
  write_file(base / "es/vida.fortunes", "La vida\n%\n");
  write_file(base / "it/italia", "Ciao\n%\n");
  fs::create_symlink("it/italia", base / "italia");  // fortunes-it's links into the English folder
  write_file(base / "ru/love", "Любовь\n%\n");
  const text_task task = fortune_language_task(options_at(dir.path));
  const auto all = by_key(task);
  REQUIRE(all.size() == 7);
  CHECK(all.at("A fool and his money.").prompt == "A fool and his money.\nLanguage:\n");
  CHECK(all.at("A fool and his money.").answer == "English");
  CHECK(all.at("Second English").answer == "English");
  CHECK(all.at("Noch einer").answer == "German");
  CHECK(all.at("La vida").answer == "Spanish");
  CHECK(all.at("Ciao").answer == "Italian");
  CHECK(all.at("Любовь").answer == "Russian");

  fs::remove_all(base / "ru");
  CHECK(contains(runtime_error_of([&] { fortune_language_task(options_at(dir.path)); }), "fortunes-ru"));
}

// ----------------------------------------------------------------------------------------------------
// ui-l10n
TEST_CASE("read_gnu_mo: both byte orders, plural and context; hostile files") {
  temp_directory dir;
  const std::vector<std::pair<std::string, std::string>> messages = {
      {"", "Content-Type: text/plain; charset=UTF-8\n"},
      {"invalid number of passes", "nombre d'étapes incorrect"},
      {"%d file\0%d files", std::string("%d fichier\0%d fichiers", 22)},
      {"menu\x04Open", "Ouvrir"},
      {"untranslated", ""},
      {"Print or change terminal characteristics.\n",
       "Afficher ou modifier les caractéristiques du terminal.\n"},
  };
  auto with_plural = messages;
  with_plural[2].first = std::string("%d file\0%d files", 16);
  const auto path = dir.path / "usr/share/locale/fr/LC_MESSAGES/coreutils.mo";
  for (bool big_endian : {false, true}) {
    CAPTURE(big_endian);
    write_file(path, make_mo(with_plural, big_endian));
    const auto read = read_gnu_mo(path);
    REQUIRE(read.size() == 6);
    CHECK(read[1].original == "invalid number of passes");
    CHECK(read[1].translation == "nombre d'étapes incorrect");
    CHECK(read[2].original == "%d file");
    CHECK(read[2].translation == "%d fichier");
    const text_task task = ui_translation_task(options_at(dir.path));
    CHECK(task.metric == "rouge_l");
    const auto all = by_key(task);
    REQUIRE(all.size() == 4);  // not the header, not the untranslated message
    CHECK(all.at("invalid number of passes").prompt == "English: invalid number of passes\nFrench:\n");
    CHECK(all.at("menu\x04Open").prompt == "English: Open\nFrench:\n");
    CHECK(all.at("menu\x04Open").answer == "Ouvrir");
    CHECK(all.at("Print or change terminal characteristics.\n").answer ==
          "Afficher ou modifier les caractéristiques du terminal.");
  }
  const std::string good = make_mo(with_plural, false);
  write_file(path, good.substr(0, 20));
  CHECK(contains(runtime_error_of([&] { read_gnu_mo(path); }), "fewer than the 28-byte header"));
  write_file(path, "\x12\x34\x56\x78" + good.substr(4));
  CHECK(contains(runtime_error_of([&] { read_gnu_mo(path); }), "bad magic number"));
  std::string hostile = good;
  hostile[8] = '\xFF', hostile[9] = '\xFF', hostile[10] = '\xFF', hostile[11] = '\x7F';  // count 2^31 - 1
  write_file(path, hostile);
  CHECK(contains(runtime_error_of([&] { read_gnu_mo(path); }), "message count"));
  hostile = good;
  hostile[28 + 8 + 4] = '\xF0';  // the offset of original string 1 points far outside
  hostile[28 + 8 + 7] = '\x7F';
  write_file(path, hostile);
  CHECK(contains(runtime_error_of([&] { read_gnu_mo(path); }), "original string 1"));
  hostile = good;
  hostile[12] = '\xF0', hostile[15] = '\x7F';  // the original table itself lies outside
  write_file(path, hostile);
  CHECK(contains(runtime_error_of([&] { read_gnu_mo(path); }), "original table entry 0 lies outside"));
  fs::remove(path);
  CHECK(contains(runtime_error_of([&] { ui_translation_task(options_at(dir.path)); }), "package coreutils"));
}

// ------------------------------------------------------------------------------------------------
// man-section
TEST_CASE("man_section_task: NAME sections of man(7) and mdoc(7) pages; .so pages and links skipped") {
  temp_directory dir;
  const auto man = dir.path / "usr/share/man";
  const std::string comment = ".\\\" Copyright (C) 1992 Drew Eckhardt\n.TH open 2 2023-02-05\n";
  write_gzip(man / "man2/open.2.gz", comment +
                                         ".SH NAME\nopen, openat, creat \\- open and possibly create a file\n"
                                         ".SH LIBRARY\nStandard C library\n");
  write_gzip(man / "man2/creat.2.gz", comment + ".so man2/open.2\n");
  fs::create_symlink("open.2.gz", man / "man2/openat.2.gz");
  write_gzip(man / "man3/printf.3.gz",
             ".TH printf 3\n.SH NAME\nprintf, fprintf,\n.\\\" a comment\n"
             "\\fBvsnprintf\\fP \\- formatted output \\(em conversion\n.SH SYNOPSIS\n");
  write_gzip(man / "man3/Foo::Bar.3pm.gz", ".SH NAME\nFoo::Bar \\- a Perl module\n");
  write_gzip(man / "man5/crypt.5.gz",
             ".Dd 2023\n.Sh NAME\n.Nm crypt\n.Nd storage format for hashed passphrases\n"
             ".Sh DESCRIPTION\n");
  write_gzip(man / "man7/ascii.7.gz", ".SH \"NAME\"\nascii \\- ASCII character set\n.SH DESCRIPTION\n");
  write_gzip(man / "man7/noname.7.gz", ".SH DESCRIPTION\nno NAME section\n");
  const text_task task = man_section_task(options_at(dir.path));
  const auto all = by_key(task);
  REQUIRE(all.size() == 4);
  CHECK(all.at("open.2").prompt == "open, openat, creat - open and possibly create a file\nSection:\n");
  CHECK(all.at("open.2").answer == "system call");
  CHECK(all.at("printf.3").prompt ==
        "printf, fprintf, vsnprintf - formatted output - conversion\nSection:\n");
  CHECK(all.at("printf.3").answer == "library function");
  CHECK(all.at("crypt.5").prompt == "crypt - storage format for hashed passphrases\nSection:\n");
  CHECK(all.at("crypt.5").answer == "file format");
  CHECK(all.at("ascii.7").answer == "overview");

  write_file(man / "man7/broken.7.gz", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage", 17));
  CHECK(contains(runtime_error_of([&] { man_section_task(options_at(dir.path)); }), "broken.7.gz"));
  fs::remove_all(man / "man7");
  CHECK(contains(runtime_error_of([&] { man_section_task(options_at(dir.path)); }), "package manpages "));
}

// -------------------------------------------------------------------------------------------------
// quiz-facts
TEST_CASE("quiz_facts_task: quiz(6) patterns spelled out, both directions, continuation lines, bad lines") {
  using detail::text::quiz_canonical;
  CHECK(quiz_canonical("Andorra la V[ell|iej]a") == "Andorra la Vella");
  CHECK(quiz_canonical("R['e|e'|e]union") == "Reunion");
  CHECK(quiz_canonical("[\xC2\xB0"
                       "A|A\xC2\xB0|A]land Islands") == "Aland Islands");
  CHECK(quiz_canonical("Mo[z|,c|c,|c]ambique") == "Mozambique");
  CHECK(quiz_canonical("{The }Gambia") == "The Gambia");
  CHECK(quiz_canonical("Vienna|Wien") == "Vienna");
  CHECK(quiz_canonical("Cal{if{ornia}}|CA") == "California");
  CHECK(quiz_canonical("a\\|b") == "a|b");
  CHECK_THROWS_AS(quiz_canonical("Wars[aw|zawa"), std::invalid_argument);
  CHECK_THROWS_AS(quiz_canonical("Warsaw}"), std::invalid_argument);

  temp_directory dir;
  const auto folder = dir.path / "usr/share/games/bsdgames/quiz";
  write_file(folder / "africa", "Algeria:Algiers\n{The }Gambia:Banjul|Bathurst\n");
  write_file(folder / "america", "Cuba:Ha[v|b]ana\n");
  write_file(folder / "asia", "Armenia:Yerevan\n");
  write_file(folder / "europe", "Armenia:Yerevan\nAustria:Vienna|Wien\nNowhere:\n");
  write_file(folder / "state", "Alabama|Ala|AL:Montgomery:AL:goldenrod\n");
  write_file(folder / "province", "Quebec:\\\nQuebec\n");
  write_file(folder / "elements", "He:2:4.003:Helium\n");
  const text_task task = quiz_facts_task(options_at(dir.path));
  CHECK(task.metric == "exact_match");
  const auto all = by_key(task);
  CHECK(all.size() == 17);  // 6 countries (Armenia in asia and europe: one key each way) x 2, 2 + 2 + 3 more
  CHECK(all.at("What is the capital of The Gambia?").answer == "Banjul");
  CHECK(all.at("What is the capital of The Gambia?").prompt == "What is the capital of The Gambia?\n");
  CHECK(all.at("Banjul is the capital of which country?").answer == "The Gambia");
  CHECK(all.at("What is the capital of Cuba?").answer == "Havana");
  CHECK(all.at("What is the capital of the US state Alabama?").answer == "Montgomery");
  CHECK(all.at("Quebec is the capital of which Canadian province?").answer == "Quebec");
  CHECK(all.at("Which chemical element has the symbol He?").answer == "Helium");
  CHECK(all.at("What is the chemical symbol of Helium?").answer == "He");
  CHECK(all.at("What is the atomic number of Helium?").answer == "2");
  CHECK(all.count("What is the capital of Nowhere?") == 0);

  write_file(folder / "elements", "He:2:4.003:Helium\nLi:3\n");
  CHECK(contains(runtime_error_of([&] { quiz_facts_task(options_at(dir.path)); }),
                 "elements line 2: 2 categories"));
  write_file(folder / "elements", "He:2:4.003:Hel[ium\n");
  CHECK(contains(runtime_error_of([&] { quiz_facts_task(options_at(dir.path)); }),
                 "elements line 1: treelora::quiz_canonical: missing ']'"));
  fs::remove(folder / "elements");
  CHECK(contains(runtime_error_of([&] { quiz_facts_task(options_at(dir.path)); }), "bsdgames"));
}

// ---------------------------------------------------------------------------------------------------- TRACE
TEST_CASE("load_trace_task: train.json and test.json lists; hostile files name the file and the element") {
  temp_directory dir;
  const auto folder = dir.path / "C-STANCE";
  write_file(folder / "train.json",
             R"([{"prompt": "Is it?", "answer": "A"}, {"prompt": "Isn't it?", "answer": "B", "id": 3}])");
  write_file(folder / "test.json", R"([{"prompt": "Or not?", "answer": "C"}])");
  const text_task task = load_trace_task(folder, "accuracy");
  CHECK(task.name == "C-STANCE");
  REQUIRE(task.train.size() == 2);
  REQUIRE(task.test.size() == 1);
  CHECK(task.train[1].prompt == "Isn't it?");
  CHECK(task.train[1].answer == "B");
  CHECK(task.train[1].key == "train/1");
  CHECK(task.test[0].answer == "C");
  CHECK_THROWS_AS(load_trace_task(folder, "bleu"), std::invalid_argument);

  const std::vector<std::pair<std::string, std::string>> hostile = {
      {R"({"prompt": "x", "answer": "y"})", "test.json: not a JSON list"},
      {R"([{"prompt": "x", "answer": "y"}, 7])", "test.json: element 1 is not an object"},
      {R"([{"prompt": "x"}])", "test.json: element 0 has no \"answer\""},
      {R"([{"prompt": "x", "answer": 5}])", "test.json: element 0: \"answer\" is not a string"},
      {R"([{"prompt": "x", "answer": "y", "answer": "z"}])", "appears twice"},
      {R"([{"prompt": "x", "answer": "y"})", "test.json"},
      {std::string(600, '[') + std::string(600, ']'), "nesting deeper"},
  };
  for (const auto& [text, message] : hostile) {
    CAPTURE(text.substr(0, 60));
    write_file(folder / "test.json", text);
    CHECK(contains(runtime_error_of([&] { load_trace_task(folder, "accuracy"); }), message));
  }
  fs::remove(folder / "test.json");
  CHECK(contains(runtime_error_of([&] { load_trace_task(folder, "accuracy"); }), "test.json: no such file"));
}

// ----------------------------------------------------------------------------------------- installed
// packages
namespace {
/// Every record of a task built from the installed files (all in train), and the default 500 / 200 split.
std::pair<std::map<std::string, text_example>, text_task> everything_and_default(
    text_task (*build)(const text_task_options&)) {
  text_task_options all;
  all.train_size = std::size_t(1) << 40;
  all.test_size = 0;
  const text_task everything = build(all);
  const text_task split = build({});
  std::map<std::string, text_example> records;
  for (const auto& e : everything.train) records.emplace(e.key, e);
  MESSAGE(split.name, ": ", records.size(), " records, split ", split.train.size(), " train / ",
          split.test.size(), " test");
  // The default split is the start of the full order: test first, then train.
  REQUIRE(split.test.size() == 200);
  REQUIRE(split.train.size() == 500);
  for (std::size_t i = 0; i < 200; ++i) CHECK(split.test[i].key == everything.train[i].key);
  for (std::size_t i = 0; i < 500; ++i) CHECK(split.train[i].key == everything.train[200 + i].key);
  for (const auto& [key, e] : records) {
    CHECK(utf8::valid(e.prompt));
    CHECK(e.prompt.ends_with("\n"));
    CHECK_FALSE(e.answer.empty());
  }
  return {std::move(records), split};
}
}  // namespace

TEST_CASE("gcide_paragraphs: 1913 Webster paragraphs only, marks, pronunciations and braces removed") {
  temp_directory root;
  const std::string dictionary =
      "00-database-info\n   This file was converted from the original database on:\n   [some header text]\n\n"
      "Affear \\Af*fear\"\\, v. t. [OE. aferen. See\n   {Afeard}.]\n   To frighten. [Obs.] --Spenser.\n   [1913 Webster]\n\n"
      "Dog \\Dog\\, n.\n   a member of the genus Canis that has been domesticated by man\n   [WordNet 1.5]\n\n"
      "Blog \\Blog\\, n.\n   A web log; an online journal kept by one person.\n   [PJC]\n\n"
      "Short \\Short\\, a.\n   Brief.\n   [1913 Webster]\n\n"
      "Affect \\Af*fect\"\\, v. t.\n   1. To act upon; to produce an effect or change upon.\n      [1913 Webster]\n\n"
      "            As might affect the earth with cold heat. --Milton.\n      [1913 Webster]\n";
  write_gzip(root.path / "usr/share/dictd/gcide.dict.dz", dictionary);
  const auto all = gcide_paragraphs(root.path);
  REQUIRE(all.size() == 3);
  CHECK(all[0] == "Affear , v. t. [OE. aferen. See Afeard.] To frighten. [Obs.] --Spenser.");
  CHECK(all[1] == "Affect , v. t. 1. To act upon; to produce an effect or change upon.");
  CHECK(all[2] == "As might affect the earth with cold heat. --Milton.");  // (under 32 bytes: "Short , a. Brief.")
  const auto every_other = gcide_paragraphs(root.path, 2);
  REQUIRE(every_other.size() == 2);
  CHECK(every_other[1] == all[2]);
  CHECK(gcide_paragraphs(root.path, 1, 10).size() == 1);  // stops once 10 bytes are read
  CHECK_THROWS_AS(gcide_paragraphs(root.path, 0), std::invalid_argument);
  temp_directory empty;
  CHECK(contains(runtime_error_of([&] { gcide_paragraphs(empty.path); }), "apt-get install dict-gcide"));
  write_gzip(empty.path / "usr/share/dictd/gcide.dict.dz", "Dog \\Dog\\, n.\n   a dog\n   [WordNet 1.5]\n");
  CHECK(contains(runtime_error_of([&] { gcide_paragraphs(empty.path); }), "no 1913 Webster paragraph"));
  if (std::error_code ec; fs::exists("/usr/share/dictd/gcide.dict.dz", ec)) {
    const auto installed_corpus = gcide_paragraphs("/", 1, 2'000'000);
    CHECK(installed_corpus.size() > 5000);
    for (const auto& p : installed_corpus) {
      CHECK(p.find("[1913 Webster]") == std::string::npos);
      CHECK(p.find("[WordNet") == std::string::npos);
    }
  }
}

TEST_CASE("installed Debian packages: counts, the default split and known records") {
  if (installed("/usr/share/wordnet/data.noun")) {
    const auto [records, split] = everything_and_default(wordnet_sense_task);
    CHECK(records.size() > 40000);
    CHECK(records.at("02084071").prompt.starts_with("dog: a member of the genus Canis"));
    CHECK(records.at("02084071").answer == "animal");
    CHECK(records.at("03001627").answer == "artifact");  // chair
  }
  if (std::error_code ec; fs::exists("/usr/lib", ec)) {
    bool found = true;
    try {
      python_stdlib_folder();
    } catch (const std::runtime_error&) {
      found = false;
      MESSAGE("skipped: no /usr/lib/python3.N with os.py");
    }
    if (found) {
      const auto [records, split] = everything_and_default(python_next_line_task);
      CHECK(records.size() > 5000);
      REQUIRE(records.count("os.py:20") == 1);
      std::ifstream os_py(python_stdlib_folder() / "os.py");
      std::string first_lines, line;
      for (int i = 0; i < 20 && std::getline(os_py, line); ++i) (first_lines += line) += '\n';
      CHECK(first_lines.ends_with(
          records.at("os.py:20").prompt));  // lines 1-20, cut from the front to 768 bytes
    }
  }
  if (installed("/usr/share/trans/de-en")) {
    const auto [records, split] = everything_and_default(german_english_task);
    CHECK(records.size() > 100000);
    CHECK(records.at("Zuckerdose").answer == "sugar bowl");
    CHECK(records.at("Abholservice").answer == "pick-up service");
  }
  if (installed("/usr/share/dictd/foldoc.index")) {
    const auto [records, split] = everything_and_default(foldoc_topic_task);
    CHECK(records.size() > 3000);
    CHECK(records.at("JEAN").answer == "language");
    std::set<std::string> topics;
    for (const auto& [key, e] : records) topics.insert(e.answer);
    CHECK(topics.size() == 8);
  }
  if (installed("/usr/share/games/fortunes/fortunes") && installed("/usr/share/games/fortunes/de") &&
      installed("/usr/share/games/fortunes/es") && installed("/usr/share/games/fortunes/it") &&
      installed("/usr/share/games/fortunes/ru")) {
    const auto [records, split] = everything_and_default(fortune_language_task);
    std::map<std::string, int> per_language;
    for (const auto& [key, e] : records) ++per_language[e.answer];
    CHECK(per_language.size() == 5);
    for (const auto& [language, count] : per_language) CHECK_MESSAGE(count > 1000, language);
  }
  if (installed("/usr/share/locale/fr/LC_MESSAGES/coreutils.mo")) {
    const auto [records, split] = everything_and_default(ui_translation_task);
    CHECK(records.size() > 1000);
    CHECK(records.at("invalid number of passes").answer == "nombre d'étapes incorrect");
  }
  if (installed("/usr/share/man/man2/open.2.gz") && installed("/usr/share/man/man7/ascii.7.gz")) {
    const auto [records, split] = everything_and_default(man_section_task);
    CHECK(records.size() > 1000);
    CHECK(records.at("open.2").prompt == "open, openat, creat - open and possibly create a file\nSection:\n");
    CHECK(records.at("open.2").answer == "system call");
    CHECK(records.at("printf.3").answer == "library function");
    CHECK(records.at("ascii.7").answer == "overview");
    CHECK(records.count("creat.2") == 0);  // a link to open.2
  }
  if (installed("/usr/share/games/bsdgames/quiz/elements")) {
    const auto [records, split] = everything_and_default(quiz_facts_task);
    CHECK(records.size() > 700);
    CHECK(records.at("What is the capital of Andorra?").answer == "Andorra la Vella");
    CHECK(records.at("What is the atomic number of Cerium?").answer == "58");
    CHECK(records.at("Which chemical element has the symbol He?").answer == "Helium");
  }
}

// Text metrics (metrics/text_metrics.hpp) on hand-computed cases and against brute-force references: a
// recursive Levenshtein distance and a recursive longest common subsequence over random short strings, and a
// chrF counted from n-gram lists by hand.
#include <doctest/doctest.h>

#include <functional>
#include <random>

#include "treelora/metrics/text_metrics.hpp"

using namespace treelora;

namespace {

/// The textbook recursion, exponential: D(i, j) over suffixes.
std::size_t recursive_levenshtein(const std::vector<char32_t>& a, const std::vector<char32_t>& b,
                                  std::size_t i, std::size_t j, std::size_t substitution_cost) {
  if (i == a.size()) return b.size() - j;
  if (j == b.size()) return a.size() - i;
  return std::min({recursive_levenshtein(a, b, i + 1, j, substitution_cost) + 1,
                   recursive_levenshtein(a, b, i, j + 1, substitution_cost) + 1,
                   recursive_levenshtein(a, b, i + 1, j + 1, substitution_cost) +
                       (a[i] == b[j] ? 0 : substitution_cost)});
}

template <class T>
std::size_t recursive_lcs(const std::vector<T>& a, const std::vector<T>& b, std::size_t i, std::size_t j) {
  if (i == a.size() || j == b.size()) return 0;
  if (a[i] == b[j]) return 1 + recursive_lcs(a, b, i + 1, j + 1);
  return std::max(recursive_lcs(a, b, i + 1, j), recursive_lcs(a, b, i, j + 1));
}

/// A random string of up to 7 characters over {a, b, c, é} (é is two bytes: lengths count code points).
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> alphabet = {"a", "b", "c", "\xC3\xA9"};
  std::string out;
  const int length = std::uniform_int_distribution<int>(1, 7)(rng);
  for (int i = 0; i < length; ++i) out += alphabet[std::uniform_int_distribution<std::size_t>(0, 3)(rng)];
  return out;
}

}  // namespace

TEST_CASE("text_accuracy: stripped prediction cut to the target's length in code points") {
  CHECK(text_accuracy("animal", "animal") == 1);
  CHECK(text_accuracy("  animal, surely\n", "animal") == 1);  // prefix match after stripping
  CHECK(text_accuracy("anim", "animal") == 0);
  CHECK(text_accuracy("Animal", "animal") == 0);
  CHECK(text_accuracy("x animal", "animal") == 0);
  CHECK(text_accuracy("\xC3\xA9t\xC3\xA9 chaud", "\xC3\xA9t\xC3\xA9") == 1);  // "été chaud" for "été"
  CHECK(text_accuracy("", "animal") == 0);  // metrics.py: an empty prediction or target scores 0
  CHECK(text_accuracy("animal", "") == 0);
}

TEST_CASE("exact_match: byte equality, empty scores 0") {
  CHECK(exact_match("sugar bowl", "sugar bowl") == 1);
  CHECK(exact_match("sugar bowl ", "sugar bowl") == 0);
  CHECK(exact_match("Sugar bowl", "sugar bowl") == 0);
  CHECK(exact_match("", "") == 0);
}

TEST_CASE("levenshtein_distance and edit_similarity: hand cases and a brute-force recursion") {
  CHECK(levenshtein_distance("kitten", "sitting") == 3);
  CHECK(levenshtein_distance("kitten", "sitting", 2) == 5);  // k/s and e/i: 2 each, + g
  CHECK(levenshtein_distance("", "abc") == 3);
  CHECK(levenshtein_distance("caf\xC3\xA9", "cafe") == 1);  // é is one character, not two bytes
  // python-Levenshtein: ratio("kitten", "sitting") = (13 - 5) / 13; fuzz.ratio rounds it to 62.
  CHECK(edit_similarity("kitten", "sitting") == doctest::Approx(800.0 / 13));
  CHECK(edit_similarity("same", "same") == 100);
  CHECK(edit_similarity("abc", "xyz") == 0);
  CHECK(edit_similarity("", "abc") == 0);

  std::mt19937 rng(2024);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string a = random_text(rng), b = random_text(rng);
    CAPTURE(a);
    CAPTURE(b);
    const auto x = utf8::code_points(a), y = utf8::code_points(b);
    CHECK(levenshtein_distance(a, b) == recursive_levenshtein(x, y, 0, 0, 1));
    CHECK(levenshtein_distance(a, b, 2) == recursive_levenshtein(x, y, 0, 0, 2));
    // The indel identity: with substitutions at cost 2, d = |a| + |b| - 2 LCS, so similarity = 200 LCS / (|a|
    // + |b|).
    const double total = static_cast<double>(x.size() + y.size());
    CHECK(edit_similarity(a, b) ==
          doctest::Approx(200.0 * static_cast<double>(recursive_lcs(x, y, 0, 0)) / total));
  }
}

TEST_CASE("rouge_l: LCS F1 over whitespace tokens; brute-force LCS") {
  // LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat: P = R = 5/6.
  CHECK(rouge_l("the cat sat on the mat", "the cat is on the mat") == doctest::Approx(5.0 / 6));
  // LCS 2 ("a c"), P = 2/2, R = 2/4: F = 2 * 1 * 0.5 / 1.5.
  CHECK(rouge_l("a  c", "a b c d") == doctest::Approx(2.0 / 3));
  CHECK(rouge_l("x y", "a b") == 0);
  CHECK(rouge_l("a b", "") == 0);
  CHECK(rouge_l(" \t", "a") == 0);  // no tokens at all

  std::mt19937 rng(7);
  const std::vector<std::string> words = {"le", "la", "fichier", "erreur", "de"};
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> p, t;
    std::string prediction, target;
    for (int i = std::uniform_int_distribution<int>(1, 8)(rng); i > 0; --i) {
      p.push_back(words[std::uniform_int_distribution<std::size_t>(0, 4)(rng)]);
      prediction += p.back() + " ";
    }
    for (int i = std::uniform_int_distribution<int>(1, 8)(rng); i > 0; --i) {
      t.push_back(words[std::uniform_int_distribution<std::size_t>(0, 4)(rng)]);
      target += "  " + t.back();
    }
    const double l = static_cast<double>(recursive_lcs(p, t, 0, 0));
    const double precision = l / static_cast<double>(p.size()), recall = l / static_cast<double>(t.size());
    CAPTURE(prediction);
    CAPTURE(target);
    CHECK(rouge_l(prediction, target) ==
          doctest::Approx(l == 0 ? 0 : 2 * precision * recall / (precision + recall)));
  }
}

TEST_CASE("chrf: character n-gram F-beta, hand-computed") {
  // "ab" vs "abc": n = 1: P 2/2, R 2/3; n = 2: P 1/1 (ab), R 1/2 (ab, bc). P = 1, R = 7/12, beta = 2:
  // 5 * 7/12 / (4 + 7/12) = 35/55.
  CHECK(chrf("ab", "abc") == doctest::Approx(100.0 * 35 / 55));
  CHECK(chrf("a b", "ab c") == doctest::Approx(100.0 * 35 / 55));  // whitespace is not counted
  CHECK(chrf("Bonjour le monde", "Bonjour le monde") == doctest::Approx(100));
  CHECK(chrf("xyz", "abc") == 0);
  // Repeated n-grams match at most as often as the target has them: "aaaa" vs "aa": n = 1: P 2/4, R 2/2;
  // n = 2: P 1/3, R 1/1. P = 5/12, R = 1: 5 * 5/12 / (4 * 5/12 + 1) = (25/12) / (32/12).
  CHECK(chrf("aaaa", "aa") == doctest::Approx(100.0 * 25 / 32));
  CHECK(chrf("", "abc") == 0);
}

TEST_CASE("text_score and mean_text_score: dispatch on the task's metric, divide by all examples") {
  CHECK(text_score("accuracy", "animal!", "animal") == 1);
  CHECK(text_score("exact_match", "animal!", "animal") == 0);
  CHECK(text_score("edit_similarity", "kitten", "sitting") == doctest::Approx(8.0 / 13));
  CHECK(text_score("rouge_l", "a  c", "a b c d") == doctest::Approx(2.0 / 3));
  CHECK_THROWS_AS(text_score("bleu", "a", "a"), std::invalid_argument);
  for (auto metric : text_metric_names) CHECK_NOTHROW(text_score(metric, "a", "a"));

  // An empty prediction counts as 0 and still counts in the denominator.
  CHECK(mean_text_score("exact_match", {"a", "", "c", "x"}, {"a", "b", "c", "d"}) == doctest::Approx(0.5));
  CHECK_THROWS_AS(mean_text_score("exact_match", {"a"}, {"a", "b"}), std::invalid_argument);
  CHECK_THROWS_AS(mean_text_score("exact_match", {}, {}), std::invalid_argument);
}

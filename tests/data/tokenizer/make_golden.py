#!/usr/bin/env python3
"""tests/data/tokenizer/make_golden.py: the test strings and the python3-regex oracle for tests/test_tokenizer.cpp.

Four steps make every file in this folder (run from the repository root; Debian: python3-regex, node, npm,
sentencepiece):

  python3 tests/data/tokenizer/make_golden.py strings        # 1. strings.txt.gz
  dir=$(mktemp -d) && cp tests/data/tokenizer/make_golden.mjs "$dir" &&
    (cd "$dir" && npm install --no-save gpt-tokenizer@4.0.0 llama3-tokenizer-js@1.2.0 &&
     node make_golden.mjs "$OLDPWD/tests/data/tokenizer") && rm -rf "$dir"
                                                             # 2. gpt2/llama3.tokenizer.json.gz, *.npm.ids.gz
  python3 tests/data/tokenizer/make_golden.py oracle         # 3. *.encoder-py.ids.gz
  python3 tests/data/tokenizer/make_golden.py spm            # 4. spm_corpus.txt, spm_strings.txt.gz, then:
  (cd tests/data/tokenizer &&
   spm_train --input=spm_corpus.txt --model_prefix=spm_bpe --model_type=bpe --vocab_size=1000 \
     --byte_fallback=true --split_digits=true --character_coverage=1.0 --normalization_rule_name=identity \
     --remove_extra_whitespaces=false --minloglevel=1 && rm spm_bpe.vocab &&
   zcat spm_strings.txt.gz | spm_encode --model=spm_bpe.model --output_format=id | gzip -9n > spm_bpe.spm_encode.ids.gz)

File formats (all gzip, one line per test string, in the order of strings.txt.gz):
  strings.txt.gz            each string's bytes in hex (some are not valid UTF-8 on purpose)
  spm_strings.txt.gz        the UTF-8 ones as text, newlines made spaces; spm_bpe.spm_encode.ids.gz: their ids
  <vocab>.<oracle>.ids.gz   the ids the oracle gives for that string, separated by spaces, or "-" where the
                            oracle cannot take the string (the JavaScript packages take only valid UTF-8)

The oracle here is the GPT-2 encoder algorithm (openai/gpt-2 src/encoder.py: regex pre-tokenisation with the
`regex` module, bytes_to_unicode, then repeated merging of the lowest-ranked pair), extended by the three rules
treelora's byte_level_bpe documents beyond it: added tokens are split out of the text first (longest match), a
pre-token found whole in the vocabulary is one id when the file sets ignore_merges (Llama-3), and each maximal run
of bytes that is not valid UTF-8 is a pre-token of its own. It reads the vocabulary and merges from the
tokenizer.json files that make_golden.mjs exported, so it checks the algorithm, not the export; the export is
checked by the test itself, which reads the exported files and must give the npm packages' own ids.
"""
import gzip
import json
import os
import random
import sys

import regex

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------- the test strings
WORDS = {
    "english": "the quick brown fox jumps over the lazy dog while we're sure they'll say it's fine and I've "
               "seen you'd done what I'm told THEY'RE LOUD but DON'T shout Hello World",
    "code": "int main() { return 0; } for (auto& x : v) x += 2; def f(a, b=3): return a**b # comment "
            "std::vector<int> v{1,2,3}; if x != None and y >= 10: print(f\"{x!r}\") && || -> => :: ++i",
    "latin": "naïve café Ærøskøbing Straße Ångström façade Œuvre São Paulo Łódź Dvořák İstanbul ğüşöçı",
    "cyrillic": "Съешь же ещё этих мягких французских булок да выпей чаю Привет мир Ёлка",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία Καλημέρα κόσμε ΑΒΓΔ",
    "chinese": "我能吞下玻璃而不伤身体 中文字符测试 你好世界",
    "japanese": "いろはにほへと ちりぬるを カタカナ 日本語の文章です",
    "korean": "다람쥐 헌 쳇바퀴에 타고파 안녕하세요 세계",
    "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ١٢٣٤٥",
    "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
    "hindi": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम",
    "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า",
    "emoji": "😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🏳️‍🌈 🧑🏿‍🚀 ✌🏻 🙂🙃 ☃",
    "digits": "0 7 42 1234567 3.14159 1,000,000 2026-11-30 0x1F 1e-9 ١٢٣ ²³ ０１２ ½",
    "combining": "e\u0301 a\u0308 n\u0303 \u0915\u093f \u05e9\u05c1",
}
SEPARATORS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", "", ",", ". ", "'", "'s ", "'t",
              " 'll", "\u00a0", "\u3000", "\u2009", "  \t\n  ", "!?", "...", " - "]
SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|endoftext|", "<|eot_id", "<|reserved_special_token_5|>", "<|im_start|>"]
# Code points drawn one by one for the random strings: old, stable blocks (every engine here agrees on their
# Unicode categories), and separators that every engine counts as white space.
CODE_POINT_RANGES = [(0x20, 0x7e), (0x09, 0x0d), (0xa0, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff), (0x5d0, 0x5ea),
                     (0x600, 0x64a), (0x660, 0x669), (0x900, 0x97f), (0xe01, 0xe5b), (0x3041, 0x3096),
                     (0x4e00, 0x4fff), (0xac00, 0xad00), (0x1f600, 0x1f64f), (0x2000, 0x200a), (0x2028, 0x2029),
                     (0x2070, 0x209c), (0xff01, 0xff5e), (0x1d400, 0x1d4ff), (0x300, 0x36f)]


def random_piece(rng):
    kind = rng.random()
    if kind < 0.55:
        words = WORDS[rng.choice(sorted(WORDS))].split(" ")
        start = rng.randrange(len(words))
        return " ".join(words[start:start + rng.randint(1, 6)])
    if kind < 0.65:
        return rng.choice(SPECIALS)
    if kind < 0.75:
        return rng.choice(["", " ", "  ", "\t"]) + str(rng.randint(0, 10 ** rng.randint(1, 12)))
    if kind < 0.85:
        return (" " * rng.randint(0, 4) + "\t" * rng.randint(0, 2) + "\n" * rng.randint(0, 3) +
                " " * rng.randint(0, 3))
    chars = []
    for _ in range(rng.randint(1, 12)):
        low, high = rng.choice(CODE_POINT_RANGES)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def invalid_utf8(rng, text):
    """`text`'s bytes with a few bytes that break UTF-8: lone continuation bytes, cut sequences, overlong forms,
    encoded surrogates, bytes over F4."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        bad = rng.choice([b"\x80", b"\xbf", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf5\x80\x80\x80",
                          b"\xff", b"\xfe\xff", b"\xf0\x9f\x98", b"\xc3", bytes([rng.randint(0x80, 0xff)])])
        at = rng.randint(0, len(data))
        data[at:at] = bad
    return bytes(data)


def make_strings():
    rng = random.Random(20261130)
    strings = [b"", b" ", b"  ", b"\n", b"\t", b"a", b"hello world", b"Hello world  ", b"  leading",
               b"trailing   ", b"tabs\t\tand\nnewlines\r\n", b"I'm you're we've they'll he'd it's",
               "I'M YOU'RE".encode(), b"12345678901234567890", "👨‍👩‍👧‍👦".encode(), b"<|endoftext|>",
               b"<|begin_of_text|>Hi<|eot_id|>", b"\xff", b"\x80abc\xc3", b"a\x00b"]
    for _ in range(3000):
        text = "".join(random_piece(rng) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 6)))
        strings.append(text.encode("utf-8"))
    for _ in range(400):
        text = "".join(random_piece(rng) for _ in range(rng.randint(1, 4)))
        strings.append(invalid_utf8(rng, text))
    for _ in range(100):  # raw random bytes
        strings.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    with gzip.GzipFile(os.path.join(HERE, "strings.txt.gz"), "wb", mtime=0) as out:
        for s in strings:
            out.write(s.hex().encode() + b"\n")


def make_spm_inputs():
    """spm_corpus.txt, the text the SentencePiece model is trained on (the test trains on it too), and
    spm_strings.txt.gz, the UTF-8 test strings with newlines made spaces (spm_encode reads one string per line)."""
    rng = random.Random(7)
    lines = []
    for _ in range(1500):
        words = WORDS[rng.choice(sorted(WORDS))].split(" ")
        start = rng.randrange(len(words))
        lines.append(" ".join(words[start:start + rng.randint(3, 12)]) + rng.choice(["", ".", "!", " 2026", " 42."]))
    with open(os.path.join(HERE, "spm_corpus.txt"), "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    with gzip.GzipFile(os.path.join(HERE, "spm_strings.txt.gz"), "wb", mtime=0) as out:
        for s in read_strings():
            try:
                text = s.decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.write(text.replace("\n", " ").encode("utf-8") + b"\n")


def read_strings():
    with gzip.open(os.path.join(HERE, "strings.txt.gz"), "rt") as lines:
        return [bytes.fromhex(line.strip()) for line in lines]


# ---------------------------------------------------------------------------------------------------- the oracle
def bytes_to_unicode():
    """openai/gpt-2 src/encoder.py."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(n) for n in cs]))


def get_pairs(word):
    return set(zip(word, word[1:]))


class Encoder:
    """openai/gpt-2 src/encoder.py's Encoder with the additions described at the top of this file."""

    def __init__(self, tokenizer_json):
        model = tokenizer_json["model"]
        self.encoder = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.ignore_merges = model.get("ignore_merges", False)
        self.byte_encoder = bytes_to_unicode()
        self.added = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
        pre = tokenizer_json["pre_tokenizer"]
        if pre["type"] == "ByteLevel":
            self.pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
        else:
            self.pat = regex.compile(pre["pretokenizers"][0]["pattern"]["Regex"])
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode_pretoken(self, data):
        token = "".join(self.byte_encoder[b] for b in data)
        if self.ignore_merges and token in self.encoder:
            return [self.encoder[token]]
        return [self.encoder[t] for t in self.bpe(token).split(" ")]

    def encode_text(self, data):
        """Bytes without added tokens: valid UTF-8 runs go through the regex, invalid runs are pre-tokens."""
        ids = []
        # surrogateescape turns each invalid byte into U+DC80..U+DCFF, which valid UTF-8 never decodes to.
        text = data.decode("utf-8", errors="surrogateescape")
        for run in regex.split(r"([\udc80-\udcff]+)", text):
            if not run:
                continue
            if "\udc80" <= run[0] <= "\udcff":
                ids += self.encode_pretoken(run.encode("utf-8", errors="surrogateescape"))
                continue
            for token in regex.findall(self.pat, run):
                ids += self.encode_pretoken(token.encode("utf-8"))
        return ids

    def encode(self, data):
        # Added tokens, leftmost-longest: the alternation tries the longer ones first at each position.
        specials = sorted(self.added, key=len, reverse=True)
        pattern = regex.compile(b"|".join(regex.escape(s.encode()) for s in specials))
        ids = []
        start = 0
        for match in pattern.finditer(data):
            ids += self.encode_text(data[start:match.start()])
            ids.append(self.added[match.group().decode()])
            start = match.end()
        return ids + self.encode_text(data[start:])


def write_ids(path, rows):
    with gzip.GzipFile(path, "wb", mtime=0) as out:
        for row in rows:
            out.write((" ".join(map(str, row)) if row is not None else "-").encode() + b"\n")


def make_oracle():
    strings = read_strings()
    for vocab in ["gpt2", "llama3"]:
        with gzip.open(os.path.join(HERE, f"{vocab}.tokenizer.json.gz"), "rt", encoding="utf-8") as f:
            encoder = Encoder(json.load(f))
        rows = [encoder.encode(s) for s in strings]
        write_ids(os.path.join(HERE, f"{vocab}.encoder-py.ids.gz"), rows)
        # The npm package's ids, where it took the string, must be the same (a disagreement is printed).
        with gzip.open(os.path.join(HERE, f"{vocab}.npm.ids.gz"), "rt") as f:
            npm = [None if line.strip() == "-" else [int(t) for t in line.split()] for line in f]
        differ = [i for i, (a, b) in enumerate(zip(rows, npm)) if b is not None and a != b]
        print(f"{vocab}: {len(strings)} strings, {sum(b is not None for b in npm)} also by the npm package, "
              f"{len(differ)} differ {[strings[i] for i in differ[:5]]}")


def bench(tokenizer_file, text_file, passes):
    """Prints the median MB/s of `passes` encodes of the text (the cache emptied before each pass; loading and the
    regex compile excluded), for bench/bench_tokenizer.cpp."""
    import time
    with gzip.open(tokenizer_file, "rt", encoding="utf-8") as f:
        encoder = Encoder(json.load(f))
    with open(text_file, "rb") as f:
        data = f.read()
    seconds = []
    for _ in range(passes):
        encoder.cache = {}
        start = time.perf_counter()
        encoder.encode(data)
        seconds.append(time.perf_counter() - start)
    print(len(data) / 1e6 / sorted(seconds)[len(seconds) // 2])


if __name__ == "__main__":
    if sys.argv[1:] == ["strings"]:
        make_strings()
    elif sys.argv[1:] == ["oracle"]:
        make_oracle()
    elif sys.argv[1:] == ["spm"]:
        make_spm_inputs()
    elif sys.argv[1:2] == ["bench"] and len(sys.argv) == 5:
        bench(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)

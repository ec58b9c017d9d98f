// treelora/io/checked_folder.hpp: a cache folder whose files are checked before use (the text benchmark's base
// model: config.json, model.safetensors, tokenizer.model; examples/debian_text_stream.cpp).
//   write_folder_manifest: after every file of the folder is written, manifest.json records the format version, the
//                          fingerprint of what made the files (configuration, settings, data) and each file's size
//                          and FNV-1a-64 checksum; it is written last and atomically, so a folder whose writing
//                          stopped has no manifest (or an older one that no longer matches)
//   check_folder_manifest: the reason the folder cannot be used (no manifest, another version, another
//                          fingerprint, a missing, resized or changed file), or an empty string when it can.
// The files stay ordinary files a user opens elsewhere (the model folder loads in transformers as it is).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "treelora/core/hash.hpp"
#include "treelora/io/atomic_file.hpp"

namespace treelora {

inline constexpr int folder_manifest_version = 1;

namespace detail {
inline std::string hex64(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[std::size_t(i)] = digits[v & 15];
  return s;
}
/// FNV-1a-64 of a file's bytes, read in chunks; false when it cannot be read.
inline bool file_checksum(const std::filesystem::path& path, std::uint64_t& size, std::uint64_t& checksum) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::vector<char> chunk(1 << 20);
  checksum = fnv1a64(nullptr, 0), size = 0;
  while (in) {
    in.read(chunk.data(), std::streamsize(chunk.size()));
    const auto got = std::size_t(in.gcount());
    checksum = fnv1a64(chunk.data(), got, checksum), size += got;
  }
  return !in.bad();
}
}  // namespace detail

/// Writes `folder`/manifest.json for `files` (names inside the folder), atomically. Throws std::runtime_error when a
/// file cannot be read.
inline void write_folder_manifest(const std::filesystem::path& folder, std::uint64_t fingerprint,
                                  const std::vector<std::string>& files, const nlohmann::json& notes = nlohmann::json::object()) {
  nlohmann::json m = {{"format", "treelora checked folder"}, {"version", folder_manifest_version},
                      {"fingerprint", detail::hex64(fingerprint)}, {"notes", notes}, {"files", nlohmann::json::object()}};
  for (const auto& name : files) {
    std::uint64_t size = 0, checksum = 0;
    if (!detail::file_checksum(folder / name, size, checksum))
      throw_runtime_error("write_folder_manifest", concat("cannot read ", (folder / name).string()));
    m["files"][name] = {{"bytes", size}, {"fnv1a64", detail::hex64(checksum)}};
  }
  write_file_atomically(folder / "manifest.json", std::string_view(m.dump(2)));
}

/// Why `folder` cannot be used for `fingerprint` (empty: it can). Never throws for a bad folder: a hostile or
/// truncated manifest is a reason like any other.
inline std::string check_folder_manifest(const std::filesystem::path& folder, std::uint64_t fingerprint) {
  const auto path = folder / "manifest.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return concat("no ", path.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const nlohmann::json m = nlohmann::json::parse(text, nullptr, false);
  if (m.is_discarded() || !m.is_object()) return concat(path.string(), " is not JSON");
  const auto version = m.find("version");
  if (version == m.end() || !version->is_number_integer() || version->get<long long>() != folder_manifest_version)
    return concat(path.string(), ": another format version");
  const auto print = m.find("fingerprint");
  if (print == m.end() || !print->is_string() || print->get<std::string>() != detail::hex64(fingerprint))
    return concat(path.string(), ": made from other settings or data (fingerprint)");
  const auto files = m.find("files");
  if (files == m.end() || !files->is_object() || files->empty()) return concat(path.string(), ": no files listed");
  for (const auto& [name, entry] : files->items()) {
    if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos || name == "." || name == "..")
      return concat(path.string(), ": the file name '", name, "' is not a plain name");
    if (!entry.is_object() || !entry.contains("bytes") || !entry.contains("fnv1a64") || !entry["bytes"].is_number_unsigned() ||
        !entry["fnv1a64"].is_string())
      return concat(path.string(), ": the entry of ", name, " is malformed");
    std::uint64_t size = 0, checksum = 0;
    if (!detail::file_checksum(folder / name, size, checksum)) return concat((folder / name).string(), " is missing");
    if (size != entry["bytes"].get<std::uint64_t>()) return concat((folder / name).string(), " has another size");
    if (detail::hex64(checksum) != entry["fnv1a64"].get<std::string>()) return concat((folder / name).string(), " has changed");
  }
  return {};
}

}  // namespace treelora

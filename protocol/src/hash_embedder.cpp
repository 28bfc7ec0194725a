#include "embedrt/protocol/hash_embedder.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace embedrt {

namespace {

constexpr uint64_t fnv_offset = 14695981039346656037ull;
constexpr uint64_t fnv_prime = 1099511628211ull;
constexpr double word_weight = 1.0;
constexpr double ngram_weight = 0.5;

uint64_t fnv1a(std::string_view bytes) {
  uint64_t h = fnv_offset;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= fnv_prime;
  }
  return h;
}

bool is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80;
}

unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c - 'A' + 'a') : c;
}

void add_feature(std::vector<double>& acc, std::string_view feature,
                 double weight) {
  auto h = fnv1a(feature);
  auto bucket = static_cast<std::size_t>(h % acc.size());
  acc[bucket] += (h >> 63) != 0 ? weight : -weight;
}

/// Adds the character 3-grams of "<word>". A character is one UTF-8 code
/// point: a byte that is not a continuation byte (0x80-0xBF) starts one, and
/// the continuation bytes that follow belong to it (a stray continuation byte
/// of invalid UTF-8 is a character of its own).
void add_ngrams(std::vector<double>& acc, std::string_view word,
                std::string& marked, std::vector<std::size_t>& starts) {
  marked.clear();
  marked += '<';
  marked.append(word.data(), word.size());
  marked += '>';
  starts.clear();
  for (std::size_t i = 0; i < marked.size(); ++i) {
    auto c = static_cast<unsigned char>(marked[i]);
    bool continuation = (c & 0xC0) == 0x80;
    bool follows_char
        = i > 0 && static_cast<unsigned char>(marked[i - 1]) >= 0x80;
    if (!continuation || !follows_char)
      starts.push_back(i);
  }
  starts.push_back(marked.size()); // sentinel: end of the last character
  // starts has (characters + 1) entries; "<w>" has at least 3 characters.
  for (std::size_t k = 0; k + 3 < starts.size(); ++k) {
    std::string_view gram{marked.data() + starts[k], starts[k + 3] - starts[k]};
    add_feature(acc, gram, ngram_weight);
  }
}

} // namespace

std::vector<float> hash_embed(std::string_view text, std::size_t dims) {
  if (dims == 0)
    return {};
  std::vector<double> acc(dims, 0.0);
  std::string word;
  std::string marked;
  std::vector<std::size_t> starts;
  auto flush = [&] {
    if (word.empty())
      return;
    add_feature(acc, word, word_weight);
    add_ngrams(acc, word, marked, starts);
    word.clear();
  };
  for (char ch : text) {
    auto c = lower(static_cast<unsigned char>(ch));
    if (is_word_byte(c))
      word += static_cast<char>(c);
    else
      flush();
  }
  flush();
  double norm = 0.0;
  for (double x : acc)
    norm += x * x;
  std::vector<float> result(dims, 0.0f);
  if (norm <= 0.0) {
    // No features (or features that cancel out exactly): the unit vector e0.
    result[0] = 1.0f;
    return result;
  }
  norm = std::sqrt(norm);
  for (std::size_t i = 0; i < dims; ++i)
    result[i] = static_cast<float>(acc[i] / norm);
  return result;
}

double cosine_similarity(const std::vector<float>& a,
                         const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty())
    return 0.0;
  double dot = 0.0;
  double na = 0.0;
  double nb = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  if (na <= 0.0 || nb <= 0.0)
    return 0.0;
  return dot / (std::sqrt(na) * std::sqrt(nb));
}

} // namespace embedrt

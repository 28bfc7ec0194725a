#include "embedrt/protocol/hash_embedder.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using embedrt::cosine_similarity;
using embedrt::hash_embed;

namespace {

double l2_norm(const std::vector<float>& v) {
  double sum = 0.0;
  for (float x : v)
    sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

// An independent rendering of the documented algorithm for a few features.
uint64_t reference_fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::vector<float>
reference_embed(const std::vector<std::pair<std::string, double>>& features,
                std::size_t dims) {
  std::vector<double> acc(dims, 0.0);
  for (const auto& [feature, weight] : features) {
    auto h = reference_fnv1a(feature);
    acc[h % dims] += (h >> 63) != 0 ? weight : -weight;
  }
  double norm = 0.0;
  for (double x : acc)
    norm += x * x;
  norm = std::sqrt(norm);
  std::vector<float> out(dims);
  for (std::size_t i = 0; i < dims; ++i)
    out[i] = static_cast<float>(acc[i] / norm);
  return out;
}

} // namespace

TEST_CASE("hash_embed is deterministic and L2-normalised") {
  auto a = hash_embed("the cat sat on the mat", 256);
  auto b = hash_embed("the cat sat on the mat", 256);
  REQUIRE(a.size() == 256);
  CHECK(a == b);
  CHECK(l2_norm(a) == Approx(1.0).margin(1e-6));
  for (const char* text : {"x", "Hello, World!", "naïve café", "1234 5678",
                           "a much longer text with many different words "
                           "to spread over the buckets"}) {
    auto v = hash_embed(text, 64);
    CHECK(l2_norm(v) == Approx(1.0).margin(1e-6));
  }
}

TEST_CASE("hash_embed honours the requested dimensions") {
  for (std::size_t dims : {1u, 2u, 3u, 8u, 256u, 1536u, 3072u}) {
    auto v = hash_embed("dimension test", dims);
    REQUIRE(v.size() == dims);
    CHECK(l2_norm(v) == Approx(1.0).margin(1e-6));
  }
  CHECK(hash_embed("anything", 0).empty());
}

TEST_CASE("hash_embed follows the documented feature hashing") {
  // "Cat!" -> word "cat" (1.0) and 3-grams of "<cat>" (0.5 each).
  auto expected = reference_embed(
      {{"cat", 1.0}, {"<ca", 0.5}, {"cat", 0.5}, {"at>", 0.5}}, 16);
  CHECK(hash_embed("Cat!", 16) == expected);
  // Two words, split on punctuation; "a" gives the single 3-gram "<a>".
  auto two = reference_embed(
      {{"a", 1.0}, {"<a>", 0.5}, {"b2", 1.0}, {"<b2", 0.5}, {"b2>", 0.5}}, 32);
  CHECK(hash_embed("A, b2", 32) == two);
  // UTF-8 bytes stay in words; 3-grams count code points ("é" is 2 bytes).
  auto utf8 = reference_embed({{"\xC3\xA9t\xC3\xA9", 1.0},
                               {"<\xC3\xA9t", 0.5},
                               {"\xC3\xA9t\xC3\xA9", 0.5},
                               {"t\xC3\xA9>", 0.5}},
                              64);
  CHECK(hash_embed("\xC3\xA9t\xC3\xA9", 64) == utf8);
}

TEST_CASE("hash_embed is case-insensitive and ignores punctuation") {
  CHECK(hash_embed("The Cat", 128) == hash_embed("the cat", 128));
  CHECK(hash_embed("the, cat!", 128) == hash_embed("the cat", 128));
  CHECK(hash_embed("the cat", 128) != hash_embed("the dog", 128));
}

TEST_CASE("hash_embed maps a text without features to e0") {
  for (const char* text : {"", "   ", "!?-"}) {
    auto v = hash_embed(text, 8);
    REQUIRE(v.size() == 8);
    CHECK(v[0] == 1.0f);
    for (std::size_t i = 1; i < v.size(); ++i)
      CHECK(v[i] == 0.0f);
  }
}

TEST_CASE("lexically similar texts are closer than unrelated ones") {
  for (std::size_t dims : {64u, 256u, 1536u}) {
    auto a = hash_embed("the cat sat on the mat", dims);
    auto b = hash_embed("the cat sat on a mat", dims);
    auto c = hash_embed("quantum chromodynamics lecture notes", dims);
    auto similar = cosine_similarity(a, b);
    CHECK(similar > cosine_similarity(a, c));
    CHECK(similar > cosine_similarity(b, c));
    CHECK(similar > 0.7);
    CHECK(cosine_similarity(a, a) == Approx(1.0).margin(1e-6));
  }
}

TEST_CASE("cosine_similarity handles degenerate inputs") {
  std::vector<float> zero(4, 0.0f);
  std::vector<float> unit{1.0f, 0.0f, 0.0f, 0.0f};
  CHECK(cosine_similarity(zero, unit) == 0.0);
  CHECK(cosine_similarity(unit, {1.0f, 0.0f}) == 0.0);
  CHECK(cosine_similarity({}, {}) == 0.0);
  CHECK(cosine_similarity(unit, {-2.0f, 0.0f, 0.0f, 0.0f}) == Approx(-1.0));
}

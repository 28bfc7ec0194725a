#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/packed_vectors.hpp"

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/sec.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace embedrt;

namespace {

using vectors = std::vector<std::vector<float>>;

uint32_t bits_of(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

/// The bit patterns of `xs` (NaN != NaN, and -0.0 == 0.0, so floats cannot be
/// compared directly).
std::vector<std::vector<uint32_t>> bits_of(const vectors& xs) {
  std::vector<std::vector<uint32_t>> result;
  for (const auto& x : xs) {
    auto& row = result.emplace_back();
    for (auto f : x)
      row.push_back(bits_of(f));
  }
  return result;
}

vectors make_vectors(size_t count, size_t dim) {
  vectors xs(count, std::vector<float>(dim));
  for (size_t i = 0; i < count; ++i)
    for (size_t j = 0; j < dim; ++j)
      xs[i][j] = static_cast<float>(std::sin(static_cast<double>(i * dim + j)))
          / 39.2f;
  return xs;
}

std::vector<char> serialize(embed_result x) {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  auto err = sink(x);
  REQUIRE_FALSE(err);
  return buf;
}

embed_result deserialize(const std::vector<char>& buf) {
  embed_result y;
  caf::binary_deserializer source{nullptr, buf};
  auto err = source(y);
  REQUIRE_FALSE(err);
  CHECK(source.remaining() == 0);
  return y;
}

embed_result sample(vectors xs) {
  embed_result x;
  x.model = "text-embedding-3-small";
  x.embeddings = std::move(xs);
  x.usage = {12, 12};
  x.upstream = "primary";
  x.request_id = "req-7";
  return x;
}

void check_round_trip(const vectors& xs) {
  auto y = deserialize(serialize(sample(xs)));
  CHECK(bits_of(y.embeddings) == bits_of(xs));
  CHECK(y.model == "text-embedding-3-small");
  CHECK(y.usage.prompt_tokens == 12);
  CHECK(y.usage.total_tokens == 12);
  CHECK(y.upstream == "primary");
  CHECK(y.request_id == "req-7");
}

/// A little-endian uint32 as bytes.
std::string le32(uint32_t x) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i)
    out[i] = static_cast<char>((x >> (8 * i)) & 0xFF);
  return out;
}

/// Reads `blob` (written as the CAF string it travels as) as packed vectors
/// into `out`.
caf::error read_blob(const std::string& blob, vectors& out) {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  auto copy = blob;
  REQUIRE_FALSE(sink(copy));
  caf::binary_deserializer source{nullptr, buf};
  packed_vectors packed{out};
  return source(packed);
}

} // namespace

TEST_CASE("packed vectors round-trip through CAF's binary serializer",
          "[packed_vectors]") {
  SECTION("no vectors") {
    check_round_trip({});
  }
  SECTION("empty vectors only") {
    check_round_trip({{}, {}, {}});
  }
  SECTION("ragged dims") {
    check_round_trip(
        {{0.25f, -0.5f, 1e-30f}, {}, {3.0f}, make_vectors(1, 7)[0]});
  }
  SECTION("1 x 8") {
    check_round_trip(make_vectors(1, 8));
  }
  SECTION("64 x 1536") {
    check_round_trip(make_vectors(64, 1536));
  }
}

TEST_CASE("packed vectors keep the bit pattern of every float",
          "[packed_vectors]") {
  const auto inf = std::numeric_limits<float>::infinity();
  vectors xs{{
      -0.0f,
      0.0f,
      inf,
      -inf,
      std::numeric_limits<float>::quiet_NaN(),
      from_bits(0x7FC00001), // quiet NaN with a payload
      from_bits(0xFFA00005), // negative signalling NaN with a payload
      std::numeric_limits<float>::denorm_min(),
      -std::numeric_limits<float>::min(),
      std::numeric_limits<float>::max(),
      std::numeric_limits<float>::lowest(),
  }};
  auto y = deserialize(serialize(sample(xs)));
  REQUIRE(y.embeddings.size() == 1);
  CHECK(bits_of(y.embeddings) == bits_of(xs));
  CHECK(std::signbit(y.embeddings[0][0]));
  CHECK(std::isinf(y.embeddings[0][2]));
}

TEST_CASE("packed vectors have the documented wire layout",
          "[packed_vectors]") {
  vectors xs{{1.0f, -2.0f}, {}, {0.5f}};
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  packed_vectors packed{xs};
  REQUIRE_FALSE(sink(packed));
  // One CAF string: its varbyte length, then format 1, the count, the dims
  // and the floats, all little-endian.
  std::string blob = std::string(1, '\x01') + le32(3) + le32(2) + le32(0)
      + le32(1) + le32(0x3F800000) + le32(0xC0000000) + le32(0x3F000000);
  REQUIRE(blob.size() == 29);
  std::string expected = std::string(1, static_cast<char>(29)) + blob;
  CHECK(std::string(buf.begin(), buf.end()) == expected);
}

TEST_CASE("malformed packed vectors are rejected", "[packed_vectors]") {
  const vectors before{{42.0f}};
  auto out = before;
  auto rejects = [&](const std::string& blob) {
    out = before;
    auto err = read_blob(blob, out);
    CHECK(err == caf::sec::invalid_argument);
    // The vectors are left untouched.
    CHECK(out == before);
  };
  const auto one = le32(0x3F800000);
  SECTION("a well-formed blob is accepted") {
    REQUIRE_FALSE(read_blob("\x01" + le32(2) + le32(1) + le32(0) + one, out));
    CHECK(out == vectors{{1.0f}, {}});
  }
  SECTION("empty blob") {
    rejects("");
  }
  SECTION("header cut short") {
    rejects("\x01" + le32(0).substr(0, 3));
  }
  SECTION("unknown format") {
    rejects("\x02" + le32(1) + le32(1) + one);
  }
  SECTION("absurd count") {
    rejects("\x01" + le32(0xFFFFFFFF) + le32(1) + one);
  }
  SECTION("count beyond the dims present") {
    rejects("\x01" + le32(3) + le32(1) + le32(0));
  }
  SECTION("absurd dim") {
    rejects("\x01" + le32(1) + le32(0xFFFFFFFF) + one);
  }
  SECTION("dims larger than the values") {
    rejects("\x01" + le32(1) + le32(2) + one);
  }
  SECTION("dims smaller than the values") {
    rejects("\x01" + le32(1) + le32(1) + one + one);
  }
  SECTION("values not a whole number of floats") {
    rejects("\x01" + le32(1) + le32(1) + one + std::string(1, '\0'));
  }
}

TEST_CASE("a truncated embed_result fails to deserialize", "[packed_vectors]") {
  auto buf = serialize(sample(make_vectors(4, 16)));
  // Cut inside the blob: CAF's string reader finds too few bytes.
  buf.resize(buf.size() / 2);
  embed_result y;
  caf::binary_deserializer source{nullptr, buf};
  CHECK(source(y) == caf::sec::end_of_stream);
}

TEST_CASE("an embed_result with a malformed blob fails to deserialize",
          "[packed_vectors]") {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  std::string model = "m";
  std::string blob = "\x01" + le32(1000000) + le32(1);
  token_usage usage{1, 1};
  std::string upstream = "u";
  std::string request_id = "r";
  REQUIRE_FALSE(sink(model, blob, usage, upstream, request_id));
  embed_result y;
  caf::binary_deserializer source{nullptr, buf};
  CHECK(source(y) == caf::sec::invalid_argument);
}

TEST_CASE("to_string shows an embed_result's vectors, not the blob",
          "[packed_vectors]") {
  auto x = sample({{0.5f, -1.0f}, {}});
  auto str = caf::deep_to_string(x);
  CHECK(str.find("[[0.5") != std::string::npos);
  CHECK(str.find("-1") != std::string::npos);
  CHECK(str.find("req-7") != std::string::npos);
}

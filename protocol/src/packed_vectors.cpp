#include "embedrt/protocol/packed_vectors.hpp"

#include <caf/sec.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace embedrt {

namespace {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "packed_vectors carries floats as IEEE-754 binary32");

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr bool host_is_little_endian = true;
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr bool host_is_little_endian = false;
#else
#  error "packed_vectors: unknown byte order"
#endif

constexpr uint8_t format_v1 = 1;
constexpr size_t format_size = 1;
constexpr size_t count_size = 4;
constexpr size_t dim_size = 4;
constexpr size_t value_size = 4;

caf::error malformed(const char* what) {
  return caf::make_error(caf::sec::invalid_argument,
                         std::string{"embedrt.packed_vectors: "} + what);
}

void put_u32(char* out, uint32_t x) {
  for (int i = 0; i < 4; ++i)
    out[i] = static_cast<char>((x >> (8 * i)) & 0xFF);
}

uint32_t get_u32(const char* in) {
  uint32_t x = 0;
  for (int i = 0; i < 4; ++i)
    x |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return x;
}

/// Copies `n` floats to little-endian bytes (one memcpy on a little-endian
/// host).
void put_floats(char* out, const float* xs, size_t n) {
  if constexpr (host_is_little_endian) {
    if (n > 0)
      std::memcpy(out, xs, n * value_size);
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t bits;
      std::memcpy(&bits, xs + i, value_size);
      put_u32(out + i * value_size, bits);
    }
  }
}

/// Copies `n` little-endian floats into `xs`.
void get_floats(const char* in, float* xs, size_t n) {
  if constexpr (host_is_little_endian) {
    if (n > 0)
      std::memcpy(xs, in, n * value_size);
  } else {
    for (size_t i = 0; i < n; ++i) {
      auto bits = get_u32(in + i * value_size);
      std::memcpy(xs + i, &bits, value_size);
    }
  }
}

/// The blob's size for `xs`, or 0 if a count or length exceeds 32 bits.
size_t packed_size(const std::vector<std::vector<float>>& xs) {
  constexpr auto u32_max = std::numeric_limits<uint32_t>::max();
  if (xs.size() > u32_max)
    return 0;
  size_t size = format_size + count_size + xs.size() * dim_size;
  for (const auto& x : xs) {
    if (x.size() > u32_max)
      return 0;
    size += x.size() * value_size;
  }
  return size;
}

caf::error pack(const std::vector<std::vector<float>>& xs, std::string& blob) {
  auto size = packed_size(xs);
  if (size == 0 || size > std::numeric_limits<uint32_t>::max())
    return malformed("vectors too large for one message");
  blob.resize(size);
  auto* out = blob.data();
  *out++ = static_cast<char>(format_v1);
  put_u32(out, static_cast<uint32_t>(xs.size()));
  out += count_size;
  for (const auto& x : xs) {
    put_u32(out, static_cast<uint32_t>(x.size()));
    out += dim_size;
  }
  for (const auto& x : xs) {
    put_floats(out, x.data(), x.size());
    out += x.size() * value_size;
  }
  return caf::none;
}

/// Reads the dims of a blob after checking that they fit in it and that the
/// values they announce fill the rest of it exactly.
caf::error unpack_dims(const std::string& blob, std::vector<uint32_t>& dims) {
  if (blob.size() < format_size + count_size)
    return malformed("blob shorter than its header");
  if (static_cast<uint8_t>(blob[0]) != format_v1)
    return malformed("unknown format");
  auto count = get_u32(blob.data() + format_size);
  auto rest = blob.size() - format_size - count_size;
  if (count > rest / dim_size)
    return malformed("more vectors than the blob can hold");
  rest -= size_t{count} * dim_size;
  const auto* in = blob.data() + format_size + count_size;
  dims.resize(count);
  uint64_t values = 0;
  for (auto& dim : dims) {
    dim = get_u32(in);
    in += dim_size;
    values += dim; // fewer than 2^32 dims below 2^32 each: no overflow
  }
  if (rest % value_size != 0 || values != rest / value_size)
    return malformed("vector lengths do not match the blob size");
  return caf::none;
}

caf::error unpack(const std::string& blob,
                  std::vector<std::vector<float>>& xs) {
  std::vector<uint32_t> dims;
  if (auto err = unpack_dims(blob, dims))
    return err;
  const auto* in
      = blob.data() + format_size + count_size + dims.size() * dim_size;
  std::vector<std::vector<float>> result(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    result[i].resize(dims[i]);
    get_floats(in, result[i].data(), dims[i]);
    in += size_t{dims[i]} * value_size;
  }
  xs = std::move(result);
  return caf::none;
}

} // namespace

caf::error inspect(caf::serializer& f, packed_vectors& x) {
  std::string blob;
  if (auto err = pack(x.vectors, blob))
    return err;
  return f(blob);
}

caf::error inspect(caf::deserializer& f, packed_vectors& x) {
  std::string blob;
  if (auto err = f(blob))
    return err;
  return unpack(blob, x.vectors);
}

} // namespace embedrt

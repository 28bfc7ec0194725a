// The wire form of embedding vectors: one packed blob instead of CAF's
// element-by-element encoding (docs/architecture.md, "The type-ID block").
//
// CAF 0.17's binary serializer writes a `std::vector<float>` one element at a
// time, through two virtual calls and a software IEEE-754 conversion per
// float (it also turns -0.0 into 0.0 and never returns from an infinity).
// `embed_result`'s inspect() hands CAF's (de)serializers a `packed_vectors`
// instead, which travels as one CAF string:
//
//   uint8  format        always 1
//   uint32 count         number of vectors
//   uint32 dims[count]   length of each vector
//   float32 values[...]  the vectors one after the other (sum of dims)
//
// all little-endian, the floats as their IEEE-754 bit patterns (NaN payloads,
// -0.0 and infinities kept). Every other inspector (to_string, ...) sees the
// plain vectors.
#pragma once

#include <caf/deserializer.hpp>
#include <caf/error.hpp>
#include <caf/serializer.hpp>
#include <type_traits>
#include <vector>

namespace embedrt {

/// A list of float vectors as CAF's (de)serializers see it.
struct packed_vectors {
  std::vector<std::vector<float>>& vectors;
};

/// Writes the vectors as one blob; fails if the blob would exceed 4 GiB
/// (CAF's sequence sizes are 32-bit).
caf::error inspect(caf::serializer& f, packed_vectors& x);

/// Reads a blob; a malformed one (unknown format, lengths that do not add up
/// to its size) fails with `sec::invalid_argument` and leaves the vectors
/// untouched. Allocates no more than the blob's size implies.
caf::error inspect(caf::deserializer& f, packed_vectors& x);

/// What `inspect` passes to `Inspector` for a list of vectors: the packed
/// form for CAF's binary (de)serializers, the vectors themselves otherwise.
template <class Inspector>
decltype(auto) wire_form(std::vector<std::vector<float>>& xs) {
  if constexpr (
      std::is_base_of_v<
          caf::serializer,
          Inspector> || std::is_base_of_v<caf::deserializer, Inspector>)
    return packed_vectors{xs};
  else
    return (xs);
}

} // namespace embedrt

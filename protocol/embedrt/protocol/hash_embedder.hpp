// The deterministic lexical embedder of the built-in upstream (`embedrt mock`,
// the embedded default). It is honest about being lexical, not semantic:
// texts that share words and character n-grams are close, nothing more.
//
// Algorithm (stable; tests compute expected vectors with it):
// 1. Lower-case ASCII letters; split into words on every byte that is not an
//    ASCII letter or digit and not >= 0x80 (UTF-8 bytes stay in words).
// 2. Features: every word (weight 1.0) and every character 3-gram of
//    "<word>" with boundary markers (weight 0.5) — e.g. "cat" gives "cat",
//    "<ca", "cat", "at>".
// 3. Each feature is hashed with 64-bit FNV-1a; bucket = hash % dims, sign =
//    +1 if bit 63 is set, else -1; the bucket accumulates sign * weight.
// 4. The vector is L2-normalised. A text with no features (white space or
//    punctuation alone, a valid input) maps to the unit vector e0.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace embedrt {

/// Embeds `text` into `dims` dimensions (dims >= 1) as described above.
std::vector<float> hash_embed(std::string_view text, std::size_t dims);

/// Cosine similarity of two equally long vectors (0 if either is zero).
double cosine_similarity(const std::vector<float>& a,
                         const std::vector<float>& b);

} // namespace embedrt

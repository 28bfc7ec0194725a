// The set of record ids already in an `embedrt embed` output (read back at
// start when resuming): exact, and compact enough for millions of ids.
//
// Ids are kept as their canonical JSON text (`"doc-7"` or `42`, see
// jsonl_input.hpp) in one append-only arena; an open-addressing table of
// (hash, offset) slots indexes them. Memory is about 32 bytes per id plus the
// id's own bytes (+ 4 for its length), against ~100 for a
// std::unordered_set<std::string>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::app::embed {

class id_set {
 public:
  id_set();

  /// Adds `id`; returns false if it was already in the set.
  bool insert(std::string_view id);

  bool contains(std::string_view id) const;

  std::size_t size() const noexcept {
    return size_;
  }

 private:
  struct slot {
    uint64_t hash = 0;
    /// Offset of the id in `arena_` + 1 (0: empty slot).
    uint64_t offset = 0;
  };

  static uint64_t hash_of(std::string_view id) noexcept;
  std::string_view at(uint64_t offset) const noexcept;
  /// The slot holding `id`, or the empty slot where it belongs.
  std::size_t find_slot(std::string_view id, uint64_t h) const noexcept;
  void grow();

  std::vector<slot> slots_;
  std::string arena_;
  std::size_t size_ = 0;
};

} // namespace embedrt::app::embed

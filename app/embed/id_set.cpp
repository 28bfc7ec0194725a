#include "embed/id_set.hpp"

#include <cstring>

namespace embedrt::app::embed {

id_set::id_set() : slots_(1024) {
  // nop
}

uint64_t id_set::hash_of(std::string_view id) noexcept {
  // 64-bit FNV-1a, then a final avalanche (splitmix64's) so that the low
  // bits used for the bucket depend on every byte.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : id) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

std::string_view id_set::at(uint64_t offset) const noexcept {
  uint32_t len = 0;
  std::memcpy(&len, arena_.data() + offset - 1, sizeof(len));
  return {arena_.data() + offset - 1 + sizeof(len), len};
}

std::size_t id_set::find_slot(std::string_view id, uint64_t h) const noexcept {
  auto mask = slots_.size() - 1;
  for (auto i = static_cast<std::size_t>(h) & mask;; i = (i + 1) & mask) {
    const auto& s = slots_[i];
    if (s.offset == 0 || (s.hash == h && at(s.offset) == id))
      return i;
  }
}

bool id_set::contains(std::string_view id) const {
  return slots_[find_slot(id, hash_of(id))].offset != 0;
}

bool id_set::insert(std::string_view id) {
  auto h = hash_of(id);
  auto i = find_slot(id, h);
  if (slots_[i].offset != 0)
    return false;
  auto len = static_cast<uint32_t>(id.size());
  auto offset = arena_.size() + 1;
  arena_.append(reinterpret_cast<const char*>(&len), sizeof(len));
  arena_.append(id);
  slots_[i] = slot{h, offset};
  // Load factor <= 1/2 keeps probe sequences short.
  if (++size_ * 2 > slots_.size())
    grow();
  return true;
}

void id_set::grow() {
  std::vector<slot> old(slots_.size() * 2);
  old.swap(slots_);
  auto mask = slots_.size() - 1;
  for (const auto& s : old) {
    if (s.offset == 0)
      continue;
    auto i = static_cast<std::size_t>(s.hash) & mask;
    while (slots_[i].offset != 0)
      i = (i + 1) & mask;
    slots_[i] = s;
  }
}

} // namespace embedrt::app::embed

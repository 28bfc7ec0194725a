#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/message.hpp>
#include <cstdio>
#include <utility>
#include <vector>

namespace embedrt {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::embedrt>();
  cfg.add_error_category(error_category(),
                         [](uint8_t code, caf::atom_value,
                            const caf::message& ctx) -> std::string {
                           auto err = caf::error{code, error_category(), ctx};
                           return render_error(err);
                         });
}

namespace {

/// FNV-1a, 64 bits: stable across builds and platforms.
struct fnv1a {
  uint64_t h = 14695981039346656037ull;
  void add(const void* data, std::size_t n) {
    auto p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
  void add(const std::string& s) {
    add(s.data(), s.size());
    add("\0", 1);
  }
};

/// Hashes the name of type N and what the binary serializer writes for a
/// default value of it.
template <caf::type_id_t N>
void add_type(fnv1a& hash) {
  using type = typename caf::type_by_id<N>::type;
  hash.add(std::string{caf::type_name_by_id<N>::value});
  type value{};
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  if (auto err = sink(value))
    hash.add(std::string{"unserializable"});
  hash.add(buf.data(), buf.size());
}

template <caf::type_id_t Begin, std::size_t... Is>
void add_types(fnv1a& hash, std::index_sequence<Is...>) {
  (add_type<static_cast<caf::type_id_t>(Begin + Is)>(hash), ...);
}

std::string make_fingerprint() {
  using block = caf::id_block::embedrt;
  constexpr std::size_t count = block::end - block::begin;
  fnv1a hash;
  add_types<block::begin>(hash, std::make_index_sequence<count>{});
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(hash.h));
  return "embedrt-wire/" + std::to_string(wire_version)
      + " offset=" + std::to_string(block::begin)
      + " types=" + std::to_string(count) + " hash=" + hex;
}

} // namespace

const std::string& wire_fingerprint() {
  static const std::string fp = make_fingerprint();
  return fp;
}

} // namespace embedrt

// What the readers of a config file share (app/node_config.cpp,
// app/node_config_serve.cpp): its sections, and the resolver that picks each
// setting from flag > environment > file and checks its value. Private to
// embedrt_node_config.
#pragma once

#include "cli_args.hpp"
#include "node_config.hpp"

#include <cctype>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace embedrt::app::detail {

inline constexpr uint32_t max_connections = 4096;
inline constexpr int64_t max_ms = 86'400'000;

/// One `key = value` line.
struct entry {
  std::string value;
  int line = 0;
};

/// A section: the global one (name ""), [serve] or [upstream NAME].
struct section {
  std::string name;
  int line = 0;
  std::map<std::string, entry> keys;

  const entry* find(const std::string& key) const {
    auto i = keys.find(key);
    return i == keys.end() ? nullptr : &i->second;
  }
};

/// A value with where it came from ("--connections", "EMBEDRT_CONNECTIONS",
/// "FILE:LINE: connections").
struct candidate {
  std::string value;
  std::string where;
};

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

inline std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto item = trim(text.substr(0, comma));
    if (!item.empty())
      out.emplace_back(item);
    if (comma == std::string_view::npos)
      break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

/// Resolves settings in precedence order and collects the first error.
class resolver {
 public:
  /// `path`: the config file's name, for the errors ("" without a file).
  resolver(const cli::arg_parser& p, const environment& env, std::string path)
      : p_(p), env_(env), path_(std::move(path)) {
    // nop
  }

  /// The highest-precedence candidate among the flag, the environment
  /// variable and the file entries (most specific first). Empty environment
  /// values count as unset.
  std::optional<candidate>
  pick(const char* flag, const char* env_var,
       std::initializer_list<std::pair<const section*, const char*>> files)
      const {
    if (flag != nullptr)
      if (auto v = p_.value(flag))
        return candidate{*v, std::string{"--"} + flag};
    if (env_var != nullptr)
      if (auto v = env_.get(env_var); v && !v->empty())
        return candidate{*v, env_var};
    for (const auto& [sec, key] : files)
      if (sec != nullptr)
        if (auto e = sec->find(key))
          return candidate{e->value,
                           path_ + ":" + std::to_string(e->line) + ": " + key};
    return std::nullopt;
  }

  template <class T>
  bool integer(const std::optional<candidate>& c, T& out, T min, T max) {
    if (!c)
      return true;
    T x{};
    if (!cli::parse_number(c->value, x) || x < min || x > max)
      return fail(c->where + ": '" + c->value + "' is not an integer in ["
                  + std::to_string(min) + ", " + std::to_string(max) + "]");
    out = x;
    return true;
  }

  bool boolean(const std::optional<candidate>& c, bool& out) {
    if (!c)
      return true;
    if (c->value == "true" || c->value == "yes" || c->value == "on"
        || c->value == "1")
      out = true;
    else if (c->value == "false" || c->value == "no" || c->value == "off"
             || c->value == "0")
      out = false;
    else
      return fail(c->where + ": '" + c->value
                  + "' is not a boolean (true or false)");
    return true;
  }

  bool millis(const std::optional<candidate>& c, std::chrono::milliseconds& out,
              int64_t min, int64_t max) {
    int64_t ms = out.count();
    if (!integer(c, ms, min, max))
      return false;
    out = std::chrono::milliseconds{ms};
    return true;
  }

  bool fail(std::string msg) {
    if (error.empty())
      error = std::move(msg);
    return false;
  }

  std::string error;

 private:
  const cli::arg_parser& p_;
  const environment& env_;
  std::string path_;
};

// -- the readers of node_config_serve.cpp -------------------------------------

/// The [serve] settings but the client token (listen address, body limit,
/// grace period, CORS, TLS, limits). `sv` is null without a [serve] section.
void read_serve(resolver& r, const section* sv, serve_config& out);

/// The [cluster] settings and their flags. `cl` is null without a [cluster]
/// section.
void read_cluster(resolver& r, const cli::arg_parser& p, const section* cl,
                  cluster_config& out);

/// The client token of a single-client gateway. `path`: the config file.
/// Returns an error message or "".
std::string read_auth_token(const resolver& r, const environment& env,
                            const std::string& path, const section* sv,
                            serve_config& out);

/// The [client NAME] sections. Returns an error message or "".
std::string read_clients(resolver& r, const environment& env,
                         const std::string& path,
                         const std::vector<section>& clients,
                         serve_config& out);

} // namespace embedrt::app::detail

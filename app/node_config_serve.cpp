// The readers of the gateway's settings: [serve] (listener, limits, TLS),
// [cluster] (publishing, peers, TLS between nodes), the client tokens and the
// [client NAME] sections (docs/cli.md, "Configuration").
#include "embedrt/distributed.hpp"
#include "node_config_detail.hpp"

namespace embedrt::app::detail {

/// The [serve] keys of the front end's limits (config file only; see
/// docs/security.md): header size, idle and request timeouts, connections,
/// and how much of an upstream's error reaches clients.
namespace {

void read_serve_limits(resolver& r, const section* sv, serve_config& out) {
  auto key = [&](const char* name) {
    return r.pick(nullptr, nullptr, {{sv, name}});
  };
  r.integer(key("max_header_bytes"), out.max_header_bytes, std::size_t{1024},
            std::size_t{1} << 20);
  r.millis(key("idle_timeout_ms"), out.idle_timeout, 1, max_ms);
  r.millis(key("request_timeout_ms"), out.request_timeout, 1, max_ms);
  r.integer(key("max_connections"), out.max_connections, std::size_t{0},
            std::size_t{1'000'000});
  r.integer(key("response_budget_bytes"), out.response_budget_bytes,
            uint64_t{0}, uint64_t{1} << 48);
  if (auto c = key("upstream_error_detail")) {
    if (c->value == "full" || c->value == "message")
      out.full_upstream_errors = c->value == "full";
    else
      r.fail(c->where + ": '" + c->value
             + "' is not an upstream error detail (message, full)");
  }
}

} // namespace

/// The [serve] settings but the client token: listen address, body limit,
/// grace period. `sv` is null without a [serve] section.
void read_serve(resolver& r, const section* sv, serve_config& out) {
  if (auto c = r.pick("listen", "EMBEDRT_LISTEN", {{sv, "listen"}}))
    out.listen = c->value;
  r.integer(r.pick("max-body-bytes", "EMBEDRT_MAX_BODY_BYTES",
                   {{sv, "max_body_bytes"}}),
            out.max_body_bytes, std::size_t{64}, std::size_t{1} << 32);
  r.millis(r.pick("grace-ms", "EMBEDRT_GRACE_MS", {{sv, "grace_ms"}}),
           out.grace, 0, max_ms);
  if (auto c = r.pick("cors-origins", "EMBEDRT_CORS_ORIGINS",
                      {{sv, "cors_origins"}})) {
    out.cors_origins = split_list(c->value);
    if (out.cors_origins.empty())
      r.fail(c->where + ": empty list of origins");
    for (const auto& o : out.cors_origins)
      if (o != "*" && o.find("://") == std::string::npos)
        r.fail(c->where + ": '" + o
               + "' is not an origin (scheme://host[:port], or *)");
  }
  if (auto c = r.pick("tls-cert", nullptr, {{sv, "tls_certificate"}}))
    out.tls_certificate = c->value;
  if (auto c = r.pick("tls-key", nullptr, {{sv, "tls_key"}}))
    out.tls_key = c->value;
  if (out.tls_certificate.empty() != out.tls_key.empty())
    r.fail("TLS on the listener needs both --tls-cert and --tls-key (or "
           "tls_certificate and tls_key in [serve])");
  read_serve_limits(r, sv, out);
}

/// The [cluster] settings and their flags: where to publish, the peers
/// (each checked as HOST:PORT) and TLS between nodes (all three files or
/// none). `cl` is null without a [cluster] section.
void read_cluster(resolver& r, const cli::arg_parser& p, const section* cl,
                  cluster_config& out) {
  r.integer(r.pick("caf-port", "EMBEDRT_CAF_PORT", {{cl, "caf_port"}}),
            out.caf_port, uint16_t{0}, uint16_t{65535});
  if (auto c = r.pick("caf-bind", "EMBEDRT_CAF_BIND", {{cl, "caf_bind"}}))
    out.caf_bind = c->value;
  std::string where = "--peer";
  if (auto flags = p.values("peer"); !flags.empty()) {
    out.peers = flags;
  } else if (auto c = r.pick(nullptr, "EMBEDRT_PEERS", {{cl, "peers"}})) {
    out.peers = split_list(c->value);
    where = c->where;
  }
  for (const auto& peer : out.peers)
    if (auto addr = parse_peer(peer); !addr)
      r.fail(where + ": " + error_detail(addr.error()));
  auto file_of = [&](const char* flag, const char* key, std::string& dst) {
    if (auto c = r.pick(flag, nullptr, {{cl, key}}))
      dst = c->value;
  };
  file_of("caf-tls-cert", "tls_certificate", out.tls_certificate);
  file_of("caf-tls-key", "tls_key", out.tls_key);
  file_of("caf-tls-ca", "tls_ca_file", out.tls_ca_file);
  int given = !out.tls_certificate.empty() + !out.tls_key.empty()
      + !out.tls_ca_file.empty();
  if (given != 0 && given != 3)
    r.fail("TLS between nodes needs all of --caf-tls-cert, --caf-tls-key and "
           "--caf-tls-ca (or tls_certificate, tls_key, tls_ca_file in "
           "[cluster])");
  r.millis(r.pick("status-interval-ms", nullptr, {{cl, "status_interval_ms"}}),
           out.status_interval, 10, 60'000);
}

/// The client token: from the variable named by --auth-token-env (which must
/// then be set), else [serve] auth_token_env (likewise), else
/// EMBEDRT_AUTH_TOKEN if set, else an explicit [serve] auth_token. Returns an
/// error message or "".
std::string read_auth_token(const resolver& r, const environment& env,
                            const std::string& path, const section* sv,
                            serve_config& out) {
  if (auto c = r.pick("auth-token-env", nullptr, {{sv, "auth_token_env"}})) {
    if (c->value.empty())
      return c->where + ": empty variable name";
    out.auth_token_env = c->value;
    auto token = env.get(c->value);
    if (!token || token->empty())
      return c->where + ": environment variable " + c->value
          + " is not set or empty";
    out.auth_token = *token;
  } else if (auto token = env.get(out.auth_token_env);
             token && !token->empty()) {
    out.auth_token = *token;
  } else if (auto e = sv ? sv->find("auth_token") : nullptr) {
    if (e->value.empty())
      return path + ":" + std::to_string(e->line) + ": auth_token: empty token";
    out.auth_token = e->value;
  }
  return {};
}

/// The [client NAME] sections: each one's token (from `token_env`, which
/// must be set, or `token`) and limits; names and tokens unique, and the
/// name "default" taken by a single `auth_token`. Returns an error message
/// or "".
std::string read_clients(resolver& r, const environment& env,
                         const std::string& path,
                         const std::vector<section>& clients,
                         serve_config& out) {
  auto where = [&](const section& s, const char* key) {
    return path + ":" + std::to_string(s.find(key)->line) + ": " + key;
  };
  for (const auto& s : clients) {
    client_config c;
    c.name = s.name;
    if (auto e = s.find("token_env")) {
      if (e->value.empty())
        return where(s, "token_env") + ": empty variable name";
      auto token = env.get(e->value);
      if (!token || token->empty())
        return where(s, "token_env") + ": environment variable " + e->value
            + " is not set or empty";
      c.token = *token;
    } else {
      c.token = s.find("token")->value;
      if (c.token.empty())
        return where(s, "token") + ": empty token";
    }
    auto key = [&](const char* name) {
      return r.pick(nullptr, nullptr, {{&s, name}});
    };
    if (!r.integer(key("rpm"), c.rpm, uint64_t{0}, uint64_t{1'000'000'000})
        || !r.integer(key("tpm"), c.tpm, uint64_t{0},
                      uint64_t{1'000'000'000'000}))
      return r.error;
    for (const auto& other : out.clients)
      if (other.token == c.token)
        return path + ":" + std::to_string(s.line) + ": clients " + other.name
            + " and " + c.name + " have the same token";
    out.clients.push_back(std::move(c));
  }
  if (!out.auth_token.empty()) {
    for (const auto& c : out.clients) {
      if (c.name == "default")
        return "[client default] and a single client token (auth_token_env, "
               "auth_token, EMBEDRT_AUTH_TOKEN) both name the client "
               "'default'";
      if (c.token == out.auth_token)
        return "client " + c.name
            + " has the same token as the single client token";
    }
  }
  return {};
}

} // namespace embedrt::app::detail

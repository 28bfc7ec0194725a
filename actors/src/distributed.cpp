// Publishing, connecting and the wire handshake (embedrt/distributed.hpp).
#include "embedrt/distributed.hpp"

#include "distributed_detail.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/detail/type_list.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/publish.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <fstream>

namespace embedrt {

namespace {

caf::error check_readable(const std::string& what, const std::string& path) {
  if (path.empty())
    return make_error(errc::invalid_input,
                      "TLS between nodes needs " + what + " (none given)");
  std::ifstream in{path};
  if (!in)
    return make_error(errc::invalid_input,
                      "TLS between nodes: cannot read " + what + " '" + path
                          + "'");
  return caf::none;
}

} // namespace

caf::error enable_distribution(caf::actor_system_config& cfg,
                               const node_tls_config& tls) {
  cfg.load<caf::io::middleman>();
  // CAF sends no heartbeats by default: a node that vanishes without closing
  // its connections (power, network partition) would never be noticed. With
  // them, a node silent for 5 s is disconnected and everything that
  // monitors its actors gets a down message (the router re-routes).
  cfg.set("middleman.heartbeat-interval",
          caf::timespan{std::chrono::seconds{1}});
  cfg.set("middleman.connection-timeout",
          caf::timespan{std::chrono::seconds{5}});
  if (!tls.enabled)
    return caf::none;
  // CAF's OpenSSL layer falls back to anonymous ciphers when no certificate
  // is set: require all three files so that never happens.
  if (auto err = check_readable("a certificate", tls.certificate))
    return err;
  if (auto err = check_readable("a private key", tls.private_key))
    return err;
  if (auto err = check_readable("a CA file", tls.ca_file))
    return err;
  cfg.openssl_certificate = tls.certificate;
  cfg.openssl_key = tls.private_key;
  cfg.openssl_cafile = tls.ca_file;
  cfg.openssl_passphrase = tls.passphrase;
  cfg.load<caf::openssl::manager>();
  return caf::none;
}

bool distribution_uses_tls(caf::actor_system& sys) {
  return sys.has_openssl_manager();
}

caf::expected<uint16_t> publish(caf::actor_system& sys,
                                const service_actor& svc, uint16_t port,
                                const std::string& bind) {
  if (!sys.has_middleman())
    return make_error(errc::invalid_input,
                      "publish: the actor system has no middleman "
                      "(call embedrt::enable_distribution(cfg) first)");
  const char* in = bind.empty() ? nullptr : bind.c_str();
  auto res = distribution_uses_tls(sys)
      ? caf::openssl::publish(svc, port, in, true)
      : caf::io::publish(svc, port, in, true);
  if (!res)
    return make_error(errc::invalid_input,
                      "cannot publish on " + (bind.empty() ? "*" : bind) + ":"
                          + std::to_string(port) + ": "
                          + sys.render(res.error()));
  return *res;
}

caf::expected<peer_address> parse_peer(const std::string& text) {
  auto bad = [&](const char* why) {
    return make_error(errc::invalid_input,
                      "peer '" + text + "': " + why + " (expected host:port)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return bad("no port");
  peer_address out;
  out.host = text.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']')
    out.host = out.host.substr(1, out.host.size() - 2);
  uint32_t port = 0;
  for (auto c : text.substr(colon + 1)) {
    if (c < '0' || c > '9')
      return bad("the port is not a number");
    port = port * 10 + static_cast<uint32_t>(c - '0');
    if (port > 65535)
      return bad("the port is above 65535");
  }
  if (port == 0)
    return bad("the port is 0");
  out.port = static_cast<uint16_t>(port);
  return out;
}

namespace detail {

caf::io::middleman_actor node_connector(caf::actor_system& sys) {
  return distribution_uses_tls(sys) ? sys.openssl_manager().actor_handle()
                                    : sys.middleman().actor_handle();
}

caf::error connect_failed(const caf::actor_system& sys,
                          const peer_address& addr, const caf::error& err) {
  return make_error(errc::node_down,
                    "cannot connect to " + addr.host + ":"
                        + std::to_string(addr.port) + ": "
                        + const_cast<caf::actor_system&>(sys).render(err));
}

caf::error check_interface(caf::actor_system& sys, const peer_address& addr,
                           const std::set<std::string>& ifs) {
  caf::detail::type_list<service_actor> token;
  if (ifs == sys.message_types(token))
    return caf::none;
  return make_error(errc::invalid_input,
                    addr.host + ":" + std::to_string(addr.port)
                        + " is not an embedrt service of this version "
                          "(its published interface differs)");
}

caf::error hello_failed(const peer_address& addr, const caf::error& err,
                        caf::actor_system& sys) {
  auto where = addr.host + ":" + std::to_string(addr.port);
  if (err.category() == error_category())
    return make_error(errc::invalid_input,
                      where + " refused the handshake: " + error_detail(err));
  if (err == caf::sec::request_timeout)
    return make_error(errc::node_down,
                      where + " did not answer the handshake in time");
  return make_error(errc::invalid_input,
                    where + " does not speak embedrt's wire protocol ("
                        + sys.render(err) + "); this node speaks '"
                        + wire_fingerprint() + "'");
}

caf::result<std::string> answer_hello(const std::string& theirs) {
  const auto& ours = wire_fingerprint();
  if (theirs == ours)
    return ours;
  log(log_level::warn, "peer_refused",
      {{"reason", "wire mismatch"}, {"ours", ours}, {"theirs", theirs}});
  return make_error(errc::invalid_input,
                    "wire mismatch: this node speaks '" + ours
                        + "', the caller '" + theirs
                        + "' (run the same embedrt version on both)");
}

} // namespace detail

caf::expected<service_actor> connect(caf::actor_system& sys,
                                     const std::string& host, uint16_t port,
                                     std::chrono::milliseconds timeout) {
  if (!sys.has_middleman())
    return make_error(errc::invalid_input,
                      "connect: the actor system has no middleman "
                      "(call embedrt::enable_distribution(cfg) first)");
  peer_address addr{host, port};
  auto start = std::chrono::steady_clock::now();
  caf::scoped_actor self{sys};
  caf::expected<service_actor> result{caf::error{}};
  caf::strong_actor_ptr remote;
  std::set<std::string> ifs;
  self->request(detail::node_connector(sys), timeout, caf::connect_atom::value,
                host, port)
      .receive(
          [&](caf::node_id&, caf::strong_actor_ptr& ptr,
              std::set<std::string>& published) {
            if (!ptr) {
              result = make_error(errc::invalid_input,
                                  "nothing is published at " + host + ":"
                                      + std::to_string(port));
              return;
            }
            remote = std::move(ptr);
            ifs = std::move(published);
          },
          [&](caf::error& err) {
            result = detail::connect_failed(sys, addr, err);
          });
  if (!remote || (!result && result.error()))
    return result;
  auto left = timeout
      - std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start);
  left = std::max(left, std::chrono::milliseconds{1});
  auto peer = caf::actor_cast<caf::actor>(remote);
  self->request(peer, left, hello_atom_v, wire_fingerprint())
      .receive(
          [&](std::string& theirs) {
            if (theirs != wire_fingerprint())
              result = make_error(errc::invalid_input,
                                  "wire mismatch: " + host + ":"
                                      + std::to_string(port) + " speaks '"
                                      + theirs + "', this node '"
                                      + wire_fingerprint() + "'");
            else if (auto err = detail::check_interface(sys, addr, ifs))
              result = std::move(err);
            else
              result = caf::actor_cast<service_actor>(remote);
          },
          [&](caf::error& err) {
            result = detail::hello_failed(addr, err, sys);
          });
  return result;
}

} // namespace embedrt

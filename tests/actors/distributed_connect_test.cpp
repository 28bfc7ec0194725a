// embedrt::publish / embedrt::connect over real loopback sockets: two actor
// systems in this process, each with CAF's middleman (and OpenSSL for the
// TLS cases). The handshake refuses a node of another wire fingerprint or a
// published actor that is not an embedrt service, with errors that say so.
#include "embedrt/client.hpp"
#include "embedrt/distributed.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <catch2/catch.hpp>
#include <memory>

using namespace embedrt;
using namespace std::chrono_literals;

namespace {

const std::string tls_dir = std::string{EMBEDRT_TEST_DATA_DIR} + "/tls/";

node_tls_config test_tls(const std::string& ca = "ca.pem") {
  node_tls_config tls;
  tls.enabled = true;
  tls.certificate = tls_dir + "node.pem";
  tls.private_key = tls_dir + "node.key";
  tls.ca_file = tls_dir + ca;
  return tls;
}

embed_request request_of(std::vector<std::string> inputs) {
  embed_request req;
  req.model = "m";
  req.inputs = std::move(inputs);
  return req;
}

/// One node: an actor system ready for distribution.
struct node {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;

  explicit node(const node_tls_config& tls = {}) {
    register_types(cfg);
    REQUIRE_FALSE(enable_distribution(cfg, tls));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

/// A scripted service: embeds each text as {its length, 1}; answers `hello`
/// with `hello_answer` if set (a node of another version).
service_actor::behavior_type fake_service(service_actor::pointer,
                                          std::string hello_answer) {
  return {
      [](embed_atom, embed_request& req) {
        embed_result r;
        r.model = req.model;
        r.upstream = "fake";
        for (auto& in : req.inputs)
          r.embeddings.push_back({static_cast<float>(in.size()), 1.0f});
        return r;
      },
      [](health_atom) {
        return health_report{true, {}};
      },
      [](metrics_atom) {
        return metrics_snapshot{};
      },
      [](status_atom) {
        node_status s;
        s.ready = true;
        s.all_models = true;
        s.connections = 1;
        return s;
      },
      [hello_answer](hello_atom,
                     const std::string& theirs) -> caf::result<std::string> {
        (void)theirs;
        return hello_answer.empty() ? wire_fingerprint() : hello_answer;
      },
  };
}

using other_actor = caf::typed_actor<caf::replies_to<int32_t>::with<int32_t>>;

/// (An argument, unused: CAF 0.17.6 binds a reference to a null pointer
/// when it starts a function-based actor spawned without any.)
other_actor::behavior_type not_embedrt(other_actor::pointer, int32_t) {
  return {
      [](int32_t x) {
        return x;
      },
  };
}

} // namespace

TEST_CASE("connect gives a remote service the same typed handle and facade "
          "as a local one",
          "[distributed]") {
  node server;
  node client_node;
  auto svc = server.sys->spawn(fake_service, std::string{});
  auto port = publish(*server.sys, svc, 0);
  REQUIRE(port);
  auto remote = connect(*client_node.sys, "127.0.0.1", *port);
  REQUIRE(remote);
  client c{*client_node.sys, *remote};
  auto r = c.embed(request_of({"abc", "hello"})).get();
  REQUIRE(r);
  REQUIRE(r->embeddings.size() == 2);
  CHECK(r->embeddings[0] == std::vector<float>{3.0f, 1.0f});
  CHECK(r->embeddings[1] == std::vector<float>{5.0f, 1.0f});
  CHECK(c.health());
  caf::anon_send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("connect to a port where nothing listens is node_down naming it",
          "[distributed]") {
  node client_node;
  // A port that was just free: publish, then stop publishing by ending the
  // system that held it.
  uint16_t port = 0;
  {
    node tmp;
    auto svc = tmp.sys->spawn(fake_service, std::string{});
    auto p = publish(*tmp.sys, svc, 0);
    REQUIRE(p);
    port = *p;
    caf::anon_send_exit(svc, caf::exit_reason::user_shutdown);
  }
  auto remote = connect(*client_node.sys, "127.0.0.1", port, 2000ms);
  REQUIRE_FALSE(remote);
  CHECK(error_code(remote.error()) == errc::node_down);
  CHECK_THAT(error_detail(remote.error()),
             Catch::Contains("127.0.0.1:" + std::to_string(port)));
}

TEST_CASE("connect refuses a node of another wire fingerprint, naming both",
          "[distributed]") {
  node server;
  node client_node;
  std::string theirs
      = "embedrt-wire/1 offset=4100 types=20 hash=0123456789abcdef";
  auto svc = server.sys->spawn(fake_service, theirs);
  auto port = publish(*server.sys, svc, 0);
  REQUIRE(port);
  auto remote = connect(*client_node.sys, "127.0.0.1", *port);
  REQUIRE_FALSE(remote);
  CHECK(error_code(remote.error()) == errc::invalid_input);
  CHECK_THAT(error_detail(remote.error()), Catch::Contains(theirs));
  CHECK_THAT(error_detail(remote.error()), Catch::Contains(wire_fingerprint()));
  caf::anon_send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("connect refuses a published actor that is not an embedrt service",
          "[distributed]") {
  node server;
  node client_node;
  auto other = server.sys->spawn(not_embedrt, 0);
  auto port = caf::io::publish(other, 0, "127.0.0.1", true);
  REQUIRE(port);
  auto remote = connect(*client_node.sys, "127.0.0.1", *port, 3000ms);
  REQUIRE_FALSE(remote);
  CHECK(error_code(remote.error()) == errc::invalid_input);
  CHECK_THAT(error_detail(remote.error()),
             Catch::Contains("does not speak embedrt's wire protocol"));
  caf::anon_send_exit(other, caf::exit_reason::user_shutdown);
}

TEST_CASE("a service refuses a hello of another fingerprint with both named",
          "[distributed]") {
  node n;
  runtime_config rc;
  upstream_config up;
  up.base_url = "http://127.0.0.1:9/v1";
  rc.upstreams.push_back(up);
  auto svc = spawn_service(*n.sys, rc);
  REQUIRE(svc);
  caf::scoped_actor self{*n.sys};
  self->request(*svc, 2s, hello_atom_v, std::string{"embedrt-wire/0 other"})
      .receive(
          [](std::string&) {
            FAIL("a mismatched hello was accepted");
          },
          [](caf::error& err) {
            CHECK(error_code(err) == errc::invalid_input);
            CHECK_THAT(error_detail(err),
                       Catch::Contains("embedrt-wire/0 other"));
            CHECK_THAT(error_detail(err), Catch::Contains(wire_fingerprint()));
          });
  self->request(*svc, 2s, hello_atom_v, wire_fingerprint())
      .receive(
          [](std::string& ours) {
            CHECK(ours == wire_fingerprint());
          },
          [](caf::error& err) {
            FAIL(to_string(err));
          });
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("the wire fingerprint names the version, the offset and the block",
          "[distributed]") {
  auto& fp = wire_fingerprint();
  CHECK_THAT(
      fp,
      Catch::StartsWith("embedrt-wire/" + std::to_string(wire_version)
                        + " offset=" + std::to_string(EMBEDRT_TYPE_ID_OFFSET)));
  CHECK_THAT(fp, Catch::Contains(" hash="));
}

TEST_CASE("TLS between nodes: certificates are required, and nodes whose "
          "certificates chain to the same CA talk",
          "[distributed][tls]") {
  caf::actor_system_config cfg;
  auto missing = test_tls();
  missing.private_key = tls_dir + "no-such.key";
  auto err = enable_distribution(cfg, missing);
  CHECK(error_code(err) == errc::invalid_input);
  CHECK_THAT(error_detail(err), Catch::Contains("no-such.key"));
  auto none = node_tls_config{};
  none.enabled = true;
  CHECK(error_code(enable_distribution(cfg, none)) == errc::invalid_input);

  node server{test_tls()};
  node client_node{test_tls()};
  CHECK(distribution_uses_tls(*server.sys));
  auto svc = server.sys->spawn(fake_service, std::string{});
  auto port = publish(*server.sys, svc, 0);
  REQUIRE(port);
  auto remote = connect(*client_node.sys, "127.0.0.1", *port);
  INFO((remote ? std::string{} : client_node.sys->render(remote.error())));
  REQUIRE(remote);
  client c{*client_node.sys, *remote};
  auto r = c.embed(request_of({"four"})).get();
  REQUIRE(r);
  CHECK(r->embeddings[0] == std::vector<float>{4.0f, 1.0f});

  // A plain node cannot talk to the TLS node, nor a node that trusts
  // another CA.
  node plain;
  CHECK_FALSE(connect(*plain.sys, "127.0.0.1", *port, 2000ms));
  node distrustful{test_tls("other.pem")};
  CHECK_FALSE(connect(*distrustful.sys, "127.0.0.1", *port, 2000ms));
  caf::anon_send_exit(svc, caf::exit_reason::user_shutdown);
}

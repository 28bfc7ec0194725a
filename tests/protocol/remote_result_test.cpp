// An embed_result crossing two real actor systems over the middleman on
// loopback: the packed vectors arrive intact, bit for bit.
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/publish.hpp>
#include <caf/io/remote_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;

namespace {

struct node_config : caf::actor_system_config {
  node_config() {
    register_types(*this);
    load<caf::io::middleman>();
    set("scheduler.max-threads", 2);
  }
};

std::vector<uint32_t> bits_of(const std::vector<float>& xs) {
  std::vector<uint32_t> result(xs.size());
  if (!xs.empty())
    std::memcpy(result.data(), xs.data(), xs.size() * sizeof(float));
  return result;
}

/// 64 vectors of 1536 floats, the first one with the special values.
embed_result large_result(const embed_request& req) {
  embed_result res;
  res.model = req.model;
  res.embeddings.assign(64, std::vector<float>(1536));
  for (size_t i = 0; i < res.embeddings.size(); ++i)
    for (size_t j = 0; j < 1536; ++j)
      res.embeddings[i][j]
          = static_cast<float>(std::cos(double(i * 1536 + j))) / 39.2f;
  auto& first = res.embeddings[0];
  first[0] = -0.0f;
  first[1] = std::numeric_limits<float>::infinity();
  first[2] = -std::numeric_limits<float>::infinity();
  first[3] = std::numeric_limits<float>::quiet_NaN();
  res.embeddings.emplace_back(); // a ragged tail: one empty vector
  res.usage = {int64_t(req.inputs.size()), int64_t(req.inputs.size())};
  res.upstream = "node-a";
  res.request_id = req.request_id;
  return res;
}

/// (An argument, unused: CAF 0.17.6 binds a reference to a null pointer
/// when it starts a function-based actor spawned without any.)
caf::behavior answering_node(caf::event_based_actor*, int) {
  return {
      [](embed_atom, const embed_request& req) {
        return large_result(req);
      },
  };
}

} // namespace

TEST_CASE("an embed_result crosses two actor systems over the middleman",
          "[packed_vectors][remote]") {
  node_config server_cfg;
  caf::actor_system server_sys{server_cfg};
  node_config client_cfg;
  caf::actor_system client_sys{client_cfg};

  auto server = server_sys.spawn(answering_node, 0);
  auto port = caf::io::publish(server, 0, "127.0.0.1", true);
  REQUIRE(port);
  REQUIRE(*port != 0);

  auto remote = caf::io::remote_actor(client_sys, "127.0.0.1", *port);
  REQUIRE(remote);

  embed_request req;
  req.model = "text-embedding-3-small";
  req.inputs.assign(64, "text");
  req.request_id = "req-remote";
  auto expected = large_result(req);

  caf::scoped_actor self{client_sys};
  embed_result got;
  std::string failure;
  self->request(*remote, 10s, embed_atom_v, req)
      .receive(
          [&](embed_result& res) {
            got = std::move(res);
          },
          [&](caf::error& err) {
            failure = client_sys.render(err);
          });
  REQUIRE(failure.empty());

  CHECK(got.model == expected.model);
  REQUIRE(got.embeddings.size() == expected.embeddings.size());
  for (size_t i = 0; i < got.embeddings.size(); ++i) {
    INFO("vector " << i);
    CHECK(bits_of(got.embeddings[i]) == bits_of(expected.embeddings[i]));
  }
  CHECK(got.usage.prompt_tokens == 64);
  CHECK(got.usage.total_tokens == 64);
  CHECK(got.upstream == "node-a");
  CHECK(got.request_id == "req-remote");

  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
}

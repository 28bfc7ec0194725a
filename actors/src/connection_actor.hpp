// The connection actor: owns exactly one keep-alive HTTP(S) connection to an
// upstream and runs one call at a time (docs/architecture.md).
//
//   idle --call--> busy --io_done(seq)--> idle, (result, call_result) sent
//                   |                          to the call's sender
//                   +-- the transport guarantees io_done within the call's
//                       timeout (it closes a stuck socket), so the actor
//                       never waits forever.
//
// The answer is a message to the pool, not a response promise: a connection
// that dies leaves nothing pending in the pool (it tracks calls by id).
//
// The socket lives in a `detail::http_connection` on the shared io_context;
// its completion handler only sends `io_done` to this actor.
#pragma once

#include "embedrt/io_runtime.hpp"
#include "embedrt/protocol/openai.hpp"
#include "http_transport.hpp"
#include "interfaces.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <memory>
#include <string>
#include <utility>

namespace embedrt::detail {

/// Everything the connections of one upstream share (immutable).
struct connection_env {
  /// Keeps the io_context alive as long as any connection actor exists.
  std::shared_ptr<io_runtime> io;
  connection_options transport;
  /// Request target, e.g. "/v1/embeddings".
  std::string target;
  /// Authentication header (secret value: never logged).
  std::pair<std::string, std::string> auth;
  std::string upstream_name;
  /// Ask the upstream for base64 vectors (unless a call says `float_only`).
  bool base64 = true;
  /// Chaos hook, off when empty: a call with an input equal to this marker
  /// makes the handler throw (tests the supervisor's restart path).
  std::string crash_marker;
};

struct connection_state {
  static inline const char* name = "embedrt.connection";

  ~connection_state();

  std::shared_ptr<const connection_env> env;
  std::shared_ptr<http_connection> conn;
  uint64_t seq = 0;
  /// The call in flight (valid while `busy`).
  bool busy = false;
  uint64_t call_id = 0;
  openai::response_expectation expect;
  /// Who sent the call in flight (its pool): gets the result.
  caf::strong_actor_ptr reply_to;
};

connection_impl::behavior_type
connection_actor_fn(connection_impl::stateful_pointer<connection_state> self,
                    std::shared_ptr<const connection_env> env);

} // namespace embedrt::detail

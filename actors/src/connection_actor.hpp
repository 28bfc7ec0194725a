// The connection actor: owns exactly one keep-alive HTTP(S) connection to an
// upstream and runs one call at a time (docs/architecture.md).
//
//   call --> body encoded, exchange posted to the http_connection
//              |
//              +-- on the I/O thread, when the exchange completes: outcome
//                  classified there (where the bytes are) and (result,
//                  call_result) sent straight to the call's sender; the
//                  transport guarantees that completion within the call's
//                  timeout (it closes a stuck socket).
//
// The answer is a message to the pool, not a response promise: a connection
// that dies leaves nothing pending in the pool (it tracks calls by id, and
// ignores a result for a call it no longer holds).
//
// The socket lives in a `detail::http_connection` on the shared io_context.
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
};

connection_actor::behavior_type
connection_actor_fn(connection_actor::stateful_pointer<connection_state> self,
                    std::shared_ptr<const connection_env> env);

} // namespace embedrt::detail

// The request actor: serves one caller request at a time
// (docs/architecture.md).
//
//   [validate] --invalid--> reply invalid_input
//       |
//       v
//   [split into chunks that fit one upstream request]
//       |
//       v           call_result ok                 all chunks done
//   [in flight] ------------------------------> ... ---------------> reply
//       |   \--retryable error, attempts and time left--> [backoff]
//       |                                                  | retry(epoch)
//       |   <----------------------------------------------+
//       |--upstream_down or breaker_open and another upstream serves the
//       |  model--> failover
//       |--400/413 on a chunk of several inputs--> bisect: both halves are
//       |  sent (a lone input that fails is recorded with the upstream's
//       |  message; the reply names every such input)
//       |--non-retryable error, or no attempt/time left--> reply error
//       |--deadline (the pool answers each call by its budget) --> reply
//       |                                               deadline_exceeded
//       \--the service stopped (exit message) or an exception --> reply
//                                                               cancelled
//
// With the service's cache on, the job carries the cache's answer for the
// request's inputs (request_cache.hpp): hits are kept, only the inputs this
// request owns go through the chunks above, inputs in flight elsewhere are
// waited for, and the reply merges all of them back in the caller's order;
// with a persistent store the owned inputs are read from disk first. What
// goes back to the cache rides on `request_done`.
//
// Exactly one reply: `finish` tells the owner (the service) that the actor
// is free and delivers the reply once; after that message the actor is
// reset for its next request. The actor lives on between requests (an
// actor's end costs a push to CAF's clock thread: docs/profile.md), so
// answers addressed to an earlier request can still arrive: pool answers
// and the cache's deadline timer carry the request's generation, retry
// timers an epoch unique over the actor's life, cache notifications a
// ticket only their request waits for (a request that ends withdraws its
// waits); all others are dropped. A request
// that arrives while one is in progress (no service does this) is answered
// `overloaded`.
#pragma once

#include "embedrt/config.hpp"
#include "embedrt/policies.hpp"
#include "embedrt/protocol/provider.hpp"
#include "interfaces.hpp"
#include "metrics_actor.hpp"
#include "request_cache.hpp"

#include <caf/actor_clock.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <caf/weak_intrusive_ptr.hpp>
#include <memory>
#include <string>
#include <vector>

namespace embedrt::detail {

/// Settings shared by all request actors of a service.
struct request_env {
  retry_config retry;
  milliseconds default_timeout{30000};
  /// Where the reply is recorded (null: metrics off).
  metrics_actor metrics;
  /// The cache's persistent store (null: none, or the cache is off).
  disk_actor disk;
  /// Chaos hook, off when empty: a request with an input equal to this makes
  /// the request actor throw.
  std::string crash_marker;
};

/// A contiguous slice of the caller's inputs sent as one upstream call.
struct request_chunk {
  uint32_t begin = 0;
  uint32_t end = 0;
  uint32_t attempts = 0;
  uint64_t epoch = 0;
  std::size_t route = 0;
  /// Settled: served, or a lone input the upstream rejected.
  bool done = false;
  /// Its vectors arrived (in `result.embeddings`; the cache's fill).
  bool served = false;
  caf::error last_error;
};

/// An input the upstream rejected on its own (found by bisection).
struct rejected_input {
  uint32_t index = 0;
  std::string message;
};

struct request_state {
  static inline const char* name = "embedrt.request";

  // -- the actor's, kept across requests --
  /// Told `request_done` with each reply (null: nobody is told). Weak: the
  /// service keeps its idle request actors, which must not keep it alive.
  caf::weak_actor_ptr owner;
  /// Counts the requests served: answers to an earlier one are dropped.
  uint64_t generation = 0;
  /// The last retry epoch drawn (unique over the actor's life).
  uint64_t epochs = 0;
  /// Seeds each request's backoff jitter (with the generation).
  uint64_t seed = 0;
  /// The actor is ending (exit message, exception): its owner is not told
  /// it is free.
  bool ending = false;

  // -- the current request's (reset after its reply) --
  /// No request in progress (idle, or the reply was delivered).
  bool finished = true;
  std::shared_ptr<const request_env> env;
  std::vector<route> routes;
  embed_request req;
  caf::typed_response_promise<embed_result> rp;
  std::vector<request_chunk> chunks;
  /// Estimated tokens of each input (computed once; calls carry their sum).
  std::vector<int64_t> tokens;
  embed_result result;
  std::size_t pending = 0;
  /// Inputs rejected by the upstream (a chunk that fails with a 400 is
  /// bisected until the failing inputs stand alone).
  std::vector<rejected_input> rejected;
  caf::actor_clock::time_point deadline;
  caf::timespan timeout{0};
  /// The last x-request-id an upstream sent for this request (logs).
  std::string upstream_request_id;
  backoff_policy backoff{milliseconds{50}, milliseconds{2000}, 1};
  /// The cache phase (request_cache.hpp); inactive with the cache off.
  request_cache_state cache;
};

/// Splits `inputs` into chunks that each fit one upstream request of
/// `profile` (inputs, estimated tokens, bytes); `tokens` has the estimate of
/// each input.
std::vector<request_chunk>
split_into_chunks(const std::vector<std::string>& inputs,
                  const std::vector<int64_t>& tokens,
                  const provider_profile& profile);

/// The same with each input's size in bytes (texts or token arrays,
/// `token_array_bytes`).
std::vector<request_chunk>
split_into_chunks(const std::vector<std::size_t>& input_bytes,
                  const std::vector<int64_t>& tokens,
                  const provider_profile& profile);

/// A request actor; `owner` (may be null) is told when it is free again,
/// `seed` seeds its backoff jitter.
request_impl::behavior_type
request_actor_fn(request_impl::stateful_pointer<request_state> self,
                 request_owner owner, uint64_t seed);

} // namespace embedrt::detail

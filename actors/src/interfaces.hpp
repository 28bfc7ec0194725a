// The runtime's internal actor interfaces, one alias per role. Each role has
// the handle others hold and, where the actor sends itself timers or gets
// messages from its own children, an `_impl` that extends it: only the actor
// itself (and its children, through a narrow listener view) can send those,
// so holding a pool handle does not let anyone trigger a restart.
// docs/architecture.md has the supervision tree and the life of a request.
#pragma once

#include "cache_messages.hpp"
#include "embedrt/interfaces.hpp"
#include "embedrt/protocol/provider.hpp"
#include "messages.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace embedrt::detail {

// -- cache -------------------------------------------------------------------

/// The persistent store's own actor (service_cache.hpp; detached: blocking
/// LMDB calls on its own thread): get answers one vector per key (empty:
/// absent), put one transaction per batch (answers the entries written).
using disk_actor = caf::typed_actor<
    caf::replies_to<disk_get_atom, std::vector<std::string>>::with<
        std::vector<std::vector<float>>>,
    caf::replies_to<disk_put_atom, std::vector<std::string>,
                    std::vector<std::vector<float>>>::with<int64_t>>;

// -- pool --------------------------------------------------------------------

/// Pool, dispatcher and supervisor of one upstream, as request actors see it.
/// - call: run one upstream call. Answers exactly once, by the call's budget
///   at the latest (`deadline_exceeded`), also when the pool is stopped
///   (`cancelled`) or crashes (`upstream_down`).
/// - health: state of the upstream.
using pool_actor = caf::typed_actor<
    caf::replies_to<call_atom, upstream_call>::with<call_result>,
    caf::replies_to<health_atom>::with<upstream_health>>;

/// What a breaker talks to: the pool of its upstream (or a test probe).
using breaker_listener
    = caf::typed_actor<caf::reacts_to<breaker_atom, breaker_view>>;

/// What a connection actor answers to: the pool that sent it the call.
using connection_listener
    = caf::typed_actor<caf::reacts_to<result_atom, call_result>>;

// -- metrics -----------------------------------------------------------------

/// The metrics actor (one per service, metrics_actor.hpp).
/// - the three events: aggregate;
/// - metrics: the snapshot, with the gauges of `pools` (asked for their
///   health) and `accepted` = requests the service accepted so far (in
///   flight = accepted - answered).
using metrics_actor
    = caf::typed_actor<caf::reacts_to<request_record>,
                       caf::reacts_to<upstream_call_record>,
                       caf::reacts_to<breaker_transition_event>,
                       caf::replies_to<metrics_atom, std::vector<pool_actor>,
                                       int64_t>::with<metrics_snapshot>>;

/// What a pool tells its supervisor (the service): whether it can serve now
/// (not down, breaker not open, not unhealthy, not misconfigured), sent when
/// that changes. The service routes to available upstreams first.
using pool_watcher = caf::typed_actor<caf::reacts_to<avail_atom, bool>>;

/// The pool as its supervisor (the service) holds it: + sink, where to send
/// metrics events from now on (after the metrics actor was restarted);
/// + watch, who gets its availability (sent at once, then on each change).
using pool_supervised
    = pool_actor::extend<caf::reacts_to<sink_atom, metrics_actor>,
                         caf::reacts_to<watch_atom, pool_watcher>>;

/// What a health checker reports to its pool: the check passed (true) or
/// failed, and why (health_check.hpp).
using health_listener
    = caf::typed_actor<caf::reacts_to<checked_atom, bool, std::string>>;

/// The whole pool:
/// - breaker: the breaker's current view (from its breaker child);
/// - result: a connection child's answer to a call (by call id);
/// - checked: its health checker's verdict;
/// - restart / probe / watchdog: self-sent supervision timers; pace: the
///   pacing timer (pool_pacing.hpp).
using pool_impl
    = pool_supervised::extend<caf::reacts_to<breaker_atom, breaker_view>,
                              caf::reacts_to<result_atom, call_result>,
                              caf::reacts_to<checked_atom, bool, std::string>,
                              caf::reacts_to<restart_atom, uint32_t, uint64_t>,
                              caf::reacts_to<probe_atom, uint64_t>,
                              caf::reacts_to<watchdog_atom, int64_t>,
                              caf::reacts_to<pace_atom, int64_t>>;

// -- request actor -----------------------------------------------------------
// (after the pool: a request's job names the pools that may serve it)

struct request_env;

/// An upstream that can serve a request's model.
struct route {
  pool_actor pool;
  std::string name;
  provider_profile profile;
  /// The model name as sent to this upstream.
  std::string model;
};

/// What comes with each caller request the service hands a request actor:
/// the upstreams that may serve it, best first, and the settings of the
/// moment (a reload or a restarted cache or metrics actor changes them; a
/// request actor serves many requests in turn). Never leaves the node.
struct request_job {
  std::shared_ptr<const request_env> env;
  std::vector<route> routes;
  /// With the service's cache on: its answer to the lookup of the
  /// request's inputs, keyed under the first route's model
  /// (service_cache.hpp).
  std::optional<cache_lookup_result> cache;
  /// With the cache on: an empty buffer (with capacity, or none) for the
  /// settle's `floats`. The service recycles the buffers that settles bring
  /// back, so that a request's fills allocate nothing in the common case.
  std::vector<float> spare_floats;
};

/// What a request actor tells the service that handed it a request once
/// it has answered: it is free for the next one (with the cache on, what
/// it hands back to the cache rides along: `cache_settle`); and c_fill, the
/// vectors of its owned tickets at once, while it waits for others' inputs.
using request_owner
    = caf::typed_actor<caf::reacts_to<request_done_atom>,
                       caf::reacts_to<request_done_atom, cache_settle>,
                       caf::reacts_to<cache_fill_atom, cache_settle>>;

/// Serves caller requests one at a time, each received by delegation from
/// the service with its job: owns the request's single reply, its deadline
/// and its retries, then tells the service it is free (docs/architecture.md,
/// "Request actors are reused").
using request_actor
    = caf::typed_actor<caf::replies_to<embed_atom, request_job,
                                       embed_request>::with<embed_result>>;

/// What the service's cache tells a request actor waiting for an input
/// another request owns: filled (ticket, vector), owner (ticket: its owner
/// gave it up, the waiter owns it now), lost (the cache failed and started
/// again empty: every wait is owned now); and what it tells an owner:
/// wanted (ticket: another request waits for it, so the owner's served
/// chunks go to the cache at once instead of with its reply).
using cache_waiter = caf::typed_actor<
    caf::reacts_to<cache_filled_atom, uint64_t, std::vector<float>>,
    caf::reacts_to<cache_owner_atom, uint64_t>, caf::reacts_to<cache_lost_atom>,
    caf::reacts_to<cache_wanted_atom, uint64_t>>;

/// + retry: self-sent backoff timer (chunk, epoch; epochs are unique over
/// the actor's life, so a stale one is ignored also by a later request);
/// + the cache waiter's messages and c_expire, the self-sent deadline of a
/// request that waits for others' inputs only (its request's generation).
using request_impl = request_actor::extend<
    caf::reacts_to<retry_atom, uint32_t, uint64_t>,
    caf::reacts_to<cache_filled_atom, uint64_t, std::vector<float>>,
    caf::reacts_to<cache_owner_atom, uint64_t>, caf::reacts_to<cache_lost_atom>,
    caf::reacts_to<cache_wanted_atom, uint64_t>,
    caf::reacts_to<cache_expire_atom, uint64_t>>;

// -- health checker ----------------------------------------------------------

/// The active health check of one upstream (health_check.hpp): its own
/// connection answers its check calls (`result`), a self-sent timer
/// (`check`, epoch) starts the next one.
using health_checker_actor
    = caf::typed_actor<caf::reacts_to<result_atom, call_result>,
                       caf::reacts_to<check_atom, uint64_t>>;

// -- breaker -----------------------------------------------------------------

/// Circuit breaker of one upstream, the only owner of its state
/// (actors/src/breaker.hpp has the state diagram).
/// - outcome: how one upstream call went (from the pool); a failure is sent
///   as a request, answered once the breaker has published its new view;
/// - health: the current view.
using breaker_actor
    = caf::typed_actor<caf::reacts_to<outcome_atom, breaker_outcome>,
                       caf::replies_to<health_atom>::with<breaker_view>>;

/// + half_open: self-sent end of the open time (epoch).
using breaker_impl
    = breaker_actor::extend<caf::reacts_to<half_open_atom, uint64_t>>;

// -- connection --------------------------------------------------------------

/// Owns one keep-alive HTTP(S) connection; one call in flight. Answers a call
/// with `(result_atom, call_result)` sent to the call's sender (not a
/// response promise: a connection that dies leaves nothing pending in the
/// pool, which tracks its calls by id).
using connection_actor
    = caf::typed_actor<caf::reacts_to<call_atom, connection_call>>;

/// + io_done: what the test doubles of connections (`pool_env::
/// connection_behavior`) take to answer the calls they hold. The real
/// connection actor implements `connection_actor` only: its exchanges are
/// completed on the I/O thread, which sends the result to the pool itself.
using connection_impl
    = connection_actor::extend<caf::reacts_to<io_done_atom, http_outcome>>;

// -- service -----------------------------------------------------------------

/// The service as it runs: + restart, the self-sent timer that restarts the
/// pool in a slot (slot, epoch); + avail, a pool's availability
/// (`pool_watcher`); + what request actors tell it (`request_owner`).
using service_impl = service_actor::extend_with<request_owner>::extend<
    caf::reacts_to<restart_atom, uint32_t, uint64_t>,
    caf::reacts_to<avail_atom, bool>>;

// -- router ------------------------------------------------------------------

/// A router (embedrt/distributed.hpp) as it runs: + the views of its peers'
/// breakers, the status poll timer, a peer's reconnect timer (member,
/// epoch) and the deadline of a parked request (request id).
using router_impl
    = service_actor::extend<caf::reacts_to<breaker_atom, breaker_view>,
                            caf::reacts_to<tick_atom>,
                            caf::reacts_to<reconnect_atom, uint32_t, uint64_t>,
                            caf::reacts_to<expire_atom, uint64_t>>;

} // namespace embedrt::detail

// Carries actor handles and shared settings; never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(embedrt::detail::request_job)

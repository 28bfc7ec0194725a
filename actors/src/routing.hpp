// Routing across the upstreams that serve a model: which one a request tries
// first, and the order it fails over in (docs/reliability.md, "Routing across
// upstreams"). A pure function of the service's counts, so it is tested
// without actors.
//
// Weighted least outstanding requests with two random choices (Envoy's
// least-request balancer; Mitzenmacher's power of two choices):
// - the candidates are the available upstreams (pool running, not down,
//   breaker not open, health check passing, not misconfigured) of the best
//   (lowest) `priority` among them; when none is available, all of them;
// - two distinct candidates are drawn, each with probability proportional to
//   its weight; the one with fewer requests outstanding per unit of weight
//   (outstanding / weight) goes first, the first drawn on a tie: idle
//   upstreams share the traffic by weight, busy ones in proportion to their
//   weight too (their outstanding counts settle at the ratio of weights);
// - the other available upstreams follow by priority, then by the same
//   score (configuration order on ties), the unavailable ones last in
//   configuration order: a request still fails over everywhere before it
//   fails.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace embedrt::detail {

/// What the service knows of one upstream when it routes.
struct route_load {
  bool available = true;
  /// Requests routed to it first and not answered yet.
  int64_t outstanding = 0;
  /// Its weight (>= 1; 0 counts as 1).
  uint32_t weight = 1;
  /// Lower first: upstreams of a higher priority only take requests when
  /// none of a lower one is available (fallbacks).
  uint32_t priority = 0;
};

/// Orders `candidates` (indices into `loads`, in configuration order) for
/// one request. With fewer than two candidates returns them unchanged and
/// draws nothing.
std::vector<std::size_t> order_routes(const std::vector<route_load>& loads,
                                      std::vector<std::size_t> candidates,
                                      std::mt19937_64& rng);

} // namespace embedrt::detail

// The closed-loop load generator of `embedrt bench`: one event-based driver
// actor keeps `concurrency` embed requests in flight against a service (each
// answer immediately releases the next request) until `requests` have been
// answered. No thread per caller and no blocking inside the actor; only the
// calling (non-actor) thread blocks, on a future.
#pragma once

#include "embedrt/interfaces.hpp"

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace embedrt::bench {

struct load_params {
  service_actor service;
  /// Requests to answer in total (>= 1) and how many are in flight at once.
  uint64_t requests = 1;
  uint64_t concurrency = 1;
  /// Inputs per request, their length and the requested dimensions.
  uint32_t inputs = 1;
  std::size_t text_bytes = 40;
  int32_t dims = 8;
  std::string model = "bench-model";
  /// Deadline of every request (the service enforces it; the driver waits
  /// `deadline + grace` at most for an answer).
  std::chrono::milliseconds deadline{30000};
  /// Texts are numbered from here (so that warm-up and measured phases send
  /// different texts) and padded with words picked from `seed`.
  uint64_t first_request = 0;
  uint64_t seed = 1;
  /// How often the driver samples the process's thread count.
  std::chrono::milliseconds sample_interval{100};
};

struct load_outcome {
  uint64_t ok = 0;
  /// Failed requests by error kind (see `error_kind`).
  std::map<std::string, uint64_t> errors;
  /// Per-request latency in ns, of successful and of failed requests.
  std::vector<int64_t> ok_ns;
  std::vector<int64_t> error_ns;
  /// Highest thread count sampled while the load ran.
  std::size_t threads_peak = 0;
  /// From the first request sent to the last answer received.
  std::chrono::steady_clock::duration elapsed{};
};

/// Runs the load and blocks the calling thread (which must not be a CAF
/// worker) until every request has been answered. Every request carries a
/// timeout, so this returns even if the service never answers. Errors:
/// `invalid_input` (zero requests, concurrency or inputs), `cancelled` (the
/// driver died before the last answer).
caf::expected<load_outcome> run_load(caf::actor_system& sys,
                                     load_params params);

/// The name of an error for the report: the errc name for embedrt errors
/// ("upstream_error"), the CAF `sec` name for system errors
/// ("request_timeout"), "CATEGORY.CODE" otherwise.
std::string error_kind(const caf::error& err);

} // namespace embedrt::bench

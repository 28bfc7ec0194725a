#include "bench/load_driver.hpp"

#include "bench/bench_report.hpp"
#include "embedrt/proc_stats.hpp"
#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/sec.hpp>
#include <caf/stateful_actor.hpp>
#include <future>
#include <memory>

namespace embedrt::bench {

namespace {

using steady = std::chrono::steady_clock;

/// How long the driver waits beyond a request's deadline for the service's
/// answer (the service enforces the deadline; this only guards against a
/// lost reply: CAF 0.17 has no broken_promise, so a dropped response
/// promise would leave the requester waiting forever).
///
/// The guard is the driver's periodic tick, not a timeout per request: CAF
/// 0.17 never cancels a request timeout when the response arrives, so every
/// `request(..., timeout, ...)` leaves an entry in the actor clock (and a
/// wake-up of its thread) until the timeout would have fired, i.e. for the
/// whole deadline (docs/profile.md). The instrument must not add that cost
/// to the runtime it measures.
constexpr auto answer_grace = std::chrono::seconds{5};

struct driver_state {
  static inline const char* name = "embedrt.bench.driver";

  load_params p;
  uint64_t sent = 0;
  uint64_t answered = 0;
  steady::time_point started;
  /// When the last answer arrived (or the load started).
  steady::time_point last_answer;
  bool finished = false;
  load_outcome out;
  /// Completed once, with the outcome, by the last answer. If the actor dies
  /// first, the promise is destroyed with the state and the waiting thread
  /// sees a broken promise.
  std::shared_ptr<std::promise<load_outcome>> done;
};

using driver_ptr = caf::stateful_actor<driver_state>*;

void sample_threads(driver_state& st) {
  st.out.threads_peak = std::max(st.out.threads_peak, thread_count());
}

/// One vector per input, each of the requested dimension (or, if none was
/// requested, all of one non-zero dimension).
bool has_expected_shape(const load_params& p, const embed_result& r) {
  if (r.embeddings.size() != p.inputs)
    return false;
  auto want = p.dims > 0 ? static_cast<std::size_t>(p.dims)
                         : r.embeddings.front().size();
  return want > 0
      && std::all_of(r.embeddings.begin(), r.embeddings.end(),
                     [want](const std::vector<float>& v) {
                       return v.size() == want;
                     });
}

void issue_next(driver_ptr self);

void finish(driver_ptr self) {
  auto& st = self->state;
  st.finished = true;
  st.out.elapsed = steady::now() - st.started;
  sample_threads(st);
  st.done->set_value(std::move(st.out));
  self->quit();
}

/// Called by the tick: if no answer arrived for a deadline plus the grace,
/// the requests still in flight are lost; they count as `request_timeout`
/// and the load ends.
void check_lost(driver_ptr self) {
  auto& st = self->state;
  if (steady::now() - st.last_answer <= st.p.deadline + answer_grace)
    return;
  auto lost = st.sent - st.answered;
  st.out.errors[caf::to_string(caf::sec::request_timeout)] += lost;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(st.p.deadline
                                                                 + answer_grace)
                .count();
  st.out.error_ns.insert(st.out.error_ns.end(), lost, ns);
  finish(self);
}

void on_answer(driver_ptr self, steady::time_point start,
               const embed_result* res, const caf::error* err) {
  auto& st = self->state;
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now()
                                                                 - start)
                .count();
  if (res != nullptr && has_expected_shape(st.p, *res)) {
    ++st.out.ok;
    st.out.ok_ns.push_back(ns);
  } else {
    ++st.out.errors[res != nullptr ? "wrong_shape" : error_kind(*err)];
    st.out.error_ns.push_back(ns);
  }
  st.last_answer = steady::now();
  if (++st.answered == st.p.requests) {
    finish(self);
    return;
  }
  if (st.sent < st.p.requests)
    issue_next(self);
}

void issue_next(driver_ptr self) {
  auto& st = self->state;
  auto number = st.p.first_request + st.sent++;
  embed_request req;
  req.model = st.p.model;
  req.inputs.reserve(st.p.inputs);
  for (uint32_t i = 0; i < st.p.inputs; ++i)
    req.inputs.emplace_back(bench_text(st.p.seed, number, i, st.p.text_bytes));
  req.dimensions = st.p.dims;
  req.timeout = caf::timespan{st.p.deadline};
  auto start = steady::now();
  self->request(st.p.service, caf::infinite, embed_atom_v, std::move(req))
      .then(
          [self, start](embed_result& r) {
            on_answer(self, start, &r, nullptr);
          },
          [self, start](caf::error& e) {
            on_answer(self, start, nullptr, &e);
          });
}

caf::behavior driver_fn(driver_ptr self, load_params p,
                        std::shared_ptr<std::promise<load_outcome>> done) {
  auto& st = self->state;
  st.p = std::move(p);
  st.done = std::move(done);
  st.out.ok_ns.reserve(st.p.requests);
  sample_threads(st);
  st.started = steady::now();
  st.last_answer = st.started;
  auto first = std::min(st.p.concurrency, st.p.requests);
  for (uint64_t i = 0; i < first; ++i)
    issue_next(self);
  self->delayed_send(self, st.p.sample_interval, caf::tick_atom_v);
  return {
      [self](caf::tick_atom) {
        sample_threads(self->state);
        check_lost(self);
        if (self->state.finished)
          return;
        self->delayed_send(self, self->state.p.sample_interval,
                           caf::tick_atom_v);
      },
  };
}

} // namespace

caf::expected<load_outcome> run_load(caf::actor_system& sys,
                                     load_params params) {
  if (params.requests == 0 || params.concurrency == 0 || params.inputs == 0)
    return make_error(errc::invalid_input,
                      "requests, concurrency and inputs must be >= 1");
  auto done = std::make_shared<std::promise<load_outcome>>();
  auto fut = done->get_future();
  auto driver = sys.spawn(driver_fn, std::move(params), std::move(done));
  try {
    return fut.get();
  } catch (const std::future_error&) {
    return make_error(errc::cancelled,
                      "the load driver stopped before every request was "
                      "answered");
  }
}

std::string error_kind(const caf::error& err) {
  if (auto code = error_code(err); code != errc::none)
    return to_string(code);
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return caf::to_string(err.category()) + "." + std::to_string(err.code());
}

} // namespace embedrt::bench

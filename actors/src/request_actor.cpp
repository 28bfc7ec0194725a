#include "request_actor.hpp"

#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"
#include "request_report.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace embedrt::detail {

namespace {

using self_ptr = request_impl::stateful_pointer<request_state>;

/// Sends the service that owns this actor `xs` (nothing if it is gone).
template <class... Ts>
void tell_owner(self_ptr self, Ts&&... xs) {
  if (auto owner = self->state.owner.lock())
    self->send(caf::actor_cast<request_owner>(std::move(owner)),
               std::forward<Ts>(xs)...);
}

/// Delivers the request's one reply. The state is reset only after the
/// message being handled (`release`), as callers up the stack still look at
/// it (`st.finished`, their chunk). The owner is told this actor is free
/// before the reply goes out (the next job it sends is handled after this
/// message), so a caller that sends its next request on the reply finds
/// this actor idle; not when the actor is about to end (`ending`).
void finish(self_ptr self, caf::error err) {
  auto& st = self->state;
  if (st.finished)
    return;
  st.finished = true;
  // With the cache, what goes back to it rides on request_done.
  bool cached = st.cache.active || st.cache.answer;
  cache_settle settle;
  if (cached)
    settle = finish_cache_phase(st, !err);
  report_request(self, st, st.upstream_request_id, err);
  if (!st.ending) {
    if (cached)
      tell_owner(self, request_done_atom_v, std::move(settle));
    else
      tell_owner(self, request_done_atom_v);
  }
  if (err) {
    st.rp.deliver(std::move(err));
  } else {
    st.result.request_id = st.req.request_id;
    st.rp.deliver(std::move(st.result));
  }
}

/// Called at the end of every message handler: a request answered in it is
/// forgotten (its inputs, vectors and routes freed; answers still on their
/// way to it are told apart by the generation).
void release(self_ptr self) {
  auto& st = self->state;
  if (!st.finished || !st.env)
    return; // a request in progress, or none (the job's env goes at reset)
  request_state fresh;
  fresh.owner = std::move(st.owner);
  fresh.generation = st.generation + 1;
  fresh.epochs = st.epochs;
  fresh.seed = st.seed;
  st = std::move(fresh);
}

std::string attempts_note(const request_chunk& c) {
  return " (after " + std::to_string(c.attempts) + " attempt"
      + (c.attempts == 1 ? "" : "s") + ")";
}

std::string deadline_note(self_ptr self) {
  auto ms = std::chrono::duration_cast<milliseconds>(self->state.timeout);
  return "deadline of " + std::to_string(ms.count()) + " ms exceeded";
}

void send_attempt(self_ptr self, uint32_t idx);
void fill_cache(self_ptr self, const request_chunk& c);

/// A chunk is settled (done or rejected input): the last one replies.
void chunk_settled(self_ptr self) {
  auto& st = self->state;
  if (--st.pending != 0)
    return;
  if (st.rejected.empty()) {
    finish(self, caf::error{});
    return;
  }
  std::sort(st.rejected.begin(), st.rejected.end(),
            [](const rejected_input& a, const rejected_input& b) {
              return a.index < b.index;
            });
  constexpr std::size_t max_listed = 10;
  std::string detail = st.rejected.size() == 1 ? "input " : "inputs ";
  for (std::size_t i = 0; i < st.rejected.size() && i < max_listed; ++i) {
    if (i > 0)
      detail += ", ";
    detail += std::to_string(st.rejected[i].index);
  }
  if (st.rejected.size() > max_listed)
    detail
        += " and " + std::to_string(st.rejected.size() - max_listed) + " more";
  detail += " rejected by the upstream: " + st.rejected.front().message;
  finish(self, make_error(errc::invalid_input, std::move(detail), 400));
}

/// The chunk's vectors arrived: store them in place.
void on_chunk_done(self_ptr self, uint32_t idx, call_result& r) {
  auto& st = self->state;
  auto& c = st.chunks[idx];
  auto n = c.end - c.begin;
  if (r.embeddings.size() != n) {
    finish(self,
           make_error(errc::invalid_response,
                      "upstream returned " + std::to_string(r.embeddings.size())
                          + " vectors for " + std::to_string(n) + " inputs"));
    return;
  }
  for (uint32_t i = 0; i < n; ++i)
    st.result.embeddings[c.begin + i] = std::move(r.embeddings[i]);
  st.result.usage.prompt_tokens += r.usage.prompt_tokens;
  st.result.usage.total_tokens += r.usage.total_tokens;
  if (st.result.model.empty())
    st.result.model = std::move(r.model);
  st.result.upstream = st.routes[c.route].name;
  c.done = true;
  c.served = true;
  if (st.cache.active)
    fill_cache(self, c);
  chunk_settled(self);
}

/// The upstream rejected the chunk's input: bisect it until the bad inputs
/// stand alone (a lone rejected input is recorded, the others go on).
void on_chunk_rejected(self_ptr self, uint32_t idx, const call_result& r) {
  auto& st = self->state;
  auto& c = st.chunks[idx];
  if (c.end - c.begin > 1) {
    // Halves are new sends, not retries.
    auto mid = c.begin + (c.end - c.begin) / 2;
    request_chunk upper;
    upper.begin = mid;
    upper.end = c.end;
    upper.route = c.route;
    c.end = mid;
    c.attempts = 0;
    c.epoch = ++st.epochs; // a pending retry of the whole chunk is stale
    st.chunks.push_back(upper);
    ++st.pending;
    auto upper_idx = static_cast<uint32_t>(st.chunks.size() - 1);
    send_attempt(self, idx);
    if (!st.finished)
      send_attempt(self, upper_idx);
    return;
  }
  for (auto i : caller_indices(st, c.begin))
    st.rejected.push_back(rejected_input{i, error_detail(r.error)});
  c.done = true;
  chunk_settled(self);
}

/// A failed attempt that is not about the input: retry after a backoff if
/// it may succeed and time and attempts are left, else reply the error.
void retry_or_fail(self_ptr self, uint32_t idx, call_result& r) {
  auto& st = self->state;
  auto& c = st.chunks[idx];
  auto code = error_code(r.error);
  // A retry the pool refused (retry budget, or no time to finish) reports
  // the error that made it retry.
  if (code == errc::overloaded && c.attempts > 1 && c.last_error) {
    auto why = error_detail(r.error);
    auto colon = why.find(": ");
    finish(self,
           make_error(
               error_code(c.last_error),
               error_detail(c.last_error) + "; "
                   + (colon == std::string::npos ? why : why.substr(colon + 2))
                   + attempts_note(c),
               error_http_status(c.last_error),
               error_retry_after(c.last_error)));
    return;
  }
  c.last_error = r.error;
  if (r.timed_out && self->clock().now() + milliseconds{1} >= st.deadline) {
    // The attempt was cut at the caller's deadline: that is what happened.
    finish(self,
           make_error(errc::deadline_exceeded,
                      deadline_note(self) + attempts_note(c)
                          + "; last error: " + render_error(r.error)));
    return;
  }
  const auto& retry = st.env->retry;
  if (!r.retryable || c.attempts >= retry.max_attempts) {
    if (r.retryable)
      finish(self,
             make_error(code, error_detail(r.error) + attempts_note(c),
                        error_http_status(r.error),
                        error_retry_after(r.error)));
    else
      finish(self, std::move(r.error));
    return;
  }
  auto hint = milliseconds{r.retry_after_ms};
  if (hint > retry.max_retry_after) {
    finish(self, std::move(r.error));
    return;
  }
  auto delay = st.backoff.next_delay(c.attempts, hint);
  if (self->clock().now() + delay >= st.deadline) {
    if (r.timed_out) {
      // The attempt ran out of time (it waited in the queue, then was cut at
      // the time left) and none is left: the deadline ended the request.
      finish(self,
             make_error(errc::deadline_exceeded,
                        deadline_note(self) + attempts_note(c)
                            + "; no time left to retry after: "
                            + render_error(r.error)));
      return;
    }
    finish(self,
           make_error(code,
                      error_detail(r.error) + attempts_note(c)
                          + "; no time left before the deadline to retry",
                      error_http_status(r.error), error_retry_after(r.error)));
    return;
  }
  c.epoch = ++st.epochs;
  self->delayed_send(self, delay, retry_atom_v, idx, c.epoch);
}

/// The pool answered the chunk's call at the request's deadline (queued
/// until then): the reply names the deadline and the error before it.
void on_deadline(self_ptr self, uint32_t idx) {
  auto& c = self->state.chunks[idx];
  std::string detail = deadline_note(self) + attempts_note(c);
  if (c.last_error)
    detail += "; last error: " + render_error(c.last_error);
  finish(self, make_error(errc::deadline_exceeded, detail));
}

void on_chunk_result(self_ptr self, uint32_t idx, call_result& r) {
  auto& st = self->state;
  if (st.finished || st.chunks[idx].done)
    return;
  auto& c = st.chunks[idx];
  note_attempt(st, st.upstream_request_id, idx, r);
  if (!r.error) {
    on_chunk_done(self, idx, r);
    return;
  }
  auto code = error_code(r.error);
  if (code == errc::deadline_exceeded) {
    on_deadline(self, idx);
    return;
  }
  if (code == errc::invalid_input && !r.request_level) {
    on_chunk_rejected(self, idx, r);
    return;
  }
  // Failover: an upstream that is down, whose breaker is open or that
  // cannot take the call (queue full, no time to finish it) is skipped if
  // another serves the model (the attempt is not counted: nothing was sent).
  if ((code == errc::upstream_down || code == errc::breaker_open
       || code == errc::overloaded)
      && c.route + 1 < st.routes.size()) {
    ++c.route;
    c.last_error = r.error;
    --c.attempts;
    send_attempt(self, idx);
    return;
  }
  retry_or_fail(self, idx, r);
}

/// The pool call failed without an answer from the pool: the pool is gone
/// (restarting), as CAF reports for a request to a dead actor.
void on_call_error(self_ptr self, uint32_t idx, const caf::error& err) {
  auto& st = self->state;
  if (st.finished)
    return;
  auto& c = st.chunks[idx];
  // The pool itself is gone (restarting): treat like a down upstream.
  call_result r;
  r.error = make_error(errc::upstream_down,
                       st.routes[c.route].name + ": pool unavailable ("
                           + caf::to_string(err) + ")");
  on_chunk_result(self, idx, r);
}

void send_attempt(self_ptr self, uint32_t idx) {
  auto& st = self->state;
  auto& c = st.chunks[idx];
  auto left = st.deadline - self->clock().now();
  if (left <= caf::timespan{0}) {
    finish(self,
           make_error(errc::deadline_exceeded,
                      "deadline exceeded before attempt "
                          + std::to_string(c.attempts + 1)));
    return;
  }
  const auto& rt = st.routes[c.route];
  if (!rt.pool) {
    // The pool of this upstream is being restarted by the service.
    call_result r;
    r.error = make_error(errc::upstream_down, rt.name + ": pool restarting");
    ++c.attempts;
    on_chunk_result(self, idx, r);
    return;
  }
  upstream_call call;
  call.model = rt.model;
  if (st.req.token_inputs.empty())
    call.inputs.assign(st.req.inputs.begin() + c.begin,
                       st.req.inputs.begin() + c.end);
  else
    call.token_inputs.assign(st.req.token_inputs.begin() + c.begin,
                             st.req.token_inputs.begin() + c.end);
  call.tokens = std::accumulate(st.tokens.begin() + c.begin,
                                st.tokens.begin() + c.end, int64_t{0});
  call.dimensions = st.req.dimensions;
  call.user = st.req.user;
  call.budget = left;
  call.is_retry = c.attempts > 0;
  call.after_rate_limit = call.is_retry && c.last_error
      && error_code(c.last_error) == errc::rate_limited
      && error_retry_after(c.last_error).count() > 0;
  call.request_id = st.req.request_id;
  ++c.attempts;
  // No timeout: the pool answers every call by its budget (its watchdog
  // answers a call still queued then, the transport's timer one in flight).
  // A timeout here would cost a push to CAF's clock thread per call (CAF
  // 0.17 never cancels it; the entry goes only when this actor ends).
  self->request(rt.pool, caf::infinite, call_atom_v, std::move(call))
      .then(
          [self, idx, gen{st.generation}](call_result& r) {
            if (self->state.generation == gen)
              on_chunk_result(self, idx, r);
            release(self);
          },
          [self, idx, gen{st.generation}](caf::error& err) {
            if (self->state.generation == gen)
              on_call_error(self, idx, err);
            release(self);
          });
}

/// The strictest limits of all candidate upstreams, so that failover never
/// meets an input the first upstream accepted.
provider_profile strictest_limits(const std::vector<route>& routes) {
  auto limits = routes.front().profile;
  for (auto& rt : routes) {
    const auto& p = rt.profile;
    limits.max_inputs = std::min(limits.max_inputs, p.max_inputs);
    limits.max_request_inputs
        = std::min(limits.max_request_inputs, p.max_request_inputs);
    limits.token_inputs = limits.token_inputs && p.token_inputs;
    if (!p.token_inputs)
      limits.kind = p.kind; // named when token arrays are refused
    limits.max_tokens_per_input
        = std::min(limits.max_tokens_per_input, p.max_tokens_per_input);
    limits.max_tokens_per_request
        = std::min(limits.max_tokens_per_request, p.max_tokens_per_request);
    limits.max_input_bytes
        = std::min(limits.max_input_bytes, p.max_input_bytes);
    limits.max_request_bytes
        = std::min(limits.max_request_bytes, p.max_request_bytes);
  }
  return limits;
}

/// Checks the request's parameters before any I/O; an error is the reply.
caf::error validate_params(const embed_request& req) {
  if (req.model.empty())
    return make_error(errc::invalid_input, "'model' is required");
  if (!req.inputs.empty() && !req.token_inputs.empty())
    return make_error(errc::invalid_input,
                      "inputs are texts or token arrays, not both");
  if (req.dimensions < 0)
    return make_error(errc::invalid_input,
                      "'dimensions' must be a positive integer");
  return caf::error{};
}

/// Checks the caller's inputs (texts or token arrays) against `limits`: at
/// most `max_request_inputs` of them (they are split into upstream calls of
/// at most `max_inputs`); each input's tokens go to `st.tokens`.
caf::error validate_inputs(request_state& st, const provider_profile& limits) {
  auto per_request = limits;
  per_request.max_inputs = limits.max_request_inputs;
  if (!st.req.token_inputs.empty())
    return openai::validate_token_inputs(st.req.token_inputs, per_request,
                                         false, &st.tokens);
  return openai::validate_inputs(st.req.inputs, per_request, false, &st.tokens);
}

/// The bytes each input counts for in an upstream request.
std::vector<std::size_t> input_bytes(const embed_request& req) {
  std::vector<std::size_t> bytes;
  bytes.reserve(input_count(req));
  for (const auto& in : req.inputs)
    bytes.push_back(in.size());
  for (const auto& ids : req.token_inputs)
    bytes.push_back(token_array_bytes(ids.size()));
  return bytes;
}

/// Splits the inputs to send upstream into chunks and sends them; `waits`
/// inputs in flight elsewhere (cache) settle on their own.
void start_upstream(self_ptr self, std::size_t waits,
                    const provider_profile& limits) {
  auto& st = self->state;
  st.chunks = split_into_chunks(input_bytes(st.req), st.tokens, limits);
  st.pending = st.chunks.size() + waits;
  st.result.embeddings.resize(input_count(st.req));
  if (st.pending == 0) {
    finish(self, caf::error{}); // every input served by the cache
    return;
  }
  for (uint32_t i = 0; i < st.chunks.size() && !st.finished; ++i)
    send_attempt(self, i);
}

// -- the cache phase (request_cache.hpp; docs/caching.md) ---------------------

/// Hands the cache something at once (not with the reply's request_done).
void send_to_cache(self_ptr self, cache_settle s) {
  tell_owner(self, cache_fill_atom_v, std::move(s));
}

/// A chunk's vectors for the cache: they go with the reply's request_done
/// (`finish_cache_phase`), or at once while another request waits for one
/// of this request's inputs (c_wanted: it need not wait for this whole
/// reply), or while this request waits for others' inputs (those others
/// may be waiting for these: neither would reply if both held theirs back).
void fill_cache(self_ptr self, const request_chunk& c) {
  auto& st = self->state;
  if (st.cache.waiting.empty() && !st.cache.wanted)
    return;
  const auto& model = st.routes[c.route].model;
  cache_settle now;
  now.epoch = st.cache.epoch;
  add_cache_fill(st, c.begin, c.end, model, now);
  if (!now.tickets.empty())
    send_to_cache(self, std::move(now));
}

/// Applies the cache's answer: what this request owns goes upstream, what
/// others own is waited for (until the deadline). `limits`: the routes'
/// `strictest_limits`.
void start_cached(self_ptr self, const provider_profile& limits) {
  auto& st = self->state;
  auto answer = std::move(st.cache.answer->answer);
  auto waits = apply_cache_answer(st, answer);
  st.cache.answer.reset();
  if (waits > 0)
    self->delayed_send(self, st.deadline - self->clock().now(),
                       cache_expire_atom_v, st.generation);
  start_upstream(self, waits, limits);
}

void start_cached(self_ptr self) {
  start_cached(self, strictest_limits(self->state.routes));
}

/// With a persistent store, the owned misses are looked up on disk first,
/// within the request's deadline: what the store has is a hit, and goes to
/// the cache at once (its waiters get it); a failed read leaves them misses.
void read_disk(self_ptr self) {
  auto& st = self->state;
  auto keys = std::move(st.cache.answer->disk_keys);
  st.cache.answer->disk_keys.clear();
  self->request(st.env->disk, st.deadline - self->clock().now(),
                disk_get_atom_v, std::move(keys))
      .then(
          [self, gen{st.generation}](std::vector<std::vector<float>>& found) {
            auto& st = self->state;
            if (st.generation == gen && !st.finished && st.cache.answer) {
              auto hits = take_disk_hits(st, found);
              if (!hits.tickets.empty())
                send_to_cache(self, std::move(hits));
              start_cached(self);
            }
            release(self);
          },
          [self, gen{st.generation}](caf::error& err) {
            auto& st = self->state;
            if (st.generation == gen && !st.finished && st.cache.answer) {
              log(log_level::warn, "cache_store_error",
                  {{"operation", "read"}, {"reason", caf::to_string(err)}});
              if (err == caf::sec::request_timeout) {
                finish(self,
                       make_error(errc::deadline_exceeded,
                                  deadline_note(self)
                                      + " waiting for the cache's "
                                        "persistent store"));
              } else {
                cache_settle failed;
                failed.epoch = st.cache.epoch;
                failed.disk_failed = true;
                send_to_cache(self, std::move(failed));
                start_cached(self);
              }
            }
            release(self);
          });
}

/// An input this request waited for was filled by its owner.
void on_cache_filled(self_ptr self, uint64_t ticket, std::vector<float>& v) {
  if (!self->state.finished && take_cache_fill(self->state, ticket, v))
    chunk_settled(self);
}

/// The owner of an input this request waited for gave it up: this request
/// sends it upstream now (the wait becomes a chunk of its own).
void on_cache_owner(self_ptr self, uint64_t ticket) {
  auto& st = self->state;
  if (st.finished)
    return;
  auto k = take_cache_ownership(st, ticket);
  if (!k)
    return;
  request_chunk c;
  c.begin = *k;
  c.end = *k + 1;
  st.chunks.push_back(c);
  send_attempt(self, static_cast<uint32_t>(st.chunks.size() - 1));
}

/// Another request waits for an input this one owns: the chunks served
/// already go to the cache now, the others as they are served.
void on_cache_wanted(self_ptr self, uint64_t ticket) {
  auto& st = self->state;
  if (st.finished || !mark_cache_wanted(st, ticket) || !st.cache.active)
    return;
  for (const auto& c : st.chunks)
    if (c.served)
      fill_cache(self, c);
}

/// The service's cache failed and started again empty: nobody will fill
/// the waits; send them ourselves (an answer not applied yet, its disk read
/// in flight, takes them over when it is).
void on_cache_lost(self_ptr self) {
  auto& st = self->state;
  if (st.finished)
    return;
  if (!st.cache.active) {
    if (auto& r = st.cache.answer)
      for (std::size_t i = 0; i < r->answer.slots.size(); ++i)
        if (r->answer.slots[i] == static_cast<uint8_t>(cache_slot::waiting))
          st.cache.early_owned.push_back(r->answer.tickets[i]);
    return;
  }
  auto waiting = st.cache.waiting;
  for (auto t : waiting)
    on_cache_owner(self, t);
}

/// The deadline of a request waiting for others' inputs.
void on_cache_expire(self_ptr self, uint64_t gen) {
  auto& st = self->state;
  if (st.generation == gen && !st.finished && !st.cache.waiting.empty())
    finish(self,
           make_error(errc::deadline_exceeded,
                      deadline_note(self)
                          + " waiting for an identical input in flight"));
}

caf::result<embed_result> on_embed(self_ptr self, request_job& job,
                                   embed_request& req) {
  auto& st = self->state;
  if (!st.finished)
    return make_error(errc::overloaded,
                      "request actor busy: it serves one request at a time");
  st.finished = false;
  st.env = std::move(job.env);
  st.routes = std::move(job.routes);
  st.cache.answer = std::move(job.cache);
  if (st.cache.answer)
    st.cache.epoch = st.cache.answer->epoch;
  st.cache.spare_floats = std::move(job.spare_floats);
  st.backoff
      = backoff_policy{st.env->retry.backoff_base, st.env->retry.backoff_cap,
                       st.seed ^ (st.generation * 0x9e3779b97f4a7c15ULL)};
  st.rp = self->make_response_promise<embed_result>();
  st.req = std::move(req);
  auto timeout = st.req.timeout.count() > 0
      ? st.req.timeout
      : caf::timespan{st.env->default_timeout};
  st.timeout = timeout;
  st.deadline = self->clock().now() + timeout;
  auto rp = st.rp;
  if (auto err = validate_params(st.req)) {
    finish(self, std::move(err));
    return rp;
  }
  if (st.routes.empty()) {
    // OpenAI's answer to an unknown model: 404 `model_not_found`.
    finish(self,
           make_error(errc::invalid_input,
                      "The model '" + st.req.model
                          + "' does not exist: no upstream serves it",
                      404));
    return rp;
  }
  auto limits = strictest_limits(st.routes);
  if (auto err = validate_inputs(st, limits)) {
    finish(self, std::move(err));
    return rp;
  }
  if (!st.env->crash_marker.empty())
    for (auto& in : st.req.inputs)
      if (in == st.env->crash_marker)
        throw std::runtime_error("chaos: request crash marker received");
  if (st.cache.answer) {
    if (!st.cache.answer->disk_keys.empty() && st.env->disk)
      read_disk(self);
    else
      start_cached(self, limits);
    return rp;
  }
  start_upstream(self, 0, limits);
  return rp;
}

void on_retry(self_ptr self, uint32_t idx, uint64_t epoch) {
  auto& st = self->state;
  if (st.finished || idx >= st.chunks.size())
    return;
  auto& c = st.chunks[idx];
  if (c.done || c.epoch != epoch)
    return;
  send_attempt(self, idx);
}

} // namespace

std::vector<request_chunk>
split_into_chunks(const std::vector<std::string>& inputs,
                  const std::vector<int64_t>& tokens,
                  const provider_profile& profile) {
  std::vector<std::size_t> sizes;
  sizes.reserve(inputs.size());
  for (const auto& in : inputs)
    sizes.push_back(in.size());
  return split_into_chunks(sizes, tokens, profile);
}

std::vector<request_chunk>
split_into_chunks(const std::vector<std::size_t>& input_bytes,
                  const std::vector<int64_t>& tokens,
                  const provider_profile& profile) {
  std::vector<request_chunk> chunks;
  request_chunk cur;
  std::size_t sum = 0;
  std::size_t bytes = 0;
  for (uint32_t i = 0; i < input_bytes.size(); ++i) {
    auto t = static_cast<std::size_t>(tokens[i]);
    auto b = input_bytes[i];
    auto n = cur.end - cur.begin;
    if (n > 0
        && (n + 1 > profile.max_inputs
            || sum + t > profile.max_tokens_per_request
            || bytes + b > profile.max_request_bytes / 2)) {
      chunks.push_back(cur);
      cur = request_chunk{};
      cur.begin = i;
      sum = 0;
      bytes = 0;
    }
    cur.end = i + 1;
    sum += t;
    bytes += b;
  }
  if (cur.end > cur.begin)
    chunks.push_back(cur);
  return chunks;
}

request_impl::behavior_type
request_actor_fn(request_impl::stateful_pointer<request_state> self,
                 request_owner owner, uint64_t seed) {
  auto& st = self->state;
  st.owner = caf::actor_cast<caf::weak_actor_ptr>(owner);
  st.seed = seed;
  // When the service stops, or has more idle request actors than it keeps,
  // it sends an exit message: a request in progress is answered at once,
  // and the actor ends (its owner is not told it is free).
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.ending = true;
    finish(
        self,
        make_error(errc::cancelled,
                   "the service stopped (" + caf::to_string(msg.reason) + ")"));
    self->quit(msg.reason);
  });
  // An exception must not leave the caller without an answer.
  self->set_exception_handler(
      [self](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
        self->state.ending = true;
        finish(self, make_error(errc::cancelled, "internal error"));
        return caf::exit_reason::unhandled_exception;
      });
  return {
      [self](embed_atom, request_job& job,
             embed_request& req) -> caf::result<embed_result> {
        auto res = on_embed(self, job, req);
        release(self);
        return res;
      },
      [self](retry_atom, uint32_t idx, uint64_t epoch) {
        on_retry(self, idx, epoch);
        release(self);
      },
      [self](cache_filled_atom, uint64_t ticket, std::vector<float>& v) {
        on_cache_filled(self, ticket, v);
        release(self);
      },
      [self](cache_owner_atom, uint64_t ticket) {
        on_cache_owner(self, ticket);
        release(self);
      },
      [self](cache_lost_atom) {
        on_cache_lost(self);
        release(self);
      },
      [self](cache_wanted_atom, uint64_t ticket) {
        on_cache_wanted(self, ticket);
        release(self);
      },
      [self](cache_expire_atom, uint64_t gen) {
        on_cache_expire(self, gen);
        release(self);
      },
  };
}

} // namespace embedrt::detail

#include "request_cache.hpp"

#include "cache_policy.hpp"
#include "request_actor.hpp"

#include <algorithm>

namespace embedrt::detail {

namespace {

/// Appends the caller's input `i` to the compact (upstream) inputs.
void append_compact(request_state& st, uint32_t i, uint64_t ticket) {
  auto& cs = st.cache;
  if (!cs.caller_ids.empty())
    st.req.token_inputs.push_back(cs.caller_ids[i]);
  else
    st.req.inputs.push_back(cs.caller_texts[i]);
  st.tokens.push_back(cs.caller_tokens[i]);
  cs.ticket_of.push_back(ticket);
  if (!cs.filled.empty())
    cs.filled.push_back(false);
}

/// Marks the compact input `k` handed to the cache (`filled` is sized on
/// the first mark: a request that hands everything back at its reply never
/// allocates it).
bool mark_filled(request_cache_state& cs, std::size_t k) {
  if (cs.filled.size() < cs.ticket_of.size())
    cs.filled.resize(cs.ticket_of.size());
  if (cs.filled[k])
    return false;
  cs.filled[k] = true;
  return true;
}

void restore_caller_inputs(request_state& st) {
  auto& cs = st.cache;
  if (cs.identity)
    return;
  if (!cs.caller_ids.empty())
    st.req.token_inputs = std::move(cs.caller_ids);
  else
    st.req.inputs = std::move(cs.caller_texts);
  st.tokens = std::move(cs.caller_tokens);
}

} // namespace

cache_settle take_disk_hits(request_state& st,
                            std::vector<std::vector<float>>& found) {
  auto& r = *st.cache.answer;
  auto& a = r.answer;
  cache_settle s;
  s.epoch = st.cache.epoch;
  s.from_disk = true;
  std::unordered_map<uint64_t, std::size_t> by_ticket;
  for (std::size_t k = 0; k < r.disk_idx.size() && k < found.size(); ++k)
    if (!found[k].empty() && r.disk_idx[k] < a.tickets.size())
      by_ticket.emplace(a.tickets[r.disk_idx[k]], k);
  if (by_ticket.empty())
    return s;
  a.distinct_misses = false;
  if (a.slots.empty()) {
    a.slots.assign(a.tickets.size(), static_cast<uint8_t>(cache_slot::owned));
    a.vectors.resize(a.tickets.size());
  }
  for (std::size_t i = 0; i < a.slots.size(); ++i) {
    if (a.slots[i] != static_cast<uint8_t>(cache_slot::owned))
      continue;
    auto f = by_ticket.find(a.tickets[i]);
    if (f == by_ticket.end())
      continue;
    a.slots[i] = static_cast<uint8_t>(cache_slot::hit);
    a.vectors[i] = found[f->second];
    a.tickets[i] = 0;
  }
  for (auto& [ticket, k] : by_ticket) {
    ++a.persistent_hits;
    s.add(ticket, found[k]);
  }
  return s;
}

std::size_t apply_cache_answer(request_state& st, cache_answer& a) {
  auto& cs = st.cache;
  cs.active = true;
  if (a.distinct_misses && a.tickets.size() == input_count(st.req)) {
    cs.identity = true;
    cs.ticket_of = std::move(a.tickets);
    return 0;
  }
  auto n = a.tickets.size();
  cs.vectors.resize(n);
  cs.caller_tokens = std::move(st.tokens);
  st.tokens.clear();
  if (!st.req.token_inputs.empty()) {
    cs.caller_ids = std::move(st.req.token_inputs);
    st.req.token_inputs.clear();
  } else {
    cs.caller_texts = std::move(st.req.inputs);
    st.req.inputs.clear();
  }
  for (uint32_t i = 0; i < n; ++i) {
    auto t = a.tickets[i];
    auto slot = a.slots.empty() ? cache_slot::owned
                                : static_cast<cache_slot>(a.slots[i]);
    switch (slot) {
      case cache_slot::hit:
        cs.vectors[i] = std::move(a.vectors[i]);
        cs.cached_tokens += cs.caller_tokens[i];
        break;
      case cache_slot::owned: {
        auto& tg = cs.targets[t];
        if (tg.empty())
          append_compact(st, i, t);
        else
          cs.cached_tokens += cs.caller_tokens[i];
        tg.push_back(i);
        break;
      }
      case cache_slot::waiting:
        cs.targets[t].push_back(i);
        cs.waiting.insert(t);
        cs.cached_tokens += cs.caller_tokens[i];
        break;
    }
  }
  for (auto& [t, vec] : cs.early_fills)
    take_cache_fill(st, t, vec);
  cs.early_fills.clear();
  for (auto t : cs.early_owned)
    take_cache_ownership(st, t);
  cs.early_owned.clear();
  return cs.waiting.size();
}

void add_cache_fill(request_state& st, uint32_t begin, uint32_t end,
                    const std::string& served_model, cache_settle& out) {
  // Keys name the first route's model: vectors of another model (failover
  // to an upstream with another model_map) are not cached under them.
  if (served_model != st.routes.front().model)
    return;
  auto& cs = st.cache;
  for (auto k = begin; k < end && k < cs.ticket_of.size(); ++k) {
    if (!mark_filled(cs, k))
      continue;
    out.add(cs.ticket_of[k], st.result.embeddings[k]);
  }
}

bool take_cache_fill(request_state& st, uint64_t ticket,
                     std::vector<float>& vec) {
  auto& cs = st.cache;
  if (!cs.active) {
    if (cs.answer)
      cs.early_fills.emplace(ticket, std::move(vec));
    return false;
  }
  if (cs.waiting.erase(ticket) == 0)
    return false;
  auto& tg = cs.targets[ticket];
  for (std::size_t j = 0; j + 1 < tg.size(); ++j)
    cs.vectors[tg[j]] = vec;
  if (!tg.empty())
    cs.vectors[tg.back()] = std::move(vec);
  return true;
}

std::optional<uint32_t> take_cache_ownership(request_state& st,
                                             uint64_t ticket) {
  auto& cs = st.cache;
  if (!cs.active) {
    if (cs.answer)
      cs.early_owned.push_back(ticket);
    return std::nullopt;
  }
  if (cs.waiting.erase(ticket) == 0)
    return std::nullopt;
  auto first = cs.targets[ticket].front();
  append_compact(st, first, ticket);
  cs.cached_tokens -= cs.caller_tokens[first];
  st.result.embeddings.resize(cs.ticket_of.size());
  return static_cast<uint32_t>(cs.ticket_of.size() - 1);
}

bool mark_cache_wanted(request_state& st, uint64_t ticket) {
  auto& cs = st.cache;
  // Before its answer is applied a request's tickets are the answer's.
  const auto& owned
      = cs.answer && !cs.active ? cs.answer->answer.tickets : cs.ticket_of;
  if (ticket == 0
      || std::find(owned.begin(), owned.end(), ticket) == owned.end())
    return false;
  cs.wanted = true;
  return true;
}

std::vector<uint32_t> caller_indices(const request_state& st,
                                     uint32_t compact) {
  const auto& cs = st.cache;
  if (!cs.active || cs.identity || compact >= cs.ticket_of.size())
    return {compact};
  auto i = cs.targets.find(cs.ticket_of[compact]);
  if (i == cs.targets.end())
    return {compact};
  return i->second;
}

cache_settle finish_cache_phase(request_state& st, bool success) {
  auto& cs = st.cache;
  cache_settle settle;
  settle.epoch = cs.epoch;
  if (!cs.active) {
    // Refused before the answer was applied: every ticket goes back (the
    // cache releases those this request owns, withdraws its waits).
    if (cs.answer)
      for (auto t : cs.answer->answer.tickets)
        if (t != 0)
          settle.withdrawn.push_back(t);
    cs.answer.reset();
    return settle;
  }
  // The vectors of the chunks served under the lookup's model (not those
  // of inputs the upstream rejected) that were not handed over yet (copies: the
  // originals are the reply's), then the owned tickets left unfilled.
  auto n = cs.ticket_of.size();
  auto fills = [&st](const request_chunk& c) {
    return c.served
        && (c.route == 0
            || st.routes[c.route].model == st.routes.front().model);
  };
  std::size_t served = 0;
  for (const auto& c : st.chunks)
    if (fills(c))
      served += c.end - c.begin;
  if (cs.identity && cs.filled.empty() && served == n
      && st.result.embeddings.size() == n) {
    // The common case (every input a distinct miss, all served): the
    // tickets go back as they are, the floats in the buffer the service
    // lent.
    settle.floats = std::move(cs.spare_floats);
    settle.floats.clear();
    if (n > 0)
      settle.floats.reserve(n * st.result.embeddings.front().size());
    for (std::size_t k = 0; k < n; ++k)
      settle.add_floats(k, st.result.embeddings[k]);
    settle.tickets = std::move(cs.ticket_of);
  } else {
    for (const auto& c : st.chunks)
      if (fills(c))
        for (auto k = c.begin; k < c.end && k < n; ++k)
          if (mark_filled(cs, k)) {
            settle.add(cs.ticket_of[k], st.result.embeddings[k]);
          }
    for (std::size_t k = 0; k < n; ++k)
      if (mark_filled(cs, k))
        settle.released.push_back(cs.ticket_of[k]);
  }
  if (!cs.waiting.empty()) {
    settle.withdrawn.assign(cs.waiting.begin(), cs.waiting.end());
    cs.waiting.clear();
  }
  if (!success || cs.identity) {
    restore_caller_inputs(st);
    return settle;
  }
  auto out = std::move(cs.vectors);
  for (std::size_t k = 0; k < cs.ticket_of.size(); ++k) {
    auto& tg = cs.targets[cs.ticket_of[k]];
    for (std::size_t j = 0; j + 1 < tg.size(); ++j)
      out[tg[j]] = st.result.embeddings[k];
    if (!tg.empty())
      out[tg.back()] = std::move(st.result.embeddings[k]);
  }
  st.result.embeddings = std::move(out);
  st.result.usage.cached_tokens = cs.cached_tokens;
  if (st.result.model.empty())
    st.result.model = st.routes.front().model;
  restore_caller_inputs(st);
  return settle;
}

} // namespace embedrt::detail

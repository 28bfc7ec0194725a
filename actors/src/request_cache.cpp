#include "request_cache.hpp"

#include "cache_policy.hpp"
#include "request_actor.hpp"

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
  cs.filled.push_back(false);
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

cache_lookup make_cache_lookup(const request_state& st) {
  cache_lookup q;
  const auto& model = st.routes.front().model;
  auto dims = st.req.dimensions;
  auto n = input_count(st.req);
  q.keys.reserve(n);
  q.hashes.reserve(n);
  if (!st.req.token_inputs.empty())
    for (const auto& ids : st.req.token_inputs)
      q.keys.push_back(cache_key(model, dims, ids));
  else
    for (const auto& text : st.req.inputs)
      q.keys.push_back(cache_key(model, dims, text));
  for (const auto& key : q.keys)
    q.hashes.push_back(cache_hash(key));
  return q;
}

std::size_t apply_cache_answer(request_state& st, cache_answer& a) {
  auto& cs = st.cache;
  cs.active = true;
  if (a.distinct_misses && a.tickets.size() == input_count(st.req)) {
    cs.identity = true;
    cs.ticket_of = std::move(a.tickets);
    cs.filled.assign(cs.ticket_of.size(), false);
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

cache_fill make_cache_fill(request_state& st, uint32_t begin, uint32_t end,
                           const std::string& served_model) {
  cache_fill f;
  // Keys name the first route's model: vectors of another model (failover
  // to an upstream with another model_map) are not cached under them.
  if (served_model != st.routes.front().model)
    return f;
  auto& cs = st.cache;
  for (auto k = begin; k < end && k < cs.ticket_of.size(); ++k) {
    if (cs.filled[k])
      continue;
    cs.filled[k] = true;
    f.tickets.push_back(cs.ticket_of[k]);
    f.vectors.push_back(st.result.embeddings[k]);
  }
  return f;
}

bool take_cache_fill(request_state& st, uint64_t ticket,
                     std::vector<float>& vec) {
  auto& cs = st.cache;
  if (!cs.active) {
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

std::vector<uint64_t> finish_cache_phase(request_state& st, bool success) {
  auto& cs = st.cache;
  std::vector<uint64_t> released;
  for (std::size_t k = 0; k < cs.ticket_of.size(); ++k)
    if (!cs.filled[k]) {
      cs.filled[k] = true;
      released.push_back(cs.ticket_of[k]);
    }
  if (!success || cs.identity) {
    restore_caller_inputs(st);
    return released;
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
  return released;
}

} // namespace embedrt::detail

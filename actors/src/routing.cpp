#include "routing.hpp"

#include <algorithm>

namespace embedrt::detail {

namespace {

uint64_t weight_of(const route_load& x) {
  return x.weight == 0 ? 1 : x.weight;
}

/// a scores better (fewer requests outstanding per unit of weight) than b.
bool better(const route_load& a, const route_load& b) {
  // a.out / a.w < b.out / b.w, without division.
  auto lhs = static_cast<unsigned __int128>(std::max<int64_t>(0, a.outstanding))
      * weight_of(b);
  auto rhs = static_cast<unsigned __int128>(std::max<int64_t>(0, b.outstanding))
      * weight_of(a);
  return lhs < rhs;
}

/// Draws one of `pool` (indices into `loads`) with probability proportional
/// to its weight, skipping `except`.
std::size_t draw(const std::vector<route_load>& loads,
                 const std::vector<std::size_t>& pool, std::size_t except,
                 std::mt19937_64& rng) {
  uint64_t total = 0;
  for (auto i : pool)
    if (i != except)
      total += weight_of(loads[i]);
  auto ticket = std::uniform_int_distribution<uint64_t>{0, total - 1}(rng);
  for (auto i : pool) {
    if (i == except)
      continue;
    auto w = weight_of(loads[i]);
    if (ticket < w)
      return i;
    ticket -= w;
  }
  return pool.back();
}

} // namespace

std::vector<std::size_t> order_routes(const std::vector<route_load>& loads,
                                      std::vector<std::size_t> candidates,
                                      std::mt19937_64& rng) {
  if (candidates.size() < 2)
    return candidates;
  std::vector<std::size_t> up;
  std::vector<std::size_t> down;
  for (auto i : candidates)
    (loads[i].available ? up : down).push_back(i);
  auto pool = up.empty() ? down : up;
  // Only the best priority level draws (Envoy's priority levels).
  uint32_t best = loads[pool.front()].priority;
  for (auto i : pool)
    best = std::min(best, loads[i].priority);
  pool.erase(std::remove_if(pool.begin(), pool.end(),
                            [&](std::size_t i) {
                              return loads[i].priority != best;
                            }),
             pool.end());
  std::size_t first = pool.front();
  if (pool.size() > 1) {
    auto a = draw(loads, pool, static_cast<std::size_t>(-1), rng);
    auto b = draw(loads, pool, a, rng);
    first = better(loads[b], loads[a]) ? b : a;
  }
  std::vector<std::size_t> out{first};
  auto rest = [&](std::vector<std::size_t>& group, bool by_score) {
    group.erase(std::remove(group.begin(), group.end(), first), group.end());
    if (by_score)
      std::stable_sort(group.begin(), group.end(),
                       [&](std::size_t x, std::size_t y) {
                         if (loads[x].priority != loads[y].priority)
                           return loads[x].priority < loads[y].priority;
                         return better(loads[x], loads[y]);
                       });
    out.insert(out.end(), group.begin(), group.end());
  };
  rest(up, true);
  rest(down, false);
  return out;
}

} // namespace embedrt::detail

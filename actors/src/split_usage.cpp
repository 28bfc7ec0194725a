// How a merged call's token usage is split between its callers (declared in
// pool_actor.hpp, where the pool uses it).
#include "pool_actor.hpp"

#include <algorithm>

namespace embedrt::detail {

namespace {

/// Splits `total` in proportion to `weights` with largest-remainder rounding:
/// the parts sum to `total` exactly.
std::vector<int64_t> split_count(int64_t total,
                                 const std::vector<std::size_t>& weights) {
  std::vector<int64_t> parts(weights.size(), 0);
  if (weights.empty())
    return parts;
  // Weights of 0 everywhere count as equal weights.
  unsigned __int128 sum = 0;
  for (auto w : weights)
    sum += w;
  bool equal = sum == 0;
  auto weight = [&](std::size_t i) -> unsigned __int128 {
    return equal ? 1 : weights[i];
  };
  if (equal)
    sum = weights.size();
  auto t = static_cast<unsigned __int128>(std::max<int64_t>(0, total));
  std::vector<unsigned __int128> rest(weights.size());
  unsigned __int128 given = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    auto share = t * weight(i);
    parts[i] = static_cast<int64_t>(share / sum);
    rest[i] = share % sum;
    given += share / sum;
  }
  // What rounding down left over goes to the largest remainders (the
  // earlier part first on a tie).
  std::vector<std::size_t> order(weights.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) {
                     return rest[a] > rest[b];
                   });
  // Each part lost less than 1 to rounding down: fewer than size() are left.
  auto left = static_cast<std::size_t>(t - given);
  for (std::size_t k = 0; k < left; ++k)
    ++parts[order[k]];
  return parts;
}

} // namespace

std::vector<token_usage> split_usage(const token_usage& total,
                                     const std::vector<std::size_t>& weights) {
  auto prompt = split_count(total.prompt_tokens, weights);
  auto all = split_count(total.total_tokens, weights);
  std::vector<token_usage> parts(weights.size());
  for (std::size_t i = 0; i < parts.size(); ++i)
    parts[i] = token_usage{prompt[i], all[i]};
  return parts;
}

} // namespace embedrt::detail

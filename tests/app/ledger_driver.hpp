// The ledger of a run through `embedrt::client`: a driver that keeps a fixed
// number of requests in flight (each reply's callback records it and sends
// the next request) and one entry per request, written by its first reply
// only, so a second reply is counted and nothing is lost silently
// (chaos_test.cpp, wiremock_test.cpp).
#pragma once

#include "embedrt/all.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <map>
#include <string>
#include <vector>

namespace embedrt::test {

/// One request's line in the ledger.
struct ledger_entry {
  std::chrono::steady_clock::time_point sent;
  std::atomic<int> replies{0};
  std::chrono::milliseconds took{0};
  bool ok = false;
  /// The vectors are the ones expected for the request's texts.
  bool vector_ok = false;
  errc code = errc::none;
  std::string error;
};

/// Keeps `concurrency` requests in flight until `n` were sent; request `i`
/// is `make(i)`, a successful reply to it is checked with `check(i, res)`.
class ledger_driver {
 public:
  using make_fn = std::function<embed_request(std::size_t)>;
  using check_fn = std::function<bool(std::size_t, const embed_result&)>;

  ledger_driver(client& c, std::size_t n, std::size_t concurrency, make_fn make,
                check_fn check)
      : c_(c),
        n_(n),
        concurrency_(concurrency),
        make_(std::move(make)),
        check_(std::move(check)),
        ledger_(n) {
    // nop
  }

  void start() {
    for (std::size_t i = 0; i < concurrency_; ++i)
      next();
  }

  /// Ready once every request got its first reply.
  std::future<void> all_answered() {
    return done_.get_future();
  }

  std::vector<ledger_entry>& entries() {
    return ledger_;
  }

 private:
  void next() {
    auto i = issued_.fetch_add(1);
    if (i >= n_)
      return;
    auto req = make_(i);
    ledger_[i].sent = std::chrono::steady_clock::now();
    c_.embed(std::move(req), [this, i](caf::expected<embed_result> res) {
      on_reply(i, std::move(res));
    });
  }

  void on_reply(std::size_t i, caf::expected<embed_result> res) {
    auto& e = ledger_[i];
    if (e.replies.fetch_add(1) != 0)
      return; // A duplicate: counted, nothing else recorded.
    e.took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - e.sent);
    if (res) {
      e.ok = true;
      e.vector_ok = check_(i, *res);
    } else {
      e.code = error_code(res.error());
      e.error = render_error(res.error());
    }
    // The next request first: once the last reply is counted, the test may
    // go on and destroy the driver, so nothing touches it after that.
    next();
    if (answered_.fetch_add(1) + 1 == n_)
      done_.set_value();
  }

  client& c_;
  const std::size_t n_;
  const std::size_t concurrency_;
  make_fn make_;
  check_fn check_;
  std::vector<ledger_entry> ledger_;
  std::atomic<std::size_t> issued_{0};
  std::atomic<std::size_t> answered_{0};
  std::promise<void> done_;
};

/// The ledger's totals.
struct ledger_summary {
  std::size_t lost = 0;
  std::size_t duplicated = 0;
  std::size_t ok = 0;
  std::size_t wrong = 0;
  /// Replies later than their deadline + the slack.
  std::size_t late = 0;
  std::chrono::milliseconds slowest{0};
  /// Failed requests by error code.
  std::map<std::string, std::size_t> errors;
  std::string first_error;
};

inline ledger_summary summarize(const std::vector<ledger_entry>& ledger,
                                std::chrono::milliseconds latest) {
  ledger_summary s;
  for (auto& e : ledger) {
    auto r = e.replies.load();
    if (r == 0) {
      ++s.lost;
      continue;
    }
    if (r > 1)
      ++s.duplicated;
    if (e.ok) {
      ++s.ok;
      if (!e.vector_ok)
        ++s.wrong;
    } else {
      ++s.errors[to_string(e.code)];
      if (s.first_error.empty())
        s.first_error = e.error;
    }
    if (e.took > latest)
      ++s.late;
    s.slowest = std::max(s.slowest, e.took);
  }
  return s;
}

} // namespace embedrt::test

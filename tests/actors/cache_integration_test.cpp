// The embedding cache in the runtime over real sockets, against the built-in
// upstream in-process (which counts the inputs it was sent): single-flight
// across and inside requests, partial hits merged in order under a
// randomised concurrent load (also with a persistent store), the byte bound,
// a failed owner, a waiter that gave up first, a waiter served as soon as
// its owner's chunk is, a cache that fails, the persistent store across
// services, and the cache off.
#include "embedrt/client.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/service.hpp"
#include "integration_fixture.hpp"

#include <algorithm>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <future>
#include <map>
#include <random>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;

namespace {

using test::start_mock;
using test::system_fixture;

constexpr int32_t dims = 16;

runtime_config cache_config_for(const std::string& url, bool cache = true,
                                std::size_t max_bytes = 64 << 20,
                                provider_kind provider
                                = provider_kind::openai) {
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = url;
  up.provider = provider;
  up.connections = 8;
  up.attempt_timeout = 5000ms;
  rc.upstreams.push_back(up);
  rc.default_timeout = 20000ms;
  rc.seed = 11;
  rc.cache.enabled = cache;
  rc.cache.max_bytes = max_bytes;
  return rc;
}

embed_request make_request(std::vector<std::string> inputs,
                           caf::timespan timeout = caf::timespan{0}) {
  embed_request req;
  req.model = "test-model";
  req.inputs = std::move(inputs);
  req.dimensions = dims;
  req.timeout = timeout;
  return req;
}

/// Every vector is the built-in upstream's for the text at its index.
void check_vectors(const embed_request& req, const embed_result& res) {
  REQUIRE(res.embeddings.size() == req.inputs.size());
  for (std::size_t i = 0; i < req.inputs.size(); ++i) {
    INFO("input " << i << " of " << req.inputs.size() << ": '" << req.inputs[i]
                  << "'");
    REQUIRE(res.embeddings[i] == hash_embed(req.inputs[i], dims));
  }
}

std::vector<caf::expected<embed_result>>
embed_all(client& c, const std::vector<embed_request>& reqs) {
  std::vector<std::future<caf::expected<embed_result>>> futs;
  for (auto& r : reqs)
    futs.push_back(c.embed(r));
  std::vector<caf::expected<embed_result>> out;
  for (auto& f : futs)
    out.push_back(f.get());
  return out;
}

/// `first`, 31 inputs `prefix` 1..31 and one the mock answers after 3 s: for
/// a tei upstream (32 inputs per call) a request whose last call is slow.
std::vector<std::string> with_slow_tail(const std::string& first,
                                        const std::string& prefix) {
  std::vector<std::string> in{first};
  for (int i = 1; i < 32; ++i)
    in.push_back(prefix + " " + std::to_string(i));
  in.push_back(prefix + " slow [[mock:delay-ms=3000]]");
  return in;
}

std::string text_of(std::size_t k) {
  return "text " + std::to_string(k);
}

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/embedrt-cache-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    [[maybe_unused]] auto rc = std::system(cmd.c_str());
  }
};

/// A service with the cache on in front of an in-process mock that answers
/// after `latency_ms`, and a client of it.
struct cached_service {
  explicit cached_service(int latency_ms, service_hooks hooks = {},
                          provider_kind provider = provider_kind::openai)
      : srv(start_mock(test::slow_upstream(latency_ms))),
        svc(spawn_service(
            *f.sys, cache_config_for(srv->base_url(), true, 64 << 20, provider),
            std::move(hooks))) {
    REQUIRE(svc);
    c = std::make_unique<client>(*f.sys, *svc);
  }

  system_fixture f;
  std::unique_ptr<mock::mock_server> srv;
  caf::expected<service_actor> svc;
  std::unique_ptr<client> c;
};

} // namespace

TEST_CASE("cache: 50 % repeated texts send exactly the distinct texts "
          "upstream",
          "[cache]") {
  system_fixture f;
  auto srv = start_mock();
  auto svc = spawn_service(*f.sys, cache_config_for(srv->base_url()));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // 1,000 texts, 500 distinct, each twice, shuffled, in requests of 10.
  std::vector<std::string> texts;
  for (std::size_t k = 0; k < 500; ++k) {
    texts.push_back(text_of(k));
    texts.push_back(text_of(k));
  }
  std::mt19937_64 rng{5};
  std::shuffle(texts.begin(), texts.end(), rng);
  std::vector<embed_request> reqs;
  for (std::size_t i = 0; i < texts.size(); i += 10)
    reqs.push_back(make_request({texts.begin() + i, texts.begin() + i + 10}));
  auto results = embed_all(c, reqs);
  int64_t cached = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    REQUIRE(results[i]);
    check_vectors(reqs[i], *results[i]);
    cached += results[i]->usage.cached_tokens;
  }
  CHECK(srv->stats().inputs == 500);
  CHECK(cached > 0);
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK(snap->cache.enabled);
  CHECK(snap->cache.misses == 500);
  CHECK(snap->cache.hits + snap->cache.coalesced == 500);
  CHECK(snap->cache.entries == 500);
}

TEST_CASE("cache: concurrent identical requests send one upstream input",
          "[cache]") {
  cached_service env{200};
  auto& c = *env.c;
  auto& srv = env.srv;
  std::vector<embed_request> reqs(50, make_request({"the same text"}));
  // And one caller asking for it three times in one request.
  reqs.push_back(
      make_request({"the same text", "the same text", "the same text"}));
  for (auto& r : embed_all(c, reqs)) {
    REQUIRE(r);
    for (auto& v : r->embeddings)
      CHECK(v == hash_embed("the same text", dims));
  }
  CHECK(srv->stats().inputs == 1);
  CHECK(srv->stats().embedding_requests == 1);
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK(snap->cache.misses == 1);
  CHECK(snap->cache.coalesced == 52);
}

TEST_CASE("cache: partial hits merge in input order under a randomised "
          "concurrent load",
          "[cache]") {
  // Seeded: many callers at once, overlapping input sets drawn from a
  // skewed pool, duplicates inside requests, an upstream with varying
  // latency so that owners, waiters and hits interleave; a small cache
  // in one run so evictions happen between lookups too.
  // A persistent store in the third run: every lookup with memory misses
  // waits for the disk before its request actor gets the job, while fills
  // of other requests' inputs arrive meanwhile.
  struct run_kind {
    std::size_t max_bytes;
    bool persistent;
  };
  for (auto kind : {run_kind{std::size_t{64} << 20, false},
                    run_kind{std::size_t{64} << 10, false},
                    run_kind{std::size_t{64} << 20, true}}) {
    auto max_bytes = kind.max_bytes;
    INFO("cache bound " << max_bytes << (kind.persistent ? ", on disk" : ""));
    system_fixture f;
    temp_dir dir;
    mock::mock_options opts;
    opts.latency.kind = mock::latency_model::shape::lognormal;
    opts.latency.median_ms = 3;
    opts.latency.p99_ms = 30;
    auto srv = start_mock(opts);
    auto rc = cache_config_for(srv->base_url(), true, max_bytes);
    if (kind.persistent)
      rc.cache.path = dir.path;
    auto svc = spawn_service(*f.sys, rc);
    REQUIRE(svc);
    client c{*f.sys, *svc};
    std::mt19937_64 rng{20261204};
    std::set<std::string> distinct;
    for (int round = 0; round < 6; ++round) {
      std::vector<embed_request> reqs;
      for (int caller = 0; caller < 64; ++caller) {
        auto n = 1 + rng() % 40;
        std::vector<std::string> inputs;
        for (std::size_t i = 0; i < n; ++i) {
          // Half from a hot set of 20, half from 600; some repeated within
          // the request.
          auto k = rng() % 2 == 0 ? rng() % 20 : rng() % 600;
          inputs.push_back(text_of(k));
          if (rng() % 8 == 0)
            inputs.push_back(text_of(k));
        }
        distinct.insert(inputs.begin(), inputs.end());
        reqs.push_back(make_request(std::move(inputs)));
      }
      auto results = embed_all(c, reqs);
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        INFO("round " << round << ", caller " << i);
        REQUIRE(results[i]);
        check_vectors(reqs[i], *results[i]);
      }
    }
    auto snap = c.metrics();
    REQUIRE(snap);
    CHECK(snap->cache.bytes <= snap->cache.max_bytes);
    if (max_bytes >= (std::size_t{1} << 20)) {
      // Nothing evicted: each distinct text went upstream exactly once.
      CHECK(srv->stats().inputs == distinct.size());
      CHECK(snap->cache.evictions == 0);
    } else {
      CHECK(snap->cache.evictions > 0);
      CHECK(srv->stats().inputs >= distinct.size());
    }
  }
}

TEST_CASE("cache: the byte bound holds under a 10x oversubscribed key "
          "space",
          "[cache]") {
  system_fixture f;
  auto srv = start_mock();
  const std::size_t bound = 256 << 10;
  auto svc
      = spawn_service(*f.sys, cache_config_for(srv->base_url(), true, bound));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // An entry is about 16 x 4 bytes of floats + the key + 160 bytes of
  // overhead: ~240 bytes, so 1,100 fill the bound; send 11,000.
  for (int batch = 0; batch < 110; ++batch) {
    std::vector<embed_request> reqs;
    for (int r = 0; r < 10; ++r) {
      std::vector<std::string> inputs;
      for (int i = 0; i < 10; ++i)
        inputs.push_back(text_of(batch * 100 + r * 10 + i));
      reqs.push_back(make_request(std::move(inputs)));
    }
    for (auto& res : embed_all(c, reqs))
      REQUIRE(res);
    auto snap = c.metrics();
    REQUIRE(snap);
    REQUIRE(snap->cache.bytes <= static_cast<int64_t>(bound));
  }
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK(snap->cache.evictions > 9000);
  CHECK(snap->cache.bytes > static_cast<int64_t>(bound) / 2);
  CHECK(srv->stats().inputs == 11000);
}

TEST_CASE("cache: an owner that fails does not leave its waiters hanging",
          "[cache]") {
  cached_service env{300};
  auto& c = *env.c;
  auto& srv = env.srv;
  // The first caller owns the text but gives up at its deadline (100 ms);
  // the second waits for it and then sends it itself.
  auto owner = c.embed(make_request({"shared"}, 100ms));
  std::this_thread::sleep_for(20ms); // the owner's lookup comes first
  auto waiter = c.embed(make_request({"shared", "own"}, 5s));
  auto o = owner.get();
  REQUIRE_FALSE(o);
  CHECK(error_code(o.error()) == errc::deadline_exceeded);
  auto w = waiter.get();
  REQUIRE(w);
  CHECK(w->embeddings[0] == hash_embed("shared", dims));
  CHECK(w->embeddings[1] == hash_embed("own", dims));
  // The owner's attempt, then the waiter's own: no wait for its deadline.
  CHECK(srv->stats().inputs == 3);
}

TEST_CASE("cache: an input the upstream rejects is not cached, the inputs "
          "served beside it are",
          "[cache]") {
  system_fixture f;
  auto srv = start_mock();
  auto svc = spawn_service(*f.sys, cache_config_for(srv->base_url()));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  const std::string bad = "refused [[mock:400]]";
  // Bisection isolates the rejected input; the others are served.
  auto first = c.embed(make_request({"kept a", bad, "kept b"})).get();
  REQUIRE_FALSE(first);
  CHECK(error_code(first.error()) == errc::invalid_input);
  // The served ones were cached ...
  auto before = srv->stats().inputs;
  auto kept = c.embed(make_request({"kept b", "kept a"})).get();
  REQUIRE(kept);
  CHECK(kept->embeddings[0] == hash_embed("kept b", dims));
  CHECK(kept->embeddings[1] == hash_embed("kept a", dims));
  CHECK(srv->stats().inputs == before);
  // ... the rejected one was not (no empty vector served as a hit): it goes
  // upstream again and is refused again.
  auto calls = srv->stats().embedding_requests;
  auto again = c.embed(make_request({bad})).get();
  REQUIRE_FALSE(again);
  CHECK(error_code(again.error()) == errc::invalid_input);
  CHECK(srv->stats().embedding_requests == calls + 1);
  CHECK(srv->stats().status_count(400) >= 3);
}

TEST_CASE("cache: a waiter that gave up before its owner failed does not "
          "strand the input",
          "[cache]") {
  cached_service env{400};
  auto& c = *env.c;
  auto& srv = env.srv;
  // The owner gives up at 250 ms, its waiter already at 100 ms. The input
  // must not stay "in flight" for a waiter that no longer wants it: a third
  // request owns it and gets it (before, it waited until its deadline).
  auto owner = c.embed(make_request({"stranded"}, 250ms));
  std::this_thread::sleep_for(20ms);
  auto waiter = c.embed(make_request({"stranded"}, 100ms));
  auto w = waiter.get();
  REQUIRE_FALSE(w);
  CHECK(error_code(w.error()) == errc::deadline_exceeded);
  auto o = owner.get();
  REQUIRE_FALSE(o);
  CHECK(error_code(o.error()) == errc::deadline_exceeded);
  auto third = c.embed(make_request({"stranded"}, 3s)).get();
  REQUIRE(third);
  CHECK(third->embeddings[0] == hash_embed("stranded", dims));
  // The owner's attempt and the third request's: the waiter sent nothing.
  CHECK(srv->stats().inputs == 2);
}

TEST_CASE("cache: a cache that fails loses no reply and starts again empty",
          "[cache]") {
  service_hooks hooks;
  hooks.cache_crash_marker = "__crash_cache__";
  cached_service env{200, hooks};
  auto& c = *env.c;
  auto& srv = env.srv;
  REQUIRE(c.embed(make_request({"cached before"})).get());
  auto owner = c.embed(make_request({"in flight"}));
  std::this_thread::sleep_for(20ms);
  auto waiter = c.embed(make_request({"in flight", "other"}));
  std::this_thread::sleep_for(20ms);
  auto crasher = c.embed(make_request({"__crash_cache__"}));
  for (auto* fut : {&owner, &waiter, &crasher}) {
    auto r = fut->get();
    REQUIRE(r);
  }
  // The cache started again empty: what it held before is gone (so the
  // failure did happen), and the new one serves hits.
  auto before = srv->stats().inputs;
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK(snap->cache.hits == 0);
  REQUIRE(c.embed(make_request({"cached before"})).get());
  CHECK(srv->stats().inputs == before + 1);
  auto again = c.embed(make_request({"cached before"})).get();
  REQUIRE(again);
  CHECK(again->embeddings[0] == hash_embed("cached before", dims));
  CHECK(srv->stats().inputs == before + 1);
}

TEST_CASE("cache: the persistent store serves a new service on the same "
          "path",
          "[cache]") {
  temp_dir dir;
  auto srv = start_mock();
  std::vector<std::string> texts;
  for (std::size_t k = 0; k < 300; ++k)
    texts.push_back(text_of(k));
  auto run = [&](const std::vector<std::string>& inputs) {
    system_fixture f;
    auto rc = cache_config_for(srv->base_url());
    rc.cache.path = dir.path;
    auto svc = spawn_service(*f.sys, rc);
    REQUIRE(svc);
    client c{*f.sys, *svc};
    std::vector<embed_request> reqs;
    for (std::size_t i = 0; i < inputs.size(); i += 30)
      reqs.push_back(
          make_request({inputs.begin() + i, inputs.begin() + i + 30}));
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      auto r = c.embed(reqs[i]).get();
      REQUIRE(r);
      check_vectors(reqs[i], *r);
    }
    auto snap = c.metrics();
    REQUIRE(snap);
    caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
    return snap->cache;
  };
  auto first = run(texts);
  CHECK(first.misses == 300);
  CHECK(srv->stats().inputs == 300);
  // Every fill was written before the service's end (the disk actor ends
  // after the writes queued to it): all 300 come from the store.
  srv->reset_stats();
  auto second = run(texts);
  CHECK(second.persistent_hits == 300);
  CHECK(srv->stats().inputs == 0);
  // 10 % changed: only those go upstream.
  srv->reset_stats();
  for (std::size_t k = 0; k < 30; ++k)
    texts[k * 10] = "changed " + std::to_string(k);
  auto third = run(texts);
  CHECK(third.persistent_hits == 270);
  CHECK(srv->stats().inputs == 30);
}

TEST_CASE("cache off: every input goes upstream, no cache metrics", "[cache]") {
  system_fixture f;
  auto srv = start_mock();
  auto svc = spawn_service(*f.sys, cache_config_for(srv->base_url(), false));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  std::vector<embed_request> reqs(4, make_request({"a", "b", "a"}));
  for (auto& r : embed_all(c, reqs)) {
    REQUIRE(r);
    CHECK(r->usage.cached_tokens == 0);
  }
  CHECK(srv->stats().inputs == 12);
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK_FALSE(snap->cache.enabled);
}

TEST_CASE("cache: a host that drops its service after a metrics call shuts "
          "down at once",
          "[cache]") {
  // The service's metrics call to its children once carried a 30 s CAF
  // timeout, which kept the service alive (and the actor system's
  // destructor waiting) for 30 s after the host let go of it. The same
  // holds for its writes to the persistent store.
  for (bool persistent : {false, true}) {
    INFO((persistent ? "with a persistent store" : "memory only"));
    temp_dir dir;
    auto sys = std::make_unique<system_fixture>();
    auto srv = start_mock();
    {
      auto rc = cache_config_for(srv->base_url());
      if (persistent)
        rc.cache.path = dir.path;
      auto svc = spawn_service(*sys->sys, rc);
      REQUIRE(svc);
      client c{*sys->sys, *svc};
      REQUIRE(c.embed(make_request({"a", "b"})).get());
      REQUIRE(c.embed(make_request({"c"})).get());
      REQUIRE(c.metrics());
    }
    auto start = std::chrono::steady_clock::now();
    sys.reset();
    CHECK(std::chrono::steady_clock::now() - start < 10s);
  }
}

TEST_CASE("cache: a waiter gets an input when its owner's chunk is served, "
          "not with the owner's whole reply",
          "[cache]") {
  // 32 inputs per upstream call: the owner's 33 go up as two chunks, the
  // second (one input the mock answers after 3 s) long after the first.
  cached_service env{0, {}, provider_kind::tei};
  auto& c = *env.c;
  auto& srv = env.srv;
  auto waits_for
      = [&](const std::string& shared, std::chrono::milliseconds after) {
          auto owner_req = make_request(with_slow_tail(shared, "fast"), 20s);
          auto owner = c.embed(owner_req);
          std::this_thread::sleep_for(after);
          auto start = std::chrono::steady_clock::now();
          auto w = c.embed(make_request({shared}, 20s)).get();
          auto waited = std::chrono::steady_clock::now() - start;
          REQUIRE(w);
          CHECK(w->embeddings[0] == hash_embed(shared, dims));
          CHECK(w->usage.cached_tokens > 0); // served by the owner's call
          // The owner still waits for its slow chunk.
          CHECK(owner.wait_for(0s) == std::future_status::timeout);
          CHECK(waited < 2500ms);
          auto o = owner.get();
          REQUIRE(o);
          check_vectors(owner_req, *o);
        };
  SECTION("the owner's chunk was served before the waiter came") {
    waits_for("shared early", 500ms);
  }
  SECTION("the waiter came while the owner's chunk was in flight") {
    // The shared input's own chunk takes 400 ms; the waiter asks at 100.
    waits_for("shared late [[mock:delay-ms=400]]", 100ms);
  }
  // Each distinct input went upstream once: the waiter sent nothing.
  CHECK(srv->stats().inputs == 33);
}

TEST_CASE("cache: a waiter that inherits an input from a failed owner hands "
          "it to the next waiter as soon as that chunk is served",
          "[cache]") {
  cached_service env{0, {}, provider_kind::tei}; // 32 inputs per call
  auto& c = *env.c;
  auto& srv = env.srv;
  const std::string shared = "inherited [[mock:delay-ms=400]]";
  // The first owner gives up at its deadline (150 ms), before the upstream
  // answers the shared input (400 ms).
  auto first = c.embed(make_request({shared}, 150ms));
  std::this_thread::sleep_for(20ms);
  // The heir waits for it first; its own 32 inputs are one call the mock
  // answers after 3 s.
  auto heir_req = make_request(with_slow_tail(shared, "heir"), 20s);
  auto heir = c.embed(heir_req);
  std::this_thread::sleep_for(20ms);
  // The next waiter: once the heir owns the input (c_owner, then c_wanted:
  // someone still waits), it hands the vector over when its chunk of that
  // one input is served, at about 150 + 400 ms, not with its reply at 3 s.
  auto start = std::chrono::steady_clock::now();
  auto next = c.embed(make_request({shared}, 20s));
  auto n = next.get();
  auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE(n);
  CHECK(n->embeddings[0] == hash_embed(shared, dims));
  CHECK(heir.wait_for(0s) == std::future_status::timeout);
  CHECK(waited < 2500ms);
  auto o = first.get();
  REQUIRE_FALSE(o);
  CHECK(error_code(o.error()) == errc::deadline_exceeded);
  auto h = heir.get();
  REQUIRE(h);
  check_vectors(heir_req, *h);
  // The first owner's attempt, the heir's 32 and its inherited one; the
  // next waiter sent nothing.
  CHECK(srv->stats().inputs == 34);
}

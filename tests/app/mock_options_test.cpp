#include "mock/mock_options.hpp"
#include "mock/mock_stats.hpp"

#include <catch2/catch.hpp>
#include <string>

using namespace embedrt::mock;

TEST_CASE("parse_fault reads statuses and named kinds") {
  auto f500 = parse_fault("500");
  REQUIRE(f500);
  CHECK(f500.value->kind == fault_kind::status);
  CHECK(f500.value->status == 500);
  CHECK(parse_fault("429").value->kind == fault_kind::rate_limit);
  CHECK(parse_fault("400").value->status == 400);
  CHECK(parse_fault("599").value->status == 599);
  for (const char* name :
       {"quota", "hang", "reset", "malformed", "baddims", "nan", "close"}) {
    auto f = parse_fault(name);
    REQUIRE(f);
    CHECK(to_string(*f.value) == name);
  }
  CHECK(to_string(*parse_fault("429").value) == "429");
  CHECK(to_string(*parse_fault("503").value) == "503");
  for (const char* bad : {"", "399", "600", "200", "Hang", "500x", "-500"}) {
    auto f = parse_fault(bad);
    CHECK_FALSE(f);
    CHECK_FALSE(f.error.empty());
  }
  CHECK_THAT(parse_fault("explode").error, Catch::Contains("explode"));
}

TEST_CASE("parse_fault_spec reads rates in order") {
  auto spec = parse_fault_spec("500:0.1,429:0.05,hang:0.02,reset:0.02,"
                               "malformed:0.01,baddims:0.01,nan:0.005");
  REQUIRE(spec);
  REQUIRE(spec.value->size() == 7);
  CHECK(to_string((*spec.value)[0].what) == "500");
  CHECK((*spec.value)[0].probability == 0.1);
  CHECK(to_string((*spec.value)[6].what) == "nan");
  CHECK((*spec.value)[6].probability == 0.005);
  CHECK(parse_fault_spec("close:1").value->size() == 1);
  struct bad_case {
    const char* spec;
    const char* mentions;
  };
  for (auto [text, mentions] :
       {bad_case{"", "empty"}, bad_case{"500", "no rate"},
        bad_case{"500:x", "'x'"}, bad_case{"500:1.5", "[0, 1]"},
        bad_case{"500:-0.1", "[0, 1]"}, bad_case{"boom:0.1", "boom"},
        bad_case{"500:0.6,hang:0.5", "sum"},
        bad_case{"500:0.1,500:0.1", "twice"}, bad_case{"500:0.1,", "','"}}) {
    auto r = parse_fault_spec(text);
    INFO(text << " -> " << r.error);
    CHECK_FALSE(r);
    CHECK_THAT(r.error, Catch::Contains(mentions));
  }
}

TEST_CASE("parse_latency_spec reads fixed and lognormal models") {
  auto fixed = parse_latency_spec("25");
  REQUIRE(fixed);
  CHECK(fixed.value->kind == latency_model::shape::fixed);
  CHECK(fixed.value->fixed_ms == 25.0);
  CHECK(parse_latency_spec("fixed:2.5").value->fixed_ms == 2.5);
  CHECK(parse_latency_spec("0").value->kind == latency_model::shape::none);
  auto ln = parse_latency_spec("lognormal:50:200");
  REQUIRE(ln);
  CHECK(ln.value->kind == latency_model::shape::lognormal);
  CHECK(ln.value->median_ms == 50.0);
  CHECK(ln.value->p99_ms == 200.0);
  for (const char* bad :
       {"", "-1", "abc", "lognormal:50", "lognormal:0:10", "lognormal:50:10",
        "lognormal:a:b", "fixed:", "normal:1:2"}) {
    auto r = parse_latency_spec(bad);
    INFO(bad);
    CHECK_FALSE(r);
    CHECK_FALSE(r.error.empty());
  }
}

TEST_CASE("parse_listen reads HOST:PORT") {
  auto a = parse_listen("127.0.0.1:0");
  REQUIRE(a);
  CHECK(a.value->host == "127.0.0.1");
  CHECK(a.value->port == 0);
  CHECK(parse_listen("localhost:8080").value->host == "127.0.0.1");
  CHECK(parse_listen("localhost:8080").value->port == 8080);
  CHECK(parse_listen("[::1]:9").value->host == "::1");
  CHECK(parse_listen("0.0.0.0:65535").value->port == 65535);
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
        "example.com:80", "::1:80", "1.2.3:80", "127.0.0.1:http"}) {
    auto r = parse_listen(bad);
    INFO(bad);
    CHECK_FALSE(r);
    CHECK_FALSE(r.error.empty());
  }
}

TEST_CASE("validate checks mock_options as a whole") {
  mock_options ok;
  CHECK(validate(ok).empty());
  auto broken = [](auto change) {
    mock_options o;
    change(o);
    return validate(o);
  };
  CHECK_THAT(broken([](auto& o) {
               o.host = "nohost";
             }),
             Catch::Contains("host"));
  CHECK_THAT(broken([](auto& o) {
               o.threads = 0;
             }),
             Catch::Contains("threads"));
  CHECK_THAT(broken([](auto& o) {
               o.dims_default = 0;
             }),
             Catch::Contains("dims"));
  CHECK_THAT(broken([](auto& o) {
               o.dims_default = 5000;
             }),
             Catch::Contains("dims"));
  CHECK_THAT(broken([](auto& o) {
               o.tls_cert_file = "x.pem";
             }),
             Catch::Contains("TLS"));
  CHECK_THAT(broken([](auto& o) {
               o.rpm = -1;
             }),
             Catch::Contains("rpm"));
  CHECK_THAT(broken([](auto& o) {
               o.max_body_bytes = 1;
             }),
             Catch::Contains("max-body-bytes"));
  CHECK_THAT(broken([](auto& o) {
               o.faults = {{fault{fault_kind::hang, 0}, 0.7},
                           {fault{fault_kind::reset, 0}, 0.7}};
             }),
             Catch::Contains("sum"));
  CHECK_THAT(broken([](auto& o) {
               o.latency.kind = latency_model::shape::lognormal;
               o.latency.median_ms = 10;
               o.latency.p99_ms = 5;
             }),
             Catch::Contains("lognormal"));
}

TEST_CASE("mock_stats renders as JSON and counts by name") {
  mock_counters c;
  c.connection_opened();
  c.connection_opened();
  c.connection_closed();
  c.request();
  c.embedding_request();
  c.inputs(3);
  c.base64_request();
  c.response(200);
  c.response(503);
  c.tokens(40);
  c.injected(fault{fault_kind::status, 503});
  c.injected(fault{fault_kind::hang, 0});
  c.injected(fault{fault_kind::rate_limit, 429});
  auto s = c.snapshot();
  CHECK(s.connections_accepted == 2);
  CHECK(s.connections_open == 1);
  CHECK(s.fault_count("503") == 1);
  CHECK(s.fault_count("hang") == 1);
  CHECK(s.fault_count("429") == 1);
  CHECK(s.fault_count("reset") == 0);
  CHECK(to_json(s)
        == "{\"connections_accepted\":2,\"connections_open\":1,"
           "\"requests\":1,\"embedding_requests\":1,\"inputs\":3,"
           "\"base64_requests\":1,\"tokens\":40,"
           "\"by_status\":{\"200\":1,\"503\":1},"
           "\"faults\":{\"429\":1,\"503\":1,\"hang\":1}}");
  c.reset();
  auto z = c.snapshot();
  CHECK(z.connections_open == 1);
  CHECK(to_json(z)
        == "{\"connections_accepted\":0,\"connections_open\":1,"
           "\"requests\":0,\"embedding_requests\":0,\"inputs\":0,"
           "\"base64_requests\":0,\"tokens\":0,"
           "\"by_status\":{},\"faults\":{}}");
}

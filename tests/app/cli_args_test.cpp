#include "cli_args.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using embedrt::cli::arg_parser;

namespace {

arg_parser make() {
  arg_parser p{"embedrt demo [options] FILE...", "A demo command."};
  p.flag("verbose", "talk more")
      .option("threads", "N", "worker threads")
      .option("ratio", "X", "a ratio")
      .option("name", "NAME", "a name")
      .option("upstream", "URL", "an upstream", true)
      .positionals("FILE", "input files");
  return p;
}

} // namespace

TEST_CASE("arg_parser accepts both value forms, flags and repeats") {
  auto p = make();
  REQUIRE(p.parse({"--threads", "4", "--name=alpha", "--verbose", "--upstream",
                   "a", "--upstream=b", "in.jsonl"}));
  CHECK_FALSE(p.help_requested());
  CHECK(p.has("verbose"));
  CHECK_FALSE(p.has("ratio"));
  CHECK(p.value("threads") == "4");
  CHECK(p.value("name") == "alpha");
  CHECK(p.values("upstream") == std::vector<std::string>{"a", "b"});
  CHECK(p.positional() == std::vector<std::string>{"in.jsonl"});
  int64_t threads = 1;
  CHECK(p.get("threads", threads, 1, 64));
  CHECK(threads == 4);
  double ratio = 0.5;
  CHECK(p.get("ratio", ratio, 0, 1)); // absent: unchanged
  CHECK(ratio == 0.5);
  std::string name;
  CHECK(p.get("name", name));
  CHECK(name == "alpha");
}

TEST_CASE("arg_parser takes values that look like options and '='") {
  auto p = make();
  REQUIRE(p.parse({"--name", "--weird", "--ratio=-0.5", "--", "--file"}));
  CHECK(p.value("name") == "--weird");
  CHECK(p.value("ratio") == "-0.5");
  CHECK(p.positional() == std::vector<std::string>{"--file"});
  double ratio = 0;
  CHECK_FALSE(p.get("ratio", ratio, 0, 1));
  CHECK_THAT(p.error(), Catch::Contains("--ratio"));
  REQUIRE(p.parse({"--name=a=b", "--name2"}) == false);
  CHECK_THAT(p.error(), Catch::Contains("--name2"));
}

TEST_CASE("arg_parser reports errors") {
  struct bad_case {
    std::vector<std::string> args;
    const char* mentions;
  };
  for (const auto& [args, mentions] : std::vector<bad_case>{
           {{"--bogus"}, "unknown option '--bogus'"},
           {{"-x"}, "unknown option '-x'"},
           {{"--threads"}, "needs a value"},
           {{"--threads", "1", "--threads", "2"}, "more than once"},
           {{"--verbose=yes"}, "takes no value"}}) {
    auto p = make();
    CHECK_FALSE(p.parse(args));
    CHECK_THAT(p.error(), Catch::Contains(mentions));
  }
  arg_parser no_positionals{"embedrt x", "x"};
  CHECK_FALSE(no_positionals.parse({"stray"}));
  CHECK_THAT(no_positionals.error(), Catch::Contains("stray"));
}

TEST_CASE("arg_parser converts numbers strictly") {
  auto p = make();
  int64_t n = 0;
  for (const char* bad :
       {"", "x", "4x", "1.5", "65", "0", "99999999999999999999"}) {
    REQUIRE(p.parse({"--threads", bad}));
    CHECK_FALSE(p.get("threads", n, 1, 64));
    CHECK_THAT(p.error(), Catch::Contains("[1, 64]"));
  }
  REQUIRE(p.parse({"--threads", "+7"}));
  CHECK(p.get("threads", n, 1, 64));
  CHECK(n == 7);
  uint64_t seed = 0;
  REQUIRE(p.parse({"--threads", "18446744073709551615"}));
  CHECK(p.get("threads", seed, 0, UINT64_MAX));
  CHECK(seed == UINT64_MAX);
  double x = 0;
  for (const char* bad : {"nan", "inf", "1e999", "0x"}) {
    REQUIRE(p.parse({"--ratio", bad}));
    CHECK_FALSE(p.get("ratio", x, -10, 10));
  }
  REQUIRE(p.parse({"--ratio", "2.5e-1"}));
  CHECK(p.get("ratio", x, 0, 1));
  CHECK(x == 0.25);
}

TEST_CASE("arg_parser handles --help and renders the usage") {
  auto p = make();
  REQUIRE(p.parse({"--threads", "2", "--help", "--bogus"}));
  CHECK(p.help_requested());
  auto text = p.help();
  CHECK_THAT(text, Catch::StartsWith("usage: embedrt demo [options] FILE..."));
  CHECK_THAT(text, Catch::Contains("--threads N"));
  CHECK_THAT(text, Catch::Contains("an upstream (repeatable)"));
  CHECK_THAT(text, Catch::Contains("--help"));
  CHECK_THAT(text, Catch::Contains("FILE"));
  REQUIRE(p.parse({"-h"}));
  CHECK(p.help_requested());
  REQUIRE(p.parse({}));
  CHECK_FALSE(p.help_requested()); // parse() starts afresh
}

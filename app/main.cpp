// The `embedrt` executable: dispatches to a subcommand.
#include "cli_args.hpp"
#include "commands.hpp"

#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace {

using embedrt::app::command;

/// The dispatch table: one row per subcommand.
constexpr command commands[] = {
    {"embed", "embed a JSONL or text file: vectors out, resumable, progress",
     embedrt::app::cmd_embed},
    {"serve", "OpenAI-compatible gateway: /v1/embeddings, health, /metrics",
     embedrt::app::cmd_serve},
    {"mock", "run the built-in OpenAI-compatible upstream (tests, benchmarks)",
     embedrt::app::cmd_mock},
    {"bench", "closed-loop load generator: throughput, latency, threads, reuse",
     embedrt::app::cmd_bench},
};

void print_usage(std::ostream& out) {
  out << "usage: embedrt <command> [options]\n"
         "       embedrt <command> --help  (or: embedrt help <command>)\n"
         "       embedrt --version\n\ncommands:\n";
  for (const auto& c : commands) {
    out << "  " << c.name;
    for (auto n = std::strlen(c.name); n < 8; ++n)
      out << ' ';
    out << "  " << c.summary << '\n';
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(std::cerr);
    return embedrt::cli::exit_usage;
  }
  std::string name = argv[1];
  if (name == "help" && argc > 2) {
    // `embedrt help COMMAND` is `embedrt COMMAND --help`.
    for (const auto& c : commands)
      if (c.name == std::string{argv[2]})
        return c.run({"--help"});
    std::cerr << "embedrt: unknown command '" << argv[2] << "'\n";
    print_usage(std::cerr);
    return embedrt::cli::exit_usage;
  }
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(std::cout);
    return 0;
  }
  if (name == "--version" || name == "-V" || name == "version") {
    std::cout << "embedrt " << EMBEDRT_VERSION << '\n';
    return 0;
  }
  for (const auto& c : commands) {
    if (name == c.name) {
      std::vector<std::string> args(argv + 2, argv + argc);
      try {
        return c.run(args);
      } catch (const std::exception& e) {
        std::cerr << "embedrt " << name << ": " << e.what() << '\n';
        return 1;
      }
    }
  }
  std::cerr << "embedrt: unknown command '" << name << "'\n";
  print_usage(std::cerr);
  return embedrt::cli::exit_usage;
}

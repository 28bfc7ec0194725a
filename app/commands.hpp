// The subcommands of the `embedrt` executable. Each takes the arguments after
// its name and returns the process exit code (0 success, 1 failure,
// cli::exit_usage for bad usage). To add one, declare it here, list it in the
// table in main.cpp and add its source to app/CMakeLists.txt.
#pragma once

#include <string>
#include <vector>

namespace embedrt::app {

using command_fn = int (*)(const std::vector<std::string>& args);

struct command {
  const char* name;
  const char* summary;
  command_fn run;
};

/// `embedrt mock`: the built-in OpenAI-compatible upstream (cmd_mock.cpp).
int cmd_mock(const std::vector<std::string>& args);

/// `embedrt bench`: the closed-loop load generator (cmd_bench.cpp).
int cmd_bench(const std::vector<std::string>& args);

/// `embedrt embed`: the bulk job, JSONL in, vectors out (cmd_embed.cpp).
int cmd_embed(const std::vector<std::string>& args);

/// `embedrt serve`: the OpenAI-compatible embeddings gateway (cmd_serve.cpp).
int cmd_serve(const std::vector<std::string>& args);

} // namespace embedrt::app

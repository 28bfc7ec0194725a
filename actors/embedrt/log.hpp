// Structured log lines (logfmt, one line per event, to stderr by default).
//
//   ts=2026-11-26T19:24:10.123Z level=warn event=upstream_down upstream=a ...
//
// Values are quoted when needed. Callers never pass secrets (API keys,
// Authorization values): the runtime never has them in a field it logs.
#pragma once

#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace embedrt {

enum class log_level : int {
  debug = 0,
  info = 1,
  warn = 2,
  error = 3,
  off = 4
};

/// Sets the minimum level written (default: info; EMBEDRT_LOG_LEVEL or the
/// command line may change it at start).
void set_log_level(log_level lvl);

log_level get_log_level();

/// Parses "debug", "info", "warn", "error", "off".
bool parse_log_level(std::string_view text, log_level& out);

/// Redirects log output (default stderr). The file is not owned.
void set_log_sink(std::FILE* out);

using log_field = std::pair<std::string_view, std::string>;

/// Writes one logfmt line if `lvl` is enabled. The line is written with a
/// single fwrite, so lines from different threads do not interleave.
void log(log_level lvl, std::string_view event,
         std::initializer_list<log_field> fields = {});

inline bool log_enabled(log_level lvl) {
  return static_cast<int>(lvl) >= static_cast<int>(get_log_level());
}

} // namespace embedrt

// Structured log lines (logfmt, one line per event, to stderr by default).
//
//   ts=2026-11-26T19:24:10.123Z level=warn event=upstream_down upstream=a ...
//
// Values are quoted when needed. Callers never pass secrets (API keys,
// Authorization values): the runtime never has them in a field it logs.
//
// The caller formats its line (the timestamp is the event's) and queues it
// without a lock or a syscall; one writer thread writes the lines in batches.
// At exit (return from main, std::exit) an atexit handler drains the queue
// and joins the writer; lines logged later are written by their caller.
// Call flush_log() before std::_Exit and before writing to stderr directly
// when the order against earlier log lines matters.
#pragma once

#include <chrono>
#include <cstddef>
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
/// command line may change it at start). Unless `off`, also starts the
/// writer thread if it is not running yet, so that a later line needs no new
/// resource (the writer's eventfd) — e.g. a line about running out of file
/// descriptors.
void set_log_level(log_level lvl);

log_level get_log_level();

/// Parses "debug", "info", "warn", "error", "off".
bool parse_log_level(std::string_view text, log_level& out);

/// Redirects log output (default stderr). The file is not owned. Lines
/// logged before the call go to the previous sink (it calls flush_log()).
void set_log_sink(std::FILE* out);

/// The most bytes of lines (plus a small per-line overhead) queued for the
/// writer. When the output is slower than the callers and the queue is full,
/// a line is dropped instead of blocking its caller; the writer then writes
/// `level=error event=log_dropped lines=N` with the number dropped since its
/// previous such line.
inline constexpr std::size_t log_queue_limit = std::size_t{4} << 20;

/// Waits until every line logged before the call (by any thread) is written
/// and flushed, at most `timeout`. True when drained (or nothing to drain).
bool flush_log(std::chrono::milliseconds timeout
               = std::chrono::milliseconds{2000});

using log_field = std::pair<std::string_view, std::string>;

/// Formats one logfmt line if `lvl` is enabled and hands it to the writer.
/// Lines are written whole (never interleaved); the lines of one thread keep
/// their order.
void log(log_level lvl, std::string_view event,
         std::initializer_list<log_field> fields = {});

inline bool log_enabled(log_level lvl) {
  return static_cast<int>(lvl) >= static_cast<int>(get_log_level());
}

} // namespace embedrt

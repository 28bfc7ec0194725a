// The run loop of `embedrt embed`: streams input records through the
// runtime's service with a bounded number of requests in flight and writes
// each answer as it arrives.
//
// One non-actor thread (the caller's) owns the input, the output and all
// bookkeeping. It waits in poll(2) on three descriptors: a signalfd
// (SIGINT/SIGTERM, blocked in every thread by the caller), an eventfd that
// completions ring, and the input when it is a pipe or terminal. Requests go
// out through the `embedrt::client` facade (one short-lived actor per
// request, no thread per request); its callback runs on a CAF worker and only
// queues the answer and rings the eventfd. At most `concurrency` requests of
// at most `batch` texts are in flight, so memory is bounded by the window
// and one input buffer, whatever the input's size.
//
// Output order is completion order (ids identify the records). A request
// that fails with `invalid_input` is re-sent one text per request so that
// only the bad text is rejected.
#pragma once

#include "embed/id_set.hpp"
#include "embed/output.hpp"
#include "embed/progress.hpp"
#include "embedrt/interfaces.hpp"
#include "embedrt/protocol/provider.hpp"

#include <caf/actor_system.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace embedrt::app::embed {

struct job_options {
  service_actor service;
  std::string model;
  /// Requested dimensions (0: the model's default).
  int32_t dims = 0;
  /// Texts per request and requests in flight.
  uint32_t batch = 64;
  uint32_t concurrency = 16;
  /// Deadline of each request.
  std::chrono::milliseconds timeout{60000};
  /// Texts are checked against this profile before they are sent.
  provider_kind provider = provider_kind::openai;
  /// Draw the progress line on stderr.
  bool progress = false;
  /// Checkpoint (flush + fsync) after this many written records or this
  /// much time, whichever comes first.
  uint64_t checkpoint_records = 10000;
  std::chrono::milliseconds checkpoint_interval{1000};
  /// After SIGINT/SIGTERM: how long in-flight requests may still finish.
  std::chrono::milliseconds grace{10000};
  /// Stop after this many consecutive requests failed for a reason that is
  /// not the input (the upstream is down, refuses the key, ...); 0 = never.
  uint32_t stop_after_failures = 50;
};

/// The descriptors and state the job works on (owned by the caller).
struct job_io {
  int in_fd = -1;
  /// The input's size if it is a regular file (else 0), for the ETA.
  uint64_t in_size = 0;
  bool in_regular = false;
  output_sink* out = nullptr;
  /// Where rejected records go (a file, or stderr).
  fd_writer* rejects = nullptr;
  bool rejects_on_stderr = false;
  /// Ids already in the output (skipped).
  const id_set* done = nullptr;
  /// Dimensions of the vectors already in the output (0: none yet).
  std::size_t dims = 0;
  /// signalfd for SIGINT and SIGTERM.
  int signal_fd = -1;
};

struct job_outcome {
  job_counts counts;
  /// Dimensions of the vectors written (0 if none).
  std::size_t dims = 0;
  double seconds = 0.0;
  /// The signal that stopped the job (0: none), and whether requests still
  /// in flight were abandoned (second signal or grace over).
  int signal = 0;
  uint64_t abandoned = 0;
  /// Why the job stopped early ("" if it did not): a write or read error, or
  /// an upstream failing every request.
  std::string fatal;
  /// True if `fatal` is an I/O error of this process (exit 1) rather than
  /// the upstream's.
  bool io_error = false;
};

job_outcome run_job(caf::actor_system& sys, const job_options& opts,
                    job_io& io);

} // namespace embedrt::app::embed

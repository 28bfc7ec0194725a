// `embedrt embed`: the bulk job. Streams JSONL (or plain text) records from a
// file or stdin through the runtime and writes one vector per record, as
// JSONL or as float32 rows with an index; resumable, with a progress line on
// a terminal. See docs/cli.md for the options, formats and exit codes, and
// embed/embed_job.hpp for how the run loop works.
//
// Exit codes: 0 every record embedded (or already there), 1 the job could
// not run or stopped early (unreadable input, write error, an output that
// cannot be resumed, the upstream failing every request), 2 bad usage, 3 the
// job finished but some records were rejected (see the rejects file), 130 /
// 143 stopped by SIGINT / SIGTERM (what was written is kept; rerun to
// resume).
#include "cli_args.hpp"
#include "cluster.hpp"
#include "commands.hpp"
#include "embed/embed_job.hpp"
#include "embed/id_set.hpp"
#include "embed/output.hpp"
#include "embed/resume.hpp"
#include "embedded_default.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "mock/mock_server.hpp"
#include "node_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

namespace embedrt::app {

namespace {

using std::chrono::milliseconds;
namespace em = embedrt::app::embed;

constexpr const char* prefix = "embedrt embed: ";

/// Exit codes besides 0, 1 and cli::exit_usage.
constexpr int exit_rejects = 3;

cli::arg_parser make_parser() {
  cli::arg_parser p{
      "embedrt embed [options]",
      "Embeds every record of a JSONL or text input through the runtime and "
      "writes\none vector per record. Input lines are {\"id\":...,\"text\":...}"
      " objects or plain\ntext (id = line number). Rerun with the same --out "
      "to resume: ids already\nwritten are skipped."};
  p.option("in", "FILE", "input file, - for stdin (default -)")
      .option("out", "FILE",
              "output file, - for stdout (default -; resuming needs a file)")
      .option("format", "FMT",
              "jsonl ({\"id\",\"embedding\"} lines, default) or f32 "
              "(float32 rows + index)")
      .option("index", "FILE",
              "index of an f32 output (default OUT.index.jsonl)")
      .option("rejects", "FILE",
              "where failed records go, one JSON line each (default: OUT "
              "with .rejects.jsonl, stderr if OUT is -)")
      .flag("fresh", "start over: truncate the output instead of resuming")
      .option("model", "NAME",
              "model name (default: the config's, else "
              "text-embedding-3-small)")
      .option("dims", "D", "dimensions, 0 = the model's default (default 0)")
      .option("batch", "N", "texts per request (default 64)")
      .option("concurrency", "N", "requests in flight (default 16)")
      .option("progress", "WHEN",
              "progress line on stderr: auto (if a terminal, default), "
              "always, never")
      .option("checkpoint-records", "N",
              "flush and fsync after N written records (default 10000)")
      .option("checkpoint-ms", "N",
              "flush and fsync at least every N ms (default 1000)")
      .option("grace-ms", "N",
              "after SIGINT/SIGTERM, wait up to N ms for requests in flight "
              "(default 10000; EMBEDRT_GRACE_MS, [serve] grace_ms)")
      .option("stop-after-failures", "N",
              "stop when N requests in a row fail for upstream reasons "
              "(default 50, 0 = never)");
  add_config_options(p);
  add_cluster_options(p, false);
  return p;
}

int usage_error(const std::string& msg) {
  return cli::usage_error("embed", msg);
}

int fail(const std::string& msg) {
  std::cerr << prefix << msg << '\n';
  return 1;
}

struct settings {
  std::string in = "-";
  std::string out = "-";
  em::output_format format = em::output_format::jsonl;
  std::string index;
  std::string rejects;
  bool fresh = false;
  std::string model = "text-embedding-3-small";
  int32_t dims = 0;
  uint32_t batch = 64;
  uint32_t concurrency = 16;
  std::string progress = "auto";
  uint64_t checkpoint_records = 10000;
  milliseconds checkpoint_interval{1000};
  milliseconds grace{10000};
  uint32_t stop_after_failures = 50;
};

/// The command's own options (the shared ones are in `app_config`).
std::string parse_settings(cli::arg_parser& p, const app_config& cfg,
                           settings& s) {
  int64_t batch = s.batch;
  int64_t concurrency = s.concurrency;
  int64_t ckpt_ms = s.checkpoint_interval.count();
  int64_t stop_after = s.stop_after_failures;
  std::string format = "jsonl";
  if (!p.get("in", s.in) || !p.get("out", s.out) || !p.get("format", format)
      || !p.get("index", s.index) || !p.get("rejects", s.rejects)
      || !p.get("batch", batch, 1, 2048)
      || !p.get("concurrency", concurrency, 1, 4096)
      || !p.get("progress", s.progress)
      || !p.get("checkpoint-records", s.checkpoint_records, 1,
                uint64_t{1} << 40)
      || !p.get("checkpoint-ms", ckpt_ms, 1, 3'600'000)
      || !p.get("stop-after-failures", stop_after, 0, 1'000'000'000))
    return p.error();
  if (!cfg.model.empty())
    s.model = cfg.model;
  s.dims = cfg.dimensions;
  s.batch = static_cast<uint32_t>(batch);
  s.concurrency = static_cast<uint32_t>(concurrency);
  s.checkpoint_interval = milliseconds{ckpt_ms};
  s.grace = cfg.serve.grace;
  s.stop_after_failures = static_cast<uint32_t>(stop_after);
  s.fresh = p.has("fresh");
  if (format == "jsonl")
    s.format = em::output_format::jsonl;
  else if (format == "f32")
    s.format = em::output_format::f32;
  else
    return "--format: expected 'jsonl' or 'f32', got '" + format + "'";
  if (s.progress != "auto" && s.progress != "always" && s.progress != "never")
    return "--progress: expected 'auto', 'always' or 'never', got '"
        + s.progress + "'";
  if (s.in.empty() || s.out.empty())
    return "--in/--out: empty file name (use - for stdin/stdout)";
  if (s.format == em::output_format::f32 && s.out == "-")
    return "--format f32 writes a file and its index: give --out FILE";
  if (p.has("index") && s.format != em::output_format::f32)
    return "--index is only used with --format f32";
  if (s.format == em::output_format::f32 && s.index.empty())
    s.index = s.out + ".index.jsonl";
  if (s.rejects.empty() && s.out != "-") {
    constexpr std::string_view ext = ".jsonl";
    auto base = s.out;
    if (base.size() > ext.size()
        && base.compare(base.size() - ext.size(), ext.size(), ext) == 0)
      base.resize(base.size() - ext.size());
    s.rejects = base + ".rejects.jsonl";
  }
  return {};
}

/// A file descriptor closed on scope exit.
struct unique_fd {
  int fd = -1;
  unique_fd() = default;
  explicit unique_fd(int x) : fd(x) {}
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() {
    if (fd > 2)
      ::close(fd);
  }
};

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

bool is_regular(int fd, uint64_t* size = nullptr) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return false;
  if (size)
    *size = static_cast<uint64_t>(st.st_size);
  return true;
}

/// Opens FILE for appending with resume: scans what is there (adding its ids
/// to `done`), truncates a torn tail and positions at the end. Returns "" or
/// an error.
struct opened_output {
  unique_fd data;
  unique_fd index;
  bool data_regular = false;
  bool index_regular = false;
  em::scan_result scan;
};

std::string open_output(const settings& s, em::id_set& done, opened_output& o) {
  if (s.out == "-") {
    o.data.fd = STDOUT_FILENO;
    o.data_regular = is_regular(STDOUT_FILENO);
    return {};
  }
  auto open_rw = [&](const std::string& path, unique_fd& fd,
                     bool& regular) -> std::string {
    fd.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd.fd < 0)
      return errno_text("cannot open", path);
    regular = is_regular(fd.fd);
    // One writer per output: a second run on the same file would interleave
    // records (the lock goes away with the process, even on SIGKILL).
    if (regular && ::flock(fd.fd, LOCK_EX | LOCK_NB) != 0)
      return errno == EWOULDBLOCK ? "another process is writing " + path
                                  : errno_text("cannot lock", path);
    if (regular && s.fresh && ::ftruncate(fd.fd, 0) != 0)
      return errno_text("cannot truncate", path);
    return {};
  };
  if (auto err = open_rw(s.out, o.data, o.data_regular); !err.empty())
    return err;
  if (s.format == em::output_format::f32) {
    if (!o.data_regular)
      return "--format f32 needs a regular --out file";
    if (auto err = open_rw(s.index, o.index, o.index_regular); !err.empty())
      return err;
    if (!o.index_regular)
      return "--index must be a regular file";
    uint64_t data_bytes = 0;
    is_regular(o.data.fd, &data_bytes);
    o.scan = em::scan_f32_output(o.index.fd, data_bytes, done);
    if (!o.scan.error.empty())
      return "cannot resume " + s.index + ": " + o.scan.error
          + " (move it away, or pass --fresh to start over)";
    if (::ftruncate(o.index.fd, static_cast<off_t>(o.scan.keep_index_bytes))
            != 0
        || ::ftruncate(o.data.fd, static_cast<off_t>(o.scan.keep_bytes)) != 0)
      return errno_text("cannot truncate the torn tail of", s.out);
    ::lseek(o.index.fd, 0, SEEK_END);
    ::lseek(o.data.fd, 0, SEEK_END);
    return {};
  }
  if (!o.data_regular)
    return {}; // a FIFO or device: nothing to resume
  o.scan = em::scan_jsonl_output(o.data.fd, done);
  if (!o.scan.error.empty())
    return "cannot resume " + s.out + ": " + o.scan.error
        + " (move it away, or pass --fresh to start over)";
  if (o.scan.torn_bytes > 0
      && ::ftruncate(o.data.fd, static_cast<off_t>(o.scan.keep_bytes)) != 0)
    return errno_text("cannot truncate the torn tail of", s.out);
  ::lseek(o.data.fd, 0, SEEK_END);
  return {};
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

std::string summary(const settings& s, const em::job_outcome& r) {
  const auto& c = r.counts;
  std::string where = s.out == "-" ? "stdout" : s.out;
  if (s.format == em::output_format::f32)
    where += " (index " + s.index + ")";
  char secs[32];
  std::snprintf(secs, sizeof(secs), "%.2f", r.seconds);
  auto rate = r.seconds > 0
      ? static_cast<uint64_t>(static_cast<double>(c.written) / r.seconds)
      : 0;
  std::string out = em::group_digits(c.written) + " written, "
      + em::group_digits(c.skipped) + " skipped (already there), "
      + em::group_digits(c.failed) + " failed";
  if (c.failed > 0)
    out += " (see " + (s.rejects.empty() ? std::string{"stderr"} : s.rejects)
        + ")";
  out += " in " + std::string{secs} + " s (" + em::group_digits(rate)
      + "/s); vectors";
  if (r.dims > 0)
    out += " (" + std::to_string(r.dims) + " dims)";
  out += " in " + where;
  return out;
}

/// The command line resolved: the configuration and the command's own
/// settings, or the code to exit with (help, bad usage).
struct command {
  std::optional<app_config> cfg;
  settings s;
  int exit_code = 0;
};

command parse_command(const std::vector<std::string>& args) {
  command cmd;
  auto p = make_parser();
  auto cfg
      = parse_command_line(p, args, "embed", log_level::warn, cmd.exit_code);
  if (!cfg)
    return cmd;
  if (auto msg = parse_settings(p, *cfg, cmd.s); !msg.empty()) {
    cmd.exit_code = usage_error(msg);
    return cmd;
  }
  cmd.cfg = std::move(*cfg);
  return cmd;
}

/// Blocks SIGINT/SIGTERM in every thread (the runtime's and the built-in
/// upstream's threads inherit this mask) and returns a signalfd for the job's
/// loop to read them from; writes to a closed pipe fail with EPIPE. Returns
/// "" or an error.
std::string take_signals(unique_fd& sig_fd) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (::pthread_sigmask(SIG_BLOCK, &sigs, nullptr) != 0)
    return "cannot block SIGINT/SIGTERM";
  sig_fd.fd = ::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sig_fd.fd < 0)
    return std::string{"signalfd: "} + std::strerror(errno);
  std::signal(SIGPIPE, SIG_IGN);
  return {};
}

/// The input: a file or stdin.
struct opened_input {
  unique_fd fd;
  /// A pipe or terminal is read only after poll(2) reported data, so one
  /// read(2) does not block (the descriptor is not switched to O_NONBLOCK:
  /// that flag would be shared with the shell's terminal).
  bool regular = false;
  uint64_t size = 0;
};

std::string open_input(const settings& s, opened_input& in) {
  if (s.in == "-") {
    in.fd.fd = STDIN_FILENO;
  } else {
    in.fd.fd = ::open(s.in.c_str(), O_RDONLY | O_CLOEXEC);
    if (in.fd.fd < 0)
      return errno_text("cannot open", s.in);
  }
  in.regular = is_regular(in.fd.fd, &in.size);
  return {};
}

/// Checks what the output already holds against the settings and says what
/// resuming keeps and drops. Returns "" or an error.
std::string check_resume(const settings& s, const em::scan_result& scan) {
  if (scan.records > 0 && s.dims > 0
      && scan.dims != static_cast<std::size_t>(s.dims))
    return s.out + " holds " + std::to_string(scan.dims)
        + "-dimensional vectors but --dims is " + std::to_string(s.dims)
        + " (pass --fresh to start over, or another --out)";
  if (scan.torn_bytes > 0 || scan.torn_index_bytes > 0)
    std::cerr << prefix << "dropped the torn end of the output ("
              << scan.torn_bytes + scan.torn_index_bytes
              << " bytes after record " << scan.records
              << "); its records are embedded again\n";
  if (scan.records > 0)
    std::cerr << prefix << "resuming: " << em::group_digits(scan.records)
              << " records already in " << s.out << '\n';
  return {};
}

/// Opens the rejects file, or takes stderr when there is none. Returns "" or
/// an error.
std::string open_rejects(const settings& s, unique_fd& fd) {
  if (s.rejects.empty()) {
    fd.fd = STDERR_FILENO;
    return {};
  }
  fd.fd = ::open(s.rejects.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                 0644);
  if (fd.fd < 0)
    return errno_text("cannot open", s.rejects);
  return {};
}

em::job_options job_options(const settings& s, const app_config& cfg,
                            service_actor svc) {
  em::job_options jo;
  jo.service = std::move(svc);
  jo.model = s.model;
  jo.dims = s.dims;
  jo.batch = s.batch;
  jo.concurrency = s.concurrency;
  jo.timeout = cfg.runtime.default_timeout;
  if (!cfg.runtime.upstreams.empty())
    jo.provider = cfg.runtime.upstreams.front().provider;
  jo.progress = s.progress == "always"
      || (s.progress == "auto" && ::isatty(STDERR_FILENO) == 1);
  jo.checkpoint_records = s.checkpoint_records;
  jo.checkpoint_interval = s.checkpoint_interval;
  jo.grace = s.grace;
  jo.stop_after_failures = s.stop_after_failures;
  return jo;
}

/// Says how the job ended; returns the exit code.
int report(const settings& s, const em::job_outcome& r) {
  int code = 0;
  if (r.signal != 0) {
    std::cerr << prefix << "stopped by " << signal_name(r.signal);
    if (r.abandoned > 0)
      std::cerr << " (" << em::group_digits(r.abandoned)
                << " records in flight abandoned)";
    std::cerr << "; everything written is kept: rerun the same command to "
                 "resume\n";
    code = 128 + r.signal;
  } else if (!r.fatal.empty()) {
    std::cerr << prefix << "stopped: " << r.fatal
              << (r.io_error ? "" : "; rerun the same command to resume")
              << '\n';
    code = 1;
  } else if (r.counts.failed > 0) {
    code = exit_rejects;
  }
  std::cerr << prefix << summary(s, r) << std::endl;
  return code;
}

} // namespace

int cmd_embed(const std::vector<std::string>& args) {
  auto cmd = parse_command(args);
  if (!cmd.cfg)
    return cmd.exit_code;
  auto& cfg = *cmd.cfg;
  const auto& s = cmd.s;
  unique_fd sig_fd;
  if (auto err = take_signals(sig_fd); !err.empty())
    return fail(err);
  opened_input in;
  if (auto err = open_input(s, in); !err.empty())
    return fail(err);
  em::id_set done;
  opened_output out;
  if (auto err = open_output(s, done, out); !err.empty())
    return fail(err);
  if (auto err = check_resume(s, out.scan); !err.empty())
    return fail(err);
  unique_fd rej_fd;
  if (auto err = open_rejects(s, rej_fd); !err.empty())
    return fail(err);
  bool rejects_on_stderr = s.rejects.empty();
  em::output_sink sink{s.format, em::fd_writer{out.data.fd, out.data_regular},
                       em::fd_writer{out.index.fd, out.index_regular},
                       out.scan.records};
  em::fd_writer rejects_w{rej_fd.fd, is_regular(rej_fd.fd),
                          rejects_on_stderr ? std::size_t{0}
                                            : std::size_t{64 * 1024}};

  // The built-in upstream, if used, outlives the actor system.
  std::string error;
  auto embedded = start_embedded_default(cfg, "embed", error);
  if (!error.empty())
    return fail(error);
  caf::actor_system_config sys_cfg;
  register_types(sys_cfg);
  if (!prepare_node(sys_cfg, cfg.cluster, "embed"))
    return cli::exit_usage;
  service_hooks hooks;
  hooks.io = prepare_io(sys_cfg, cfg.runtime.io_threads, cfg.workers);
  caf::actor_system sys{sys_cfg};
  service_actor local;
  if (!cfg.runtime.upstreams.empty()) {
    // The service's actors own the I/O from here (and CAF's workers, if
    // they run it); it goes with the last of them.
    auto svc = spawn_service(sys, cfg.runtime, std::move(hooks));
    if (!svc)
      return fail("cannot set up the runtime: " + render_error(svc.error()));
    local = std::move(*svc);
  }
  // With --peer, records are routed across those nodes (and the local
  // upstreams, if any).
  auto node = start_node(sys, std::move(local), cfg, "embed", false);
  if (!node)
    return 1;

  em::job_io io;
  io.in_fd = in.fd.fd;
  io.in_size = in.regular ? in.size : 0;
  io.in_regular = in.regular;
  io.out = &sink;
  io.rejects = &rejects_w;
  io.rejects_on_stderr = rejects_on_stderr;
  io.done = &done;
  io.dims = out.scan.dims;
  io.signal_fd = sig_fd.fd;
  auto r = em::run_job(sys, job_options(s, cfg, node->entry), io);
  int code = report(s, r);
  // Everything written is flushed and synced. One message stops the
  // runtime: the service answers what is still in flight (records abandoned
  // after a signal or a fatal error) with `cancelled`, which the finished
  // job ignores, and stops its pools and connections; the actor system's
  // destructor then returns once every actor has finished.
  node->stop();
  return code;
}

} // namespace embedrt::app

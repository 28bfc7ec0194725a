#include "embed/embed_job.hpp"

#include "embed/jsonl_input.hpp"
#include "embedrt/client.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"

#include <algorithm>
#include <caf/sec.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace embedrt::app::embed {

namespace {

using steady = std::chrono::steady_clock;

constexpr auto draw_interval = std::chrono::milliseconds{200};

/// Longest input line accepted (bytes).
constexpr std::size_t max_input_line = 16 * 1024 * 1024;

/// One input record on its way through the job.
struct item {
  std::string id;
  std::string text;
  uint64_t line = 0;
};

/// An answer handed from a CAF worker to the job's thread.
struct completion {
  uint64_t batch = 0;
  caf::expected<embed_result> result{caf::error{}};
};

/// The only state shared with CAF workers: a locked vector and an eventfd
/// that wakes the job's poll(2). Kept alive by the callbacks (shared_ptr),
/// so a late answer after the job returned is harmless.
struct completion_queue {
  std::mutex mtx;
  std::vector<completion> items;
  int efd = -1;

  ~completion_queue() {
    if (efd >= 0)
      ::close(efd);
  }

  void push(completion c) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      items.push_back(std::move(c));
    }
    uint64_t one = 1;
    // A full counter (impossible here) or EINTR only delay the wake-up; the
    // job also polls with a timeout.
    [[maybe_unused]] auto n = ::write(efd, &one, sizeof(one));
  }

  std::vector<completion> take() {
    std::vector<completion> out;
    std::lock_guard<std::mutex> guard{mtx};
    out.swap(items);
    return out;
  }
};

/// Kinds of failure that say nothing about the texts: the upstream or the
/// path to it is broken. Many in a row stop the job (rerun to resume).
bool is_upstream_failure(errc code) {
  switch (code) {
    case errc::auth_failed:
    case errc::quota_exceeded:
    case errc::tls_failed:
    case errc::connection_failed:
    case errc::upstream_down:
    case errc::breaker_open:
    case errc::deadline_exceeded:
    case errc::overloaded:
    case errc::upstream_error:
    case errc::rate_limited:
    case errc::invalid_response:
    case errc::node_down: return true;
    default: return false;
  }
}

/// A failure of the upstream itself that no record can get past (a bad key,
/// a wrong URL, an unreachable upstream before anything succeeded): the job
/// stops at once with what to fix, and rejects no record for it (they are
/// not bad input; a rerun sends them). "" if `err` is not one.
std::string upstream_fatal(const caf::error& err, bool any_success) {
  auto detail = error_detail(err);
  switch (error_code(err)) {
    case errc::auth_failed:
      return "the upstream refused the API key (HTTP "
          + std::to_string(error_http_status(err))
          + "): check the key variable (OPENAI_API_KEY, --api-key-env, "
            "api_key_env) and that it belongs to this upstream ("
          + detail + ")";
    case errc::quota_exceeded:
      return "the upstream's quota is exhausted (insufficient_quota): check "
             "the account's plan and billing ("
          + detail + ")";
    case errc::upstream_error:
      if (error_http_status(err) == 404)
        return "404 from the upstream: does the base URL end in /v1 (e.g. "
               "http://HOST:PORT/v1)? ("
            + detail + ")";
      return {};
    case errc::invalid_input:
      // No upstream serves the model: every record would fail alike.
      if (error_http_status(err) == 404)
        return "the model is not served (" + detail
            + "): check --model or the upstream's models";
      return {};
    case errc::connection_failed:
    case errc::tls_failed:
    case errc::breaker_open:
    case errc::upstream_down:
      if (any_success)
        return {};
      return std::string{"cannot reach the upstream: is it running, and "
                         "are the base URL, port and TLS settings right? ("}
      + to_string(error_code(err)) + ": " + detail + ")";
    default: return {};
  }
}

/// The error name for the rejects file: the errc name, else CAF's.
std::string error_name(const caf::error& err) {
  if (auto code = error_code(err); code != errc::none)
    return to_string(code);
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return caf::to_string(err.category());
}

class job {
 public:
  job(caf::actor_system& sys, const job_options& opts, job_io& io)
      : opts_(opts),
        io_(io),
        client_(sys, opts.service, opts.timeout),
        reader_(io.in_fd, max_input_line),
        profile_(profile_for(opts.provider)),
        queue_(std::make_shared<completion_queue>()) {
    out_.dims = io.dims;
    out_.counts.bytes_total = io.in_size;
  }

  job_outcome run();

 private:
  // -- input ----------------------------------------------------------------

  void reject(std::string_view id, uint64_t line, std::string_view error,
              std::string_view message) {
    if (io_.rejects_on_stderr)
      clear_progress();
    append_reject(io_.rejects->buffer(), id, line, error, message);
    if (io_.rejects_on_stderr ? !io_.rejects->flush()
                              : !io_.rejects->maybe_flush())
      io_failure("cannot write the rejects: " + io_.rejects->error());
    ++out_.counts.failed;
  }

  /// Turns one input line into a batch item, a skip or a reject.
  void take_line(const line_reader::line& ln, std::vector<item>& batch) {
    if (ln.too_long) {
      reject({}, ln.number, to_string(errc::invalid_input),
             "line longer than " + std::to_string(max_input_line) + " bytes");
      return;
    }
    auto p = parse_input_line(ln.text, ln.number);
    switch (p.what) {
      case parsed_line::kind::blank: return;
      case parsed_line::kind::bad:
        reject(p.id, ln.number, to_string(errc::invalid_input),
               "line " + std::to_string(ln.number) + ": " + p.error);
        return;
      case parsed_line::kind::record: break;
    }
    if (io_.done->contains(p.id)) {
      ++out_.counts.skipped;
      return;
    }
    one_text_[0] = std::move(p.text);
    if (auto err = openai::validate_inputs(one_text_, profile_)) {
      reject(p.id, ln.number, error_name(err),
             "line " + std::to_string(ln.number) + ": " + error_detail(err));
      return;
    }
    batch.push_back(item{std::move(p.id), std::move(one_text_[0]), ln.number});
  }

  /// Reads buffered lines into `batch` until it is full; reads more from a
  /// regular file at once, and leaves pipes to poll(2). Examines at most
  /// `line_budget_` lines (skipped lines cost nothing else), so that a long
  /// run of already-written ids does not hold up signals and progress.
  void read_into(std::vector<item>& batch) {
    line_reader::line ln;
    while (batch.size() < opts_.batch && !stopping_) {
      if (line_budget_ == 0)
        return;
      switch (reader_.next(ln)) {
        case line_reader::status::line:
          --line_budget_;
          take_line(ln, batch);
          break;
        case line_reader::status::eof: input_done_ = true; return;
        case line_reader::status::need_input:
          if (!io_.in_regular)
            return;
          if (!fill_input())
            return;
          break;
      }
    }
  }

  /// One read from the input; false on an error (the job stops).
  bool fill_input() {
    if (reader_.fill() < 0 && errno != EINTR && errno != EAGAIN) {
      io_failure(std::string{"cannot read the input: "} + std::strerror(errno));
      return false;
    }
    return true;
  }

  bool wants_input() const {
    return !input_done_ && !stopping_ && in_flight_ < opts_.concurrency;
  }

  // -- requests -------------------------------------------------------------

  void submit(std::vector<item> batch) {
    embed_request req;
    req.model = opts_.model;
    req.dimensions = opts_.dims;
    req.timeout = caf::timespan{opts_.timeout};
    req.inputs.reserve(batch.size());
    for (const auto& it : batch)
      req.inputs.push_back(it.text);
    auto id = next_batch_++;
    out_.counts.in_flight += batch.size();
    ++in_flight_;
    batches_.emplace(id, std::move(batch));
    client_.embed(std::move(req),
                  [q = queue_, id](caf::expected<embed_result> r) {
                    q->push(completion{id, std::move(r)});
                  });
  }

  /// Sends requests while the window has room and there is input.
  void refill() {
    line_budget_ = 50000;
    while (!stopping_ && in_flight_ < opts_.concurrency) {
      if (!singles_.empty()) {
        std::vector<item> one;
        one.push_back(std::move(singles_.front()));
        singles_.pop_front();
        submit(std::move(one));
        continue;
      }
      if (input_done_)
        return;
      std::vector<item> batch;
      batch.reserve(opts_.batch);
      read_into(batch);
      if (batch.empty())
        return;
      submit(std::move(batch));
    }
  }

  void on_completion(completion& c) {
    auto node = batches_.extract(c.batch);
    if (node.empty())
      return;
    auto& batch = node.mapped();
    --in_flight_;
    out_.counts.in_flight -= batch.size();
    if (!c.result) {
      on_failure(batch, c.result.error());
      return;
    }
    auto& res = *c.result;
    if (res.embeddings.size() != batch.size()) {
      on_failure(batch,
                 make_error(errc::invalid_response,
                            "got " + std::to_string(res.embeddings.size())
                                + " vectors for " + std::to_string(batch.size())
                                + " texts"));
      return;
    }
    failures_in_a_row_ = 0;
    any_success_ = true;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& v = res.embeddings[i];
      if (out_.dims == 0)
        out_.dims = v.size();
      if (v.size() != out_.dims) {
        // One output holds one dimension; a resumed output keeps its own.
        auto msg = "the upstream returned " + std::to_string(v.size())
            + "-dimensional vectors, the output holds "
            + std::to_string(out_.dims) + "-dimensional ones"
            + (opts_.dims == 0
                   ? " (pass --dims " + std::to_string(out_.dims) + ")"
                   : std::string{});
        reject(batch[i].id, batch[i].line, to_string(errc::invalid_response),
               msg);
        if (!stopping_)
          stop(msg);
        continue;
      }
      if (!io_.out->write(batch[i].id, v)) {
        io_failure("cannot write the output: " + io_.out->error());
        return;
      }
      ++out_.counts.written;
      ++since_checkpoint_;
    }
  }

  void on_failure(std::vector<item>& batch, const caf::error& err) {
    auto code = error_code(err);
    if (code == errc::invalid_input && batch.size() > 1) {
      // One bad text fails its whole request: send each alone so only the
      // bad one is rejected.
      for (auto& it : batch)
        singles_.push_back(std::move(it));
      return;
    }
    if (auto why = upstream_fatal(err, any_success_); !why.empty()) {
      // Not the records' fault: none is rejected, the job stops (exit 1).
      upstream_stopped_ = true;
      if (!stopping_)
        stop(std::move(why));
      return;
    }
    if (upstream_stopped_ && (code == errc::none || is_upstream_failure(code)))
      return; // answers still in flight after the stop: same cause
    auto name = error_name(err);
    auto message = render_error(err);
    for (const auto& it : batch)
      reject(it.id, it.line, name, message);
    if (code == errc::none || is_upstream_failure(code)) {
      ++failures_in_a_row_;
      if (opts_.stop_after_failures > 0
          && failures_in_a_row_ >= opts_.stop_after_failures && !stopping_) {
        stop("the upstream failed " + std::to_string(failures_in_a_row_)
             + " requests in a row (last: " + message + ")");
      }
    } else {
      failures_in_a_row_ = 0;
    }
  }

  // -- stopping -------------------------------------------------------------

  void stop(std::string why) {
    stopping_ = true;
    if (out_.fatal.empty())
      out_.fatal = std::move(why);
  }

  void io_failure(std::string why) {
    out_.io_error = true;
    stop(std::move(why));
    // Nothing more can be written: do not wait for the requests in flight.
    abandon_ = true;
  }

  void on_signal(int sig) {
    if (stopping_ && out_.signal != 0) {
      note("second signal: abandoning " + group_digits(out_.counts.in_flight)
           + " records in flight");
      abandon_ = true;
      return;
    }
    out_.signal = sig;
    stopping_ = true;
    grace_end_ = steady::now() + opts_.grace;
    if (in_flight_ > 0)
      note(std::string{sig == SIGINT ? "interrupted" : "terminated"}
           + ": reading stopped, finishing "
           + group_digits(out_.counts.in_flight)
           + " records in flight (signal again to abandon them)");
  }

  // -- progress and checkpoints --------------------------------------------

  void note(const std::string& msg) {
    clear_progress();
    std::string line = "embedrt embed: " + msg + "\n";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
  }

  void clear_progress() {
    if (!drawn_)
      return;
    static constexpr char erase[] = "\r\x1b[K";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, erase, sizeof(erase) - 1);
    drawn_ = false;
  }

  void draw() {
    out_.counts.bytes_read = reader_.consumed();
    // One column short of the terminal's width: a line that fills it would
    // wrap on some terminals.
    winsize ws{};
    std::size_t width = 0;
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
      width = ws.ws_col - 1u;
    auto text = render_progress(out_.counts, elapsed(), width);
    std::string line = "\r" + text + "\x1b[K";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
    drawn_ = true;
  }

  bool checkpoint() {
    since_checkpoint_ = 0;
    next_checkpoint_ = steady::now() + opts_.checkpoint_interval;
    if (!io_.out->checkpoint()) {
      io_failure("cannot write the output: " + io_.out->error());
      return false;
    }
    if (!io_.rejects->sync()) {
      io_failure("cannot write the rejects: " + io_.rejects->error());
      return false;
    }
    return true;
  }

  double elapsed() const {
    return std::chrono::duration<double>(steady::now() - start_).count();
  }

  const job_options& opts_;
  job_io& io_;
  client client_;
  line_reader reader_;
  provider_profile profile_;
  std::shared_ptr<completion_queue> queue_;
  std::vector<std::string> one_text_ = std::vector<std::string>(1);
  /// Requests in flight, by batch number.
  std::unordered_map<uint64_t, std::vector<item>> batches_;
  uint64_t next_batch_ = 1;
  uint32_t in_flight_ = 0;
  /// Texts to re-send alone (their batch failed with invalid_input).
  std::deque<item> singles_;
  /// Lines `read_into` may still examine in this turn of the loop (0: the
  /// loop comes back at once, without waiting in poll).
  uint64_t line_budget_ = 0;
  bool input_done_ = false;
  bool stopping_ = false;
  bool abandon_ = false;
  bool drawn_ = false;
  uint32_t failures_in_a_row_ = 0;
  /// A request of this run succeeded (an unreachable upstream is then a
  /// passing failure, not a wrong address).
  bool any_success_ = false;
  /// Stopped by `upstream_fatal`.
  bool upstream_stopped_ = false;
  uint64_t since_checkpoint_ = 0;
  steady::time_point start_;
  steady::time_point next_checkpoint_;
  steady::time_point grace_end_ = steady::time_point::max();
  job_outcome out_;
};

job_outcome job::run() {
  queue_->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (queue_->efd < 0) {
    out_.fatal = std::string{"eventfd: "} + std::strerror(errno);
    out_.io_error = true;
    return out_;
  }
  start_ = steady::now();
  next_checkpoint_ = start_ + opts_.checkpoint_interval;
  auto next_draw = start_;
  for (;;) {
    for (auto& c : queue_->take())
      on_completion(c);
    if (abandon_)
      break;
    refill();
    if (abandon_)
      break;
    if (in_flight_ == 0 && (stopping_ || (input_done_ && singles_.empty())))
      break;
    auto now = steady::now();
    if (since_checkpoint_ >= opts_.checkpoint_records
        || now >= next_checkpoint_)
      if (!checkpoint())
        break;
    if (opts_.progress && now >= next_draw) {
      draw();
      next_draw = now + draw_interval;
    }
    if (now >= grace_end_) {
      note("grace period over: abandoning "
           + group_digits(out_.counts.in_flight) + " records in flight");
      abandon_ = true;
      break;
    }
    // Wait for an answer, a signal, input (pipes) or the next timer.
    auto wake = next_checkpoint_;
    if (opts_.progress)
      wake = std::min(wake, next_draw);
    wake = std::min(wake, grace_end_);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now)
                  .count();
    if (line_budget_ == 0 && wants_input())
      ms = 0; // more input is ready: only look for signals and answers
    pollfd fds[3] = {{io_.signal_fd, POLLIN, 0},
                     {queue_->efd, POLLIN, 0},
                     {io_.in_fd, POLLIN, 0}};
    nfds_t n = 2;
    if (wants_input() && !io_.in_regular)
      n = 3;
    auto rc
        = ::poll(fds, n, static_cast<int>(std::clamp<int64_t>(ms, 0, 1000)));
    if (rc < 0 && errno != EINTR) {
      stop(std::string{"poll: "} + std::strerror(errno));
      out_.io_error = true;
      abandon_ = true;
      break;
    }
    if (rc <= 0)
      continue;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si{};
      while (::read(io_.signal_fd, &si, sizeof(si)) == sizeof(si))
        on_signal(static_cast<int>(si.ssi_signo));
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count = 0;
      [[maybe_unused]] auto r = ::read(queue_->efd, &count, sizeof(count));
    }
    if (n == 3 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)))
      fill_input();
  }
  // Make everything written so far durable, even when stopping on an error
  // of the input or the upstream (not after a write error: nothing more
  // can be written then).
  if (!out_.io_error)
    checkpoint();
  out_.abandoned = abandon_ ? out_.counts.in_flight : 0;
  out_.counts.bytes_read = reader_.consumed();
  out_.seconds = elapsed();
  if (opts_.progress) {
    draw();
    static constexpr char nl = '\n';
    [[maybe_unused]] auto r = ::write(STDERR_FILENO, &nl, 1);
    drawn_ = false;
  }
  return out_;
}

} // namespace

job_outcome run_job(caf::actor_system& sys, const job_options& opts,
                    job_io& io) {
  job j{sys, opts, io};
  return j.run();
}

} // namespace embedrt::app::embed

// Structured log lines: formatted by the caller, written by one writer thread.
//
// The caller formats its line (timestamp included) and pushes it onto a
// lock-free multi-producer/single-consumer queue (Vyukov's intrusive linked
// list); the writer thread pops lines, appends them to a batch and writes the
// batch with one fwrite + fflush. The writer sleeps in read(2) on an eventfd
// when the queue is empty; a producer writes the eventfd only when the writer
// announced that it sleeps (an event count: producers count completed pushes
// in one atomic word, the writer sets its sleeping bit there only if no push
// completed since it found the queue empty), so a busy writer costs the
// callers no syscall. Woken, the writer lets lines gather for a moment
// (`coalesce`) before it writes them: at thousands of lines a second (an
// access log under load) a caller writes the eventfd and the writer wakes at
// most about once per `coalesce`, not once per line. The queue is bounded in
// bytes:
// a line that does not fit is dropped and counted, and the writer reports the
// count in a line of its own. An atexit handler drains the queue and joins the
// writer; lines logged afterwards are written by the caller.
#include "embedrt/log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace embedrt {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::atomic<int> current_level{static_cast<int>(log_level::info)};
std::atomic<std::FILE*> sink{nullptr};

/// The writer writes once its batch holds this many bytes.
constexpr std::size_t batch_bytes = 64 * 1024;

/// How long the exit handler waits for the writer to drain the queue.
constexpr milliseconds exit_drain_timeout{2000};
/// How long a woken writer lets lines gather before it writes them.
constexpr std::chrono::microseconds coalesce{1000};

const char* level_name(log_level lvl) {
  switch (lvl) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
    default: return "off";
  }
}

bool needs_quotes(std::string_view v) {
  if (v.empty())
    return true;
  for (char c : v)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
      return true;
  return false;
}

void append_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out += '"';
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
          out += '?';
        else
          out += c;
    }
  }
  out += '"';
}

void append_timestamp(std::string& out) {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  // The date and time up to the second, formatted once per second per
  // thread (an access log writes thousands of lines a second).
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[64];
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  out += cached;
  char frac[6] = {'.',
                  static_cast<char>('0' + ms / 100),
                  static_cast<char>('0' + ms / 10 % 10),
                  static_cast<char>('0' + ms % 10),
                  'Z',
                  '\0'};
  out += frac;
}

std::string format_line(log_level lvl, std::string_view event,
                        std::initializer_list<log_field> fields) {
  std::string line;
  line.reserve(128);
  line += "ts=";
  append_timestamp(line);
  line += " level=";
  line += level_name(lvl);
  line += " event=";
  append_value(line, event);
  for (auto& [key, value] : fields) {
    line += ' ';
    line.append(key);
    line += '=';
    append_value(line, value);
  }
  line += '\n';
  return line;
}

/// Writes `text` to the sink now (one fwrite, then fflush).
void write_now(std::string_view text) {
  auto* out = sink.load(std::memory_order_acquire);
  if (out == nullptr)
    out = stderr;
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

/// A one-shot signal from the writer to a thread waiting for a drain: an
/// eventfd shared by the waiter and the queued marker (whoever lets go last
/// closes it, so a waiter that gave up never leaves a dangling descriptor).
struct drain_ticket {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::atomic<bool> done{false};

  drain_ticket() = default;
  drain_ticket(const drain_ticket&) = delete;
  drain_ticket& operator=(const drain_ticket&) = delete;

  ~drain_ticket() {
    if (fd >= 0)
      close(fd);
  }

  void signal() {
    // The flag orders the writer's work before the waiter's return; the
    // eventfd only wakes the waiter (poll() is no synchronisation).
    done.store(true, std::memory_order_release);
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof(one));
  }

  /// True once signalled; false when `deadline` passed first.
  bool wait(steady_clock::time_point deadline) const {
    if (fd < 0)
      return false;
    pollfd pfd{fd, POLLIN, 0};
    for (;;) {
      auto left
          = std::chrono::ceil<milliseconds>(deadline - steady_clock::now());
      int r
          = ::poll(&pfd, 1, static_cast<int>(std::max<long>(left.count(), 0)));
      if (r > 0)
        return done.load(std::memory_order_acquire);
      if (r == 0 || errno != EINTR)
        return done.load(std::memory_order_acquire);
    }
  }
};

/// A queued line, or a marker (drain ticket, stop) for the writer.
struct line_node {
  std::atomic<line_node*> next{nullptr};
  std::string text;
  std::shared_ptr<drain_ticket> ticket;
  bool stop = false;

  /// The bytes a queued line counts against `log_queue_limit`.
  std::size_t cost() const {
    return text.size() + sizeof(line_node);
  }
};

/// Vyukov's intrusive multi-producer/single-consumer queue: push is one
/// exchange and one store, wait-free; pop is for the writer thread only.
class line_queue {
 public:
  line_queue() : head_(&sentinel_), tail_(&sentinel_) {
    // nop
  }

  void push(line_node* n) {
    n->next.store(nullptr, std::memory_order_relaxed);
    auto* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->next.store(n, std::memory_order_release);
  }

  /// The oldest node, or nullptr when empty or when the next push is half
  /// done (its producer links it, then wakes the writer if it sleeps).
  line_node* pop() {
    auto* tail = tail_;
    auto* next = tail->next.load(std::memory_order_acquire);
    if (tail == &sentinel_) {
      if (next == nullptr)
        return nullptr;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire))
      return nullptr;
    push(&sentinel_);
    next = tail->next.load(std::memory_order_acquire);
    if (next == nullptr)
      return nullptr;
    tail_ = next;
    return tail;
  }

 private:
  std::atomic<line_node*> head_; // producers
  line_node* tail_;              // the writer
  line_node sentinel_;
};

/// The writer thread and its queue. Created on the first line logged and
/// never destroyed (threads still running at exit may use it).
class log_writer {
 public:
  /// The writer, started on the first call; nullptr if it cannot start (then
  /// every line is written by its caller).
  static log_writer* get();

  /// The writer if it was started.
  static log_writer* started() {
    return started_.load(std::memory_order_acquire);
  }

  /// Queues `line` (moved from) or drops and counts it when the queue is
  /// full. False, with `line` untouched, once the writer is shut down.
  bool submit(std::string& line);

  /// Waits until every line queued before the call is written.
  bool drain(milliseconds timeout);

  /// Drains the queue, stops the writer and joins it (detaches it if it
  /// does not finish in time). Lines logged afterwards are written by their
  /// callers.
  void shutdown(milliseconds timeout);

  /// While a shutdown drains the queue, waits for it (bounded), so a
  /// caller's synchronous line comes after its queued ones.
  void wait_closed() const;

 private:
  enum : int { open, closing, closed };

  static constexpr std::uint64_t sleeping = 1;

  log_writer();

  bool enter();
  void leave();
  void push(line_node* n);
  void run();
  line_node* next_node(std::string& batch);
  void write_batch(std::string& batch);

  static std::atomic<log_writer*> started_;

  line_queue queue_;
  std::atomic<std::size_t> queued_bytes_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<int> state_{open};
  std::atomic<int> active_{0}; // producers between enter() and leave()
  /// Completed pushes times 2, plus `sleeping` while the writer waits (or
  /// is about to wait) for the eventfd.
  std::atomic<std::uint64_t> signal_{0};
  int wake_fd_ = -1;
  std::thread thread_;
};

std::atomic<log_writer*> log_writer::started_{nullptr};

void shutdown_at_exit() {
  if (auto* w = log_writer::started())
    w->shutdown(exit_drain_timeout);
}

log_writer* log_writer::get() {
  static log_writer* instance = [] {
    log_writer* w = nullptr;
    try {
      w = new log_writer();
    } catch (const std::exception&) {
      return w;
    }
    started_.store(w, std::memory_order_release);
    std::atexit(shutdown_at_exit);
    return w;
  }();
  return instance;
}

log_writer::log_writer() {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0)
    throw std::system_error(errno, std::generic_category(), "eventfd");
  // The writer takes no signals: commands block SIGINT/SIGTERM in every
  // thread and wait for them in one place.
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    thread_ = std::thread{[this] {
      run();
    }};
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    close(wake_fd_);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

bool log_writer::enter() {
  active_.fetch_add(1, std::memory_order_seq_cst);
  if (state_.load(std::memory_order_seq_cst) == open)
    return true;
  leave();
  return false;
}

void log_writer::leave() {
  active_.fetch_sub(1, std::memory_order_seq_cst);
}

void log_writer::push(line_node* n) {
  queue_.push(n);
  auto before = signal_.fetch_add(2, std::memory_order_acq_rel);
  if ((before & sleeping) != 0
      && (signal_.fetch_and(~sleeping, std::memory_order_acq_rel) & sleeping)
          != 0) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof(one));
  }
}

bool log_writer::submit(std::string& line) {
  auto node = std::make_unique<line_node>();
  node->text = std::move(line);
  if (!enter()) {
    line = std::move(node->text);
    return false;
  }
  auto cost = node->cost();
  if (queued_bytes_.fetch_add(cost, std::memory_order_relaxed) + cost
      > log_queue_limit) {
    queued_bytes_.fetch_sub(cost, std::memory_order_relaxed);
    dropped_.fetch_add(1, std::memory_order_relaxed);
  } else {
    push(node.release());
  }
  leave();
  return true;
}

bool log_writer::drain(milliseconds timeout) {
  auto deadline = steady_clock::now() + timeout;
  auto node = std::make_unique<line_node>();
  auto ticket = std::make_shared<drain_ticket>();
  node->ticket = ticket;
  if (!enter())
    return true; // shut down: every line is written by its caller
  push(node.release());
  leave();
  return ticket->wait(deadline);
}

void log_writer::shutdown(milliseconds timeout) {
  auto deadline = steady_clock::now() + timeout;
  int expected = open;
  if (!state_.compare_exchange_strong(expected, closing))
    return;
  // Producers that saw `open` finish their push (a few instructions).
  while (active_.load(std::memory_order_seq_cst) != 0
         && steady_clock::now() < deadline)
    std::this_thread::yield();
  auto node = std::make_unique<line_node>();
  auto ticket = std::make_shared<drain_ticket>();
  node->ticket = ticket;
  node->stop = true;
  push(node.release());
  if (ticket->wait(deadline))
    thread_.join();
  else
    thread_.detach(); // stuck on its output; the process ends without it
  state_.store(closed, std::memory_order_seq_cst);
}

void log_writer::wait_closed() const {
  auto deadline = steady_clock::now() + exit_drain_timeout;
  while (state_.load(std::memory_order_seq_cst) == closing
         && steady_clock::now() < deadline)
    std::this_thread::yield();
}

void log_writer::run() {
  std::string batch;
  for (;;) {
    std::unique_ptr<line_node> n{next_node(batch)};
    if (!n->ticket) {
      queued_bytes_.fetch_sub(n->cost(), std::memory_order_relaxed);
      batch += n->text;
      if (batch.size() >= batch_bytes)
        write_batch(batch);
      continue;
    }
    write_batch(batch);
    n->ticket->signal();
    if (n->stop)
      return;
  }
}

line_node* log_writer::next_node(std::string& batch) {
  for (;;) {
    auto seen = signal_.load(std::memory_order_acquire);
    if (auto* n = queue_.pop())
      return n;
    write_batch(batch);
    // Sleep only if no push completed since `seen`: a push completed later
    // sees the flag and writes the eventfd.
    if (!signal_.compare_exchange_strong(seen, seen | sleeping,
                                         std::memory_order_acq_rel))
      continue;
    std::uint64_t count = 0;
    while (::read(wake_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
      // retry
    }
    std::this_thread::sleep_for(coalesce);
  }
}

void log_writer::write_batch(std::string& batch) {
  if (auto n = dropped_.exchange(0, std::memory_order_relaxed); n > 0)
    batch += format_line(log_level::error, "log_dropped",
                         {{"lines", std::to_string(n)}});
  if (batch.empty())
    return;
  write_now(batch);
  batch.clear();
}

} // namespace

void set_log_level(log_level lvl) {
  current_level.store(static_cast<int>(lvl), std::memory_order_relaxed);
  // Start the writer now rather than at the first line, which may come when
  // the process has no descriptor left for its eventfd (accept() failing
  // with EMFILE is logged): then every line is written synchronously.
  if (lvl != log_level::off)
    log_writer::get();
}

log_level get_log_level() {
  return static_cast<log_level>(current_level.load(std::memory_order_relaxed));
}

bool parse_log_level(std::string_view text, log_level& out) {
  for (auto lvl : {log_level::debug, log_level::info, log_level::warn,
                   log_level::error, log_level::off})
    if (text == level_name(lvl)) {
      out = lvl;
      return true;
    }
  return false;
}

void set_log_sink(std::FILE* out) {
  flush_log();
  sink.store(out, std::memory_order_release);
}

bool flush_log(milliseconds timeout) {
  auto* w = log_writer::started();
  return w == nullptr || w->drain(timeout);
}

void log(log_level lvl, std::string_view event,
         std::initializer_list<log_field> fields) {
  if (!log_enabled(lvl))
    return;
  auto line = format_line(lvl, event, fields);
  auto* w = log_writer::get();
  if (w != nullptr) {
    if (w->submit(line))
      return;
    w->wait_closed();
  }
  write_now(line);
}

} // namespace embedrt

// The logger: the line format, the level filter, many threads logging at
// once (every line once, whole, in each thread's order), set_log_sink, the
// bounded queue (a blocked output drops lines and says how many) and lines
// logged just before a process ends (a child process that logs and exits).
#include "app/spawn_util.hpp"
#include "embedrt/log.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <map>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

using namespace embedrt;

namespace {

/// Log output into a pipe, read by a thread of the test.
class pipe_capture {
 public:
  pipe_capture() {
    REQUIRE(pipe2(fds_, O_CLOEXEC) == 0);
    file_ = fdopen(fds_[1], "w");
    REQUIRE(file_ != nullptr);
    set_log_sink(file_);
  }

  pipe_capture(const pipe_capture&) = delete;
  pipe_capture& operator=(const pipe_capture&) = delete;

  ~pipe_capture() {
    if (file_ != nullptr)
      finish();
  }

  /// Bytes the pipe holds before a write blocks.
  int capacity() const {
    return fcntl(fds_[1], F_GETPIPE_SZ);
  }

  /// Starts reading (until the write end closes).
  void start_reader() {
    reader_ = std::thread{[this] {
      char chunk[65536];
      ssize_t n = 0;
      while ((n = read(fds_[0], chunk, sizeof(chunk))) > 0)
        text_.append(chunk, static_cast<std::size_t>(n));
    }};
  }

  /// Everything logged into the pipe: drains the logger, restores stderr,
  /// closes the pipe and waits for the reader.
  std::string finish() {
    if (!reader_.joinable())
      start_reader();
    bool drained = flush_log(std::chrono::seconds{20});
    set_log_sink(nullptr);
    std::fclose(file_);
    file_ = nullptr;
    reader_.join();
    close(fds_[0]);
    REQUIRE(drained);
    return text_;
  }

 private:
  int fds_[2] = {-1, -1};
  std::FILE* file_ = nullptr;
  std::thread reader_;
  std::string text_;
};

/// Sets the level for one test and restores the test default (error).
struct level_scope {
  explicit level_scope(log_level lvl) {
    set_log_level(lvl);
  }
  ~level_scope() {
    set_log_level(log_level::error);
  }
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string::npos) {
      lines.push_back(text.substr(pos)); // a torn last line: a failure
      break;
    }
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

/// The value of an unquoted field, if present.
std::optional<std::string> field(const std::string& line,
                                 const std::string& key) {
  auto at = line.find(' ' + key + '=');
  if (at == std::string::npos)
    return std::nullopt;
  auto begin = at + key.size() + 2;
  return line.substr(begin, line.find(' ', begin) - begin);
}

/// Sums the `lines=` of the logger's drop reports.
std::uint64_t reported_drops(const std::vector<std::string>& lines) {
  std::uint64_t sum = 0;
  for (auto& line : lines)
    if (line.find(" level=error event=log_dropped lines=") != std::string::npos)
      sum += std::stoull(*field(line, "lines"));
  return sum;
}

/// Lines of the form `ts=... level=info event=EVENT thread=T seq=S[ ...]`,
/// each thread's seq counting 0, 1, 2...
struct sequences {
  int count = 0;               // lines of the form
  int out_of_order = 0;        // of them, not the seq their thread was at
  int other = 0;               // lines not of the form
  std::map<int, int> next_seq; // per thread: the seq expected next
};

/// Milliseconds since the epoch of a `ts=` value (UTC, ms precision).
std::optional<long long> parse_ts(const std::string& ts) {
  std::tm tm{};
  int ms = 0;
  if (ts.size() != 24 || ts[23] != 'Z'
      || std::sscanf(ts.c_str(), "%d-%d-%dT%d:%d:%d.%d", &tm.tm_year,
                     &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &ms)
          != 7)
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<long long>(timegm(&tm)) * 1000 + ms;
}

/// Thread and seq of `ts=TS level=info event=EVENT thread=T seq=S<rest>`;
/// nullopt for any other line (another event, torn or merged lines).
std::optional<std::pair<int, int>> parse_sequenced(const std::string& line,
                                                   const std::string& event,
                                                   const std::string& rest) {
  const std::string head = " level=info event=" + event + " thread=";
  if (line.rfind("ts=", 0) != 0 || line.size() < 27
      || !parse_ts(line.substr(3, 24)) || line.compare(27, head.size(), head))
    return std::nullopt;
  auto pos = 27 + head.size();
  auto number = [&line, &pos](int& out) {
    auto start = pos;
    while (pos < line.size() && line[pos] >= '0' && line[pos] <= '9')
      ++pos;
    if (pos == start || pos - start > 9)
      return false;
    out = std::stoi(line.substr(start, pos - start));
    return true;
  };
  int thread = 0;
  int seq = 0;
  if (!number(thread) || line.compare(pos, 5, " seq=") != 0)
    return std::nullopt;
  pos += 5;
  if (!number(seq) || line.compare(pos, std::string::npos, rest) != 0)
    return std::nullopt;
  return std::pair{thread, seq};
}

sequences check_sequences(const std::vector<std::string>& lines,
                          const std::string& event,
                          const std::string& rest = "") {
  sequences res;
  for (auto& line : lines) {
    auto parsed = parse_sequenced(line, event, rest);
    if (!parsed) {
      ++res.other;
      continue;
    }
    ++res.count;
    auto& next = res.next_seq[parsed->first];
    if (parsed->second != next)
      ++res.out_of_order;
    next = parsed->second + 1;
  }
  return res;
}

long long epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             t.time_since_epoch())
      .count();
}

} // namespace

TEST_CASE("log: a line is logfmt with the event's time, values quoted and "
          "escaped when needed") {
  level_scope lvl{log_level::info};
  pipe_capture cap;
  cap.start_reader();
  auto before = std::chrono::system_clock::now();
  log(log_level::info, "ev",
      {{"plain", "abc"},
       {"spaced", "a b"},
       {"quoted", "say \"hi\"\n\\"},
       {"empty", ""},
       {"ctl", std::string{"x\x01y"}}});
  auto after = std::chrono::system_clock::now();
  auto text = cap.finish();
  INFO(text);
  REQUIRE(text.rfind("ts=", 0) == 0);
  REQUIRE(text.size() > 27);
  CHECK(text.substr(27)
        == " level=info event=ev plain=abc spaced=\"a b\" quoted=\"say "
           "\\\"hi\\\"\\n\\\\\" empty=\"\" ctl=\"x?y\"\n");
  // The timestamp is taken by the caller, at the event.
  auto ts = parse_ts(text.substr(3, 24));
  REQUIRE(ts);
  CHECK(*ts >= epoch_ms(before));
  CHECK(*ts <= epoch_ms(after));
}

TEST_CASE("log: lines below the level are not written") {
  level_scope lvl{log_level::warn};
  pipe_capture cap;
  log(log_level::debug, "hidden_debug");
  log(log_level::info, "hidden_info");
  log(log_level::warn, "shown_warn");
  log(log_level::error, "shown_error");
  auto lines = split_lines(cap.finish());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find(" level=warn event=shown_warn") != std::string::npos);
  CHECK(lines[1].find(" level=error event=shown_error") != std::string::npos);
}

TEST_CASE("log: set_log_sink sends the lines logged before it to the "
          "previous sink") {
  level_scope lvl{log_level::info};
  std::FILE* first = std::tmpfile();
  std::FILE* second = std::tmpfile();
  REQUIRE(first != nullptr);
  REQUIRE(second != nullptr);
  set_log_sink(first);
  log(log_level::info, "to_first");
  set_log_sink(second);
  log(log_level::info, "to_second");
  set_log_sink(nullptr);
  auto read_all = [](std::FILE* f) {
    std::rewind(f);
    std::string text;
    char chunk[4096];
    std::size_t n = 0;
    while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0)
      text.append(chunk, n);
    std::fclose(f);
    return text;
  };
  auto a = read_all(first);
  auto b = read_all(second);
  CHECK(split_lines(a).size() == 1);
  CHECK(a.find("event=to_first") != std::string::npos);
  CHECK(split_lines(b).size() == 1);
  CHECK(b.find("event=to_second") != std::string::npos);
}

TEST_CASE("log: lines from many threads arrive once, whole and in each "
          "thread's order") {
  level_scope lvl{log_level::info};
  constexpr int threads = 8;
  constexpr int per_thread = 2000; // well below log_queue_limit: no drops
  const std::string pad(60, 'p');
  pipe_capture cap;
  cap.start_reader();
  std::vector<std::thread> loggers;
  for (int t = 0; t < threads; ++t)
    loggers.emplace_back([t, &pad] {
      for (int i = 0; i < per_thread; ++i)
        log(log_level::info, "concurrent",
            {{"thread", std::to_string(t)},
             {"seq", std::to_string(i)},
             {"pad", pad}});
    });
  for (auto& l : loggers)
    l.join();
  auto lines = split_lines(cap.finish());
  CHECK(lines.size() == threads * per_thread);
  auto seqs = check_sequences(lines, "concurrent", " pad=" + pad);
  CHECK(seqs.other == 0); // every line whole
  CHECK(seqs.out_of_order == 0);
  REQUIRE(seqs.next_seq.size() == threads);
  for (auto& [t, next] : seqs.next_seq)
    CHECK(next == per_thread);
}

TEST_CASE("log: a full queue drops lines instead of blocking the caller and "
          "the writer reports how many") {
  level_scope lvl{log_level::info};
  pipe_capture cap; // nobody reads yet: the writer blocks on a full pipe
  const std::string pad(60, 'p');
  // More than the queue, the writer's batch and the pipe can hold.
  auto line_bytes = std::size_t{120};
  auto total = static_cast<int>(
      2
      * (log_queue_limit + 64 * 1024 + static_cast<std::size_t>(cap.capacity()))
      / line_bytes);
  for (int i = 0; i < total; ++i)
    log(log_level::info, "fill", {{"seq", std::to_string(i)}, {"pad", pad}});
  cap.start_reader();
  REQUIRE(flush_log(std::chrono::seconds{20}));
  log(log_level::info, "after");
  auto lines = split_lines(cap.finish());
  REQUIRE_FALSE(lines.empty());
  int received = 0;
  int last_seq = -1;
  int out_of_order = 0;
  for (auto& line : lines) {
    if (line.find(" event=fill ") == std::string::npos)
      continue;
    ++received;
    auto seq = std::stoi(*field(line, "seq"));
    if (seq <= last_seq)
      ++out_of_order;
    last_seq = seq;
  }
  auto dropped = reported_drops(lines);
  INFO("received " << received << ", reported dropped " << dropped << " of "
                   << total);
  CHECK(dropped > 0);
  CHECK(received > 0);
  CHECK(received + dropped == static_cast<std::uint64_t>(total));
  CHECK(out_of_order == 0);
  // The logger works on once the output drains.
  CHECK(lines.back().find(" event=after") != std::string::npos);
}

namespace {

struct child_result {
  int status = -1;
  std::string err;
};

/// Reads `fd` into `text` until it holds a newline (`to_eof` false) or
/// until EOF; false at `deadline`.
bool read_fd(int fd, std::string& text, bool to_eof,
             std::chrono::steady_clock::time_point deadline) {
  while (to_eof || text.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
      return false;
    char chunk[65536];
    auto n = read(fd, chunk, sizeof(chunk));
    if (n <= 0)
      return to_eof;
    text.append(chunk, static_cast<std::size_t>(n));
  }
  return true;
}

/// Runs log_exit_child. Reads its stderr only once it said on stdout that it
/// logged everything (or ended without saying so), then until stderr closes.
child_result run_child(const std::string& mode, int lines, int threads) {
  auto child
      = test::spawn_with_pipes({EMBEDRT_LOG_EXIT_CHILD, mode,
                                std::to_string(lines), std::to_string(threads)},
                               environ);
  REQUIRE(child.rc == 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
  std::string out;
  child_result res;
  read_fd(child.out, out, false, deadline);
  bool closed = read_fd(child.err, res.err, true, deadline);
  close(child.out);
  close(child.err);
  if (!closed)
    kill(child.pid, SIGKILL);
  int status = 0;
  waitpid(child.pid, &status, 0);
  res.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return res;
}

} // namespace

TEST_CASE("log: every line logged before the process ends is written") {
  constexpr int lines = 4000;
  constexpr int threads = 4;
  struct ending {
    std::string mode;
    int status;
  };
  for (auto& e : {ending{"return", 0}, ending{"exit", 3},
                  ending{"exit_thread", 4}, ending{"late", 0}}) {
    auto res = run_child(e.mode, lines, threads);
    INFO("mode " << e.mode << ", stderr bytes " << res.err.size());
    CHECK(res.status == e.status);
    auto got = split_lines(res.err);
    auto seqs = check_sequences(got, "child_line");
    CHECK(seqs.count == lines * threads);
    CHECK(seqs.out_of_order == 0);
    if (e.mode == "late") {
      // Logged by a static destructor after the logger shut down.
      REQUIRE_FALSE(got.empty());
      CHECK(got.back().find(" event=late") != std::string::npos);
      CHECK(got.size() == lines * threads + 1);
    } else {
      CHECK(got.size() == lines * threads);
    }
  }
}

TEST_CASE("log: a process that never logs exits without output") {
  auto res = run_child("silent", 0, 0);
  CHECK(res.status == 0);
  CHECK(res.err.empty());
}

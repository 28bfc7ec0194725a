// `embedrt embed` end to end: the real binary (EMBEDRT_CLI_PATH) against a
// real `embedrt mock` process or its own embedded default, over loopback.
// Covers resuming after SIGKILL (every id exactly once, with the right
// vector), SIGINT, the rejects file and exit codes, the f32 format, stdin to
// stdout, and the progress line on a pseudo-terminal versus a pipe.
#include "embed/progress.hpp"
#include "embedrt/protocol/hash_embedder.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <rapidjson/document.h>
#include <set>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// A temporary directory, removed with its files at the end of the test.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/embedrt-embed-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    [[maybe_unused]] auto rc = std::system(cmd.c_str());
  }
  std::string file(const std::string& name) const {
    return path + "/" + name;
  }
};

/// The environment without OPENAI_* (so the embedded default is used unless
/// a test passes --upstream).
std::vector<std::string> clean_env() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::string_view{*e}.rfind("OPENAI_", 0) != 0)
      env.emplace_back(*e);
  return env;
}

/// A running `embedrt` process. stdout and stderr go to pipes, or stderr to
/// a pseudo-terminal (`pty_slave`); stdin comes from `stdin_path` or
/// /dev/null.
class proc {
 public:
  proc(std::vector<std::string> args, const std::string& stdin_path = {},
       int pty_slave = -1) {
    args.insert(args.begin(), EMBEDRT_CLI_PATH);
    int out[2];
    int err[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(
        &fa, STDIN_FILENO,
        stdin_path.empty() ? "/dev/null" : stdin_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, pty_slave >= 0 ? pty_slave : err[1],
                                     STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto env = clean_env();
    std::vector<char*> envp;
    for (auto& e : env)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    auto rc
        = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    REQUIRE(rc == 0);
    out_ = out[0];
    err_ = err[0];
  }

  ~proc() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    ::close(out_);
    ::close(err_);
  }

  void signal(int sig) {
    ::kill(pid_, sig);
  }

  /// Reads stdout and stderr until both close (or `timeout`: the process is
  /// killed) and waits for the exit. Returns the exit code, or -1 after a
  /// signal.
  int finish(std::chrono::milliseconds timeout = 30s) {
    auto deadline = steady::now() + timeout;
    pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    std::string* sinks[2] = {&out, &err};
    int open_fds = 2;
    while (open_fds > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - steady::now())
                      .count();
      if (left <= 0) {
        ::kill(pid_, SIGKILL);
        break;
      }
      if (::poll(fds, 2, static_cast<int>(left)) <= 0)
        continue;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0)
          continue;
        char buf[65536];
        auto n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n > 0) {
          sinks[i]->append(buf, static_cast<std::size_t>(n));
        } else {
          fds[i].fd = -1;
          --open_fds;
        }
      }
    }
    int st = 0;
    ::waitpid(pid_, &st, 0);
    exited_ = true;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  /// Reads one line of stdout (for `embedrt mock`'s "listening on").
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      if (auto nl = out.find('\n'); nl != std::string::npos) {
        auto line = out.substr(0, nl);
        out.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - steady::now())
                      .count();
      if (left <= 0)
        return std::nullopt;
      pollfd pfd{out_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left)) <= 0)
        continue;
      char buf[512];
      auto n = ::read(out_, buf, sizeof(buf));
      if (n <= 0)
        return std::nullopt;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }

  std::string out;
  std::string err;

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  bool exited_ = false;
};

/// `embedrt mock` as a separate process; `base` is its URL.
struct mock_proc {
  proc p;
  std::string base;
  explicit mock_proc(std::vector<std::string> extra = {})
      : p([&] {
          std::vector<std::string> a{"mock", "--listen", "127.0.0.1:0"};
          a.insert(a.end(), extra.begin(), extra.end());
          return a;
        }()) {
    auto line = p.read_line(10s);
    REQUIRE(line);
    const std::string prefix = "listening on ";
    REQUIRE(line->rfind(prefix, 0) == 0);
    base = line->substr(prefix.size());
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out << content;
  REQUIRE(out.good());
}

std::size_t count_lines(const std::string& path) {
  auto text = read_file(path);
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

/// The input of the big tests: `n` records; every 10th is a plain text line
/// (id = its line number), the others objects with id "doc-I". Returns the
/// expected id (canonical JSON) -> text.
std::map<std::string, std::string> make_input(const std::string& path, int n) {
  static const char* words[]
      = {"actor", "model",   "vector", "keep-alive", "breaker", "bounded",
         "queue", "lexical", "batch",  "resume",     "signal",  "progress"};
  std::map<std::string, std::string> expect;
  std::string content;
  for (int i = 0; i < n; ++i) {
    std::string text = "record " + std::to_string(i) + " about the "
        + words[i % 12] + " and the " + words[(i / 12) % 12];
    if (i % 10 == 0) {
      content += text + "\n";
      expect[std::to_string(i + 1)] = text;
    } else {
      auto id = "\"doc-" + std::to_string(i) + "\"";
      content += "{\"id\":" + id + ",\"text\":\"" + text + "\"}\n";
      expect[id] = text;
    }
  }
  write_file(path, content);
  return expect;
}

/// Checks a jsonl output: every expected id exactly once (and nothing
/// else), each with hash_embed(text, dims) exactly (floats read with strtof
/// from their text).
void check_output(const std::string& path,
                  const std::map<std::string, std::string>& expect,
                  std::size_t dims) {
  std::ifstream in{path};
  std::string line;
  std::set<std::string> seen;
  std::size_t bad_vectors = 0;
  std::size_t lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseNumbersAsStringsFlag>(line.c_str());
    INFO("line " << lines << ": " << line.substr(0, 120));
    REQUIRE_FALSE(doc.HasParseError());
    REQUIRE(doc.IsObject());
    REQUIRE(doc.HasMember("id"));
    REQUIRE(doc.HasMember("embedding"));
    const auto& idv = doc["id"];
    // With numbers parsed as strings, a numeric id is a string without
    // quotes in the source: tell them apart by the raw text.
    bool quoted = line.rfind("{\"id\":\"", 0) == 0;
    std::string id = quoted ? "\"" + std::string{idv.GetString()} + "\""
                            : std::string{idv.GetString()};
    REQUIRE(seen.insert(id).second); // exactly once
    auto it = expect.find(id);
    REQUIRE(it != expect.end());
    auto want = embedrt::hash_embed(it->second, dims);
    const auto& arr = doc["embedding"];
    REQUIRE(arr.IsArray());
    REQUIRE(arr.Size() == dims);
    for (rapidjson::SizeType i = 0; i < arr.Size(); ++i)
      if (std::strtof(arr[i].GetString(), nullptr) != want[i]) {
        ++bad_vectors;
        break;
      }
  }
  CHECK(bad_vectors == 0);
  CHECK(seen.size() == expect.size());
  CHECK(lines == expect.size());
}

int64_t count_in(const std::string& text, const std::string& what) {
  int64_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos;
       pos = text.find(what, pos + what.size()))
    ++n;
  return n;
}

} // namespace

TEST_CASE("embed: SIGKILL halfway through 20,000 lines, rerun, every id "
          "once with its vector") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  auto out = dir.file("out.jsonl");
  auto expect = make_input(in, 20000);
  // 10 ms per upstream request, 4 requests of 50 texts in flight: about
  // 20,000 texts/s, so the first run is still going when it is killed.
  mock_proc mock{{"--latency-ms", "10"}};
  std::vector<std::string> args{"embed",   "--in",
                                in,        "--out",
                                out,       "--upstream",
                                mock.base, "--dims",
                                "16",      "--batch",
                                "50",      "--concurrency",
                                "4",       "--checkpoint-records",
                                "500"};
  std::size_t at_kill = 0;
  {
    proc first{args};
    auto deadline = steady::now() + 20s;
    while (steady::now() < deadline) {
      at_kill = count_lines(out);
      if (at_kill >= 10000)
        break;
      std::this_thread::sleep_for(5ms);
    }
    first.signal(SIGKILL);
    CHECK(first.finish() == -1);
    INFO("stderr of the killed run: " << first.err);
    REQUIRE(at_kill >= 10000);
  }
  auto after_kill = read_file(out);
  REQUIRE(after_kill.size() > 0);
  auto complete = static_cast<std::size_t>(
      std::count(after_kill.begin(), after_kill.end(), '\n'));
  CHECK(complete < 20000); // killed before the end
  // Whatever the kill left, make sure the rerun meets a torn last record.
  if (after_kill.back() == '\n') {
    std::ofstream app{out, std::ios::app | std::ios::binary};
    app << "{\"id\":\"doc-1\",\"embedding\":[0.25,-0.5";
  }
  proc second{args};
  auto code = second.finish(30s);
  INFO("stderr: " << second.err);
  CHECK(code == 0);
  CHECK_THAT(second.err, Catch::Contains("dropped the torn end of the output"));
  CHECK_THAT(second.err, Catch::Contains("resuming: "));
  // The summary: what the first run left was skipped, the rest written.
  CHECK_THAT(second.err,
             Catch::Contains(embedrt::app::embed::group_digits(20000 - complete)
                             + " written, "
                             + embedrt::app::embed::group_digits(complete)
                             + " skipped (already there), 0 failed"));
  check_output(out, expect, 16);
}

TEST_CASE("embed: the embedded default, rejects file and exit code 3") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  auto out = dir.file("vectors.jsonl");
  std::map<std::string, std::string> expect;
  std::string content;
  for (int i = 0; i < 30; ++i) {
    auto id = "\"t" + std::to_string(i) + "\"";
    auto text = "text number " + std::to_string(i);
    if (i == 4 || i == 17)
      text += " [[mock:400]]"; // the mock rejects these
    else
      expect[id] = text;
    content += "{\"id\":" + id + ",\"text\":\"" + text + "\"}\n";
    if (i == 9)
      content += "{\"id\":\"broken\",\"text\":\n"; // line 11: not JSON
    if (i == 12) {
      // Line 15: white space alone is embedded, as OpenAI does.
      content += "{\"id\":\"ws\",\"text\":\" \\t \"}\n";
      expect["\"ws\""] = " \t ";
    }
    if (i == 20)
      content += "\n   \n"; // blank lines: skipped
  }
  write_file(in, content);
  auto run = [&](const std::string& counts) {
    proc p{{"embed", "--in", in, "--out", out, "--dims", "8"}};
    auto code = p.finish();
    INFO("stderr: " << p.err);
    CHECK(code == 3);
    CHECK_THAT(p.err, Catch::Contains("built-in upstream"));
    CHECK_THAT(p.err,
               Catch::Contains(counts + " failed (see " + dir.file("vectors")
                               + ".rejects.jsonl)"));
  };
  run("29 written, 0 skipped (already there), 3");
  check_output(out, expect, 8);
  auto rejects = read_file(dir.file("vectors.rejects.jsonl"));
  INFO("rejects: " << rejects);
  CHECK(count_in(rejects, "\n") == 3);
  CHECK_THAT(rejects,
             Catch::Contains("{\"id\":\"t4\",\"line\":5,\"error\":"
                             "\"invalid_input\",\"message\":\"embedrt."
                             "invalid_input: "));
  CHECK_THAT(rejects, Catch::Contains("rejected by the mock"));
  CHECK_THAT(rejects, Catch::Contains("{\"id\":\"t17\","));
  CHECK_THAT(rejects,
             Catch::Contains("{\"id\":null,\"line\":11,\"error\":"
                             "\"invalid_input\",\"message\":\"line "
                             "11: not a valid JSON object"));
  CHECK_THAT(rejects, !Catch::Contains("\"ws\""));
  // A rerun skips what is written and retries only the rejected records;
  // the rejects file lists this run's failures.
  run("0 written, 29 skipped (already there), 3");
  check_output(out, expect, 8);
  rejects = read_file(dir.file("vectors.rejects.jsonl"));
  CHECK(count_in(rejects, "\n") == 3);
}

TEST_CASE("embed: SIGINT stops cleanly with exit 130 and a rerun completes") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  auto out = dir.file("out.jsonl");
  auto expect = make_input(in, 1500);
  mock_proc mock{{"--latency-ms", "20"}};
  std::vector<std::string> args{
      "embed",      "--in",          in,       "--out", out,
      "--upstream", mock.base,       "--dims", "8",     "--batch",
      "10",         "--concurrency", "2"};
  {
    proc first{args};
    auto deadline = steady::now() + 20s;
    while (steady::now() < deadline && count_lines(out) < 200)
      std::this_thread::sleep_for(5ms);
    first.signal(SIGINT);
    auto code = first.finish();
    INFO("stderr: " << first.err);
    CHECK(code == 130);
    CHECK_THAT(first.err, Catch::Contains("stopped by SIGINT"));
    CHECK_THAT(first.err, Catch::Contains("rerun the same command to resume"));
  }
  // A clean stop leaves whole lines only.
  auto text = read_file(out);
  REQUIRE_FALSE(text.empty());
  CHECK(text.back() == '\n');
  CHECK(count_in(text, "\n") < 1500);
  proc second{args};
  CHECK(second.finish() == 0);
  CHECK_THAT(second.err, Catch::Contains("resuming: "));
  CHECK(second.err.find("dropped the torn") == std::string::npos);
  check_output(out, expect, 8);
}

TEST_CASE("embed: f32 rows with an index, resumed without duplicates") {
  temp_dir dir;
  auto in = dir.file("in.txt");
  auto out = dir.file("vectors.f32");
  std::vector<std::string> texts;
  std::string content;
  for (int i = 0; i < 100; ++i) {
    texts.push_back("plain line " + std::to_string(i) + " of the f32 test");
    content += texts.back() + "\n";
  }
  write_file(in, content);
  std::vector<std::string> args{"embed",    "--in", in,       "--out", out,
                                "--format", "f32",  "--dims", "12"};
  {
    proc p{args};
    CHECK(p.finish() == 0);
    INFO("stderr: " << p.err);
    CHECK_THAT(p.err, Catch::Contains("(index " + out + ".index.jsonl)"));
  }
  auto check = [&] {
    auto data = read_file(out);
    REQUIRE(data.size() == 100 * 12 * 4);
    std::ifstream idx{out + ".index.jsonl"};
    std::string line;
    std::set<int> rows;
    std::set<int64_t> ids;
    while (std::getline(idx, line)) {
      rapidjson::Document doc;
      doc.Parse(line.c_str());
      REQUIRE_FALSE(doc.HasParseError());
      auto id = doc["id"].GetInt64(); // plain lines: id = line number
      auto row = doc["row"].GetInt();
      CHECK(doc["dims"].GetInt() == 12);
      REQUIRE(ids.insert(id).second);
      REQUIRE(rows.insert(row).second);
      std::vector<float> v(12);
      std::memcpy(v.data(), data.data() + row * 48, 48);
      CHECK(
          v
          == embedrt::hash_embed(texts[static_cast<std::size_t>(id - 1)], 12));
    }
    CHECK(ids.size() == 100);
  };
  check();
  proc again{args};
  CHECK(again.finish() == 0);
  CHECK_THAT(again.err, Catch::Contains("0 written, 100 skipped"));
  check();
}

TEST_CASE("embed: a resumed output keeps its dimension") {
  temp_dir dir;
  auto in = dir.file("in.txt");
  auto out = dir.file("out.jsonl");
  write_file(in, "first text\nsecond text\n");
  proc a{{"embed", "--in", in, "--out", out, "--dims", "8"}};
  CHECK(a.finish() == 0);
  // Asked for other dimensions: refused before anything is sent.
  proc b{{"embed", "--in", in, "--out", out, "--dims", "16"}};
  CHECK(b.finish() == 1);
  CHECK_THAT(b.err,
             Catch::Contains("holds 8-dimensional vectors but --dims "
                             "is 16"));
  // No --dims: the upstream's default (256) does not fit the output; the job
  // stops at the first answer and says what to pass.
  write_file(in, "first text\nsecond text\nthird text\n");
  proc c{{"embed", "--in", in, "--out", out}};
  CHECK(c.finish() == 1);
  INFO("stderr: " << c.err);
  CHECK_THAT(c.err,
             Catch::Contains("the upstream returned 256-dimensional "
                             "vectors, the output holds 8-dimensional "
                             "ones (pass --dims 8)"));
  CHECK(count_lines(out) == 2);
  proc d{{"embed", "--in", in, "--out", out, "--dims", "8"}};
  CHECK(d.finish() == 0);
  CHECK_THAT(d.err, Catch::Contains("1 written, 2 skipped"));
}

TEST_CASE("embed: stdin to stdout") {
  temp_dir dir;
  auto in = dir.file("in.txt");
  write_file(
      in, "{\"id\":1,\"text\":\"one\"}\n{\"id\":\"two\",\"text\":\"two\"}\n");
  proc p{{"embed", "--dims", "4"}, in};
  CHECK(p.finish() == 0);
  INFO("stderr: " << p.err);
  // Completion order is not fixed: compare as a set of lines.
  std::set<std::string> lines;
  std::istringstream ss{p.out};
  std::string line;
  while (std::getline(ss, line))
    lines.insert(line.substr(0, line.find(',')));
  CHECK(lines == std::set<std::string>{"{\"id\":1", "{\"id\":\"two\""});
  CHECK_THAT(p.err, Catch::Contains("2 written"));
  CHECK_THAT(p.err, Catch::Contains("in stdout"));
}

TEST_CASE("embed: bad usage exits 2") {
  proc a{{"embed", "--format", "f32"}};
  CHECK(a.finish() == 2);
  CHECK_THAT(a.err, Catch::Contains("--format f32"));
  proc b{{"embed", "--no-such-option"}};
  CHECK(b.finish() == 2);
  proc c{{"embed", "--progress", "sometimes"}};
  CHECK(c.finish() == 2);
  proc d{{"embed", "--in", "/nonexistent/input.jsonl", "--out", "-"}};
  CHECK(d.finish() == 1);
  CHECK_THAT(d.err, Catch::Contains("cannot open /nonexistent/input.jsonl"));
}

TEST_CASE("embed: progress line on a terminal, none on a pipe") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  make_input(in, 2000);
  mock_proc mock{{"--latency-ms", "20"}};
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{
        "embed",      "--in",          in,       "--out", out,
        "--upstream", mock.base,       "--dims", "8",     "--batch",
        "10",         "--concurrency", "2"};
  };
  // On a pseudo-terminal.
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(slave >= 0);
  std::string tty;
  {
    proc p{args(dir.file("tty.jsonl")), {}, slave};
    ::close(slave);
    // Read the terminal until the child closes it (EIO once no slave is
    // open).
    auto deadline = steady::now() + 30s;
    for (;;) {
      pollfd pfd{master, POLLIN, 0};
      if (steady::now() > deadline)
        break;
      if (::poll(&pfd, 1, 100) <= 0)
        continue;
      char buf[4096];
      auto n = ::read(master, buf, sizeof(buf));
      if (n <= 0)
        break;
      tty.append(buf, static_cast<std::size_t>(n));
    }
    CHECK(p.finish() == 0);
  }
  ::close(master);
  INFO("terminal output: " << tty);
  // Redrawn in place several times: carriage returns, erase to end of line.
  CHECK(count_in(tty, "\x1b[K") >= 3);
  CHECK(count_in(tty, "\r[") >= 3);
  CHECK_THAT(tty, Catch::Contains(" written  "));
  CHECK_THAT(tty, Catch::Contains("/s  ETA "));
  CHECK_THAT(tty, Catch::Contains("0 failed"));
  CHECK_THAT(tty,
             Catch::Contains("[####################] 100%  2,000 written"));
  CHECK_THAT(tty, Catch::Contains("2,000 written, 0 skipped"));
  // On a pipe: only the summary.
  proc q{args(dir.file("pipe.jsonl"))};
  CHECK(q.finish() == 0);
  INFO("pipe stderr: " << q.err);
  CHECK(q.err.find('\r') == std::string::npos);
  CHECK(q.err.find("\x1b[") == std::string::npos);
  CHECK(q.err.find("ETA") == std::string::npos);
  CHECK_THAT(q.err, Catch::Contains("2,000 written, 0 skipped"));
}

TEST_CASE("embed: the progress line fits a narrow terminal") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  make_input(in, 3000);
  mock_proc mock{{"--latency-ms", "20"}};
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  winsize ws{};
  ws.ws_col = 60;
  ws.ws_row = 24;
  REQUIRE(::ioctl(master, TIOCSWINSZ, &ws) == 0);
  int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(slave >= 0);
  std::string tty;
  {
    proc p{{"embed", "--in", in, "--out", dir.file("out.jsonl"), "--upstream",
            mock.base, "--dims", "8", "--batch", "10", "--concurrency", "2"},
           {},
           slave};
    ::close(slave);
    auto deadline = steady::now() + 30s;
    while (steady::now() < deadline) {
      pollfd pfd{master, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0)
        continue;
      char buf[4096];
      auto n = ::read(master, buf, sizeof(buf));
      if (n <= 0)
        break;
      tty.append(buf, static_cast<std::size_t>(n));
    }
    CHECK(p.finish() == 0);
  }
  ::close(master);
  INFO("terminal output: " << tty);
  // Every redraw ("\r" LINE "\x1b[K") fits in 59 columns and still shows
  // the failed count.
  int draws = 0;
  for (auto at = tty.find('\r'); at != std::string::npos;
       at = tty.find('\r', at + 1)) {
    auto end = tty.find("\x1b[K", at);
    if (end == std::string::npos)
      break;
    auto line = tty.substr(at + 1, end - at - 1);
    if (line.empty() || line.find('\n') != std::string::npos)
      continue;
    ++draws;
    INFO("line: '" << line << "'");
    CHECK(line.size() <= 59);
    CHECK_THAT(line, Catch::Contains(" failed"));
  }
  CHECK(draws >= 2);
  CHECK_THAT(tty, Catch::Contains("3,000 written"));
}

TEST_CASE("embed: one config file with [serve] and [client] whose "
          "variables are unset") {
  // The documented layout: the gateway's token variables are serve's
  // business; embed reads the same file and runs.
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  make_input(in, 20);
  mock_proc mock;
  auto cfg = dir.file("embedrt.ini");
  write_file(cfg,
             "connections = 4\n[serve]\nlisten = 127.0.0.1:0\n"
             "auth_token_env = EMBEDRT_TEST_UNSET_GATEWAY_TOKEN\n"
             "[client indexer]\ntoken_env = EMBEDRT_TEST_UNSET_CLIENT\n"
             "rpm = 10\n[upstream local]\nbase_url = "
                 + mock.base + "\n");
  proc p{{"embed", "--config", cfg, "--in", in, "--out", dir.file("out.jsonl"),
          "--dims", "8"}};
  auto code = p.finish();
  INFO("stderr: " << p.err);
  CHECK(code == 0);
  CHECK_THAT(p.err, Catch::Contains("20 written"));
  // serve still requires them.
  proc s{{"serve", "--config", cfg}};
  CHECK(s.finish() == 2);
  CHECK_THAT(s.err, Catch::Contains("EMBEDRT_TEST_UNSET_GATEWAY_TOKEN"));
}

TEST_CASE("embed: a failing upstream stops the job with what to fix, "
          "rejecting nothing") {
  temp_dir dir;
  auto in = dir.file("in.jsonl");
  make_input(in, 100);
  auto run = [&](const std::string& url, const std::string& expect) {
    auto out = dir.file("out.jsonl");
    proc p{{"embed", "--in", in, "--out", out, "--upstream", url, "--dims", "8",
            "--batch", "4", "--concurrency", "2"}};
    auto code = p.finish();
    INFO("stderr: " << p.err);
    CHECK(code == 1);
    CHECK_THAT(p.err, Catch::Contains(expect));
    CHECK_THAT(p.err, Catch::Contains("0 failed"));
    // Nothing went to the rejects: the records are not at fault.
    CHECK(read_file(dir.file("out.rejects.jsonl")).empty());
  };
  SECTION("the upstream refuses the key") {
    mock_proc mock{{"--fault", "401:1"}};
    run(mock.base, "the upstream refused the API key (HTTP 401)");
  }
  SECTION("a base URL with the wrong path") {
    mock_proc mock;
    auto base = mock.base.substr(0, mock.base.size() - 3) + "/api";
    run(base, "404 from the upstream: does the base URL end in /v1");
  }
  SECTION("nothing listens on the port") {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    run("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v1",
        "cannot reach the upstream");
    ::close(fd);
  }
}

TEST_CASE("embedrt help COMMAND, --version, -V, version") {
  proc h{{"help", "embed"}};
  CHECK(h.finish() == 0);
  CHECK_THAT(h.out, Catch::StartsWith("usage: embedrt embed"));
  CHECK_THAT(h.out, Catch::Contains("--stop-after-failures"));
  proc u{{"help", "nonsense"}};
  CHECK(u.finish() == 2);
  for (const char* flag : {"--version", "-V", "version"}) {
    proc v{{flag}};
    CHECK(v.finish() == 0);
    CHECK_THAT(v.out, Catch::StartsWith("embedrt "));
  }
}

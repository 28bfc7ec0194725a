// The cost of embedding vectors on the wire between CAF nodes
// (docs/benchmarks.md, "Vectors across CAF nodes"). Not a test: built with
// the tests, never run by ctest.
//
// Compares, in one run, CAF 0.17's element-by-element encoding of
// `std::vector<std::vector<float>>` (the `legacy_result` below carries the
// fields of `embed_result` with the inspect() it had before the packed form)
// with `embed_result`'s packed blob (packed_vectors.hpp):
//
//  1. binary_serializer + binary_deserializer of one result, per shape;
//  2. sequential requests from this process to a child process (this program
//     started with --serve) over the middleman on loopback, per shape.
//
// Usage: wire_bench [--iterations N] [--requests N]
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/publish.hpp>
#include <caf/io/remote_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/type_id.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

extern char** environ;

namespace bench {

/// `embed_result` as CAF 0.17 encodes it without the packed form.
struct legacy_result {
  std::string model;
  std::vector<std::vector<float>> embeddings;
  embedrt::token_usage usage;
  std::string upstream;
  std::string request_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, legacy_result& x) {
  return f(caf::meta::type_name("bench.legacy_result"), x.model, x.embeddings,
           x.usage, x.upstream, x.request_id);
}

} // namespace bench

// Outside embedrt's block [4000, 4100).
CAF_BEGIN_TYPE_ID_BLOCK(wire_bench, 4200)
CAF_ADD_TYPE_ID(wire_bench, (bench::legacy_result))
CAF_ADD_ATOM(wire_bench, bench, legacy_atom, "legacy")
CAF_END_TYPE_ID_BLOCK(wire_bench)

namespace bench {

using clock_type = std::chrono::steady_clock;

struct shape {
  size_t count;
  size_t dim;
};

const std::vector<shape> shapes{{1, 8}, {16, 1536}, {64, 1536}};

std::string name_of(shape s) {
  return std::to_string(s.count) + " x " + std::to_string(s.dim);
}

/// Values of the size of a normalised 1536-dim embedding's elements.
embedrt::embed_result make_result(shape s) {
  embedrt::embed_result res;
  res.model = "text-embedding-3-small";
  res.embeddings.assign(s.count, std::vector<float>(s.dim));
  for (size_t i = 0; i < s.count; ++i)
    for (size_t j = 0; j < s.dim; ++j)
      res.embeddings[i][j]
          = static_cast<float>(std::sin(double(i * s.dim + j) * 0.37)) / 28.0f;
  res.usage = {int64_t(s.count * 8), int64_t(s.count * 8)};
  res.upstream = "primary";
  res.request_id = "bench-1";
  return res;
}

legacy_result to_legacy(const embedrt::embed_result& x) {
  return {x.model, x.embeddings, x.usage, x.upstream, x.request_id};
}

struct config : caf::actor_system_config {
  config() {
    embedrt::register_types(*this);
    add_message_types<caf::id_block::wire_bench>();
    load<caf::io::middleman>();
    set("scheduler.max-threads", 2);
  }
};

double median_us(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0.0 : xs[xs.size() / 2];
}

template <class F>
double elapsed_us(F&& f) {
  auto start = clock_type::now();
  f();
  std::chrono::duration<double, std::micro> d = clock_type::now() - start;
  return d.count();
}

// -- 1. serializer and deserializer ------------------------------------------

struct codec_times {
  double encode_us;
  double decode_us;
  size_t bytes;
};

template <class T>
codec_times time_codec(T x, int iterations) {
  std::vector<double> enc;
  std::vector<double> dec;
  std::vector<char> buf;
  for (int i = 0; i < iterations; ++i) {
    buf.clear();
    enc.push_back(elapsed_us([&] {
      caf::binary_serializer sink{nullptr, buf};
      if (sink(x))
        std::abort();
    }));
    T y;
    dec.push_back(elapsed_us([&] {
      caf::binary_deserializer source{nullptr, buf};
      if (source(y))
        std::abort();
    }));
    if (y.embeddings != x.embeddings)
      std::abort();
  }
  return {median_us(enc), median_us(dec), buf.size()};
}

void run_codec(int iterations) {
  std::printf("binary_serializer + binary_deserializer, one result, median "
              "of %d (us)\n",
              iterations);
  std::printf("%-10s %9s %9s | %10s %10s | %10s %10s | %7s\n", "shape",
              "elem B", "packed B", "elem enc", "elem dec", "packed enc",
              "packed dec", "ratio");
  for (auto s : shapes) {
    auto res = make_result(s);
    auto legacy = time_codec(to_legacy(res), iterations);
    auto packed = time_codec(res, iterations);
    auto ratio = (legacy.encode_us + legacy.decode_us)
        / (packed.encode_us + packed.decode_us);
    std::printf("%-10s %9zu %9zu | %10.1f %10.1f | %10.1f %10.1f | %6.1fx\n",
                name_of(s).c_str(), legacy.bytes, packed.bytes,
                legacy.encode_us, legacy.decode_us, packed.encode_us,
                packed.decode_us, ratio);
  }
}

// -- 2. the serving child process --------------------------------------------

caf::behavior answering_node(
    caf::event_based_actor*,
    std::shared_ptr<const std::map<size_t, embedrt::embed_result>> results) {
  auto find = [results](const embedrt::embed_request& req) {
    auto key = req.inputs.size() * 100000 + size_t(req.dimensions);
    return results->at(key);
  };
  return {
      [find](embedrt::embed_atom, const embedrt::embed_request& req) {
        return find(req);
      },
      [find](legacy_atom, const embedrt::embed_request& req) {
        return to_legacy(find(req));
      },
  };
}

/// Publishes the answering actor, prints its port and serves until stdin
/// closes.
int serve() {
  auto results = std::make_shared<std::map<size_t, embedrt::embed_result>>();
  for (auto s : shapes)
    results->emplace(s.count * 100000 + s.dim, make_result(s));
  config cfg;
  caf::actor_system sys{cfg};
  auto node = sys.spawn(answering_node, std::move(results));
  auto port = caf::io::publish(node, 0, "127.0.0.1", true);
  if (!port) {
    std::cerr << "wire_bench --serve: " << sys.render(port.error()) << '\n';
    return 1;
  }
  std::printf("%u\n", unsigned{*port});
  std::fflush(stdout);
  char c;
  while (::read(STDIN_FILENO, &c, 1) > 0) {
  }
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
  return 0;
}

/// The child process started with --serve: its pid, the write end of its
/// stdin (closing it stops the child) and its port.
struct child {
  pid_t pid = -1;
  int stdin_fd = -1;
  uint16_t port = 0;
};

child start_server(const char* self_exe) {
  int to_child[2];
  int from_child[2];
  if (::pipe(to_child) != 0 || ::pipe(from_child) != 0)
    std::abort();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, to_child[1]);
  posix_spawn_file_actions_addclose(&actions, from_child[0]);
  char serve_flag[] = "--serve";
  char* argv[] = {const_cast<char*>(self_exe), serve_flag, nullptr};
  child c;
  if (posix_spawn(&c.pid, self_exe, &actions, nullptr, argv, environ) != 0)
    std::abort();
  posix_spawn_file_actions_destroy(&actions);
  ::close(to_child[0]);
  ::close(from_child[1]);
  c.stdin_fd = to_child[1];
  std::string line;
  char ch;
  while (::read(from_child[0], &ch, 1) == 1 && ch != '\n')
    line += ch;
  ::close(from_child[0]);
  c.port = static_cast<uint16_t>(std::atoi(line.c_str()));
  return c;
}

void stop_server(child& c) {
  ::close(c.stdin_fd);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
}

// -- 2. the requesting side --------------------------------------------------

/// Per-request times (us) of `n` sequential requests with `atom`.
template <class Result, class Atom>
std::vector<double> time_requests(caf::scoped_actor& self,
                                  const caf::actor& remote, Atom atom,
                                  const embedrt::embed_request& req, int n) {
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    bool ok = false;
    times.push_back(elapsed_us([&] {
      self->request(remote, std::chrono::seconds(10), atom, req)
          .receive(
              [&](Result& res) {
                ok = res.embeddings.size() == req.inputs.size()
                    && res.embeddings[0].size() == size_t(req.dimensions);
              },
              [&](caf::error&) {
                ok = false;
              });
    }));
    if (!ok) {
      std::cerr << "wire_bench: a request failed\n";
      std::exit(1);
    }
  }
  return times;
}

void append(std::vector<double>& to, const std::vector<double>& xs) {
  to.insert(to.end(), xs.begin(), xs.end());
}

void run_remote(const char* self_exe, int requests) {
  auto server = start_server(self_exe);
  if (server.port == 0) {
    std::cerr << "wire_bench: the server process did not start\n";
    std::exit(1);
  }
  {
    config cfg;
    caf::actor_system sys{cfg};
    auto remote = caf::io::remote_actor(sys, "127.0.0.1", server.port);
    if (!remote) {
      std::cerr << "wire_bench: " << sys.render(remote.error()) << '\n';
      std::exit(1);
    }
    caf::scoped_actor self{sys};
    std::printf("\nrequest -> reply across two processes (middleman, "
                "loopback), %d sequential requests per encoding\n",
                requests);
    std::printf("%-10s | %10s %9s | %10s %9s | %7s\n", "shape", "elem us",
                "req/s", "packed us", "req/s", "ratio");
    for (auto s : shapes) {
      embedrt::embed_request req;
      req.model = "text-embedding-3-small";
      req.inputs.assign(s.count, "text");
      req.dimensions = static_cast<int32_t>(s.dim);
      // Warm-up, then two alternating halves per encoding.
      time_requests<legacy_result>(self, *remote, legacy_atom_v, req, 5);
      time_requests<embedrt::embed_result>(self, *remote, embedrt::embed_atom_v,
                                           req, 5);
      std::vector<double> legacy;
      std::vector<double> packed;
      double legacy_total = 0;
      double packed_total = 0;
      for (int half = 0; half < 2; ++half) {
        legacy_total += elapsed_us([&] {
          append(legacy,
                 time_requests<legacy_result>(self, *remote, legacy_atom_v, req,
                                              requests / 2));
        });
        packed_total += elapsed_us([&] {
          append(packed,
                 time_requests<embedrt::embed_result>(
                     self, *remote, embedrt::embed_atom_v, req, requests / 2));
        });
      }
      auto n = double(legacy.size());
      std::printf("%-10s | %10.1f %9.0f | %10.1f %9.0f | %6.1fx\n",
                  name_of(s).c_str(), median_us(legacy), n * 1e6 / legacy_total,
                  median_us(packed), n * 1e6 / packed_total,
                  median_us(legacy) / median_us(packed));
    }
  }
  stop_server(server);
}

} // namespace bench

int main(int argc, char** argv) {
  int iterations = 200;
  int requests = 200;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--serve")
      return bench::serve();
    if (arg == "--iterations" && i + 1 < argc)
      iterations = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--requests" && i + 1 < argc)
      requests = std::max(2, std::atoi(argv[++i]));
    else {
      std::cerr << "usage: wire_bench [--iterations N] [--requests N]\n";
      return 2;
    }
  }
  bench::run_codec(iterations);
  bench::run_remote("/proc/self/exe", requests);
  return 0;
}

// A host CAF application that embeds embedrt (see docs/examples/README.md).
//
//   host_app BASE_URL [TEXT...]
//   host_app --remote HOST:PORT [TEXT...]
//
// The host owns main(), its actor_system_config and its own CAF type-ID block
// (`host_app`, at 5000, well clear of embedrt's [4000, 4100)). It spawns
// embedrt's service in its own actor system and embeds the texts (three
// defaults if none are given) through the OpenAI-compatible upstream at
// BASE_URL (as in OPENAI_BASE_URL; the key, if any, comes from
// OPENAI_API_KEY) twice:
//
//   1. from an event-based actor, with `request(...).then(...)`;
//   2. from plain code, with the `embedrt::client` future facade.
//
// With --remote it spawns no service: it loads CAF's middleman
// (embedrt::enable_distribution, before the actor system) and reaches the
// service of a running node (`embedrt serve --caf-port PORT`) with
// embedrt::connect; the same two ways then talk to that remote handle.
//
// Every vector is reported to the host's printer actor as a
// `host_app::vector_line`, a message of the host's own block, next to
// embedrt's messages in the same system. Output (one line per vector):
//
//   actor[0] dims=8 norm=1.000000 head=-0.416025162,0,0.13,0.2 text="..."
//
// Exit status: 0 on success, 1 on any failure (printed with
// embedrt::render_error).
#include "embedrt/all.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <future>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace host_app {

/// The host's own message: one embedding, as handed to the printer.
struct vector_line {
  /// Which API produced it: "actor" or "client".
  std::string via;
  int32_t index = 0;
  std::string text;
  int32_t dims = 0;
  /// L2 norm of the whole vector.
  double norm = 0;
  /// The first few values.
  std::vector<float> head;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, vector_line& x) {
  return f(caf::meta::type_name("host_app.vector_line"), x.via, x.index, x.text,
           x.dims, x.norm, x.head);
}

} // namespace host_app

// The host's type-ID block: its own name, its own offset.
CAF_BEGIN_TYPE_ID_BLOCK(host_app, 5000)
CAF_ADD_TYPE_ID(host_app, (host_app::vector_line))
CAF_ADD_ATOM(host_app, host_app, flush_atom, "flush")
CAF_END_TYPE_ID_BLOCK(host_app)

// embedrt's block spans fewer than 100 IDs from EMBEDRT_TYPE_ID_OFFSET (a
// compile definition that comes with the embedrt::embedrt target).
static_assert(caf::id_block::host_app::end <= EMBEDRT_TYPE_ID_OFFSET
                  || caf::id_block::host_app::begin
                      >= EMBEDRT_TYPE_ID_OFFSET + 100,
              "host_app's type IDs overlap embedrt's block");

namespace host_app {

using namespace std::chrono_literals;

constexpr int32_t dimensions = 8;
constexpr std::size_t head_size = 4;
constexpr auto request_timeout = std::chrono::milliseconds{10000};

/// Prints vector lines in arrival order; `flush` answers with the number
/// printed so far (so the caller knows everything before it is out).
using printer_actor
    = caf::typed_actor<caf::reacts_to<vector_line>,
                       caf::replies_to<flush_atom>::with<int32_t>>;

struct printer_state {
  int32_t printed = 0;
};

/// Writes to `sink`. (Passing at least one spawn argument also avoids a
/// CAF 0.17.6 quirk: spawning a function actor without arguments binds a
/// reference to a null tuple, which UBSan reports; see docs/testing.md,
/// "Sanitizers".)
printer_actor::behavior_type
printer(printer_actor::stateful_pointer<printer_state> self,
        std::ostream* sink) {
  return {
      [self, sink](const vector_line& x) {
        std::ostringstream out;
        out << x.via << '[' << x.index << "] dims=" << x.dims << " norm=";
        out << std::fixed << std::setprecision(6) << x.norm;
        out << std::defaultfloat << std::setprecision(9) << " head=";
        for (std::size_t i = 0; i < x.head.size(); ++i)
          out << (i == 0 ? "" : ",") << x.head[i];
        out << " text=\"" << x.text << "\"\n";
        *sink << out.str() << std::flush;
        ++self->state.printed;
      },
      [self](flush_atom) {
        return self->state.printed;
      },
  };
}

/// Reports every vector of `res` to the printer (in input order).
void report(const embedrt::embed_result& res,
            const std::vector<std::string>& texts, const std::string& via,
            const std::function<void(vector_line)>& send) {
  for (std::size_t i = 0; i < res.embeddings.size(); ++i) {
    const auto& v = res.embeddings[i];
    vector_line line;
    line.via = via;
    line.index = static_cast<int32_t>(i);
    line.text = i < texts.size() ? texts[i] : std::string{};
    line.dims = static_cast<int32_t>(v.size());
    double sum = 0;
    for (auto f : v)
      sum += static_cast<double>(f) * static_cast<double>(f);
    line.norm = std::sqrt(sum);
    line.head.assign(
        v.begin(),
        v.begin() + static_cast<std::ptrdiff_t>(std::min(head_size, v.size())));
    send(std::move(line));
  }
}

/// Checks the shape of a result: one vector of the requested size per input.
caf::error check_shape(const embedrt::embed_result& res, std::size_t inputs) {
  if (res.embeddings.size() != inputs)
    return embedrt::make_error(embedrt::errc::invalid_response,
                               "expected " + std::to_string(inputs)
                                   + " vectors, got "
                                   + std::to_string(res.embeddings.size()));
  for (const auto& v : res.embeddings)
    if (v.size() != static_cast<std::size_t>(dimensions))
      return embedrt::make_error(embedrt::errc::invalid_response,
                                 "expected " + std::to_string(dimensions)
                                     + " dimensions, got "
                                     + std::to_string(v.size()));
  return caf::none;
}

embedrt::embed_request make_request(const std::vector<std::string>& texts,
                                    const std::string& request_id) {
  embedrt::embed_request req;
  req.model = "text-embedding-3-small";
  req.inputs = texts;
  req.dimensions = dimensions;
  req.timeout = request_timeout;
  req.request_id = request_id;
  return req;
}

/// Way 1: an event-based actor of the host sends one typed request to the
/// service and reports the vectors from its `then` handler. `done` is set
/// exactly once (none on success); the actor then quits.
void embed_from_actor(caf::event_based_actor* self, embedrt::service_actor svc,
                      printer_actor out, std::vector<std::string> texts,
                      std::shared_ptr<std::promise<caf::error>> done) {
  auto req = make_request(texts, "host-app-actor");
  // The service enforces the deadline itself; the extra second only guards
  // against a service that never answers (CAF 0.17 has no broken_promise).
  self->request(svc, request_timeout + 1s, embedrt::embed_atom_v,
                std::move(req))
      .then(
          [self, out, texts, done](const embedrt::embed_result& res) {
            auto err = check_shape(res, texts.size());
            if (!err)
              report(res, texts, "actor", [self, out](vector_line line) {
                self->send(out, std::move(line));
              });
            done->set_value(std::move(err));
            self->quit();
          },
          [self, done](caf::error& err) {
            done->set_value(std::move(err));
            self->quit();
          });
}

int fail(const caf::error& err) {
  std::cerr << "host_app: error: " << embedrt::render_error(err) << '\n';
  return 1;
}

/// Where the texts are embedded: an upstream URL (a local service) or a
/// remote node's address.
struct target {
  std::string base_url;
  std::optional<embedrt::peer_address> remote;

  std::string describe() const {
    return remote
        ? "remote caf://" + remote->host + ":" + std::to_string(remote->port)
        : "upstream " + base_url;
  }
};

/// A service of our own in this actor system, over the upstream at `url`.
caf::expected<embedrt::service_actor>
spawn_local_service(caf::actor_system& sys, const std::string& url) {
  embedrt::runtime_config rc;
  embedrt::upstream_config up;
  up.name = "upstream";
  up.base_url = url;
  if (const char* key = std::getenv("OPENAI_API_KEY"))
    up.api_key = key;
  up.connections = 2;
  up.attempt_timeout = 5s;
  rc.upstreams.push_back(std::move(up));
  rc.default_timeout = request_timeout;
  return embedrt::spawn_service(sys, std::move(rc));
}

int run(caf::actor_system& sys, const target& where,
        const std::vector<std::string>& texts) {
  // A remote node's service is the same typed handle as a local one.
  auto svc = where.remote
      ? embedrt::connect(sys, where.remote->host, where.remote->port)
      : spawn_local_service(sys, where.base_url);
  if (!svc)
    return fail(svc.error());
  auto out = sys.spawn(printer, &std::cout);
  // Stops the host's actors and a runtime of our own on every way out of
  // run() (a remote node's service is not ours to stop).
  auto stop = [&] {
    if (!where.remote)
      caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(out, caf::exit_reason::user_shutdown);
  };
  std::cout << "host_app: " << where.describe() << ", embedrt type IDs from "
            << caf::type_id<embedrt::embed_request>::value
            << ", host_app type IDs from " << caf::type_id<vector_line>::value
            << '\n'
            << std::flush;
  // 1. Event-based actor with request(...).then.
  auto done = std::make_shared<std::promise<caf::error>>();
  auto actor_done = done->get_future();
  sys.spawn(embed_from_actor, *svc, out, texts, done);
  if (auto err = actor_done.get()) {
    stop();
    return fail(err);
  }
  // 2. The future facade, from this (non-actor) thread.
  embedrt::client client{sys, *svc, request_timeout};
  auto res = client.embed(make_request(texts, "host-app-client")).get();
  caf::error err;
  if (!res)
    err = res.error();
  else if (auto shape_err = check_shape(*res, texts.size()))
    err = std::move(shape_err);
  else
    report(*res, texts, "client", [&out](vector_line line) {
      caf::anon_send(out, std::move(line));
    });
  if (err) {
    stop();
    return fail(err);
  }
  // The printer handles its mailbox in order: once it answers `flush`, every
  // line sent before is out.
  int32_t printed = -1;
  caf::scoped_actor self{sys};
  self->request(out, 5s, flush_atom_v)
      .receive(
          [&printed](int32_t n) {
            printed = n;
          },
          [&err](caf::error& e) {
            err = std::move(e);
          });
  stop();
  if (err)
    return fail(err);
  auto expected = static_cast<int32_t>(2 * texts.size());
  if (printed != expected)
    return fail(embedrt::make_error(embedrt::errc::invalid_response,
                                    "printer printed " + std::to_string(printed)
                                        + " of " + std::to_string(expected)
                                        + " lines"));
  std::cout << "host_app: ok, " << printed
            << " host_app::vector_line messages printed\n";
  return 0;
}

} // namespace host_app

int main(int argc, char** argv) {
  if (argc < 2 || std::string{argv[1]} == "--help"
      || (std::string{argv[1]} == "--remote" && argc < 3)) {
    std::cerr << "usage: host_app BASE_URL [TEXT...]\n"
                 "       host_app --remote HOST:PORT [TEXT...]\n"
                 "  e.g. host_app http://127.0.0.1:8080/v1 \"hello world\"\n"
                 "       host_app --remote 127.0.0.1:4242 \"hello world\"\n";
    return 1;
  }
  host_app::target where;
  int first_text = 2;
  if (std::string{argv[1]} == "--remote") {
    auto addr = embedrt::parse_peer(argv[2]);
    if (!addr)
      return host_app::fail(addr.error());
    where.remote = std::move(*addr);
    first_text = 3;
  } else {
    where.base_url = argv[1];
  }
  std::vector<std::string> texts;
  for (int i = first_text; i < argc; ++i)
    texts.emplace_back(argv[i]);
  if (texts.empty())
    texts = {"The quick brown fox jumps over the lazy dog.",
             "Actors share nothing and talk by messages.",
             "Embeddings map text to vectors."};
  embedrt::set_log_level(embedrt::log_level::warn);
  caf::actor_system_config cfg;
  embedrt::register_types(cfg);                     // embedrt's block + errors
  cfg.add_message_types<caf::id_block::host_app>(); // the host's own block
  if (where.remote) {
    // CAF's middleman, loaded before the actor system exists.
    if (auto err = embedrt::enable_distribution(cfg))
      return host_app::fail(err);
  }
  int rc = 1;
  {
    caf::actor_system sys{cfg};
    rc = host_app::run(sys, where, texts);
    // ~actor_system waits for every actor, the runtime's included.
  }
  return rc;
}

#include "embedrt/client.hpp"

#include "embedrt/protocol/errc.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>
#include <memory>

namespace embedrt {

namespace {

/// Grace on top of the request's own deadline before the facade gives up on
/// the service (which enforces the deadline itself).
constexpr auto facade_grace = std::chrono::seconds{5};

} // namespace

client::client(caf::actor_system& sys, service_actor service,
               std::chrono::milliseconds default_timeout)
    : sys_(sys),
      service_(std::move(service)),
      default_timeout_(default_timeout) {
  // nop
}

void client::embed(embed_request req, embed_callback cb) {
  auto timeout
      = req.timeout.count() > 0 ? req.timeout : caf::timespan{default_timeout_};
  if (req.timeout.count() == 0)
    req.timeout = timeout;
  // The request travels as a spawn argument: CAF 0.17.6 dereferences a null
  // argument tuple when spawning a function with no arguments (UBSan).
  sys_.spawn(
      [](caf::event_based_actor* self, service_actor svc, caf::timespan timeout,
         embed_request req, embed_callback cb) {
        self->request(svc, timeout + facade_grace, embed_atom_v, std::move(req))
            .then(
                [self, cb](embed_result& r) {
                  cb(std::move(r));
                  self->quit();
                },
                [self, cb](caf::error& err) {
                  if (err == caf::sec::request_timeout)
                    err = make_error(errc::deadline_exceeded,
                                     "the service did not answer in time");
                  cb(std::move(err));
                  self->quit();
                });
      },
      service_, timeout, std::move(req), std::move(cb));
}

std::future<caf::expected<embed_result>> client::embed(embed_request req) {
  auto prom = std::make_shared<std::promise<caf::expected<embed_result>>>();
  auto fut = prom->get_future();
  embed(std::move(req), [prom](caf::expected<embed_result> r) {
    prom->set_value(std::move(r));
  });
  return fut;
}

caf::expected<health_report> client::health(std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys_};
  caf::expected<health_report> result{health_report{}};
  self->request(service_, timeout, health_atom_v)
      .receive(
          [&](health_report& h) {
            result = std::move(h);
          },
          [&](caf::error& err) {
            result = std::move(err);
          });
  return result;
}

caf::expected<metrics_snapshot>
client::metrics(std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys_};
  caf::expected<metrics_snapshot> result{metrics_snapshot{}};
  self->request(service_, timeout, metrics_atom_v)
      .receive(
          [&](metrics_snapshot& m) {
            result = std::move(m);
          },
          [&](caf::error& err) {
            result = std::move(err);
          });
  return result;
}

} // namespace embedrt

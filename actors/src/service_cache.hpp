// The embedding cache of one service (docs/caching.md, docs/architecture.md):
// the store, the inputs in flight — who owns each, who waits for it — and
// the persistent store's write queue. Plain data kept by the service actor,
// which every request passes anyway, so the cache adds no message of its
// own to a request's path:
//
//   service: lookup of the request's inputs, its answer in the request
//            actor's job — per input a hit (vector), owned (the request
//            sends it upstream) or waiting (another request owns it); the
//            owner of an input that gets its first waiter is told
//            (c_wanted, ticket) and hands its served chunks over at once
//   request actor --request_done(settle)--> service: the vectors of its
//            owned tickets, the owned ones it gives up, the waits it no
//            longer needs; waiters get (c_filled, ticket, vector), and the
//            first waiter of a ticket given up owns it (c_owner, ticket)
//   request actor --(c_fill, settle)--> service: the same at once, per
//            served chunk, sent only while another request waits for one of
//            its inputs (c_wanted) or it waits for others' inputs itself
//            (so that two requests never wait for each other's reply)
//   request actor ends (killed): the service's down message releases its
//            tickets and withdraws its waits
//
// With a persistent store, the request actor looks its owned misses up on
// disk (the disk actor: detached, its own thread, blocking LMDB calls)
// before anything goes upstream and hands what it found to the cache at
// once (`from_disk`); filled vectors are written to the store in batches by
// the service, one write in flight at a time.
#pragma once

#include "cache_messages.hpp"
#include "cache_policy.hpp"
#include "embedrt/config.hpp"
#include "interfaces.hpp"
#include "persistent_cache.hpp"

#include <caf/actor_addr.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/replies_to.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <memory>
#include <string>
#include <vector>

namespace embedrt::detail {

using cache_vectors = std::vector<std::vector<float>>;

// -- the disk actor -----------------------------------------------------------

/// The disk actor's state (`disk_actor`, interfaces.hpp).
struct disk_state {
  static inline const char* name = "embedrt.cache_disk";
  std::shared_ptr<persistent_store> store;
  milliseconds ttl{0};
};

disk_actor::behavior_type disk_fn(disk_actor::stateful_pointer<disk_state> self,
                                  std::shared_ptr<persistent_store> store,
                                  milliseconds ttl);

/// The persistent store as the service drives it: its actor and the filled
/// vectors not written yet. Shared with the service's exit functor, which
/// hands what is left to the disk actor when the service ends.
struct cache_disk {
  /// Null: no persistent store, or its actor died (the memory cache goes
  /// on).
  disk_actor actor;
  std::vector<std::string> keys;
  cache_vectors vecs;
  /// A write is in flight (the next batch is what accumulates meanwhile).
  bool writing = false;
};

// -- the cache ----------------------------------------------------------------

/// What a fill or a release tells a waiting request actor, or a lookup
/// the owner of an input it waits for.
struct cache_notice {
  enum class kind : uint8_t {
    /// The ticket was filled: `vec` is its vector (c_filled).
    filled,
    /// `to` owns the ticket now (c_owner).
    owner,
    /// Someone waits for the ticket `to` owns (c_wanted).
    wanted,
  };
  caf::strong_actor_ptr to;
  uint64_t ticket = 0;
  kind what = kind::filled;
  std::vector<float> vec;
};

/// The keys of a request's inputs (`cache_key`: `model`, the requested
/// dimensions and the exact text or token ids) and their `cache_hash`;
/// `keys`' strings are rewritten in place (their memory reused).
void make_cache_keys(const embed_request& req, const std::string& model,
                     std::vector<std::string>& keys,
                     std::vector<uint64_t>& hashes);

/// After a lookup: the keys' memory is kept for the next request's, unless
/// it is large (more than 64 keys, or a key over 4 KiB).
void trim_cache_keys(std::vector<std::string>& keys);

/// Buffers kept for reuse (a settle's tickets or floats, for the next
/// answers), outside the cache's bound: at most 4,096 of them and 256 KiB of
/// their capacity, none larger than `max_bytes` at `keep`.
template <class T>
class spare_pool {
 public:
  /// Keeps `buf` (emptied) if it has room; otherwise leaves it alone.
  void keep(std::vector<T>& buf, std::size_t max_bytes) {
    auto bytes = buf.capacity() * sizeof(T);
    if (bufs_.size() < max_count && bytes > 0 && bytes <= max_bytes
        && bytes_ + bytes <= max_total) {
      buf.clear();
      bytes_ += bytes;
      bufs_.push_back(std::move(buf));
    }
  }

  /// A kept buffer (empty), or a new one without capacity.
  std::vector<T> take() {
    if (bufs_.empty())
      return {};
    auto buf = std::move(bufs_.back());
    bufs_.pop_back();
    bytes_ -= buf.capacity() * sizeof(T);
    return buf;
  }

 private:
  static constexpr std::size_t max_count = 4096;
  static constexpr std::size_t max_total = 256 * 1024;
  std::vector<std::vector<T>> bufs_;
  std::size_t bytes_ = 0;
};

class service_cache {
 public:
  /// `disk` (may be null) is the persistent store's link; `epoch` names
  /// this cache in its answers (a cache started again takes a new one); a
  /// lookup with an input equal to `crash_marker` (if not empty) throws
  /// (tests of the service's recovery).
  service_cache(const cache_config& cfg, std::shared_ptr<cache_disk> disk,
                uint64_t epoch, std::string crash_marker);

  uint64_t epoch() const {
    return epoch_;
  }

  /// Asks the CPU for what looking up these hashes reads first (called
  /// with a request's keys made, some work before `lookup`).
  void prefetch(const std::vector<uint64_t>& hashes) const;
  /// Asks the CPU for the entries a settle's fills read first.
  void prefetch(const cache_settle& s) const;

  /// Looks up one request's inputs for `asker`, its request actor: hits,
  /// owned misses (reserved in flight; each key of a new miss is copied into
  /// the store) and waits.
  cache_lookup_result lookup(const std::vector<std::string>& keys,
                             const std::vector<uint64_t>& hashes,
                             const caf::strong_actor_ptr& asker);

  /// A request actor's settle (fills first, then releases, then waits
  /// withdrawn); `from` is its handle. Vectors from the persistent store
  /// are counted as its hits and not written back.
  void settle(cache_settle& s, const caf::strong_actor_ptr& from);

  /// A request actor ended: its tickets are released, its waits withdrawn.
  void actor_gone(const caf::actor_addr& who);

  /// The notifications produced since the last call (the service sends
  /// them).
  std::vector<cache_notice> take_notices();
  bool has_notices() const {
    return !notices_.empty();
  }

  /// A recycled buffer for a request's settle (`request_job::spare_floats`;
  /// empty, without capacity, when none is left).
  std::vector<float> take_spare_floats();

  /// Counts a failed disk operation (logged by the service).
  void disk_failed();
  /// Counts entries the disk actor wrote.
  void disk_written(int64_t n);

  cache_metrics stats() const;

 private:
  /// Who sends an input in flight upstream (its owner) and who waits for
  /// its vector. The entry itself (key, ticket) is in the store, in flight;
  /// its tag there is the index of this record in `flights_`.
  struct flight {
    uint64_t ticket = 0;
    caf::strong_actor_ptr owner;
    std::vector<caf::strong_actor_ptr> waiters;
  };

  uint32_t next_flight() const;
  flight& take_flight(uint32_t tag);
  void free_flight(uint32_t tag);
  bool complete(uint64_t ticket, const float* data, std::size_t size,
                bool persist, embedding_cache::clock::time_point now);
  void release(uint64_t ticket);
  void withdraw(uint64_t ticket, const caf::strong_actor_ptr& who);
  /// Queues the vector of the ticket (in flight) for the persistent store,
  /// if there is one (its key is looked up only then).
  void queue_write(uint64_t ticket, const float* data, std::size_t size);
  /// Keeps a settle's buffers for later answers.
  void recycle(cache_settle& s);
  embedding_cache::clock::time_point expiry_now() const;

  uint64_t epoch_;
  std::string crash_marker_;
  embedding_cache mem_;
  std::shared_ptr<cache_disk> disk_;
  /// Records of the inputs in flight (a slab: free records are reused).
  std::vector<flight> flights_;
  std::vector<uint32_t> free_flights_;
  cache_metrics counters_;
  std::vector<cache_notice> notices_;
  /// Buffers settles brought back, for the next answers' tickets and
  /// settles' floats (`spare_pool`).
  spare_pool<uint64_t> spare_tickets_;
  spare_pool<float> spare_floats_;
};

} // namespace embedrt::detail

// The persistent embedding cache: an LMDB environment on disk (a directory
// with data.mdb and lock.mdb), shared by `embedrt embed` reruns, `serve`
// restarts and other processes on the same path. Blocking calls: only the
// cache's disk actor (a detached actor with a thread of its own) and
// `spawn_service` use it, never an actor handler on the scheduler.
// LMDB commits are atomic and durable (synced at each commit): a process
// killed at any point leaves the last committed state (docs/caching.md).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace embedrt::detail {

class persistent_store {
 public:
  /// Opens (creating the directory and the environment if needed) the store
  /// at `path`, mapped up to `map_bytes`. The same path is opened once per
  /// process: a second open returns the same store while the first lives
  /// (LMDB must not open one environment twice in a process). Call from
  /// one thread at a time (`spawn_service` does). Null and `err` on failure.
  static std::shared_ptr<persistent_store>
  open(const std::string& path, std::size_t map_bytes, std::string& err);

  ~persistent_store();
  persistent_store(const persistent_store&) = delete;
  persistent_store& operator=(const persistent_store&) = delete;

  /// Looks up `keys` in one read transaction: `out[i]` is the stored vector,
  /// or empty when absent or written longer than `ttl` ago (0: no limit).
  bool get(const std::vector<std::string>& keys, std::chrono::milliseconds ttl,
           std::vector<std::vector<float>>& out, std::string& err);

  /// Writes all pairs in one transaction (one commit, one sync). A full
  /// store (`map_bytes` reached) is an error; nothing of the batch is kept.
  bool put(const std::vector<std::string>& keys,
           const std::vector<std::vector<float>>& vectors, std::string& err);

  const std::string& path() const {
    return path_;
  }

 private:
  persistent_store() = default;

  struct lmdb;
  std::unique_ptr<lmdb> db_;
  std::string path_;
};

} // namespace embedrt::detail

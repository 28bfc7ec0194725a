// The per-node budget of response bytes in flight of `embedrt serve`
// (docs/reliability.md, "Memory"): every embeddings request holds a lease
// on an estimate of the memory its answer takes (the vectors as floats plus
// one encoded copy) from admission until its reply has been written; a
// request that would take the node past the budget is refused at once
// (`overloaded`, 429) instead of taking memory the node does not have. A
// request alone is always admitted, however large, so that no request is
// refused forever.
//
// When the last lease goes and enough bytes were released since the last
// time, the budget hands freed heap memory back to the kernel
// (`malloc_trim`): glibc keeps the per-thread arenas' free pages otherwise,
// and the process would stay at its peak after a burst of large replies.
//
// Lock-free (atomics), shared by the I/O threads and CAF workers; a lease
// may outlive the gateway (a reply still being written), so the budget is
// held by shared_ptr. One budget serves the node: after a SIGHUP reload the
// new configuration's gateway takes the same budget (with the new limit)
// while the old one drains, so the two together stay within it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace embedrt::serve {

class response_budget : public std::enable_shared_from_this<response_budget> {
 public:
  /// The default budget: 256 MiB.
  static constexpr uint64_t default_limit = uint64_t{256} << 20;
  /// Bytes released since the last trim that make the next idle moment
  /// trim the heap.
  static constexpr uint64_t default_trim_after = uint64_t{32} << 20;

  /// Holds `bytes` of the budget until destroyed (move-only).
  class lease {
   public:
    lease() = default;
    lease(lease&& other) noexcept;
    lease& operator=(lease&& other) noexcept;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease();

    uint64_t bytes() const noexcept {
      return bytes_;
    }

    /// Sets the bytes held to `bytes` (the true size, once known); never
    /// refused.
    void resize(uint64_t bytes);

    /// Gives the bytes back now.
    void release();

   private:
    friend class response_budget;
    lease(std::shared_ptr<response_budget> owner, uint64_t bytes);
    std::shared_ptr<response_budget> owner_;
    uint64_t bytes_ = 0;
  };

  /// `limit` 0: no limit (leases are still counted).
  explicit response_budget(uint64_t limit = default_limit,
                           uint64_t trim_after = default_trim_after);

  /// A lease on `bytes`, or nothing (counted as a refusal) if the node
  /// already holds some and `bytes` more would exceed the limit.
  std::optional<lease> acquire(uint64_t bytes);

  uint64_t limit() const noexcept {
    return limit_.load(std::memory_order_relaxed);
  }

  /// A new limit for the acquisitions from now on (a reload); the leases
  /// held keep their bytes.
  void set_limit(uint64_t limit) noexcept {
    limit_.store(limit, std::memory_order_relaxed);
  }
  uint64_t held() const noexcept {
    return held_.load(std::memory_order_relaxed);
  }
  uint64_t refusals() const noexcept {
    return refusals_.load(std::memory_order_relaxed);
  }
  uint64_t trims() const noexcept {
    return trims_.load(std::memory_order_relaxed);
  }

  /// The Prometheus text of the gauges and counters above.
  std::string render_metrics() const;

 private:
  void give_back(uint64_t bytes);

  std::atomic<uint64_t> limit_;
  const uint64_t trim_after_;
  std::atomic<uint64_t> held_{0};
  std::atomic<uint64_t> released_since_trim_{0};
  std::atomic<uint64_t> refusals_{0};
  std::atomic<uint64_t> trims_{0};
};

/// The estimate a request is admitted on: `inputs` vectors of `dimensions`
/// floats held as floats (4 bytes each) plus one encoded copy in `base64`
/// (4/3 × 4 bytes a number) or float text (12 bytes a number), plus 64 bytes
/// a vector for the JSON around it.
uint64_t response_estimate(uint64_t inputs, uint64_t dimensions, bool base64);

} // namespace embedrt::serve

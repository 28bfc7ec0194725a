// Address space for a large table that a request's path reads at random
// (the embedding cache's entries): reserved at once, 2 MiB aligned, and
// asked to be backed by transparent huge pages. A table of millions of
// bytes read at random in 4 KiB pages misses the CPU's TLB on most reads,
// and under a hypervisor's nested paging each miss walks two page tables;
// in 2 MiB pages the same table needs a few TLB entries (docs/caching.md,
// "Memory"). Nothing is committed until it is first touched: the pages come
// as the table grows into them.
#pragma once

#include <cstddef>

namespace embedrt::detail {

class huge_region {
 public:
  /// The unit of a transparent huge page on x86-64 and most arm64 kernels.
  static constexpr std::size_t page = std::size_t{2} << 20;

  huge_region() = default;
  /// Reserves `bytes` rounded up to `page`; empty (`data()` null) if the
  /// address space cannot be had. A kernel without transparent huge pages
  /// (or with them off) gives ordinary pages: the region works the same.
  explicit huge_region(std::size_t bytes);
  ~huge_region();
  huge_region(huge_region&& other) noexcept;
  huge_region& operator=(huge_region&& other) noexcept;
  huge_region(const huge_region&) = delete;
  huge_region& operator=(const huge_region&) = delete;

  unsigned char* data() const {
    return data_;
  }
  std::size_t size() const {
    return size_;
  }

 private:
  void release() noexcept;

  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace embedrt::detail

#include "huge_region.hpp"

#include <cstdint>
#include <sys/mman.h>
#include <utility>

// Memory mapped here is not the allocator's, so LeakSanitizer would not look
// for pointers in it: the heap blocks only the region points to (an entry's
// large key or floats) would be reported as leaks. Registered, it is scanned.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_LEAK__)
#  define EMBEDRT_LSAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#    define EMBEDRT_LSAN 1
#  endif
#endif
#ifdef EMBEDRT_LSAN
#  include <sanitizer/lsan_interface.h>
#endif

namespace embedrt::detail {

huge_region::huge_region(std::size_t bytes) {
  if (bytes == 0)
    return;
  auto size = (bytes + page - 1) / page * page;
  // One page more than asked, so that an aligned start lies inside; the
  // slack before and after it is given back at once. MAP_NORESERVE: a
  // reservation, not a commitment (the pages come as they are touched).
  auto map_size = size + page;
  void* map = ::mmap(nullptr, map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return;
  auto* first = static_cast<unsigned char*>(map);
  auto addr = reinterpret_cast<std::uintptr_t>(map);
  auto* aligned = first + ((page - addr % page) % page);
  if (aligned != first)
    ::munmap(first, static_cast<std::size_t>(aligned - first));
  if (auto tail = static_cast<std::size_t>(first + map_size - (aligned + size));
      tail > 0)
    ::munmap(aligned + size, tail);
  data_ = aligned;
  size_ = size;
  // A hint: refused (no THP in this kernel, or THP off), the region keeps
  // ordinary pages.
#ifdef MADV_HUGEPAGE
  ::madvise(data_, size_, MADV_HUGEPAGE);
#endif
#ifdef EMBEDRT_LSAN
  __lsan_register_root_region(data_, size_);
#endif
}

huge_region::~huge_region() {
  release();
}

huge_region::huge_region(huge_region&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {
  // nop
}

huge_region& huge_region::operator=(huge_region&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void huge_region::release() noexcept {
  if (data_ == nullptr)
    return;
#ifdef EMBEDRT_LSAN
  __lsan_unregister_root_region(data_, size_);
#endif
  ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

} // namespace embedrt::detail

// Counts heap allocations of a process (LD_PRELOAD): malloc, calloc,
// realloc, aligned allocations and free, over all threads; C++'s operator
// new allocates through malloc. At exit the counts are written to the file
// named by MALLOC_COUNT_OUT (default: stderr) as "mallocs N frees N".
// Used by scripts/bench/profile.sh for the allocations per request of
// docs/profile.md.
//
//   cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c
//   MALLOC_COUNT_OUT=counts.txt LD_PRELOAD=./malloc_count.so embedrt bench ...
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);
extern void __libc_free(void*);

static atomic_ulong allocs;
static atomic_ulong frees;

void* malloc(size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_malloc(n);
}

void* calloc(size_t n, size_t m) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_calloc(n, m);
}

void* realloc(void* p, size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}

void* memalign(size_t a, size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_memalign(a, n);
}

void* aligned_alloc(size_t a, size_t n) {
  return memalign(a, n);
}

int posix_memalign(void** out, size_t a, size_t n) {
  void* p = memalign(a, n);
  if (p == NULL)
    return 12; // ENOMEM
  *out = p;
  return 0;
}

void free(void* p) {
  if (p != NULL)
    atomic_fetch_add_explicit(&frees, 1, memory_order_relaxed);
  __libc_free(p);
}

__attribute__((destructor)) static void report(void) {
  const char* path = getenv("MALLOC_COUNT_OUT");
  FILE* f = path != NULL ? fopen(path, "w") : stderr;
  if (f == NULL)
    return;
  fprintf(f, "mallocs %lu frees %lu\n", atomic_load(&allocs),
          atomic_load(&frees));
  if (f != stderr)
    fclose(f);
}

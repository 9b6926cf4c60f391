#include "common/allocator.h"

#include <cstdlib>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ladimo::core {

bool tuneAllocatorForTensors()
{
#if defined(__GLIBC__)
    // Blocks up to 32 MiB come from the heap rather than a fresh mapping per allocation; the heap
    // keeps up to 512 MiB of freed memory and grows in steps of 256 MiB (address space: pages are
    // touched only as used).
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1 &&
           mallopt(M_TOP_PAD, 256 << 20) == 1;
#else
    return false;
#endif
}

} // namespace ladimo::core

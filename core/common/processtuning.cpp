#include "common/processtuning.h"

#include <cstdlib>
#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <ATen/Parallel.h>

namespace ladimo::core {

namespace {

// OpenBLAS reports how it was built: 0 sequential, 1 its own pthreads, 2 OpenMP. Looked up at run
// time: LibTorch links whichever BLAS the system provides.
std::string blasThreading()
{
    using Get = int (*)();
    const auto get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
    if (!get)
        return "unknown";
    switch (get()) {
    case 0: return "openblas-sequential";
    case 1: return "openblas-pthreads";
    case 2: return "openblas-openmp";
    }
    return "openblas";
}

} // namespace

ProcessTuning tuneProcessForTensors()
{
    ProcessTuning t;
#if defined(__GLIBC__)
    // Blocks up to 32 MiB come from the heap rather than a fresh mapping per allocation; the heap
    // keeps up to 512 MiB of freed memory and grows in steps of 256 MiB (address space: pages are
    // touched only as used).
    t.allocator = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1
        && mallopt(M_TOP_PAD, 256 << 20) == 1;
#endif
    t.blas = blasThreading();
    int threads = t.blas == "openblas-pthreads" ? 1 : 0;
    if (const char* env = std::getenv("LADIMO_INTRAOP_THREADS"))
        threads = std::max(0, std::atoi(env));
    if (threads > 0) {
        at::set_num_threads(threads);
        t.intraOpThreads = threads;
    }
    return t;
}

} // namespace ladimo::core

// Process-wide settings for tensor work on the CPU, applied once at program start. No LibTorch
// here: the workbench's main() includes it.
#pragma once

#include <string>

namespace ladimo::core {

struct ProcessTuning {
    bool allocator = false; // the C library's allocator keeps freed memory for reuse
    int intraOpThreads = 0; // LibTorch's intra-op threads as set here; 0 = left as they were
    std::string blas;       // the BLAS's threading as detected ("openblas-pthreads", ...)
};

// Call first thing in main(), before other threads run.
//  - Allocator: freed memory up to a few hundred MiB stays with the process for reuse instead of
//    going back to the system, so the large activation buffers of every forward pass are not
//    page-faulted in afresh each time (glibc only).
//  - Threads: where the BLAS is OpenBLAS with its own pthread pool, LibTorch's OpenMP pool is cut
//    to one thread. Matrix products still use every core (OpenBLAS's threads); the two pools no
//    longer fight over the same cores between one product and the next, which on a 2-core machine
//    made the MoE block 2-3x slower at times. LADIMO_INTRAOP_THREADS=N overrides (0 = leave it).
// Measured on the demo model (2 cores): `ladimo eval` 1.4-1.7x faster from the allocator alone.
ProcessTuning tuneProcessForTensors();

} // namespace ladimo::core

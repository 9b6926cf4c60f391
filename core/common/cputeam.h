// A team of threads, one per CPU core, for work that BLAS threading does not parallelise well:
// many small products with serial work between them (the experts of an MoE block). No LibTorch.
//
// Why not simply more BLAS threads: OpenBLAS splits each product over its own thread pool, and
// everything between the products (gathers, activations, scatter-adds) runs on one core while
// the pool's threads spin idle. The team instead runs whole slices of the work on every core, each
// with a single-threaded BLAS. While it runs, OpenBLAS is set to one thread and each team member
// is pinned to its own core: OpenBLAS's idle pool threads keep spinning (yielding) for up to
// ~0.1 s after a multi-threaded product, and unpinned, two team members could share one core
// while a spinning pool thread holds the other (measured: bimodal, at times half speed).
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace ladimo::core {

class CpuTeam {
public:
    // The process's team. Its size is 1 (no splitting) unless the BLAS is OpenBLAS with its own
    // thread pool, which can be set to one thread for a while; otherwise it is the smaller of the
    // process's CPUs and OpenBLAS's thread count (so OPENBLAS_NUM_THREADS=1 also limits it).
    // LADIMO_CPU_TEAM=0 in the environment keeps it at 1 (for comparisons).
    static CpuTeam& instance();

    // How many shares run() splits work into now: 1 while a Solo guard exists.
    int size() const;

    // Runs task(i, n) for every i in [0, n), n = min(size(), shares), and waits for all; rethrows the first
    // exception a share threw. With n > 1, OpenBLAS is single-threaded meanwhile, and the shares
    // run on the members (task(0, n) on the calling thread) when the team is free, else one after
    // another on the calling thread (a nested or concurrent call): the same products with the
    // same thread count, so the results are bit for bit the same either way. (OpenBLAS's results
    // differ in the last bits between one and two threads.) Tasks must not use LibTorch's intra-op
    // pool for large work: the CLI and the workbench run with one intra-op thread.
    void run(const std::function<void(int, int)>& task, int shares = std::numeric_limits<int>::max());

    // While one exists, size() is 1 and the BLAS thread count is left alone. For several threads
    // doing BLAS work at once (a conversion with several workers): a process-wide thread count
    // changed by one of them would change the others' results from run to run.
    class Solo {
    public:
        Solo();
        ~Solo();
        Solo(const Solo&) = delete;
        Solo& operator=(const Solo&) = delete;
    };

    ~CpuTeam();
    CpuTeam(const CpuTeam&) = delete;
    CpuTeam& operator=(const CpuTeam&) = delete;

private:
    CpuTeam();
    void start();
    void member(int index);
    void singleThreadedBlas(bool on);

    int size_ = 1;
    std::atomic<int> solo_{0};
    std::vector<int> cpus_;          // the process's CPUs at start
    int (*blasGet_)() = nullptr;     // openblas_get_num_threads
    void (*blasSet_)(int) = nullptr; // openblas_set_num_threads

    std::mutex blas_;     // guards the two below
    int singleUsers_ = 0; // runs that need OpenBLAS single-threaded now
    int savedBlasThreads_ = 0;

    std::mutex busy_; // held for a whole parallel run
    std::mutex m_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> threads_;
    std::vector<int> memberCpu_; // where each member runs during the current run
    std::vector<std::exception_ptr> errors_;
    const std::function<void(int, int)>* task_ = nullptr;
    unsigned long generation_ = 0;
    int shares_ = 0; // of the current run
    int pending_ = 0;
    bool stop_ = false;
};

} // namespace ladimo::core

#include "common/cputeam.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

namespace ladimo::core {

namespace {

bool pinTo(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

} // namespace

CpuTeam& CpuTeam::instance()
{
    static CpuTeam team;
    return team;
}

CpuTeam::CpuTeam()
{
    // Only OpenBLAS built with its own pthread pool (openblas_get_parallel() == 1) is known to run
    // single-threaded products from several threads at once after openblas_set_num_threads(1).
    using GetInt = int (*)();
    const auto parallel = reinterpret_cast<GetInt>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
    blasGet_ = reinterpret_cast<GetInt>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    blasSet_ = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!parallel || parallel() != 1 || !blasGet_ || !blasSet_)
        return;
    if (const char* env = std::getenv("LADIMO_CPU_TEAM"); env && std::string(env) == "0")
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set))
            cpus_.push_back(c);
    size_ = std::max(1, std::min(static_cast<int>(cpus_.size()), blasGet_()));
}

CpuTeam::~CpuTeam()
{
    {
        std::lock_guard<std::mutex> lock(m_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_)
        t.join();
}

void CpuTeam::start()
{
    memberCpu_.assign(static_cast<std::size_t>(size_), -1);
    errors_.assign(static_cast<std::size_t>(size_), nullptr);
    for (int i = 1; i < size_; ++i)
        threads_.emplace_back([this, i] { member(i); });
}

void CpuTeam::member(int index)
{
    unsigned long seen = 0;
    int pinned = -1;
    for (;;) {
        const std::function<void(int, int)>* task;
        int cpu, shares;
        {
            std::unique_lock<std::mutex> lock(m_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_)
                return;
            seen = generation_;
            task = task_;
            cpu = memberCpu_[static_cast<std::size_t>(index)];
            shares = shares_;
        }
        if (index < shares) {
            if (cpu != pinned && pinTo(cpu))
                pinned = cpu;
            try {
                (*task)(index, shares);
            } catch (...) {
                errors_[static_cast<std::size_t>(index)] = std::current_exception();
            }
        }
        std::lock_guard<std::mutex> lock(m_);
        if (--pending_ == 0)
            done_.notify_one();
    }
}

int CpuTeam::size() const { return solo_.load() > 0 ? 1 : size_; }

CpuTeam::Solo::Solo() { ++instance().solo_; }

CpuTeam::Solo::~Solo() { --instance().solo_; }

void CpuTeam::singleThreadedBlas(bool on)
{
    std::lock_guard<std::mutex> lock(blas_);
    if (on && singleUsers_++ == 0) {
        savedBlasThreads_ = blasGet_();
        blasSet_(1);
    } else if (!on && --singleUsers_ == 0) {
        blasSet_(savedBlasThreads_);
    }
}

void CpuTeam::run(const std::function<void(int, int)>& task, int shares)
{
    const int n = std::min(size(), std::max(1, shares));
    if (n < 2) {
        task(0, 1);
        return;
    }
    struct SingleThreaded {
        CpuTeam* team;
        explicit SingleThreaded(CpuTeam* t) : team(t) { team->singleThreadedBlas(true); }
        ~SingleThreaded() { team->singleThreadedBlas(false); }
    } single(this);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) {
        for (int i = 0; i < n; ++i)
            task(i, n);
        return;
    }
    if (threads_.empty())
        start();

    // The caller stays on the core it is on; the members take the other cores.
    int here = sched_getcpu();
    if (std::find(cpus_.begin(), cpus_.end(), here) == cpus_.end())
        here = cpus_.front();
    cpu_set_t saved;
    const bool restore = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0 && pinTo(here);
    {
        std::lock_guard<std::mutex> lock(m_);
        std::size_t next = 0;
        for (int i = 1; i < size_; ++i) {
            if (cpus_[next] == here)
                ++next;
            memberCpu_[static_cast<std::size_t>(i)] = cpus_[next++];
        }
        std::fill(errors_.begin(), errors_.end(), nullptr);
        task_ = &task;
        shares_ = n;
        pending_ = size_ - 1;
        ++generation_;
    }
    wake_.notify_all();
    try {
        task(0, n);
    } catch (...) {
        errors_[0] = std::current_exception();
    }
    {
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [&] { return pending_ == 0; });
        task_ = nullptr;
    }
    if (restore)
        pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
    for (const auto& e : errors_)
        if (e)
            std::rethrow_exception(e);
}

} // namespace ladimo::core

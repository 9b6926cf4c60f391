// Time left in a job's current stage, from that stage's own pace. A long job reports its stages
// in turn ("self-sample", "capture", "layer 0", ..., "end-to-end"); an estimate from the job's
// start would charge each stage with the time of the stages before it (a 20-minute end-to-end
// stage after 20 minutes of layers would start at twice its real length).
// Thread-safe: workers of one job may report their stages from several threads.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ladimo::core {

class StageClock {
public:
    using Clock = std::chrono::steady_clock;

    // Records a report of `stage` at `done` of `total` and returns the seconds it has left at the
    // pace since its first report, or a negative number while unknown (its first report, no
    // progress since). A stage whose `done` goes back (a rerun of it) starts over.
    double secondsLeft(const std::string& stage, double done, double total, Clock::time_point now = Clock::now());
    // Forgets every stage (a new job reuses the names).
    void reset();

private:
    struct Start {
        Clock::time_point at;
        double done = 0;
        double last = 0;
    };
    std::mutex m_mutex;
    std::unordered_map<std::string, Start> m_starts;
};

} // namespace ladimo::core

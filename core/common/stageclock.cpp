#include "common/stageclock.h"

#include <algorithm>

namespace ladimo::core {

double StageClock::secondsLeft(const std::string& stage, double done, double total, Clock::time_point now)
{
    const std::lock_guard lock(m_mutex);
    auto [it, fresh] = m_starts.try_emplace(stage, Start{now, done, done});
    Start& s = it->second;
    if (!fresh && done < s.last)
        s = Start{now, done, done};
    s.last = done;
    const double progressed = done - s.done;
    const double seconds = std::chrono::duration<double>(now - s.at).count();
    if (progressed <= 0 || seconds <= 0)
        return -1;
    return seconds * std::max(0.0, total - done) / progressed;
}

void StageClock::reset()
{
    const std::lock_guard lock(m_mutex);
    m_starts.clear();
}

} // namespace ladimo::core

// Progress reporting and cooperative cancellation shared by every long core job.
// One polarity everywhere: CancelToken::cancel() asks the job to stop; the job checks
// isCancelled() between batches / layers and throws Cancelled. Progress callbacks are called on
// the worker thread; GUI callers must marshal to their own thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "common/error.h"

namespace ladimo::core {

class CancelToken {
public:
    void cancel() { m_flag->store(true); }
    bool isCancelled() const { return m_flag->load(); }
    void throwIfCancelled() const
    {
        if (isCancelled())
            throw Cancelled();
    }
    // The flag itself, for a signal handler (a lock-free atomic store is async-signal-safe).
    std::atomic<bool>* flag() const { return m_flag.get(); }

private:
    // Shared so copies of a token (handed to worker threads) observe the same flag.
    std::shared_ptr<std::atomic<bool>> m_flag = std::make_shared<std::atomic<bool>>(false);
};

// done / total in the job's own unit; `stage` names what is running ("eval", "layer 3").
using ProgressFn = std::function<void(const std::string& stage, double done, double total)>;

} // namespace ladimo::core

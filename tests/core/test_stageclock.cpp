// The "time left" of a progress line: each stage at its own pace, not charged with the stages
// before it.
#include <gtest/gtest.h>

#include "common/stageclock.h"

using namespace ladimo::core;
using std::chrono::seconds;

TEST(StageClock, EstimatesEachStageFromItsOwnStartNotTheJobs)
{
    StageClock clock;
    const auto t0 = StageClock::Clock::time_point{} + seconds(1000);
    EXPECT_LT(clock.secondsLeft("layer 0", 0, 100, t0), 0) << "no pace yet";
    EXPECT_DOUBLE_EQ(clock.secondsLeft("layer 0", 50, 100, t0 + seconds(10)), 10.0);
    EXPECT_DOUBLE_EQ(clock.secondsLeft("layer 0", 100, 100, t0 + seconds(20)), 0.0);
    // 20 minutes into the job, a stage that runs 4 steps a second: its own pace, not 1,200 s of job.
    const auto t1 = t0 + seconds(1200);
    EXPECT_LT(clock.secondsLeft("end-to-end", 1, 4501, t1), 0);
    EXPECT_DOUBLE_EQ(clock.secondsLeft("end-to-end", 401, 4501, t1 + seconds(100)), 1025.0);
}

TEST(StageClock, KeepsInterleavedStagesApartAndRestartsAStageThatGoesBack)
{
    StageClock clock;
    const auto t0 = StageClock::Clock::time_point{} + seconds(5);
    clock.secondsLeft("layer 0", 0, 10, t0);
    clock.secondsLeft("layer 1", 0, 10, t0 + seconds(4));
    EXPECT_DOUBLE_EQ(clock.secondsLeft("layer 0", 5, 10, t0 + seconds(10)), 10.0);
    EXPECT_DOUBLE_EQ(clock.secondsLeft("layer 1", 2, 10, t0 + seconds(8)), 16.0);
    // A rerun of the stage (done back at 1) starts its pace over.
    EXPECT_LT(clock.secondsLeft("layer 0", 1, 10, t0 + seconds(500)), 0);
    EXPECT_DOUBLE_EQ(clock.secondsLeft("layer 0", 3, 10, t0 + seconds(502)), 7.0);
    clock.reset();
    EXPECT_LT(clock.secondsLeft("layer 1", 9, 10, t0 + seconds(600)), 0) << "reset forgets every stage";
}

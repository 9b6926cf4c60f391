// The body of a benchmark program's main(), after its own set-up.
#pragma once

#include <benchmark/benchmark.h>

namespace ladimo::test {

inline int runBenchmarks(int argc, char** argv)
{
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

} // namespace ladimo::test

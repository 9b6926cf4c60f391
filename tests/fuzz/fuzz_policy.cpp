// A routing policy document as `ladimo policy --import` reads it, validated against a 4-layer,
// 8-expert conversion; an accepted document must survive export and re-import unchanged.
#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "fuzzutil.h"
#include "routing/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    using namespace ladimo::core;
    const auto file = ladimo::fuzz::writeScratch("policy.json", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        const auto d = loadPolicyDocument(file, 4, 8);
        const auto again = parsePolicyDocument(policyDocument(d.name.empty() ? "x" : d.name, d.rules, d.gating, 8), 4,
                                               8, "round trip");
        if (rulesToJson(again.rules) != rulesToJson(d.rules))
            std::abort();
        for (const auto& r : d.rules)
            (void)describeRule(r, 8);
    });
    return 0;
}

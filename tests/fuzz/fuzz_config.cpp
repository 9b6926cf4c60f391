// config.json of a model folder, through the loader the CLI and GUI use.
#include "fuzzutil.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto file = ladimo::fuzz::writeScratch("config.json", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        const auto c = ladimo::core::ModelConfig::load(file);
        (void)c.parameterCounts();
        (void)ladimo::core::ModelConfig::fromJson(c.toJson(), "round trip"); // must re-validate
    });
    return 0;
}

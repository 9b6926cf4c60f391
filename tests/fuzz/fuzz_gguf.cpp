// The tests' independent GGUF reader (tests/ggufreader.h), which reads what the exporter wrote.
#include "fuzzutil.h"
#include "ggufreader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        const auto g
            = ladimo::test::GgufFile::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
        for (const auto& t : g.tensors())
            (void)g.tensor(t.name);
    });
    return 0;
}

// Calibration / evaluation token files. The first input byte picks the format (.u16, .u32,
// .jsonl), the rest is the file; ids are checked against a 512-token vocabulary.
#include "fuzzutil.h"
#include "model/tokendata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    static const char* kExt[] = {"data.u16", "data.u32", "data.jsonl"};
    const auto file = ladimo::fuzz::writeScratch(kExt[data[0] % 3], data + 1, size - 1);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        ladimo::core::TokenDataOptions o;
        o.vocabSize = 512;
        o.maxTokens = (data[0] / 3) % 2 ? 7 : 0;
        const auto ids = ladimo::core::loadTokenFile(file, /*tokenizer=*/nullptr, o);
        (void)ladimo::core::cutWindows(ids, 2 + data[0] % 5);
    });
    return 0;
}

// tokenizer.json (Hugging Face tokenizers): load, then encode and decode a fixed text that
// touches spaces, bytes outside ASCII and digits.
#include "fuzzutil.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto file = ladimo::fuzz::writeScratch("tokenizer.json", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        const auto tok = ladimo::core::Tokenizer::loadHuggingFace(file);
        const auto ids = tok->encode("Hello  world, caf\xc3\xa9 123 \xf0\x9f\x99\x82!\n");
        (void)tok->decode(ids);
        for (int id = 0; id < tok->vocabSize() && id < 64; ++id)
            (void)tok->piece(id);
    });
    return 0;
}

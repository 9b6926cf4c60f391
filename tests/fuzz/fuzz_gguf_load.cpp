// The core's GGUF reader (core/export/gguf_reader.h), which `ladimo eval` and `generate` run on
// a GGUF file: header, metadata, tensor infos, policy and every tensor's data.
#include "export/gguf_reader.h"
#include "fuzzutil.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto file = ladimo::fuzz::writeScratch("fuzz.gguf", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({ (void)ladimo::core::loadGguf(file); });
    return 0;
}

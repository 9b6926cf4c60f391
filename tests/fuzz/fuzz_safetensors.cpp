// A whole .safetensors file: 8-byte header length, JSON header, data. Opens it and reads every
// tensor it declares (the views must stay inside the mapping).
#include "fuzzutil.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto file = ladimo::fuzz::writeScratch("model.safetensors", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        auto st = ladimo::core::SafetensorsFile::open(file);
        for (const auto& info : st->tensors()) {
            auto t = st->tensor(info.name);
            if (t.numel() > 0)
                (void)t.flatten()[t.numel() - 1].item(); // touches the last byte of the range
        }
    });
    return 0;
}

// model.safetensors.index.json next to one valid shard (a.safetensors, tensor "w"): the index
// decides which files get opened, so shard names must never leave the checkpoint folder.
#include <filesystem>

#include <torch/torch.h>

#include "fuzzutil.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    namespace fs = std::filesystem;
    static const fs::path dir = [] {
        const fs::path d = ladimo::fuzz::scratchDir() / "ckpt";
        fs::create_directories(d);
        ladimo::core::writeSafetensors(d / "a.safetensors", {{"w", torch::arange(6, torch::kFloat32)}});
        return d;
    }();
    const fs::path index = dir / "model.safetensors.index.json";
    ladimo::fuzz::writeScratch("ckpt/model.safetensors.index.json", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        auto c = ladimo::core::CheckpointFiles::open(dir);
        for (const auto& info : c.tensorInfos())
            (void)c.tensor(info.name);
    });
    return 0;
}

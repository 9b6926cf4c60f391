// Captured activations that do not fit the memory budget live in unlinked scratch files in the
// project folder (issue 5): same values, same conversion, nothing left on disk afterwards.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <torch/torch.h>

#include "common/scratch.h"
#include "convert/convert.h"
#include "tinymodel.h"

using namespace ladimo::core;

namespace {

using ladimo::testmodel::tinyCalibration;
using ladimo::testmodel::tinyModel;

std::size_t filesIn(const std::filesystem::path& dir)
{
    std::size_t n = 0;
    if (std::filesystem::exists(dir))
        for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir))
            ++n;
    return n;
}

std::filesystem::path freshDir(const std::string& name)
{
    const auto dir = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    return dir;
}

} // namespace

TEST(Capture, OverTheMemoryBudgetActivationsAreFileBackedAndEqual)
{
    const auto model = tinyModel();
    const auto stream = tinyCalibration(200); // windows of 32 and a short last one
    std::vector<torch::Tensor> xs, ys, fx, fy;
    const auto inMemory = captureFfn(model, stream, 32, &xs, &ys);
    EXPECT_FALSE(inMemory.spilled);
    EXPECT_EQ(inMemory.bytes, 3u * 2u * 200u * 16u * sizeof(float));

    const auto dir = freshDir("ladimo-capture-spill");
    CaptureOptions storage;
    storage.spillDir = dir;
    storage.memoryBudget = 1024;
    {
        const auto spilled = captureFfn(model, stream, 32, &fx, &fy, storage);
        EXPECT_TRUE(spilled.spilled);
        EXPECT_EQ(spilled.bytes, inMemory.bytes);
        ASSERT_EQ(fx.size(), 3u);
        for (std::size_t l = 0; l < 3; ++l) {
            EXPECT_EQ(fx[l].sizes(), xs[l].sizes());
            EXPECT_TRUE(torch::equal(fx[l], xs[l])) << "layer " << l;
            EXPECT_TRUE(torch::equal(fy[l], ys[l])) << "layer " << l;
        }
        // The scratch files are unlinked as soon as they are mapped: the folder stays empty
        // while they are in use, and nothing can be left behind.
        EXPECT_EQ(filesIn(dir), 0u);
    }
    fx.clear();
    fy.clear();
    // Within budget: memory, whatever spillDir says.
    storage.memoryBudget = inMemory.bytes;
    EXPECT_FALSE(captureFfn(model, stream, 32, &fx, &fy, storage).spilled);
    std::filesystem::remove_all(dir);
}

TEST(Capture, AConversionFromSpilledActivationsEqualsOneInMemory)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(256);
    ConvertSettings s;
    s.experts = 4;
    s.partition = Partition::Contiguous;
    s.seqLen = 32;
    s.distill.epochs = 2;
    s.distill.routerEpochs = 2;
    s.distill.batch = 64;
    s.distill.seed = 9;
    s.distill.trainTopK = 3;
    const auto reference = convertModel(model, calibration, s, {});

    const auto dir = freshDir("ladimo-convert-spill");
    s.capture.spillDir = dir;
    s.capture.memoryBudget = 1;
    ConvertCallbacks cb;
    bool spilled = false;
    cb.onCapture = [&](const CaptureInfo& info) { spilled = info.spilled; };
    const auto converted = convertModel(model, calibration, s, cb);
    EXPECT_TRUE(spilled);
    ASSERT_EQ(converted.size(), reference.size());
    for (std::size_t l = 0; l < reference.size(); ++l) {
        EXPECT_TRUE(torch::equal(converted[l].router, reference[l].router)) << "layer " << l;
        EXPECT_TRUE(torch::equal(converted[l].gate, reference[l].gate)) << "layer " << l;
        EXPECT_TRUE(torch::equal(converted[l].down, reference[l].down)) << "layer " << l;
    }
    EXPECT_EQ(filesIn(dir), 0u);
    std::filesystem::remove_all(dir);
}

TEST(Capture, ScratchFolderThatCannotBeMadeIsAClearError)
{
    // The error names the folder; a full disk is refused the same way, up front, by
    // posix_fallocate (never a fault when a page is first written).
    const auto dir = freshDir("ladimo-scratch-missing") / "no" / "such";
    try {
        (void)fileBackedTensor("/proc/ladimo-no-such-dir", {4, 4}, torch::kFloat32);
        FAIL() << "expected an Error";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("/proc/ladimo-no-such-dir"), std::string::npos) << e.what();
    }
    const auto t = fileBackedTensor(dir, {3, 5}, torch::kFloat32);
    t.fill_(2.5);
    EXPECT_EQ(t.sum().item<float>(), 37.5f);
    std::filesystem::remove_all(dir.parent_path().parent_path());
}

// Strict safetensors reading: every kind of corruption gives an Error naming the file / tensor.
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Builds a raw safetensors file from a header and a data size.
void writeRaw(const fs::path& file, const std::string& header, std::size_t dataBytes, std::size_t truncateTo = 0)
{
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i)
        bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header;
    bytes += std::string(dataBytes, '\x01');
    if (truncateTo)
        bytes.resize(truncateTo);
    std::ofstream(file, std::ios::binary) << bytes;
}

std::string expectError(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected ladimo::core::Error";
    return {};
}

ModelConfig tinyConfig()
{
    ModelConfig c;
    c.hiddenSize = 16;
    c.intermediateSize = 32;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 4;
    c.vocabSize = 20;
    return c;
}

void writeTinyModel(const fs::path& dir) { LlamaModel::randomInit(tinyConfig(), 1).save(dir, torch::kFloat32); }

} // namespace

TEST(Safetensors, RoundTripKeepsValuesDtypesAndMetadata)
{
    TempDir tmp;
    auto a = torch::randn({3, 5});
    auto b = torch::randn({7}).to(torch::kBFloat16);
    auto c = torch::arange(6, torch::kInt64).view({2, 3});
    writeSafetensors(tmp / "x.safetensors", {{"a", a}, {"b", b}, {"c", c}}, {{"format", "pt"}});
    auto f = SafetensorsFile::open(tmp / "x.safetensors");
    EXPECT_EQ(f->tensors().size(), 3u);
    EXPECT_EQ(f->metadata().at("format"), "pt");
    EXPECT_TRUE(torch::equal(f->tensor("a"), a));
    EXPECT_TRUE(torch::equal(f->tensor("b"), b));
    EXPECT_TRUE(torch::equal(f->tensor("c"), c));
    // Zero-copy views stay valid after the file object is released.
    auto view = f->tensor("a");
    f.reset();
    EXPECT_TRUE(torch::equal(view, a));
}

TEST(Safetensors, TruncatedFile)
{
    TempDir tmp;
    const std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
    writeRaw(tmp / "t.safetensors", h, 16, 8 + h.size() + 10);
    const auto msg = expectError([&] { SafetensorsFile::open(tmp / "t.safetensors"); });
    EXPECT_NE(msg.find("t.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;
    std::ofstream(tmp / "short.safetensors") << "abc";
    EXPECT_NE(expectError([&] { SafetensorsFile::open(tmp / "short.safetensors"); }).find("too short"),
              std::string::npos);
}

TEST(Safetensors, HeaderLengthPastEnd)
{
    TempDir tmp;
    std::string bytes(8, '\0');
    bytes[0] = static_cast<char>(0xff);
    bytes[1] = static_cast<char>(0x10);
    bytes += "{}";
    std::ofstream(tmp / "h.safetensors", std::ios::binary) << bytes;
    const auto msg = expectError([&] { SafetensorsFile::open(tmp / "h.safetensors"); });
    EXPECT_NE(msg.find("header length"), std::string::npos) << msg;
    EXPECT_NE(msg.find("h.safetensors"), std::string::npos) << msg;
}

TEST(Safetensors, OverlappingRanges)
{
    TempDir tmp;
    writeRaw(
        tmp / "o.safetensors",
        R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
        24);
    const auto msg = expectError([&] { SafetensorsFile::open(tmp / "o.safetensors"); });
    EXPECT_NE(msg.find("overlapping"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
}

TEST(Safetensors, WrongDtypeAndSizeMismatch)
{
    TempDir tmp;
    writeRaw(tmp / "d.safetensors", R"({"w":{"dtype":"F8_E9","shape":[4],"data_offsets":[0,4]}})", 4);
    auto msg = expectError([&] { SafetensorsFile::open(tmp / "d.safetensors"); });
    EXPECT_NE(msg.find("unsupported dtype 'F8_E9'"), std::string::npos) << msg;
    writeRaw(tmp / "s.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})", 8);
    msg = expectError([&] { SafetensorsFile::open(tmp / "s.safetensors"); });
    EXPECT_NE(msg.find("shape x dtype size = 16 bytes"), std::string::npos) << msg;
    writeRaw(tmp / "n.safetensors", R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16);
    EXPECT_NE(expectError([&] { SafetensorsFile::open(tmp / "n.safetensors"); }).find("non-negative"),
              std::string::npos);
}

TEST(Safetensors, BadJsonHeader)
{
    TempDir tmp;
    writeRaw(tmp / "j.safetensors", R"({"w":{"dtype":"F32",)", 0);
    const auto msg = expectError([&] { SafetensorsFile::open(tmp / "j.safetensors"); });
    EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("j.safetensors"), std::string::npos) << msg;
}

TEST(Checkpoint, MissingTensorNamesTensorAndFile)
{
    TempDir tmp;
    writeTinyModel(tmp.path());
    auto f = SafetensorsFile::open(tmp / "model.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> kept;
    for (const auto& t : f->tensors())
        if (t.name != "model.layers.1.mlp.up_proj.weight")
            kept.emplace_back(t.name, f->tensor(t.name).clone());
    f.reset();
    writeSafetensors(tmp / "model.safetensors", kept);
    const auto msg = expectError([&] { LlamaModel::load(tmp.path()); });
    EXPECT_NE(msg.find("missing tensor 'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << msg;
}

TEST(Checkpoint, ShapeDisagreeingWithConfig)
{
    TempDir tmp;
    writeTinyModel(tmp.path());
    auto cfg = nlohmann::json::parse(readTextFile(tmp / "config.json"));
    cfg["intermediate_size"] = 48;
    atomicWriteFile(tmp / "config.json", cfg.dump());
    const auto msg = expectError([&] { LlamaModel::load(tmp.path()); });
    EXPECT_NE(msg.find("mlp.gate_proj.weight' has shape [32, 16], config.json implies [48, 16]"), std::string::npos)
        << msg;
}

TEST(Checkpoint, BadConfigJsonAndUnknownArchitecture)
{
    TempDir tmp;
    writeTinyModel(tmp.path());
    atomicWriteFile(tmp / "config.json", std::string("{\"hidden_size\": 16,"));
    auto msg = expectError([&] { LlamaModel::load(tmp.path()); });
    EXPECT_NE(msg.find("config.json: invalid JSON"), std::string::npos) << msg;
    auto cfg = tinyConfig().toJson();
    cfg["architectures"] = {"GPT2LMHeadModel"};
    atomicWriteFile(tmp / "config.json", cfg.dump());
    msg = expectError([&] { LlamaModel::load(tmp.path()); });
    EXPECT_NE(msg.find("unsupported architecture 'GPT2LMHeadModel'"), std::string::npos) << msg;
    cfg = tinyConfig().toJson();
    cfg.erase("num_hidden_layers");
    atomicWriteFile(tmp / "config.json", cfg.dump());
    msg = expectError([&] { LlamaModel::load(tmp.path()); });
    EXPECT_NE(msg.find("missing key 'num_hidden_layers'"), std::string::npos) << msg;
}

TEST(Checkpoint, IndexCannotEscapeTheFolder)
{
    TempDir tmp;
    writeTinyModel(tmp / "m");
    atomicWriteFile(tmp / "m/model.safetensors.index.json",
                    std::string(R"({"weight_map":{"model.norm.weight":"../evil.safetensors"}})"));
    const auto msg = expectError([&] { LlamaModel::load(tmp / "m"); });
    EXPECT_NE(msg.find("plain file name"), std::string::npos) << msg;
}

TEST(Checkpoint, MistralWithSlidingWindowLoads)
{
    TempDir tmp;
    writeTinyModel(tmp.path());
    auto cfg = tinyConfig().toJson();
    cfg["architectures"] = {"MistralForCausalLM"};
    cfg["sliding_window"] = 4;
    atomicWriteFile(tmp / "config.json", cfg.dump());
    torch::InferenceMode guard;
    const auto m = LlamaModel::load(tmp.path());
    ASSERT_TRUE(m.config().slidingWindow.has_value());
    // With a window of 4, position 10 must not depend on token 0.
    auto a = torch::randint(20, {1, 12}, torch::kInt64);
    auto b = a.clone();
    b[0][0] = (a[0][0].item<int64_t>() + 1) % 20;
    EXPECT_TRUE(torch::allclose(m.forward(a)[0][10], m.forward(b)[0][10], 1e-5, 1e-6));
}

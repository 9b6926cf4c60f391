// Issue 9: what an untrusted input may make the core allocate, and the regression inputs of the
// fuzz targets (tests/fuzz/): each ends in an Error naming the file and the key / tensor.
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/fileutil.h"
#include "convert/convert.h"
#include "eval/choice.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tokendata.h"
#include "routing/policy.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string errorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected ladimo::core::Error, got another exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "expected ladimo::core::Error";
    return {};
}

void expectMentions(const std::string& msg, std::initializer_list<const char*> parts)
{
    for (const char* p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

// A file of `size` bytes that takes no disk space (only its length is ever looked at).
void sparseFile(const fs::path& file, uint64_t size, const std::string& head = "{")
{
    std::ofstream(file, std::ios::binary) << head;
    fs::resize_file(file, size);
}

ModelConfig tinyConfig()
{
    ModelConfig c;
    c.hiddenSize = 8;
    c.intermediateSize = 16;
    c.numLayers = 1;
    c.numHeads = 2;
    c.numKvHeads = 2;
    c.headDim = 4;
    c.vocabSize = 32;
    c.maxPositions = 64;
    return c;
}

} // namespace

// Keys of the wrong JSON type are an Error naming the file and the key, never a JSON library
// exception (fuzz_config found `"model_type": 512` escaping as one).
TEST(InputLimits, ConfigKeysOfTheWrongTypeNameTheKey)
{
    TempDir tmp;
    auto json = tinyConfig().toJson();
    for (const auto& [key, bad] : std::vector<std::pair<std::string, nlohmann::json>>{
             {"model_type", 512}, {"tie_word_embeddings", "yes"}, {"attention_bias", 1}}) {
        auto j = json;
        j[key] = bad;
        std::ofstream(tmp / "config.json") << j.dump();
        expectMentions(errorOf([&] { ModelConfig::load(tmp / "config.json"); }), {"config.json", key.c_str()});
    }
}

TEST(InputLimits, OversizedJsonFilesAreRefusedBeforeTheyAreRead)
{
    TempDir tmp;
    sparseFile(tmp / "config.json", kMaxConfigJsonBytes + 1);
    expectMentions(errorOf([&] { ModelConfig::load(tmp / "config.json"); }), {"config.json", "limit"});

    fs::create_directory(tmp / "ckpt");
    sparseFile(tmp / "ckpt/model.safetensors.index.json", kMaxIndexJsonBytes + 1);
    expectMentions(errorOf([&] { CheckpointFiles::open(tmp / "ckpt"); }), {"model.safetensors.index.json", "limit"});

    sparseFile(tmp / "policy.json", kMaxConfigJsonBytes + 1);
    expectMentions(errorOf([&] { loadPolicyDocument(tmp / "policy.json", 4, 8); }), {"policy.json", "limit"});

    // At the limit is fine as far as size goes (then it is judged as JSON).
    sparseFile(tmp / "ok.json", 1024, "[1]");
    EXPECT_EQ(readTextFile(tmp / "ok.json", 1024).size(), 1024u);
    expectMentions(errorOf([&] { readTextFile(tmp / "ok.json", 1023); }), {"ok.json", "1024 bytes"});
}

TEST(InputLimits, SafetensorsHeaderClaimingMoreThanTheLimit)
{
    TempDir tmp;
    // The length field claims 1 TiB: refused from the 8 bytes alone, nothing allocated.
    std::string bytes(8, '\0');
    bytes[5] = 1; // 2^40
    bytes += "{}";
    std::ofstream(tmp / "big.safetensors", std::ios::binary) << bytes;
    expectMentions(errorOf([&] { SafetensorsFile::open(tmp / "big.safetensors"); }),
                   {"big.safetensors", "header length", "limit"});
    // A rank above the limit and a shape whose byte size overflows 64 bits.
    expectMentions(errorOf([&] {
                       SafetensorsFile::parseHeader(
                           R"({"t":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4,
                           "x.safetensors", nullptr);
                   }),
                   {"x.safetensors", "'t'", "rank 9"});
    expectMentions(errorOf([&] {
                       SafetensorsFile::parseHeader(
                           R"({"t":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
                           "x.safetensors", nullptr);
                   }),
                   {"x.safetensors", "'t'", "too large"});
}

TEST(InputLimits, PolicyFilesNameTheFileAndCannotNameAPathOutside)
{
    TempDir tmp;
    atomicWriteFile(tmp / "p.json", std::string("{\"format\": "));
    expectMentions(errorOf([&] { loadPolicyDocument(tmp / "p.json", 4, 8); }), {"p.json", "not valid JSON"});
    nlohmann::json doc = policyDocument("ok", uniformRules(4, RoutingRule::staticK(2)), Gating::Hard, 8);
    for (const std::string evil : {"../../etc/passwd", "a/b", "/abs", "..", "x\\y"}) {
        doc["name"] = evil;
        atomicWriteFile(tmp / "p.json", doc.dump());
        expectMentions(errorOf([&] { loadPolicyDocument(tmp / "p.json", 4, 8); }), {"policy name"});
    }
    doc["name"] = "fine-name_1.0";
    atomicWriteFile(tmp / "p.json", doc.dump());
    EXPECT_EQ(loadPolicyDocument(tmp / "p.json", 4, 8).name, "fine-name_1.0");
    // Keys of the wrong JSON type (fuzz_policy found '"format": 1') name the file.
    for (const char* key : {"format", "name", "gating"}) {
        auto bad = doc;
        bad[key] = 1;
        atomicWriteFile(tmp / "p.json", bad.dump());
        expectMentions(errorOf([&] { loadPolicyDocument(tmp / "p.json", 4, 8); }), {"p.json"});
    }
}

TEST(InputLimits, SequenceLengthIsBoundedByTheModel)
{
    const auto c = tinyConfig();
    EXPECT_NO_THROW(checkSeqLen(64, c));
    EXPECT_NO_THROW(checkSeqLen(2, c));
    expectMentions(errorOf([&] { checkSeqLen(65, c); }), {"65", "max_position_embeddings"});
    expectMentions(errorOf([&] { checkSeqLen(1, c); }), {"sequence length 1"});
}

TEST(InputLimits, MoeLayerFileWithHostileMetadataOrShapes)
{
    // Before: "sizes" went through std::stoll unchecked (std::invalid_argument escaped) and a
    // router of rank 0 reached size(0) (a raw c10::Error).
    TempDir tmp;
    const auto file = tmp / "layer.safetensors";
    const auto write = [&](const std::string& sizes, torch::Tensor router) {
        writeSafetensors(file,
                         {{"router", router},
                          {"gate", torch::zeros({2, 3, 4})},
                          {"up", torch::zeros({2, 3, 4})},
                          {"down", torch::zeros({2, 4, 3})}},
                         {{"gating", "hard"}, {"sizes", sizes}, {"format", "ladimo-moe-layer-1"}});
    };
    write("3,3", torch::zeros({2, 4}));
    EXPECT_EQ(loadMoeLayer(file, torch::kCPU, torch::kFloat32).sizes, (std::vector<int64_t>{3, 3}));
    for (const std::string bad : {"x,3", "3,", "3;3", "99999999999999999999999,1", "3,3x", ""}) {
        write(bad, torch::zeros({2, 4}));
        expectMentions(errorOf([&] { loadMoeLayer(file, torch::kCPU, torch::kFloat32); }), {"layer.safetensors"});
    }
    write("3,3", torch::zeros({}));
    expectMentions(errorOf([&] { loadMoeLayer(file, torch::kCPU, torch::kFloat32); }), {"layer.safetensors", "router"});
    write("3,3", torch::zeros({2, 5})); // hidden size disagrees with gate/up/down
    expectMentions(errorOf([&] { loadMoeLayer(file, torch::kCPU, torch::kFloat32); }),
                   {"layer.safetensors", "inconsistent"});
}

TEST(InputLimits, JsonlLineLongerThanTheCapNamesTheFileAndLine)
{
    // Before: std::getline read the whole line into memory first (a 1 GiB line, 1 GiB allocated,
    // then an "invalid JSON" error). Now reading stops at the cap. The files are sparse: the long
    // line is NUL bytes that take no disk space.
    TempDir tmp;
    const std::string good = "{\"tokens\": [1, 2, 3]}\n";
    sparseFile(tmp / "tokens.jsonl", 1ull << 30, good + good);
    TokenDataOptions o;
    o.vocabSize = 32;
    expectMentions(errorOf([&] { loadTokenFile(tmp / "tokens.jsonl", nullptr, o); }),
                   {"tokens.jsonl:3", "line longer than", "limit"});
    // Lines up to the cap still load, and so does a last line without a newline.
    atomicWriteFile(tmp / "ok.jsonl", good + "\n" + "{\"tokens\": [4]}");
    EXPECT_EQ(loadTokenFile(tmp / "ok.jsonl", nullptr, o), (std::vector<int64_t>{1, 2, 3, 4}));

    // Multiple-choice files: the same reader, a 1 MiB cap per item.
    const std::string item = R"({"question": "q", "choices": ["a", "b"], "answer": 0})";
    sparseFile(tmp / "choices.jsonl", 64ull << 20, item + "\n");
    expectMentions(errorOf([&] { loadChoiceItems(tmp / "choices.jsonl"); }), {"choices.jsonl:2", "line longer than"});
    atomicWriteFile(tmp / "choices.jsonl", item + "\n" + item);
    EXPECT_EQ(loadChoiceItems(tmp / "choices.jsonl").size(), 2u);
}

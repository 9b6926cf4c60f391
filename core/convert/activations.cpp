#include "convert/activations.h"

#include <map>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/safetensors.h"

namespace ladimo::core {

namespace {
constexpr const char* kFormat = "ladimo-activations-1";
}

std::string tokenStreamSha256(const std::vector<int64_t>& tokens)
{
    static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token checksums assume little-endian int64");
    return sha256Bytes(tokens.data(), tokens.size() * sizeof(int64_t));
}

void saveActivations(const std::filesystem::path& file, int layer, const torch::Tensor& x, const torch::Tensor& y,
                     const CaptureKey& key)
{
    if (x.dim() != 2 || y.sizes() != x.sizes())
        throw Error("activations of layer " + std::to_string(layer) + " for '" + file.string()
                    + "': X and Y must both be [tokens, hidden]");
    writeSafetensors(file, {{"x", x.to(torch::kCPU, torch::kFloat32)}, {"y", y.to(torch::kCPU, torch::kFloat32)}},
                     {{"format", kFormat},
                      {"layer", std::to_string(layer)},
                      {"model_sha256", key.modelSha256},
                      {"tokens_sha256", key.tokensSha256},
                      {"seq_len", std::to_string(key.seqLen)}});
}

bool loadActivations(const std::filesystem::path& file, int layer, const CaptureKey& key, torch::Tensor* x,
                     torch::Tensor* y, std::string* whyNot)
{
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
        *whyNot = "'" + file.string() + "' does not exist";
        return false;
    }
    auto st = SafetensorsFile::open(file);
    const auto& meta = st->metadata();
    const auto get = [&](const char* k) {
        auto it = meta.find(k);
        if (it == meta.end())
            throw Error(file.string() + ": not a LaDiMo activations file (missing '" + k + "' metadata)");
        return it->second;
    };
    if (get("format") != kFormat)
        throw Error(file.string() + ": activations format '" + get("format") + "', expected '" + kFormat + "'");
    const std::map<std::string, std::string> expected = {{"layer", std::to_string(layer)},
                                                         {"model_sha256", key.modelSha256},
                                                         {"tokens_sha256", key.tokensSha256},
                                                         {"seq_len", std::to_string(key.seqLen)}};
    for (const auto& [k, v] : expected)
        if (get(k.c_str()) != v) {
            *whyNot = "'" + file.string() + "' was captured with " + k + " " + get(k.c_str()) + ", not " + v;
            return false;
        }
    auto tx = st->tensor("x"), ty = st->tensor("y");
    if (tx.dim() != 2 || ty.sizes() != tx.sizes() || tx.scalar_type() != torch::kFloat32
        || ty.scalar_type() != torch::kFloat32)
        throw Error(file.string() + ": tensors 'x' and 'y' must both be float32 [tokens, hidden]");
    *x = tx;
    *y = ty;
    return true;
}

} // namespace ladimo::core

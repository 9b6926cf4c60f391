#include "export/formats.h"

#include "common/error.h"
#include "export/export.h"
#include "export/gguf.h"
#include "export/hf_mixtral.h"

namespace ladimo::core {

// Writers whose formats have no header of their own.
ExportReport exportPolicyReport(const ExportInput& in, const ExportOptions& options); // export/policy_report.cpp

const std::vector<ExportFormat>& exportFormats()
{
    static const std::vector<ExportFormat> formats = {
        {"hf-mixtral",
         "the conversion in the Hugging Face Mixtral layout (Transformers, vLLM)",
         true,
         false,
         true,
         {"f32", "bf16", "f16"},
         "",
         &exportHfMixtral},
        {"hf-qwen2-moe",
         "the conversion in the Hugging Face Qwen2-MoE layout, whose shared expert holds the always-on neurons",
         true,
         false,
         true,
         {"f32", "bf16", "f16"},
         "",
         &exportHfQwen2Moe},
        {"gguf",
         "the conversion as GGUF v3 for llama.cpp",
         true,
         true,
         false,
         {"f32", "f16"},
         "GGUF (*.gguf)",
         &exportGguf},
        {"gguf-qwen2moe",
         "the conversion as GGUF v3 for llama.cpp's qwen2moe architecture, whose shared expert holds the always-on "
         "neurons",
         true,
         true,
         false,
         {"f32", "f16"},
         "GGUF (*.gguf)",
         &exportGgufQwen2Moe},
        {"hf-llama",
         "the dense source model in the Hugging Face LLaMA layout",
         false,
         false,
         true,
         {"f32", "bf16", "f16"},
         "",
         &exportHfMixtral},
        {"gguf-llama",
         "the dense source model as GGUF v3 for llama.cpp",
         false,
         true,
         false,
         {"f32", "f16"},
         "GGUF (*.gguf)",
         &exportGguf},
        {"policy-json",
         "the routing policy with its per-layer rules and the run it belongs to, as one JSON report",
         true,
         true,
         false,
         {"f32"},
         "JSON (*.json)",
         &exportPolicyReport},
    };
    return formats;
}

std::string exportFormatNames(bool moeOnly)
{
    std::vector<std::string> names;
    for (const auto& f : exportFormats())
        if (!moeOnly || f.moe)
            names.push_back(f.name);
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i)
        out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
    return out;
}

const ExportFormat* findExportFormat(const std::string& name)
{
    for (const auto& f : exportFormats())
        if (name == f.name)
            return &f;
    return nullptr;
}

const ExportFormat& exportFormat(const std::string& name)
{
    if (const auto* f = findExportFormat(name))
        return *f;
    throw Error("format '" + name + "' is unknown (expected " + exportFormatNames() + ")");
}

} // namespace ladimo::core

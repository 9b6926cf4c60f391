// The "policy-json" export format: the routing policy of a conversion as one self-describing JSON
// report (the policy document `ladimo policy --export` writes, plus the run's settings, the source
// model and, per layer, the experts' sizes and the parameters a static rule activates), for
// reviews and deployment scripts that need the routing without the weights.
#include <filesystem>

#include "common/error.h"
#include "common/fileutil.h"
#include "export/export.h"

namespace ladimo::core {

ExportReport exportPolicyReport(const ExportInput& in, const ExportOptions& options)
{
    if (!in.layers || in.layers->empty())
        throw Error("policy-json exports a conversion's policy; there are no converted layers");
    if (std::filesystem::exists(options.out))
        throw Error("'" + options.out.string() + "' already exists; an export never replaces a file");
    const auto& layers = *in.layers;
    const int64_t experts = layers.front().numExperts();
    auto doc = policyDocument(in.policyName, in.rules, layers.front().gating, experts);
    doc["report"] = "ladimo-policy-report";
    doc["source_model"] = std::filesystem::absolute(in.modelDir).lexically_normal().string();
    doc["conversion"] = in.conversion;
    nlohmann::json perLayer = nlohmann::json::array();
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& layer = layers[l];
        const int64_t hidden = layer.router.size(1);
        const int64_t neurons = layer.denseNeurons(), routedNeurons = neurons - layer.sharedNeurons();
        nlohmann::json row = {{"layer", l},
                              {"experts", layer.numExperts()},
                              {"expert_neurons", layer.sizes},
                              {"shared_neurons", layer.sharedNeurons()}};
        const auto& rule = in.rules.at(l);
        if (rule.isStatic() && neurons > 0) {
            // Static k with experts of equal size (the partitions balance them): k / N of the
            // routed neurons, plus the router's and the shared neurons', of the dense FFN's.
            const double routed = 3.0 * hidden * routedNeurons * rule.topK / static_cast<double>(layer.numExperts());
            row["activated_ffn_fraction"] = (routed + static_cast<double>(layer.alwaysOnParameters()))
                / (3.0 * static_cast<double>(hidden * neurons));
        }
        perLayer.push_back(row);
    }
    doc["per_layer"] = perLayer;
    ExportReport report;
    writeExport(options.out, [&] { atomicWriteFile(options.out, doc.dump(2) + "\n"); });
    report.files = {options.out};
    report.bytes = static_cast<int64_t>(std::filesystem::file_size(options.out));
    const std::string manifest = options.out.filename().string() + " " + sha256File(options.out) + "\n";
    report.sha256 = sha256Bytes(manifest.data(), manifest.size());
    report.notes.push_back("a report of the routing policy, not a model: it holds no weights");
    return report;
}

} // namespace ladimo::core

#include "convert/latestrun.h"

#include "common/error.h"
#include "convert/convert.h"
#include "store/project.h"

namespace ladimo::core {

int LatestRun::trainTopK() const
{
    // The column holds the k the run trained for (resolved from train_active when the settings say 0).
    if (run.trainTopK > 0)
        return run.trainTopK;
    return run.extra.contains("train_top_k") ? run.extra.at("train_top_k").get<int>() : 0;
}

LatestRun loadLatestRun(const std::string& projectFile, const LoadOptions& options, const LatestRunHints& hints,
                        std::optional<torch::ScalarType> expertDtype)
{
    auto p = Project::open(projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
    const auto runId = p.latestRunId();
    if (!runId)
        throw Error(projectFile + ": no conversion run yet" + hints.noRun);
    LatestRun r;
    r.runId = *runId;
    r.run = p.run(*runId);
    r.modelDir = p.model(r.run.modelId).path;
    r.model.emplace(LlamaModel::load(r.modelDir, options));
    std::string missing;
    std::vector<std::filesystem::path> files;
    std::uintmax_t bytes = 0;
    for (const auto& layer : p.layers(*runId)) {
        if (layer.status != LayerStatus::Done) {
            missing += (missing.empty() ? "" : ", ") + std::to_string(layer.layer);
            continue;
        }
        files.push_back(p.absolutePath(layer.weightsPath));
        std::error_code ec;
        const auto n = std::filesystem::file_size(files.back(), ec);
        bytes += ec ? 0 : n;
    }
    if (!missing.empty())
        throw Error(projectFile + ": run #" + std::to_string(*runId) + " has unfinished layers (" + missing + ")"
                    + hints.unfinished);
    const bool streamed = !expertDtype && (r.model->streamed() || bytes > r.model->memoryBudget() / 2);
    std::vector<MoeLayer> resident;
    if (!streamed)
        for (const auto& file : files) {
            auto m = loadMoeLayer(file, r.model->device(), r.model->dtype());
            if (expertDtype)
                for (auto* t : {&m.gate, &m.up, &m.down, &m.sharedGate, &m.sharedUp, &m.sharedDown})
                    if (t->defined())
                        *t = t->to(*expertDtype);
            resident.push_back(std::move(m));
        }
    r.layers = streamed ? MoeLayers::streamed(std::move(files), r.model->device(), r.model->dtype())
                        : MoeLayers(std::move(resident));
    return r;
}

} // namespace ladimo::core

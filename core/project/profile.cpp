#include "project/profile.h"

#include <torch/torch.h>

#include "model/tokenizer.h"
#include "project/convert.h"
#include "routing/profile.h"
#include "store/project.h"

namespace ladimo::core {

ProjectProfileResult profileProject(const ProjectProfileRequest& r)
{
    c10::InferenceMode inference; // thread-local: set here, on the caller's thread
    // The writer first: it upgrades an older project before the read-only load below.
    auto project = Project::open(r.projectFile, {Project::Access::ReadWrite, Project::Verify::Exists});
    const auto loaded = loadLatestRun(r.projectFile, r.load, r.hints);
    const DataSource data = r.data ? *r.data : runCalibrationData(project, loaded.runId);
    const auto tokenizer = Tokenizer::loadForModel(loaded.modelDir);
    const auto stream = data.load(*loaded.model, tokenizer.get(), r.seqLen, r.progress, r.cancel);
    ConversionProfileOptions po;
    po.seqLen = r.seqLen;
    po.bins = r.bins;
    po.sensitivityTokens = r.sensitivityTokens;
    po.spillDir = project.absolutePath("scratch"); // activations beyond the budget, as convert does
    po.memoryBudget = loaded.model->memoryBudget();
    ProjectProfileResult out;
    out.runId = loaded.runId;
    out.data = data.describe();
    out.profiles = profileConversion(*loaded.model, loaded.layers, loaded.runId, stream, po, r.cancel, r.progress);
    for (const auto& p : out.profiles)
        project.saveRoutingProfile(p);
    return out;
}

} // namespace ladimo::core

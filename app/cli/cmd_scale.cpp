// `ladimo capture` and `ladimo assemble`: the two ends of a conversion spread over processes or
// machines (the design is in core/store/assemble.h). capture writes the dense model's FFN
// inputs/outputs of a layer range to the project folder, so workers need no dense forward pass;
// assemble is the single writer that verifies and records what the workers left.
#include <cstdio>
#include <set>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "convert/activations.h"
#include "convert/convert.h"
#include "store/assemble.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

void registerCaptureCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        std::string project;
        std::string layers;
        int64_t seqLen = 256;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("capture",
                                   "Capture every (or --layers) layer's dense FFN input and output on the calibration "
                                   "data into the project folder, for ladimo convert to reuse");
    o->model.add(cmd);
    o->data.add(cmd);
    cmd->add_option("--project", o->project, "Project file (*.ladimo), created when absent")->required();
    cmd->add_option("--layers", o->layers, "Only these layers (A, A-B, 0-3,6)");
    cmd->add_option("--seq-len", o->seqLen, "Calibration window length (as for convert)")->capture_default_str();
    cmd->callback([o] {
        if (!isProjectFile(o->project))
            throw core::Error("--project must name a *.ladimo file, got '" + o->project + "'");
        const auto source = describeSourceModel(o->model.path);
        auto model = o->model.load();
        const int L = static_cast<int>(model.config().numLayers);
        std::set<int> layers;
        for (int l = 0; l < L; ++l)
            layers.insert(l);
        if (!o->layers.empty())
            layers = parseLayerSpec(o->layers, L);
        ProgressPrinter printer;
        const auto tokens
            = o->data.load(model, core::Tokenizer::loadForModel(o->model.path).get(), o->seqLen, printer.fn());
        const auto cal = calibrationRecord(o->data, tokens, o->seqLen);

        // The calibration set names the folder; record it (as a writer, briefly) when it is new.
        int64_t calId = 0;
        if (fs::exists(o->project)) {
            auto p = core::Project::open(o->project, {core::Project::Access::ReadOnly, core::Project::Verify::None});
            calId = core::findCalibrationSet(p, cal);
        }
        if (!calId) {
            auto p = fs::exists(o->project)
                ? core::Project::open(o->project, {core::Project::Access::ReadWrite, core::Project::Verify::None})
                : core::Project::create(o->project);
            calId = core::findCalibrationSet(p, cal);
            if (!calId)
                calId = p.addCalibrationSet(cal);
        }
        auto project = core::Project::open(o->project, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        core::WorkerLock lock(project.dataDir());
        const core::CaptureKey key{source.weightsSha256, core::tokenStreamSha256(tokens), o->seqLen};
        std::set<int> todo;
        for (int l : layers) {
            torch::Tensor x, y;
            std::string why;
            if (!core::loadActivations(project.absolutePath(core::Project::activationsPath(calId, l)), l, key, &x, &y,
                                       &why))
                todo.insert(l);
        }
        if (!todo.empty()) {
            std::vector<torch::Tensor> xs, ys;
            core::CaptureOptions co;
            co.upToLayer = *todo.rbegin();
            co.only = todo;
            core::captureFfn(model, tokens, o->seqLen, &xs, &ys, co);
            interruptToken().throwIfCancelled();
            for (int l : todo)
                core::saveActivations(project.prepareFile(core::Project::activationsPath(calId, l)), l,
                                      xs[static_cast<std::size_t>(l)], ys[static_cast<std::size_t>(l)], key);
        }
        std::printf("captured layers %s (%s already there) of %lld tokens into %s\n", describeLayers(todo).c_str(),
                    describeLayers([&] {
                        std::set<int> had;
                        for (int l : layers)
                            if (!todo.count(l))
                                had.insert(l);
                        return had;
                    }())
                        .c_str(),
                    (long long)tokens.size(), (project.dataDir() / ("activations/" + std::to_string(calId))).c_str());
    });
}

void registerAssembleCommand(CLI::App& app)
{
    struct Opts {
        std::string project;
        int64_t run = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("assemble",
                                   "Verify and record the layers that `ladimo convert --layers` workers finished");
    cmd->add_option("project", o->project, "Project file (*.ladimo)")->required();
    cmd->add_option("--run", o->run, "Conversion run (default: the latest)");
    cmd->callback([o] {
        auto project
            = core::Project::open(o->project, {core::Project::Access::ReadWrite, core::Project::Verify::Exists});
        int64_t runId = o->run;
        if (!runId) {
            const auto latest = project.latestRunId();
            if (!latest)
                throw core::Error(o->project + ": no conversion run to assemble");
            runId = *latest;
        }
        if (!core::WorkerLock::whileNoWorkers(project.dataDir(), [] {}))
            std::fprintf(stderr, "note: workers are still running on %s; assembling the layers finished so far\n",
                         o->project.c_str());
        const auto r = core::assembleRun(project, runId);
        const auto text = [](const std::vector<int>& v) { return describeLayers(std::set<int>(v.begin(), v.end())); };
        std::printf("run #%lld: recorded layers [%s] from workers, [%s] recorded before, [%s] missing\n",
                    (long long)runId, text(r.recorded).c_str(), text(r.alreadyDone).c_str(), text(r.missing).c_str());
        if (!r.runFinished)
            throw core::Error(o->project + ": run #" + std::to_string(runId) + " is not complete: layers "
                              + text(r.missing) + " have no result yet (run their workers, then assemble again)");
        std::printf("run #%lld of %s is complete\n", (long long)runId, o->project.c_str());
    });
}

} // namespace ladimo::cli

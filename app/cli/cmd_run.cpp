// `ladimo run MODEL --out DIR`: the whole pipeline over one project (core/project/run.h):
// calibration, convert, profile, policy search and refinement for a parameter budget, evaluation
// of dense and converted on held-out data, export, and a short report. A rerun resumes.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "export/formats.h"
#include "model/device.h"
#include "project/run.h"

namespace ladimo::cli {

void registerRunCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions calibration;
        DataOptions evaluation;
        core::PipelineRequest request;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    o->calibration.selfSample = core::kDefaultCalibration.selfSample;
    auto* cmd = app.add_subcommand(
        "run",
        "The whole pipeline in one resumable command: convert, profile, search and refine a policy for a "
        "parameter budget, evaluate against dense on held-out data, export, report");
    o->model.add(cmd);
    cmd->add_option("--out", o->request.outDir,
                    "Output folder: the export (model/), report.json and, by default, the "
                    "project (project.ladimo)")
        ->required();
    cmd->add_option("--project", o->request.convert.projectFile, "Project file (*.ladimo; default OUT/project.ladimo)");
    cmd->add_option("--budget-params", o->request.budgetParams,
                    "Activated FFN parameters, router included, as a fraction of the dense FFN's")
        ->capture_default_str()
        ->check(CLI::Range(0.01, 1.0));
    cmd->add_option("--rules", o->request.rules, "Rule kinds searched: static, threshold or both")
        ->capture_default_str();
    cmd->add_option("--refine-evals", o->request.refineEvaluations,
                    "Policies measured (NLL on the calibration data) to refine the search's choice; 0 = none")
        ->capture_default_str();
    // Calibration (stage 1): the options of `ladimo convert`.
    cmd->add_option("--data", o->calibration.file,
                    "Calibration data: .txt, .u16, .u32 or .jsonl (default: self-sample)");
    cmd->add_option("--self-sample", o->calibration.selfSample, "Calibration: N tokens sampled from the dense model")
        ->capture_default_str();
    cmd->add_option("--seed", o->calibration.seed, "Seed of the self-sampled calibration tokens")
        ->capture_default_str();
    cmd->add_option("--max-tokens", o->calibration.maxTokens, "Use at most N calibration tokens (0 = all)")
        ->capture_default_str();
    cmd->add_option("--eval-data", o->evaluation.file,
                    "Held-out evaluation data (default: as many self-sampled tokens as calibration, another seed)");
    cmd->add_option("--eval-tokens", o->evaluation.maxTokens, "Use at most N evaluation tokens (0 = all)")
        ->capture_default_str();
    auto& s = o->request.convert.settings;
    cmd->add_option("--experts", s.experts, "Experts per layer")->capture_default_str();
    cmd->add_option("--shared-neurons", s.sharedNeurons,
                    "Always-on neurons per layer (a shared expert every token runs), chosen from the calibration "
                    "tokens; the rest form the experts")
        ->capture_default_str();
    cmd->add_option("--partition", o->request.convert.partition, "coact, contiguous or weights")->capture_default_str();
    cmd->add_option("--gating", o->request.convert.gating, "hard, renorm or plain")->capture_default_str();
    cmd->add_option("--train-top-k", s.distill.trainTopK,
                    "Experts per token while distilling (0: the most that fit in --train-active)")
        ->capture_default_str();
    cmd->add_option("--e2e-steps", s.endToEnd.steps,
                    "End-to-end stage after the layers: steps of KL(dense || converted) on the calibration windows "
                    "(0: none; needs the model in memory)")
        ->capture_default_str();
    auto* trainActive
        = cmd->add_option("--train-active", s.trainActive,
                          "With --train-top-k 0: the share of the dense FFN's parameters a token activates while "
                          "distilling, router included (default: --budget-params)");
    cmd->add_option("--epochs", s.distill.epochs, "Distillation epochs")->capture_default_str();
    cmd->add_option("--seq-len", s.seqLen, "Window length (calibration, profile, evaluation)")->capture_default_str();
    cmd->add_option("--format", o->request.exportFormat, "Export format: " + core::exportFormatNames(true))
        ->capture_default_str();
    cmd->add_option("--export-dtype", o->request.exportDtype, "Export dtype: f32, bf16 or f16")->capture_default_str();
    cmd->add_flag("--json", o->json, "Print the report as JSON (as OUT/report.json holds it)");
    cmd->callback([o, trainActive] {
        auto& r = o->request;
        r.trainAtBudget = trainActive->count() == 0;
        if (!core::exportFormat(r.exportFormat).moe)
            throw core::Error("--format must write the conversion (" + core::exportFormatNames(true) + "), got '"
                              + r.exportFormat + "'");
        auto& c = r.convert;
        c.modelDir = o->model.path;
        c.load = o->model.loadOptions();
        c.settings.partition = core::parsePartition(c.partition);
        c.settings.gating = core::parseGating(c.gating);
        c.settings.devices = core::parseDevices(o->model.device);
        c.data = o->calibration.source();
        if (!o->calibration.file.empty())
            c.data.selfSample = 0;
        if (!o->evaluation.file.empty())
            r.evaluation = core::DataSource{o->evaluation.file, 0, 1234, o->evaluation.maxTokens};
        else if (o->evaluation.maxTokens > 0)
            r.evaluation = core::DataSource{"", o->evaluation.maxTokens, c.data.seed + 1, 0};
        ProgressPrinter printer;
        r.progress = printer.fn();
        r.cancel = interruptToken();
        r.onStep = [](const std::string& step, const std::string& line) {
            std::fprintf(stderr, "\n== %s: %s\n", step.c_str(), line.c_str());
        };
        const auto report = core::runPipeline(r);
        if (o->json) {
            auto j = report.toJson();
            addPeakRss(j);
            std::cout << j.dump(2) << "\n";
            return;
        }
        std::printf("%s", report.describe().c_str());
    });
}

} // namespace ladimo::cli

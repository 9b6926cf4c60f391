// `ladimo project init|show|verify`: create a workbench project for a model, print what a
// project holds (for people, or --json for scripts), check its tensor files.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "project/convert.h"
#include "common/fileutil.h"
#include "model/config.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

namespace {

std::string optionalNumber(const std::optional<double>& v)
{
    if (!v)
        return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", *v);
    return buf;
}

nlohmann::json projectJson(core::Project& p, std::optional<int64_t> runId, const core::VerifyReport& report)
{
    nlohmann::json j;
    j["file"] = p.file().string();
    j["folder"] = p.dataDir().string();
    j["project"] = core::toJson(p.info());
    j["models"] = nlohmann::json::array();
    for (const auto& m : p.models())
        j["models"].push_back(core::toJson(m));
    j["model"] = j["models"].empty() ? nlohmann::json() : j["models"].back();
    j["calibration_sets"] = nlohmann::json::array();
    for (const auto& c : p.calibrationSets())
        j["calibration_sets"].push_back(core::toJson(c));
    j["runs"] = nlohmann::json::array();
    for (const auto& r : p.runs())
        j["runs"].push_back(core::toJson(r));
    j["run"] = nullptr;
    j["layers"] = nlohmann::json::array();
    if (runId) {
        const auto snap = p.snapshot(*runId);
        j["run"] = core::toJson(snap.run);
        for (std::size_t i = 0; i < snap.layers.size(); ++i) {
            auto l = core::toJson(snap.layers[i]);
            l["loss_curve_points"] = snap.lossCurves[i].size();
            j["layers"].push_back(std::move(l));
        }
        j["routing_profiles"] = nlohmann::json::array();
        for (const auto& prof : p.routingProfiles(*runId))
            j["routing_profiles"].push_back({{"layer", prof.layer},
                                             {"tokens", prof.tokens},
                                             {"entropy", prof.entropy},
                                             {"error_by_k", prof.errorByK},
                                             {"expert_load", prof.expertLoad}});
    }
    j["policies"] = nlohmann::json::array();
    for (const auto& pol : p.policies())
        j["policies"].push_back(core::toJson(pol));
    j["evaluations"] = nlohmann::json::array();
    for (const auto& e : p.evaluations())
        j["evaluations"].push_back(core::toJson(e));
    j["exports"] = nlohmann::json::array();
    for (const auto& x : p.exports())
        j["exports"].push_back(core::toJson(x));
    j["problems"] = nlohmann::json::array();
    for (const auto& prob : report.problems)
        j["problems"].push_back({{"run_id", prob.runId},
                                 {"layer", prob.layer},
                                 {"path", prob.path},
                                 {"kind",
                                  prob.kind == core::VerifyProblem::Kind::Missing       ? "missing"
                                      : prob.kind == core::VerifyProblem::Kind::Corrupt ? "corrupt"
                                                                                        : "bad_path"}});
    return j;
}

void printText(core::Project& p, std::optional<int64_t> runId, const core::VerifyReport& report)
{
    std::ostringstream out;
    const auto info = p.info();
    out << "project   " << p.file().string() << " (schema " << info.schemaVersion << ", created " << info.created
        << " by ladimo " << info.toolVersion << ")\n";
    out << "folder    " << p.dataDir().string() << "\n";
    for (const auto& m : p.models())
        out << "model     #" << m.id << " " << m.path << "  " << m.totalParams << " parameters (FFN " << m.ffnParams
            << "), weights sha256 " << m.weightsSha256.substr(0, 16) << "\n";
    for (const auto& c : p.calibrationSets()) {
        out << "calib     #" << c.id << " " << c.name << " [" << c.split << "] " << c.tokens << " tokens, ";
        if (c.source == core::CalibrationSource::File)
            out << "file " << c.filePath << "\n";
        else
            out << "self-sampled, seed " << c.seed << "\n";
    }
    for (const auto& r : p.runs())
        out << "run       #" << r.id << " " << core::runStatusName(r.status) << "  " << r.experts << " experts x "
            << r.expertSize << ", " << r.partition << ", " << r.gating << " gating, train top-" << r.trainTopK << ", "
            << r.epochs << " epochs, lr " << r.lr << ", batch " << r.batch << ", " << r.mode << ", " << r.device
            << ", seed " << r.seed << "  started " << r.started
            << (r.finished.empty() ? "" : ", finished " + r.finished) << "\n";
    if (runId) {
        const auto snap = p.snapshot(*runId);
        out << "\nlayers of run #" << *runId << ":\n  layer  status   final_loss  rel_error  seconds  curve  file\n";
        for (std::size_t i = 0; i < snap.layers.size(); ++i) {
            const auto& l = snap.layers[i];
            char line[256];
            std::snprintf(line, sizeof line, "  %5d  %-7s  %10s  %9s  %7s  %5zu  %s\n", l.layer,
                          core::layerStatusName(l.status), optionalNumber(l.finalLoss).c_str(),
                          optionalNumber(l.relativeError).c_str(), optionalNumber(l.wallSeconds).c_str(),
                          snap.lossCurves[i].size(), l.weightsPath.c_str());
            out << line;
            if (!l.failureReason.empty())
                out << "         failed: " << l.failureReason << "\n";
        }
    }
    const auto policies = p.policies();
    if (!policies.empty())
        out << "\n";
    for (const auto& pol : policies)
        out << "policy    #" << pol.id << " " << pol.name << " (" << core::policyOriginName(pol.origin) << ") "
            << pol.rules.dump() << "\n";
    for (const auto& e : p.evaluations())
        out << "eval      #" << e.id << " policy " << (e.policyId ? "#" + std::to_string(e.policyId) : "dense")
            << " on " << e.data << " [" << e.device << ", " << e.timestamp << "] " << e.metrics.dump() << "\n";
    for (const auto& x : p.exports())
        out << "export    #" << x.id << " " << x.format << " -> " << x.path << " (policy "
            << (x.policyId ? "#" + std::to_string(x.policyId) : "-") << ", " << x.created << ")\n";
    if (!report.ok())
        out << "\nproblems (`ladimo project verify --repair` marks these layers pending):\n" << report.describe();
    std::cout << out.str();
}

} // namespace

core::SourceModel describeSourceModel(const std::string& modelDir) { return core::describeSourceModel(modelDir); }

void registerProjectCommand(CLI::App& app)
{
    auto* project = app.add_subcommand("project", "Workbench projects (P.ladimo + folder P.ladimo.d)");
    project->require_subcommand(1);

    struct InitOpts {
        std::string file, model;
    };
    auto init = std::make_shared<InitOpts>();
    auto* initCmd = project->add_subcommand("init", "Create a project for a dense model");
    initCmd->add_option("project", init->file, "Project file to create (*.ladimo)")->required();
    initCmd->add_option("--model", init->model, "Dense model folder (config.json + *.safetensors)")->required();
    initCmd->callback([init] {
        const core::SourceModel m = describeSourceModel(init->model);
        auto p = core::Project::create(init->file);
        p.addModel(m);
        std::cout << "created " << init->file << " (folder " << p.dataDir().string() << ") for " << m.path << "\n";
    });

    struct ShowOpts {
        std::string file;
        bool json = false;
        int64_t run = 0;
    };
    auto show = std::make_shared<ShowOpts>();
    auto* showCmd = project->add_subcommand("show", "Print what a project holds (latest conversion run's layers)");
    showCmd->add_option("project", show->file, "Project file (*.ladimo)")->required();
    showCmd->add_flag("--json", show->json, "Machine-readable output");
    showCmd->add_option("--run", show->run, "Conversion run to list layers of (default: the latest)");
    showCmd->callback([show] {
        // Read-only and without the open-time file check, so a damaged project can be inspected;
        // missing files are listed as problems instead.
        auto p = core::Project::open(show->file, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        std::optional<int64_t> run = show->run ? std::optional<int64_t>(show->run) : p.latestRunId();
        if (run)
            (void)p.run(*run); // Error naming the run when it does not exist
        const auto report = p.verify(core::Project::Verify::Exists);
        if (show->json)
            std::cout << projectJson(p, run, report).dump(2) << "\n";
        else
            printText(p, run, report);
    });

    struct VerifyOpts {
        std::string file;
        bool repair = false;
    };
    auto verify = std::make_shared<VerifyOpts>();
    auto* verifyCmd = project->add_subcommand("verify", "Check every layer file's SHA-256");
    verifyCmd->add_option("project", verify->file, "Project file (*.ladimo)")->required();
    verifyCmd->add_flag("--repair", verify->repair, "Mark layers with missing or corrupt files pending for a rerun");
    verifyCmd->callback([verify] {
        const auto access = verify->repair ? core::Project::Access::ReadWrite : core::Project::Access::ReadOnly;
        auto p = core::Project::open(verify->file, {access, core::Project::Verify::None});
        const auto report = p.verify(core::Project::Verify::Checksums);
        if (report.ok()) {
            std::cout << "ok: every layer file is present and matches its checksum\n";
            return;
        }
        std::cout << report.describe();
        if (!verify->repair)
            throw core::Error(std::to_string(report.problems.size()) + " layer file(s) missing or corrupt in '"
                              + verify->file + "' (rerun with --repair to mark them pending)");
        p.resetLayers(report);
        std::cout << "marked " << report.problems.size()
                  << " layer(s) pending; a rerun of the conversion redoes them\n";
    });
}

} // namespace ladimo::cli

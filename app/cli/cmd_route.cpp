// `ladimo route P.ladimo --prompt TEXT | --data FILE | --ids I,J,..`: which experts every token
// used in every layer of the project's latest conversion under a policy, with their weights, the
// parameters each token cost and its KL to the dense model (core/project/route.h).
#include <cstdio>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/parse.h"
#include "project/route.h"

namespace ladimo::cli {

namespace {

// A token's text on one line of the table: control characters escaped, at most `width` bytes.
std::string shown(const std::string& text, std::size_t width)
{
    std::string out;
    for (unsigned char c : text) {
        if (c == '\n')
            out += "\\n";
        else if (c < 0x20)
            out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
        else
            out += static_cast<char>(c);
    }
    if (out.size() > width)
        out = out.substr(0, width - 1) + "~";
    return "'" + out + "'";
}

} // namespace

void registerRouteCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        std::string prompt;
        std::string ids;
        std::string policy;
        int topK = 0;
        double topP = 0;
        int64_t seqLen = 256;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand(
        "route", "Per token and layer: the experts chosen, their weights, the compute and the KL to dense");
    cmd->add_option("project", o->model.path, "Project file (*.ladimo) with a finished conversion run")->required();
    o->model.add(cmd, /*positional=*/false);
    auto* p = cmd->add_option("--prompt", o->prompt, "Text to route (needs a tokenizer); BOS is added");
    auto* i = cmd->add_option("--ids", o->ids, "Token ids to route, comma-separated, used as given");
    p->excludes(i);
    o->data.add(cmd);
    cmd->add_option("--policy", o->policy, "A stored per-layer policy (`ladimo policy --list`)");
    cmd->add_option("--top-k", o->topK, "Uniform top-k in every layer (default: the training k)");
    cmd->add_option("--top-p", o->topP, "Uniform token-adaptive top-p in every layer");
    cmd->add_option("--seq-len", o->seqLen, "Window length: longer inputs are cut as `ladimo eval` cuts them")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output, every token and layer");
    cmd->callback([o, p] {
        if (!isProjectFile(o->model.path))
            throw core::Error("route needs a project file (*.ladimo), got '" + o->model.path + "'");
        if (p->count() > 0 && o->prompt.find_first_not_of(" \t\r\n") == std::string::npos)
            throw core::Error("--prompt is empty (expected some text to route)");
        core::ProjectRouteRequest req;
        req.projectFile = o->model.path;
        req.load = o->model.loadOptions();
        req.hints = convertedHints(o->model.path);
        req.text = o->prompt;
        if (!o->ids.empty()) {
            std::stringstream ss(o->ids);
            std::string item;
            while (std::getline(ss, item, ','))
                req.ids.push_back(core::parseInteger(item, "--ids"));
        }
        req.data = o->data.source();
        req.rules.policy = o->policy;
        req.rules.topK = o->topK;
        req.rules.topP = o->topP;
        req.rules.policyHint = " (see ladimo policy --list)";
        req.seqLen = o->seqLen;
        ProgressPrinter printer;
        req.progress = printer.fn();
        req.cancel = interruptToken();
        const auto r = core::routeProject(req);
        if (o->json) {
            auto j = core::routeToJson(r);
            addPeakRss(j);
            std::cout << j.dump(2) << "\n";
            return;
        }
        std::printf("run #%lld, %s: %zu tokens, mean k %.2f of %lld experts, activated FFN %.1f%% of dense, KL to "
                    "dense %.5f\n",
                    (long long)r.runId, r.label.c_str(), r.tokens.size(), r.meanK, (long long)r.experts,
                    100 * r.activatedFfnFraction(), r.meanKlToDense);
        std::printf("%5s  %-14s %6s %10s %9s  experts per layer (by weight)\n", "pos", "token", "mean k", "params",
                    "KL");
        for (const auto& t : r.tokens) {
            std::string experts;
            for (std::size_t l = 0; l < t.layers.size(); ++l) {
                experts += l ? " | " : "";
                for (std::size_t e = 0; e < t.layers[l].experts.size(); ++e)
                    experts += (e ? "," : "") + std::to_string(t.layers[l].experts[e]);
            }
            std::printf("%5lld  %-14s %6.2f %10lld %9.5f  %s\n", (long long)(t.window * o->seqLen + t.position),
                        shown(t.text, 12).c_str(), t.meanK, (long long)t.parameters, t.klToDense, experts.c_str());
        }
    });
}

} // namespace ladimo::cli

#include "project/route.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "convert/convert.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/tokendata.h"
#include "store/project.h"

namespace ladimo::core {

int RouteModel::layers() const { return static_cast<int>(run.layers.size()); }
int64_t RouteModel::experts() const { return run.layers.numExperts(); }

double RouteResult::activatedFfnFraction() const
{
    if (tokens.empty() || denseFfnParameters == 0)
        return 0;
    return static_cast<double>(parameters)
        / (static_cast<double>(tokens.size()) * static_cast<double>(denseFfnParameters));
}

std::shared_ptr<const RouteModel> loadRouteModel(const std::string& projectFile, const LoadOptions& load,
                                                 const LatestRunHints& hints)
{
    auto m = std::make_shared<RouteModel>();
    m->projectFile = projectFile;
    m->run = loadLatestRun(projectFile, load, hints);
    m->tokenizer = Tokenizer::loadForModel(m->run.modelDir);
    auto project = Project::open(projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
    m->policies = project.policies();
    return m;
}

PolicyRules resolveRouteRules(const RouteModel& model, const RouteRuleChoice& c, std::string* label)
{
    const int L = model.layers();
    const int64_t N = model.experts();
    const int given = (c.policy.empty() ? 0 : 1) + (c.rules ? 1 : 0) + (c.topK > 0 ? 1 : 0) + (c.topP > 0 ? 1 : 0);
    if (given > 1)
        throw Error("give one of a policy, explicit rules, a top-k or a top-p, not several");
    std::string what;
    PolicyRules rules;
    if (!c.policy.empty()) {
        std::string names;
        for (const auto& p : model.policies) {
            if (p.name == c.policy) {
                rules = policyRules(p, L, N);
                what = "policy " + p.name;
            }
            names += (names.empty() ? "" : ", ") + p.name;
        }
        if (what.empty())
            throw Error(model.projectFile + " has no policy named '" + c.policy
                        + "' (expected one of: " + (names.empty() ? "none stored yet" : names) + ")" + c.policyHint);
    } else if (c.rules) {
        if (static_cast<int>(c.rules->size()) != L)
            throw Error("routing rules: " + std::to_string(c.rules->size()) + " rules, expected one per layer ("
                        + std::to_string(L) + ")");
        rules = rulesFromJson(rulesToJson(*c.rules), L, N, "routing rules"); // validated
        what = "explicit rules";
    } else if (c.topP > 0) {
        if (c.topP > 1)
            throw Error("top-p " + std::to_string(c.topP) + " is out of range (expected 0 < p <= 1)");
        rules = uniformRules(L, RoutingRule::topP(c.topP));
        what = "uniform top-p " + std::to_string(c.topP);
    } else {
        const int k = c.topK > 0 ? c.topK : model.run.trainTopK();
        if (k < 1 || k > N)
            throw Error("top-k " + std::to_string(k) + " is out of range: the run has " + std::to_string(N)
                        + " experts per layer (expected 1.." + std::to_string(N) + ")");
        rules = uniformRules(L, RoutingRule::staticK(k));
        what = "uniform top-" + std::to_string(k);
    }
    if (label)
        *label = what;
    return rules;
}

std::vector<int64_t> tokensOfText(const RouteModel& model, const std::string& text)
{
    if (text.find_first_not_of(" \t\r\n") == std::string::npos)
        throw Error("the prompt is empty (expected some text to route)");
    if (!model.tokenizer)
        throw Error(model.run.modelDir + " has no tokenizer (tokenizer.model or tokenizer.json): give token ids");
    std::vector<int64_t> ids;
    const auto bos = model.run.model->config().bosTokenId;
    if (bos >= 0)
        ids.push_back(bos);
    for (int id : model.tokenizer->encode(text))
        ids.push_back(id);
    return ids;
}

std::string tokenText(const RouteModel& model, int64_t id)
{
    if (!model.tokenizer || id < 0 || id >= model.tokenizer->vocabSize())
        return "#" + std::to_string(id);
    const int i = static_cast<int>(id);
    std::string piece = model.tokenizer->piece(i);
    if (model.tokenizer->tokenType(i) == Tokenizer::TokenType::Byte && piece.size() == 6 && piece.rfind("<0x", 0) == 0)
        return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    const std::string marker = "\xe2\x96\x81"; // U+2581, SentencePiece's word boundary
    for (std::size_t at = piece.find(marker); at != std::string::npos; at = piece.find(marker, at + 1))
        piece.replace(at, marker.size(), " ");
    return piece;
}

namespace {

// One window through the dense model and the converted one; appends its tokens to `out`.
void routeWindow(const RouteModel& model, const std::vector<int64_t>& window, int64_t windowIndex,
                 const PolicyRules& rules, RouteResult& out, double* klScored, int64_t* scored)
{
    const auto& dense = *model.run.model;
    const int L = model.layers();
    const int64_t T = static_cast<int64_t>(window.size());
    const auto ids = torch::tensor(window, torch::kInt64).view({1, T});
    const auto denseLogits = dense.forward(ids);
    // Per layer what the block's own routing chose and its output, then the dense FFN's output on
    // the same input (onFfn runs after ffnOverride with that x).
    std::vector<torch::Tensor> masks(static_cast<std::size_t>(L)), weights(static_cast<std::size_t>(L));
    std::vector<torch::Tensor> moeOut(static_cast<std::size_t>(L)), errors(static_cast<std::size_t>(L));
    std::vector<std::vector<int64_t>> params(static_cast<std::size_t>(L));
    ForwardHooks hooks;
    hooks.ffnOverride = [&](int l, const torch::Tensor& x) -> torch::Tensor {
        const auto held = model.run.layers.get(static_cast<std::size_t>(l));
        const auto& layer = *held;
        if (!layer.router.defined())
            return {};
        const auto li = static_cast<std::size_t>(l);
        const auto& rule = rules.at(li);
        const auto flat = x.reshape({-1, x.size(-1)}).contiguous();
        layer.route(layer.routingProbs(flat), rule, &masks[li], &weights[li]);
        params[li] = layer.tokenParameters(masks[li]);
        DispatchStats stats;
        moeOut[li] = layer.forward(x, rule, &stats);
        int64_t counted = 0;
        for (auto p : params[li])
            counted += p;
        if (counted != stats.parameters) // the dispatch routed differently: never expected
            throw Error("route: layer " + std::to_string(l) + " counted " + std::to_string(counted)
                        + " parameters, its dispatch " + std::to_string(stats.parameters));
        return moeOut[li];
    };
    hooks.onFfn = [&](int l, const torch::Tensor&, const torch::Tensor& y) {
        const auto li = static_cast<std::size_t>(l);
        if (!moeOut[li].defined())
            return;
        const auto d = y.reshape({-1, y.size(-1)}).to(torch::kFloat64);
        const auto m = moeOut[li].reshape({-1, y.size(-1)}).to(torch::kFloat64);
        errors[li] = ((m - d).norm(2, -1) / d.norm(2, -1).clamp_min(1e-30)).contiguous();
    };
    const auto convLogits = dense.forward(ids, nullptr, &hooks);
    const auto logpD = torch::log_softmax(denseLogits[0].to(torch::kFloat64), -1);
    const auto logpC = torch::log_softmax(convLogits[0].to(torch::kFloat64), -1);
    const auto kl = (logpD.exp() * (logpD - logpC)).sum(-1).contiguous();
    const auto topD = logpD.argmax(-1).contiguous(), topC = logpC.argmax(-1).contiguous();
    // Read back once, on the CPU: [T, N] masks and weights, [T] errors per layer.
    const int64_t N = model.experts();
    for (std::size_t li = 0; li < masks.size(); ++li)
        if (masks[li].defined()) {
            masks[li] = masks[li].to(torch::kCPU, torch::kBool).contiguous();
            weights[li] = weights[li].to(torch::kCPU, torch::kFloat64).contiguous();
            errors[li] = errors[li].to(torch::kCPU).contiguous();
        }
    const auto klC = kl.to(torch::kCPU).contiguous();
    const auto topDC = topD.to(torch::kCPU).contiguous(), topCC = topC.to(torch::kCPU).contiguous();
    for (int64_t t = 0; t < T; ++t) {
        RouteToken tok;
        tok.id = window[static_cast<std::size_t>(t)];
        tok.text = tokenText(model, tok.id);
        tok.window = windowIndex;
        tok.position = t;
        tok.klToDense = klC.data_ptr<double>()[t];
        tok.denseTop = topDC.data_ptr<int64_t>()[t];
        tok.convertedTop = topCC.data_ptr<int64_t>()[t];
        int moeLayers = 0;
        for (int l = 0; l < L; ++l) {
            const auto li = static_cast<std::size_t>(l);
            RouteLayer rl;
            if (masks[li].defined()) {
                const double* w = weights[li].data_ptr<double>() + t * N;
                const bool* m = masks[li].data_ptr<bool>() + t * N;
                std::vector<std::pair<double, int>> chosen;
                for (int64_t e = 0; e < N; ++e)
                    if (m[e])
                        chosen.emplace_back(w[e], static_cast<int>(e));
                std::stable_sort(chosen.begin(), chosen.end(),
                                 [](const auto& a, const auto& b) { return a.first > b.first; });
                for (const auto& [weight, e] : chosen) {
                    rl.experts.push_back(e);
                    rl.weights.push_back(weight);
                }
                rl.k = static_cast<int>(chosen.size());
                rl.parameters = params[li][static_cast<std::size_t>(t)];
                rl.relativeError = errors[li].defined() ? errors[li].data_ptr<double>()[t] : 0;
                ++moeLayers;
                tok.meanK += rl.k;
            }
            tok.parameters += rl.parameters;
            tok.layers.push_back(std::move(rl));
        }
        tok.meanK = moeLayers > 0 ? tok.meanK / moeLayers : 0;
        if (t + 1 < T) { // the positions evaluation scores
            *klScored += tok.klToDense;
            ++*scored;
        }
        out.parameters += tok.parameters;
        out.tokens.push_back(std::move(tok));
    }
}

} // namespace

RouteResult routeTokens(const RouteModel& model, const std::vector<int64_t>& tokens, const PolicyRules& rules,
                        const RouteOptions& o)
{
    c10::InferenceMode guard; // thread-local: on the calling thread
    const auto& config = model.run.model->config();
    if (tokens.empty())
        throw Error("no tokens to route (expected a prompt or token ids)");
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= config.vocabSize)
            throw Error("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i)
                        + " is outside the model vocabulary (expected 0.." + std::to_string(config.vocabSize - 1)
                        + ")");
    if (static_cast<int>(rules.size()) != model.layers())
        throw Error("routing rules: " + std::to_string(rules.size()) + " rules, expected one per layer ("
                    + std::to_string(model.layers()) + ")");
    if (o.seqLen < 1 || o.seqLen > config.maxPositions)
        throw Error("--seq-len " + std::to_string(o.seqLen) + " is out of range (expected 1.."
                    + std::to_string(config.maxPositions) + ")");
    // Windows as evaluation cuts them, so totals compare; a lone token is routed on its own.
    auto windows = cutWindows(tokens, o.seqLen);
    if (windows.empty())
        windows.push_back(tokens);
    RouteResult r;
    r.runId = model.run.runId;
    r.rules = rules;
    r.experts = model.experts();
    r.denseFfnParameters = static_cast<int64_t>(config.numLayers) * 3 * config.hiddenSize * config.intermediateSize;
    double klSum = 0;
    int64_t scored = 0;
    for (std::size_t w = 0; w < windows.size(); ++w) {
        o.cancel.throwIfCancelled();
        routeWindow(model, windows[w], static_cast<int64_t>(w), rules, r, &klSum, &scored);
        if (o.progress)
            o.progress("route", static_cast<double>(w + 1), static_cast<double>(windows.size()));
    }
    double kSum = 0;
    for (const auto& t : r.tokens)
        kSum += t.meanK;
    r.meanK = kSum / static_cast<double>(r.tokens.size());
    r.meanKlToDense = scored > 0 ? klSum / static_cast<double>(scored) : 0;
    return r;
}

RouteResult routeProject(const ProjectRouteRequest& q)
{
    const int sources
        = (q.text.empty() ? 0 : 1) + (q.ids.empty() ? 0 : 1) + (q.data.file.empty() && q.data.selfSample <= 0 ? 0 : 1);
    if (sources != 1)
        throw Error(sources == 0 ? "nothing to route: give a prompt, token ids or a data file"
                                 : "give one of a prompt, token ids or a data file, not several");
    if (q.seqLen < 1)
        throw Error("--seq-len " + std::to_string(q.seqLen) + " is out of range (expected at least 1)");
    const auto model = loadRouteModel(q.projectFile, q.load, q.hints);
    std::string label;
    const auto rules = resolveRouteRules(*model, q.rules, &label);
    std::vector<int64_t> tokens;
    if (!q.text.empty()) {
        tokens = tokensOfText(*model, q.text);
    } else if (!q.ids.empty()) {
        tokens = q.ids;
    } else {
        c10::InferenceMode guard;
        tokens = q.data.load(*model->run.model, model->tokenizer.get(), q.seqLen, q.progress, q.cancel);
    }
    RouteOptions o;
    o.seqLen = q.seqLen;
    o.progress = q.progress;
    o.cancel = q.cancel;
    auto r = routeTokens(*model, tokens, rules, o);
    r.label = label;
    return r;
}

nlohmann::json routeToJson(const RouteResult& r)
{
    nlohmann::json tokens = nlohmann::json::array();
    for (const auto& t : r.tokens) {
        nlohmann::json layers = nlohmann::json::array();
        for (const auto& l : t.layers)
            layers.push_back({{"experts", l.experts},
                              {"weights", l.weights},
                              {"k", l.k},
                              {"activated_ffn_parameters", l.parameters},
                              {"relative_error", l.relativeError}});
        tokens.push_back({{"id", t.id},
                          {"text", t.text},
                          {"window", t.window},
                          {"position", t.position},
                          {"mean_k", t.meanK},
                          {"activated_ffn_parameters", t.parameters},
                          {"kl_to_dense", t.klToDense},
                          {"dense_top", t.denseTop},
                          {"converted_top", t.convertedTop},
                          {"layers", layers}});
    }
    return {{"run_id", r.runId},
            {"policy", r.label},
            {"rules", rulesToJson(r.rules)},
            {"experts", r.experts},
            {"tokens", static_cast<int64_t>(r.tokens.size())},
            {"dense_ffn_parameters_per_token", r.denseFfnParameters},
            {"activated_ffn_parameters", r.parameters},
            {"activated_ffn_fraction", r.activatedFfnFraction()},
            {"mean_k", r.meanK},
            {"kl_to_dense", r.meanKlToDense},
            {"per_token", tokens}};
}

std::vector<int64_t> generateWith(const RouteModel& model, const std::vector<int64_t>& prompt, const PolicyRules* rules,
                                  const PlaygroundGenerateOptions& o)
{
    if (prompt.empty())
        throw Error("the prompt is empty (expected some text to continue)");
    ForwardHooks hooks;
    if (rules)
        hooks = moeHooks(model.run.layers, *rules);
    GenerateOptions g;
    g.maxNew = o.maxNew;
    g.temperature = o.temperature;
    g.seed = o.seed;
    g.stopId = o.stopAtEos && model.tokenizer ? model.tokenizer->eosId() : -1;
    g.hooks = rules ? &hooks : nullptr;
    g.cancel = o.cancel;
    if (o.onToken)
        g.onTokens = [&](const std::vector<int64_t>& next) {
            if (next.front() >= 0)
                o.onToken(next.front());
        };
    return generate(*model.run.model, {prompt}, g).front();
}

} // namespace ladimo::core

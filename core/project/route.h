// `ladimo route P.ladimo` and the workbench's Playground: a text or token ids through the dense
// model and the project's latest conversion run under a policy, token by token. Per token and
// layer: the experts the MoE block's own routing (MoeLayer::route) chose, their weights, k, the
// expert parameters the token touched (counted as evaluation counts them) and the layer's
// relative output error against the dense FFN on the same input; per token the KL(dense ||
// converted) of the next-token distributions and both models' top next token. The converted
// model's layers see the converted model's own hidden states (the FFN hooks evaluation uses).
// Also generation with either model for the Playground (streamed, cancellable).
// Runs on the calling thread (InferenceMode is taken here); a loaded RouteModel may be shared by
// several threads (weights are read only).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/datasource.h"
#include "convert/latestrun.h"
#include "model/tokenizer.h"
#include "routing/policy.h"

namespace ladimo::core {

// A project's latest run loaded once (dense model, MoE layers, tokenizer) for routing and
// generating many times, as the Playground does.
struct RouteModel {
    std::string projectFile;
    LatestRun run;
    std::shared_ptr<const Tokenizer> tokenizer; // null for token-id-only models
    std::vector<Policy> policies;               // the project's stored policies when loaded
    int layers() const;
    int64_t experts() const;
};
std::shared_ptr<const RouteModel> loadRouteModel(const std::string& projectFile, const LoadOptions& load,
                                                 const LatestRunHints& hints = {});

// Which rules route: a stored policy by name, explicit rules, a uniform top-p, a uniform top-k,
// or (none of them) the run's training k in every layer.
struct RouteRuleChoice {
    std::string policy;               // a stored policy of the project
    std::optional<PolicyRules> rules; // e.g. the Policy view's unsaved edits
    int topK = 0;                     // uniform top-k
    double topP = 0;                  // > 0: uniform top-p
    std::string policyHint;           // appended to the unknown-policy error
};
// The rules and a label ("policy X", "uniform top-4", "explicit rules"); throws Error naming the
// known policies for an unknown name and the valid range for a bad k.
PolicyRules resolveRouteRules(const RouteModel& model, const RouteRuleChoice& choice, std::string* label = nullptr);

// BOS (when the model has one) followed by the text's tokens; Error for an empty text or a model
// without tokenizer.
std::vector<int64_t> tokensOfText(const RouteModel& model, const std::string& text);
// The text of one token as it reads in a sentence (SentencePiece's word marker as a space, byte
// tokens as their byte); "#id" without a tokenizer.
std::string tokenText(const RouteModel& model, int64_t id);

struct RouteLayer {
    std::vector<int> experts;    // chosen experts, by descending weight
    std::vector<double> weights; // their routing weights (gating applied), same order
    int k = 0;                   // experts chosen (top-p rules vary it per token)
    int64_t parameters = 0;      // expert parameters touched (MoeLayer::tokenParameters)
    double relativeError = 0;    // |moe(x) - ffn(x)| / |ffn(x)| on the converted model's x
};

struct RouteToken {
    int64_t id = 0;
    std::string text;     // tokenText
    int64_t window = 0;   // which window of seqLen tokens (positions restart in each)
    int64_t position = 0; // within the window
    std::vector<RouteLayer> layers;
    int64_t parameters = 0; // sum over layers
    double meanK = 0;       // mean over the layers with an MoE block
    double klToDense = 0;   // KL(dense || converted) of the next-token distributions
    int64_t denseTop = 0;   // each model's most likely next token
    int64_t convertedTop = 0;
};

struct RouteResult {
    int64_t runId = 0;
    std::string label; // resolveRouteRules' label
    PolicyRules rules;
    int64_t experts = 0;
    int64_t denseFfnParameters = 0; // per token, every layer: layers x 3 x hidden x intermediate
    std::vector<RouteToken> tokens;
    int64_t parameters = 0; // total over every token and layer (what evaluation counts)
    double meanK = 0;
    // Mean KL over the positions evaluation scores (all but each window's last): equal to
    // `ladimo eval`'s kl_to_dense on the same tokens and windows.
    double meanKlToDense = 0;
    double activatedFfnFraction() const;
};

struct RouteOptions {
    int64_t seqLen = 256; // windows as evaluation cuts them (model/tokendata.h cutWindows)
    ProgressFn progress;  // ("route", windows done, windows)
    CancelToken cancel;
};

// Routes `tokens` (ids < vocabulary, else an Error naming the id and its position) under `rules`.
RouteResult routeTokens(const RouteModel& model, const std::vector<int64_t>& tokens, const PolicyRules& rules,
                        const RouteOptions& options = {});

struct ProjectRouteRequest {
    std::string projectFile;
    LoadOptions load;
    LatestRunHints hints;
    // Exactly one source of tokens: text (BOS + its tokens), ids, or a data file (token or text
    // file as evaluation reads it).
    std::string text;
    std::vector<int64_t> ids;
    DataSource data;
    RouteRuleChoice rules;
    int64_t seqLen = 256;
    ProgressFn progress;
    CancelToken cancel;
};
RouteResult routeProject(const ProjectRouteRequest& request);

// Everything of a result as `ladimo route --json` prints it (documented in docs/FEATURES.md).
nlohmann::json routeToJson(const RouteResult& result);

// Generation for the Playground: the dense model (no rules) or the converted one under `rules`,
// from `prompt` ids, calling onToken(id) for every new token on the calling thread. Stops at the
// tokenizer's EOS (stopAtEos), after maxNew tokens, or throws Cancelled at the next token once cancelled.
struct PlaygroundGenerateOptions {
    int64_t maxNew = 64;
    double temperature = 0.8; // 0 = greedy
    uint64_t seed = 0;
    bool stopAtEos = true; // stop at the tokenizer's end-of-sequence token
    std::function<void(int64_t id)> onToken;
    CancelToken cancel;
};
std::vector<int64_t> generateWith(const RouteModel& model, const std::vector<int64_t>& prompt, const PolicyRules* rules,
                                  const PlaygroundGenerateOptions& options);

} // namespace ladimo::core

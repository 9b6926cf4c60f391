// Stage 2b estimates: instant, pure arithmetic on the stored routing profiles and latency model
// (no model run), so a slider move in the workbench re-estimates in microseconds.
//  - activated FFN parameters per token: exact for static rules (the profile's measured mean of
//    the chosen experts' sizes; with equal experts simply k x expert size), expected value for
//    token-adaptive rules (interpolated on the profile's threshold grid);
//  - error proxy: the layer's relative output error ||MoE(x) - FFN(x)||^2 / ||FFN(x)||^2 on the
//    profile tokens times the layer's measured sensitivity (increase of the NLL of real text per
//    unit of relative error, at least the KL to dense; routing/profile.h layerSensitivity),
//    summed over layers: an additive estimate of the model's NLL increase in nats per token, so
//    exp(proxy) estimates the perplexity ratio to dense. Profiles without a sensitivity weigh
//    every layer 1 (plain error sum);
//  - latency: the latency model's measured time of the block at that k (interpolated at the mean
//    k of adaptive rules) plus the time of everything that is not an FFN.
// Value types and pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "routing/policy.h"
#include "store/records.h"

namespace ladimo::core {

// Measured on one device (routing/latency.h measures it); seconds per forward pass.
struct LatencyModel {
    std::string device;
    int64_t prefillTokens = 0; // tokens of the prefill forward (batch 1)
    int64_t decodeContext = 0; // cached tokens before the measured decode step
    double prefillOther = 0;   // everything but the FFNs: embeddings, attention, norms, head
    double decodeOther = 0;
    double prefillDenseFfn = 0; // one layer's dense FFN
    double decodeDenseFfn = 0;
    std::vector<double> prefillMoe; // [k-1]: one MoE block with static top-k
    std::vector<double> decodeMoe;
    int layers = 0;

    nlohmann::json toJson() const;
    static LatencyModel fromJson(const nlohmann::json& j, const std::string& where);
    double densePrefill() const { return prefillOther + layers * prefillDenseFfn; }
    double denseDecode() const { return decodeOther + layers * decodeDenseFfn; }
};

// What the estimates need of one converted layer, taken from its RoutingProfile.
struct LayerTable {
    int64_t experts = 0;
    double denseParams = 0;         // parameters of the dense FFN (3 x hidden x intermediate)
    std::vector<double> paramsByK;  // [k-1] mean activated expert parameters per token
    std::vector<double> errorByK;   // [k-1]
    std::vector<double> thresholds; // ascending top-p grid
    std::vector<double> meanKByThreshold, paramsByThreshold, errorByThreshold;
    double errorWeight = 1; // NLL increase per unit of relative error ("nll_per_error")
};

struct PolicyTables {
    std::vector<LayerTable> layers;
    std::optional<LatencyModel> latency;
};

// Builds the tables from profiles (one per layer, in order). Errors name the layer and the
// missing measure when a profile predates the measures the estimates need (rerun `ladimo profile`).
PolicyTables policyTables(const std::vector<RoutingProfile>& profiles, std::optional<LatencyModel> latency = {});

struct LayerEstimate {
    double meanK = 0;
    double params = 0;         // mean activated FFN parameters per token
    double error = 0;          // relative output error of the layer
    double proxy = 0;          // its share of the model's error proxy (error x sensitivity)
    double prefillSeconds = 0; // 0 without a latency model
    double decodeSeconds = 0;
    bool approximate = false; // adaptive rule with bounds narrower than 1..N: bounds applied to the mean k
};

struct PolicyEstimate {
    std::vector<LayerEstimate> layers;
    double activatedFfnFraction = 0; // sum of params / sum of dense FFN params (what eval measures)
    double errorProxy = 0;           // sum of layer proxies (estimated NLL increase when profiled with sensitivity)
    bool proxyIsKl = false;          // every layer had a measured sensitivity: the proxy is in nats/token
    bool hasLatency = false;
    double prefillSeconds = 0, decodeSeconds = 0; // whole model, one forward
    double densePrefillSeconds = 0, denseDecodeSeconds = 0;
    double prefillFraction = 0, decodeFraction = 0; // of the dense model
};

class Project;
// The tables of a run from its stored profiles, with the latency model stored for `device`
// (e.g. "cpu", "cuda:0") when there is one.
PolicyTables loadPolicyTables(Project& project, int64_t runId, const std::string& device);
// The same for a device spec as users give it (model/device.h; "auto": the device the model
// would run on): that device's latency model, else the CPU's when the spec is "auto" and the
// project has one, so `ladimo policy` and the workbench estimate latency alike. `device`
// receives the device whose latency model is used ("" when there is none).
PolicyTables loadPolicyTablesFor(Project& project, int64_t runId, const std::string& deviceSpec,
                                 std::string* device = nullptr);

LayerEstimate estimateRule(const PolicyTables& tables, int layer, const RoutingRule& rule);
PolicyEstimate estimatePolicy(const PolicyTables& tables, const PolicyRules& rules);
// Recomputes the totals of `estimate` after its per-layer entries changed (slider moves).
void updateTotals(const PolicyTables& tables, PolicyEstimate& estimate);
nlohmann::json toJson(const PolicyEstimate& e);

} // namespace ladimo::core

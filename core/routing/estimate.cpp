#include "routing/estimate.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "model/device.h"
#include "store/project.h"

namespace ladimo::core {

namespace {

// Linear interpolation of ys over ascending xs at x, clamped to the ends.
double interpolate(const std::vector<double>& xs, const std::vector<double>& ys, double x)
{
    if (xs.empty())
        return 0;
    if (x <= xs.front())
        return ys.front();
    if (x >= xs.back())
        return ys.back();
    const auto hi = static_cast<std::size_t>(std::upper_bound(xs.begin(), xs.end(), x) - xs.begin());
    const std::size_t lo = hi - 1;
    const double t = (x - xs[lo]) / (xs[hi] - xs[lo]);
    return ys[lo] + t * (ys[hi] - ys[lo]);
}

// A per-k table [k-1] read at a fractional k in [1, N].
double atK(const std::vector<double>& byK, double k)
{
    if (byK.empty())
        return 0;
    const double c = std::clamp(k, 1.0, static_cast<double>(byK.size()));
    const auto lo = static_cast<std::size_t>(std::floor(c)) - 1;
    if (lo + 1 >= byK.size())
        return byK.back();
    const double t = c - std::floor(c);
    return byK[lo] + t * (byK[lo + 1] - byK[lo]);
}

std::vector<double> doubles(const nlohmann::json& j, const char* key, std::size_t want, const std::string& where)
{
    if (!j.contains(key) || !j[key].is_array())
        throw Error(where + " has no '" + key + "': rerun `ladimo profile` with this version");
    std::vector<double> out;
    for (const auto& v : j[key]) {
        if (!v.is_number())
            throw Error(where + ": '" + key + "' must hold numbers");
        out.push_back(v.get<double>());
    }
    if (want && out.size() != want)
        throw Error(where + ": '" + key + "' has " + std::to_string(out.size()) + " entries, expected "
                    + std::to_string(want));
    return out;
}

} // namespace

nlohmann::json LatencyModel::toJson() const
{
    return {{"device", device},
            {"layers", layers},
            {"prefill_tokens", prefillTokens},
            {"decode_context", decodeContext},
            {"prefill_other", prefillOther},
            {"decode_other", decodeOther},
            {"prefill_dense_ffn", prefillDenseFfn},
            {"decode_dense_ffn", decodeDenseFfn},
            {"prefill_moe_by_k", prefillMoe},
            {"decode_moe_by_k", decodeMoe}};
}

LatencyModel LatencyModel::fromJson(const nlohmann::json& j, const std::string& where)
{
    LatencyModel m;
    try {
        m.device = j.at("device").get<std::string>();
        m.layers = j.at("layers").get<int>();
        m.prefillTokens = j.at("prefill_tokens").get<int64_t>();
        m.decodeContext = j.at("decode_context").get<int64_t>();
        m.prefillOther = j.at("prefill_other").get<double>();
        m.decodeOther = j.at("decode_other").get<double>();
        m.prefillDenseFfn = j.at("prefill_dense_ffn").get<double>();
        m.decodeDenseFfn = j.at("decode_dense_ffn").get<double>();
        m.prefillMoe = j.at("prefill_moe_by_k").get<std::vector<double>>();
        m.decodeMoe = j.at("decode_moe_by_k").get<std::vector<double>>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": " + e.what());
    }
    if (m.prefillMoe.empty() || m.prefillMoe.size() != m.decodeMoe.size())
        throw Error(where + ": needs one MoE time per k for prefill and decode");
    return m;
}

PolicyTables policyTables(const std::vector<RoutingProfile>& profiles, std::optional<LatencyModel> latency)
{
    PolicyTables t;
    for (std::size_t l = 0; l < profiles.size(); ++l) {
        const auto& p = profiles[l];
        const std::string where = "routing profile of layer " + std::to_string(p.layer);
        if (p.layer != static_cast<int>(l))
            throw Error("routing profiles: layer " + std::to_string(l) + " is missing (run `ladimo profile`)");
        LayerTable lt;
        lt.experts = static_cast<int64_t>(p.errorByK.size());
        lt.errorByK = p.errorByK;
        const auto n = static_cast<std::size_t>(lt.experts);
        lt.paramsByK = doubles(p.extra, "params_by_k", n, where);
        lt.denseParams = p.extra.value("dense_parameters", 0.0);
        if (lt.denseParams <= 0)
            throw Error(where + " has no 'dense_parameters': rerun `ladimo profile` with this version");
        lt.thresholds = doubles(p.extra, "thresholds", 0, where);
        lt.meanKByThreshold = doubles(p.extra, "mean_k_by_threshold", lt.thresholds.size(), where);
        lt.paramsByThreshold = doubles(p.extra, "params_by_threshold", lt.thresholds.size(), where);
        lt.errorByThreshold = doubles(p.extra, "error_by_threshold", lt.thresholds.size(), where);
        lt.errorWeight = p.extra.value("nll_per_error", p.extra.value("kl_per_error", 0.0));
        if (!(lt.errorWeight > 0) || !std::isfinite(lt.errorWeight))
            lt.errorWeight = 0; // not measured: weighs 1, see estimateRule
        if (!std::is_sorted(lt.thresholds.begin(), lt.thresholds.end()))
            throw Error(where + ": thresholds must be ascending");
        t.layers.push_back(std::move(lt));
    }
    if (latency && !t.layers.empty()
        && latency->prefillMoe.size() != static_cast<std::size_t>(t.layers.front().experts))
        throw Error("latency model of " + latency->device + " has " + std::to_string(latency->prefillMoe.size())
                    + " MoE timings, the conversion has " + std::to_string(t.layers.front().experts) + " experts");
    t.latency = std::move(latency);
    return t;
}

PolicyTables loadPolicyTables(Project& project, int64_t runId, const std::string& device)
{
    auto profiles = project.routingProfiles(runId);
    if (profiles.empty())
        throw Error(project.file().string() + ": run #" + std::to_string(runId)
                    + " has no routing profile yet (run `ladimo profile " + project.file().string() + "`)");
    std::optional<LatencyModel> latency;
    if (auto j = project.latencyModel(runId, device))
        latency = LatencyModel::fromJson(*j, project.file().string() + ": latency model of " + device);
    return policyTables(profiles, std::move(latency));
}

PolicyTables loadPolicyTablesFor(Project& project, int64_t runId, const std::string& deviceSpec, std::string* device)
{
    std::string name = parseDevice(deviceSpec).str();
    if (deviceSpec == "auto" && name != "cpu" && !project.latencyModel(runId, name)
        && project.latencyModel(runId, "cpu"))
        name = "cpu";
    auto tables = loadPolicyTables(project, runId, name);
    if (device)
        *device = tables.latency ? name : std::string();
    return tables;
}

LayerEstimate estimateRule(const PolicyTables& tables, int layer, const RoutingRule& rule)
{
    const auto& t = tables.layers.at(static_cast<std::size_t>(layer));
    const auto n = static_cast<int>(t.experts);
    LayerEstimate e;
    if (rule.isStatic()) {
        const auto k = static_cast<std::size_t>(std::min(rule.topK, n));
        e.meanK = static_cast<double>(k);
        e.params = t.paramsByK[k - 1];
        e.error = t.errorByK[k - 1];
    } else {
        e.meanK = interpolate(t.thresholds, t.meanKByThreshold, rule.threshold);
        e.params = interpolate(t.thresholds, t.paramsByThreshold, rule.threshold);
        e.error = interpolate(t.thresholds, t.errorByThreshold, rule.threshold);
        const int maxK = rule.maxK > 0 ? std::min(rule.maxK, n) : n;
        if (rule.minK > 1 || maxK < n) {
            // The grid was measured with bounds 1..N: apply the bounds to the mean.
            e.approximate = true;
            const double k = std::clamp(e.meanK, static_cast<double>(rule.minK), static_cast<double>(maxK));
            if (k != e.meanK) {
                e.meanK = k;
                e.params = atK(t.paramsByK, k);
                e.error = atK(t.errorByK, k);
            }
        }
    }
    e.proxy = e.error * (t.errorWeight > 0 ? t.errorWeight : 1.0);
    if (tables.latency) {
        e.prefillSeconds = atK(tables.latency->prefillMoe, e.meanK);
        e.decodeSeconds = atK(tables.latency->decodeMoe, e.meanK);
    }
    return e;
}

void updateTotals(const PolicyTables& tables, PolicyEstimate& out)
{
    double params = 0, dense = 0, error = 0, prefill = 0, decode = 0;
    bool kl = !out.layers.empty();
    for (std::size_t l = 0; l < out.layers.size(); ++l) {
        const auto& e = out.layers[l];
        params += e.params;
        dense += tables.layers[l].denseParams;
        error += e.proxy;
        kl = kl && tables.layers[l].errorWeight > 0;
        prefill += e.prefillSeconds;
        decode += e.decodeSeconds;
    }
    out.activatedFfnFraction = dense > 0 ? params / dense : 0;
    out.errorProxy = error;
    out.proxyIsKl = kl;
    out.hasLatency = tables.latency.has_value();
    if (out.hasLatency) {
        const auto& m = *tables.latency;
        out.prefillSeconds = m.prefillOther + prefill;
        out.decodeSeconds = m.decodeOther + decode;
        out.densePrefillSeconds = m.prefillOther + static_cast<double>(out.layers.size()) * m.prefillDenseFfn;
        out.denseDecodeSeconds = m.decodeOther + static_cast<double>(out.layers.size()) * m.decodeDenseFfn;
        out.prefillFraction = out.prefillSeconds / out.densePrefillSeconds;
        out.decodeFraction = out.decodeSeconds / out.denseDecodeSeconds;
    }
}

PolicyEstimate estimatePolicy(const PolicyTables& tables, const PolicyRules& rules)
{
    if (rules.size() != tables.layers.size())
        throw Error("policy has " + std::to_string(rules.size()) + " rules for " + std::to_string(tables.layers.size())
                    + " profiled layers");
    PolicyEstimate out;
    out.layers.reserve(rules.size());
    for (std::size_t l = 0; l < rules.size(); ++l)
        out.layers.push_back(estimateRule(tables, static_cast<int>(l), rules[l]));
    updateTotals(tables, out);
    return out;
}

nlohmann::json toJson(const PolicyEstimate& e)
{
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : e.layers) {
        nlohmann::json j = {{"mean_k", l.meanK}, {"params", l.params}, {"error", l.error}, {"proxy", l.proxy}};
        if (e.hasLatency) {
            j["prefill_seconds"] = l.prefillSeconds;
            j["decode_seconds"] = l.decodeSeconds;
        }
        if (l.approximate)
            j["approximate"] = true;
        layers.push_back(j);
    }
    nlohmann::json out = {{"activated_ffn_fraction", e.activatedFfnFraction},
                          {"error_proxy", e.errorProxy},
                          {"error_proxy_is_kl", e.proxyIsKl},
                          {"layers", layers}};
    if (e.hasLatency) {
        out["prefill_seconds"] = e.prefillSeconds;
        out["decode_seconds"] = e.decodeSeconds;
        out["prefill_fraction"] = e.prefillFraction;
        out["decode_fraction"] = e.decodeFraction;
        out["dense_prefill_seconds"] = e.densePrefillSeconds;
        out["dense_decode_seconds"] = e.denseDecodeSeconds;
    }
    return out;
}

} // namespace ladimo::core

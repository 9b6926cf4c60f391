// Synthetic stage-2 measures for GUI tests: what `ladimo profile` and `ladimo latency` store, with
// simple closed forms so the expected estimates are known. Header-only.
#pragma once

#include <cmath>
#include <vector>

#include <nlohmann/json.hpp>

#include "routing/estimate.h"
#include "store/project.h"

namespace ladimo::test {

// The measures the Policy view's estimates read, for one layer of `experts` experts of 1000
// parameters each: the relative error at every static k falls as scale * 0.2 * exp(-0.9 k) (layers
// with another scale give the search something to choose), a five-point threshold grid whose
// error is 0.8 of the static error at its mean k, and the given mean cumulative mass of the top k.
inline void setSyntheticMeasures(core::RoutingProfile& prof, int experts, double scale,
                                 const std::vector<double>& cumulativeMass)
{
    prof.errorByK.clear();
    nlohmann::json paramsByK = nlohmann::json::array(), thresholds = nlohmann::json::array(),
                   meanK = nlohmann::json::array(), paramsT = nlohmann::json::array(), errorT = nlohmann::json::array();
    for (int k = 1; k <= experts; ++k) {
        prof.errorByK.push_back(scale * 0.2 * std::exp(-0.9 * k));
        paramsByK.push_back(1000.0 * k);
    }
    for (int i = 0; i < 5; ++i) {
        const double p = 0.5 + 0.1 * i, k = 1 + (experts - 1) * i / 4.0;
        thresholds.push_back(p);
        meanK.push_back(k);
        paramsT.push_back(1000.0 * k);
        errorT.push_back(0.8 * scale * 0.2 * std::exp(-0.9 * k));
    }
    prof.extra
        = {{"cumulative_mass", cumulativeMass}, {"params_by_k", paramsByK},     {"dense_parameters", 1000.0 * experts},
           {"thresholds", thresholds},          {"mean_k_by_threshold", meanK}, {"params_by_threshold", paramsT},
           {"error_by_threshold", errorT}};
}

// A CPU latency model: the rest of the model 4 ms, the dense FFN 2 ms and each active expert 0.6 ms
// per layer at prefill (256 tokens); a tenth of that (0.07 ms per expert) at decode.
inline core::LatencyModel syntheticLatencyModel(int layers, int experts)
{
    core::LatencyModel lat;
    lat.device = "cpu";
    lat.layers = layers;
    lat.prefillTokens = 256;
    lat.decodeContext = 64;
    lat.prefillOther = 0.004;
    lat.decodeOther = 0.0004;
    lat.prefillDenseFfn = 0.002;
    lat.decodeDenseFfn = 0.0002;
    for (int k = 1; k <= experts; ++k) {
        lat.prefillMoe.push_back(0.0006 * k);
        lat.decodeMoe.push_back(0.00007 * k);
    }
    return lat;
}

} // namespace ladimo::test

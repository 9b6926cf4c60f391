// Dead and hot experts of a routing profile: each expert's share of the layer's tokens (the
// profile's expert load, top-1 choices) against the even share 1/N. An expert below
// deadBelow / N is marked dead (the router almost never picks it: its parameters are spent for
// nothing), one above hotAbove / N hot (it takes several experts' share: a load-balance and
// latency risk). Shown by `ladimo profile` and the workbench's Routing view. Pure functions.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "store/records.h"

namespace ladimo::core {

struct ExpertLoadThresholds {
    double deadBelow = 0.25; // multiples of the even share 1/N
    double hotAbove = 2.5;
    // Throws Error unless 0 <= deadBelow < 1 < hotAbove (naming what was expected).
    void validate() const;
};

struct ExpertLoadMarkers {
    int layer = 0;
    double deadShare = 0;       // the share below which an expert is dead (deadBelow / N)
    double hotShare = 0;        // and above which it is hot
    std::vector<int> dead, hot; // expert ids, ascending
};

ExpertLoadMarkers expertLoadMarkers(const RoutingProfile& profile, const ExpertLoadThresholds& thresholds = {});
// One per profile, in order.
std::vector<ExpertLoadMarkers> expertLoadMarkers(const std::vector<RoutingProfile>& profiles,
                                                 const ExpertLoadThresholds& thresholds = {});
// {"dead": [...], "hot": [...], "dead_below_share": s, "hot_above_share": s}
nlohmann::json toJson(const ExpertLoadMarkers& markers);

} // namespace ladimo::core

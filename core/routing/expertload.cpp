#include "routing/expertload.h"

#include <string>

#include "common/error.h"

namespace ladimo::core {

void ExpertLoadThresholds::validate() const
{
    if (!(deadBelow >= 0 && deadBelow < 1))
        throw Error("dead-expert threshold " + std::to_string(deadBelow)
                    + " is out of range (expected a multiple of the even share in [0, 1))");
    if (!(hotAbove > 1))
        throw Error("hot-expert threshold " + std::to_string(hotAbove)
                    + " is out of range (expected a multiple of the even share above 1)");
}

ExpertLoadMarkers expertLoadMarkers(const RoutingProfile& p, const ExpertLoadThresholds& t)
{
    t.validate();
    ExpertLoadMarkers m;
    m.layer = p.layer;
    const auto N = static_cast<double>(p.expertLoad.size());
    if (p.expertLoad.empty())
        return m;
    m.deadShare = t.deadBelow / N;
    m.hotShare = t.hotAbove / N;
    for (std::size_t e = 0; e < p.expertLoad.size(); ++e) {
        if (p.expertLoad[e] < m.deadShare)
            m.dead.push_back(static_cast<int>(e));
        else if (p.expertLoad[e] > m.hotShare)
            m.hot.push_back(static_cast<int>(e));
    }
    return m;
}

std::vector<ExpertLoadMarkers> expertLoadMarkers(const std::vector<RoutingProfile>& profiles,
                                                 const ExpertLoadThresholds& t)
{
    std::vector<ExpertLoadMarkers> out;
    for (const auto& p : profiles)
        out.push_back(expertLoadMarkers(p, t));
    return out;
}

nlohmann::json toJson(const ExpertLoadMarkers& m)
{
    return {{"dead", m.dead}, {"hot", m.hot}, {"dead_below_share", m.deadShare}, {"hot_above_share", m.hotShare}};
}

} // namespace ladimo::core

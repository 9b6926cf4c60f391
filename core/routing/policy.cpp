#include "routing/policy.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "common/error.h"
#include "common/fileutil.h"
#include "common/parse.h"

namespace ladimo::core {

namespace {

std::vector<std::string> split(const std::string& s, char sep)
{
    std::vector<std::string> out;
    std::string part;
    std::istringstream in(s);
    while (std::getline(in, part, sep))
        out.push_back(part);
    return out;
}

// An int of a --set spec (layer, k, bounds).
int parseSmallInt(const std::string& s, const std::string& what)
{
    const int64_t v = parseInteger(s, what);
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        throw Error(what + ": '" + s + "' is not an integer");
    return static_cast<int>(v);
}

void validateRule(const RoutingRule& r, int64_t experts, const std::string& where)
{
    const auto n = std::to_string(experts);
    if (r.isStatic()) {
        if (r.topK > experts)
            throw Error(where + ": top_k " + std::to_string(r.topK) + " exceeds the " + n + " experts");
        if (r.topK < 1)
            throw Error(where + ": top_k must be 1.." + n);
        return;
    }
    if (!(r.threshold > 0.0 && r.threshold <= 1.0))
        throw Error(where + ": top_p must be in (0, 1]");
    const int maxK = r.maxK > 0 ? r.maxK : static_cast<int>(experts);
    if (r.minK < 1 || maxK > experts || r.minK > maxK)
        throw Error(where + ": need 1 <= min_k <= max_k <= " + n + ", got " + std::to_string(r.minK) + ".."
                    + std::to_string(r.maxK));
}

} // namespace

nlohmann::json ruleToJson(int layer, const RoutingRule& r)
{
    if (r.isStatic())
        return {{"layer", layer}, {"top_k", r.topK}};
    return {{"layer", layer}, {"top_p", r.threshold}, {"min_k", r.minK}, {"max_k", r.maxK}};
}

RoutingRule ruleFromJson(const nlohmann::json& j, int64_t experts, const std::string& where)
{
    if (!j.is_object())
        throw Error(where + ": expected an object with top_k or top_p");
    RoutingRule r;
    try {
        if (j.contains("top_k")) {
            if (j.contains("top_p"))
                throw Error(where + ": has both top_k and top_p");
            r = RoutingRule::staticK(j.at("top_k").get<int>());
            if (r.topK < 1)
                throw Error(where + ": top_k must be 1.." + std::to_string(experts));
        } else if (j.contains("top_p")) {
            r = RoutingRule::topP(j.at("top_p").get<double>(), j.value("min_k", 1), j.value("max_k", 0));
        } else {
            throw Error(where + ": expected top_k or top_p");
        }
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": " + e.what());
    }
    validateRule(r, experts, where);
    return r;
}

nlohmann::json rulesToJson(const PolicyRules& rules)
{
    auto out = nlohmann::json::array();
    for (std::size_t l = 0; l < rules.size(); ++l)
        out.push_back(ruleToJson(static_cast<int>(l), rules[l]));
    return out;
}

PolicyRules rulesFromJson(const nlohmann::json& rules, int layers, int64_t experts, const std::string& where)
{
    if (!rules.is_array())
        throw Error(where + ": 'rules' must be an array with one rule per layer");
    if (rules.size() != static_cast<std::size_t>(layers))
        throw Error(where + ": has " + std::to_string(rules.size()) + " rules, the conversion has "
                    + std::to_string(layers) + " layers");
    PolicyRules out(static_cast<std::size_t>(layers));
    std::vector<bool> seen(static_cast<std::size_t>(layers), false);
    for (std::size_t i = 0; i < rules.size(); ++i) {
        const auto& j = rules[i];
        const std::string at = where + " rule " + std::to_string(i);
        if (!j.is_object() || !j.contains("layer") || !j["layer"].is_number_integer())
            throw Error(at + ": needs an integer 'layer'");
        const auto layer = j["layer"].get<int64_t>();
        if (layer < 0 || layer >= layers)
            throw Error(at + ": layer " + std::to_string(layer) + " is outside 0.." + std::to_string(layers - 1));
        if (seen[static_cast<std::size_t>(layer)])
            throw Error(at + ": layer " + std::to_string(layer) + " has two rules");
        seen[static_cast<std::size_t>(layer)] = true;
        out[static_cast<std::size_t>(layer)] = ruleFromJson(j, experts, at);
    }
    return out;
}

PolicyRules uniformRules(int layers, const RoutingRule& rule)
{
    return PolicyRules(static_cast<std::size_t>(std::max(0, layers)), rule);
}

PolicyRules applyEdits(PolicyRules rules, const std::string& edits, int64_t experts)
{
    const int layers = static_cast<int>(rules.size());
    for (auto item : split(edits, ',')) {
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (item.empty())
            continue;
        const std::string at = "policy edit '" + item + "'";
        const auto parts = split(item, ':');
        if (parts.size() < 2 || parts.size() > 3)
            throw Error(at + ": expected LAYER:K, LAYER:pP or LAYER:pP:MIN-MAX");
        int first = 0, last = layers - 1;
        if (parts[0] != "*") {
            const auto dash = parts[0].find('-');
            if (dash == std::string::npos) {
                first = last = parseSmallInt(parts[0], at + " layer");
            } else {
                first = parseSmallInt(parts[0].substr(0, dash), at + " layer");
                last = parseSmallInt(parts[0].substr(dash + 1), at + " layer");
            }
        }
        if (first < 0 || last >= layers || first > last)
            throw Error(at + ": layers must be within 0.." + std::to_string(layers - 1));
        RoutingRule r;
        if (!parts[1].empty() && (parts[1][0] == 'p' || parts[1][0] == 'P')) {
            r = RoutingRule::topP(parseNumber(parts[1].substr(1), at + " top_p"));
            if (parts.size() == 3) {
                const auto dash = parts[2].find('-');
                if (dash == std::string::npos)
                    throw Error(at + ": bounds must be MIN-MAX");
                r.minK = parseSmallInt(parts[2].substr(0, dash), at + " min_k");
                r.maxK = parseSmallInt(parts[2].substr(dash + 1), at + " max_k");
            }
        } else {
            if (parts.size() == 3)
                throw Error(at + ": bounds only apply to top-p rules");
            r = RoutingRule::staticK(parseSmallInt(parts[1], at + " top_k"));
            if (r.topK < 1)
                throw Error(at + ": top_k must be 1.." + std::to_string(experts));
        }
        validateRule(r, experts, at);
        for (int l = first; l <= last; ++l)
            rules[static_cast<std::size_t>(l)] = r;
    }
    return rules;
}

std::string describeRule(const RoutingRule& r, int64_t experts)
{
    char buf[64];
    if (r.isStatic()) {
        std::snprintf(buf, sizeof buf, "k=%d", r.topK);
    } else {
        const int maxK = r.maxK > 0 ? r.maxK : static_cast<int>(experts);
        if (r.minK <= 1 && maxK >= experts)
            std::snprintf(buf, sizeof buf, "p=%.2f", r.threshold);
        else
            std::snprintf(buf, sizeof buf, "p=%.2f [%d..%d]", r.threshold, r.minK, maxK);
    }
    return buf;
}

std::string describeRules(const PolicyRules& rules, int64_t experts)
{
    std::string s;
    for (const auto& r : rules)
        s += (s.empty() ? "" : " ") + describeRule(r, experts);
    return s;
}

bool isUniformStatic(const PolicyRules& rules, int* k)
{
    if (rules.empty() || !rules.front().isStatic())
        return false;
    for (const auto& r : rules)
        if (!r.isStatic() || r.topK != rules.front().topK)
            return false;
    if (k)
        *k = rules.front().topK;
    return true;
}

nlohmann::json policyDocument(const std::string& name, const PolicyRules& rules, Gating gating, int64_t experts)
{
    return {{"format", "ladimo-routing-policy"}, {"version", 1},       {"name", name},
            {"gating", gatingName(gating)},      {"experts", experts}, {"layers", rules.size()},
            {"rules", rulesToJson(rules)}};
}

namespace {

PolicyDocument parsePolicyDocumentChecked(const nlohmann::json& doc, int layers, int64_t experts,
                                          const std::string& where)
{
    if (!doc.is_object() || doc.value("format", std::string()) != "ladimo-routing-policy")
        throw Error(where + ": not a routing policy (expected \"format\": \"ladimo-routing-policy\")");
    if (!doc.contains("version") || !doc["version"].is_number_integer() || doc["version"].get<int>() != 1)
        throw Error(where + ": unsupported policy version (expected 1)");
    PolicyDocument out;
    try {
        out.name = doc.value("name", std::string());
        out.experts = doc.at("experts").get<int64_t>();
        out.gating = parseGating(doc.value("gating", std::string("hard")));
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": " + e.what());
    } catch (const Error& e) {
        throw Error(where + ": " + e.what());
    }
    if (out.experts != experts)
        throw Error(where + ": written for " + std::to_string(out.experts) + " experts, the conversion has "
                    + std::to_string(experts));
    if (!doc.contains("rules"))
        throw Error(where + ": has no 'rules'");
    out.rules = rulesFromJson(doc["rules"], layers, experts, where);
    if (!out.name.empty()) {
        try {
            validatePolicyName(out.name); // names end up in file names: no path may come in through them
        } catch (const Error& e) {
            throw Error(where + ": " + e.what());
        }
    }
    return out;
}

} // namespace

PolicyDocument parsePolicyDocument(const nlohmann::json& doc, int layers, int64_t experts, const std::string& where)
{
    // Every check above names its key; a wrong JSON type that slips past them (fuzz_policy found
    // '"format": 1') still becomes an Error naming the file, never a JSON library exception.
    try {
        return parsePolicyDocumentChecked(doc, layers, experts, where);
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": unexpected structure: " + e.what());
    }
}

PolicyDocument loadPolicyDocument(const std::filesystem::path& file, int layers, int64_t experts)
{
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(readTextFile(file, kMaxConfigJsonBytes));
    } catch (const nlohmann::json::exception& e) {
        throw Error(file.string() + " is not valid JSON: " + e.what());
    }
    return parsePolicyDocument(doc, layers, experts, file.string());
}

PolicyRules policyRules(const Policy& policy, int layers, int64_t experts)
{
    return rulesFromJson(policy.rules, layers, experts, "policy '" + policy.name + "'");
}

void validatePolicyName(const std::string& name)
{
    if (name.empty() || name.size() > 64)
        throw Error("policy name '" + name + "' must have 1 to 64 characters");
    for (unsigned char c : name)
        if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-'))
            throw Error("policy name '" + name + "' may only use letters, digits, '.', '_' and '-'");
    if (name == "." || name == "..")
        throw Error("policy name '" + name + "' is reserved");
}

} // namespace ladimo::core

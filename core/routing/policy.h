// Stage 2b: a routing policy gives every layer of a conversion one RoutingRule (a static top-k or
// a token-adaptive top-p rule bounded by min_k..max_k). Policies are named values stored in the
// project (Policy.rules holds `rulesToJson`), exported as a self-describing JSON document and
// edited layer by layer (`applyEdits`, the `--set "0:4,1:p0.9"` syntax).
// Pure functions on values; thread-safe.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/moelayer.h"
#include "store/records.h"

namespace ladimo::core {

using PolicyRules = std::vector<RoutingRule>; // one per decoder layer

// {"layer": L, "top_k": K} or {"layer": L, "top_p": P, "min_k": a, "max_k": b}.
nlohmann::json ruleToJson(int layer, const RoutingRule& rule);
// Validates against the number of experts; `where` names the source in errors.
RoutingRule ruleFromJson(const nlohmann::json& j, int64_t experts, const std::string& where);

nlohmann::json rulesToJson(const PolicyRules& rules);
// Needs exactly one rule per layer 0..layers-1, in any order.
PolicyRules rulesFromJson(const nlohmann::json& rules, int layers, int64_t experts, const std::string& where);

// The same rule for every layer.
PolicyRules uniformRules(int layers, const RoutingRule& rule);

// Edits "L:K" (static top-k), "L:pP" (top-p with the rule's default bounds), "L:pP:a-b",
// comma-separated; L may be a range "A-B" or "*" for all layers. Applied on top of `base`.
PolicyRules applyEdits(PolicyRules base, const std::string& edits, int64_t experts);

// "k=6", "p=0.90", "p=0.90 [2..6]".
std::string describeRule(const RoutingRule& rule, int64_t experts);
// Every layer's describeRule, in order, separated by spaces.
std::string describeRules(const PolicyRules& rules, int64_t experts);
bool isUniformStatic(const PolicyRules& rules, int* k = nullptr);

// The exchange document (`ladimo policy --export`, routing_policy.json of an export):
// {"format": "ladimo-routing-policy", "version": 1, "name", "gating", "experts", "layers", "rules"}.
nlohmann::json policyDocument(const std::string& name, const PolicyRules& rules, Gating gating, int64_t experts);
struct PolicyDocument {
    std::string name;
    PolicyRules rules;
    Gating gating = Gating::Hard;
    int64_t experts = 0;
};
// Validates the document against the conversion it is imported into (layers, experts).
PolicyDocument parsePolicyDocument(const nlohmann::json& doc, int layers, int64_t experts, const std::string& where);

// Reads and validates a policy document file (`ladimo policy --import`); the file may be at most
// kMaxConfigJsonBytes. Every failure is an Error naming the file.
PolicyDocument loadPolicyDocument(const std::filesystem::path& file, int layers, int64_t experts);

// The rules of a stored policy, validated against the run it applies to.
PolicyRules policyRules(const Policy& policy, int layers, int64_t experts);

// A valid policy name: 1..64 characters of [A-Za-z0-9._-] (names end up in file names).
void validatePolicyName(const std::string& name);

} // namespace ladimo::core

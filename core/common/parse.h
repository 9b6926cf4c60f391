// The one strict parser of numbers, in text and in JSON: the whole text must be the number, and
// an Error names what was being read and what was expected otherwise. Every command-line spec,
// metadata field and config key goes through these.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ladimo::core {

// "WHAT: 'TEXT' is not an integer" unless the whole text is one (within int64).
int64_t parseInteger(const std::string& text, const std::string& what);
// "WHAT: 'TEXT' is not a number" unless the whole text is one finite number.
double parseNumber(const std::string& text, const std::string& what);
// A required integer key of a JSON object within [lo, hi]: "SOURCE: missing key 'K' (expected an
// integer)" when absent or null, "must be an integer" for another type, "is out of range" outside.
int64_t requireInt(const nlohmann::json& j, const char* key, const std::string& source, int64_t lo, int64_t hi);

} // namespace ladimo::core

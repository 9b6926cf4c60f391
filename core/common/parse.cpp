#include "common/parse.h"

#include <cmath>

#include "common/error.h"

namespace ladimo::core {

int64_t parseInteger(const std::string& text, const std::string& what)
{
    std::size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != text.size())
        throw Error(what + ": '" + text + "' is not an integer");
    return static_cast<int64_t>(v);
}

double parseNumber(const std::string& text, const std::string& what)
{
    std::size_t used = 0;
    double v = 0;
    try {
        v = std::stod(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != text.size() || !std::isfinite(v))
        throw Error(what + ": '" + text + "' is not a number");
    return v;
}

int64_t requireInt(const nlohmann::json& j, const char* key, const std::string& source, int64_t lo, int64_t hi)
{
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null())
        throw Error(source + ": missing key '" + key + "' (expected an integer)");
    const auto& v = j.at(key);
    if (!v.is_number_integer())
        throw Error(source + ": key '" + key + "' must be an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
        throw Error(source + ": key '" + key + "' = " + std::to_string(x) + " is out of range [" + std::to_string(lo)
                    + ", " + std::to_string(hi) + "]");
    return x;
}

} // namespace ladimo::core

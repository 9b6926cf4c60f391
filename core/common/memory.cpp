#include "common/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "common/error.h"
#include "common/scratch.h"

namespace ladimo::core {

std::uint64_t peakRssBytes()
{
    struct rusage u { };
    if (::getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return static_cast<std::uint64_t>(u.ru_maxrss) * 1024; // Linux: kilobytes
}

std::uint64_t currentRssBytes()
{
    std::ifstream in("/proc/self/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(in >> size >> resident))
        return 0;
    const long page = ::sysconf(_SC_PAGESIZE);
    return page > 0 ? resident * static_cast<std::uint64_t>(page) : 0;
}

std::uint64_t totalMemoryBytes()
{
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    std::uint64_t value = 0;
    while (in >> key >> value) {
        std::getline(in, unit);
        if (key == "MemTotal:")
            return value * 1024;
    }
    return 0;
}

std::uint64_t defaultMemoryBudget()
{
    std::uint64_t avail = availableMemoryBytes();
    if (avail == 0)
        avail = totalMemoryBytes();
    return std::max<std::uint64_t>(avail / 2, 1ull << 30);
}

int64_t parseByteSize(const std::string& text)
{
    const std::string bad = "size '" + text + "' is not a size (expected e.g. 2GB, 500MB, 1.5GiB or a byte count)";
    std::size_t used = 0;
    double value = 0;
    try {
        value = std::stod(text, &used);
    } catch (const std::exception&) {
        throw Error(bad);
    }
    std::string unit = text.substr(used);
    unit.erase(0, unit.find_first_not_of(' '));
    for (auto& ch : unit)
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    static const std::map<std::string, double> units
        = {{"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
           {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
    const auto u = units.find(unit);
    if (u == units.end() || !(value > 0) || !std::isfinite(value))
        throw Error(bad);
    const double bytes = value * u->second;
    if (bytes > 9e18)
        throw Error(bad);
    return static_cast<int64_t>(std::llround(bytes));
}

std::string memoryText(double b)
{
    char buf[32];
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, unit[u]);
    return buf;
}

} // namespace ladimo::core

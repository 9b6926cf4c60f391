// Memory of this process and the machine, and the memory budget that bounds what a job keeps
// resident (weights streamed layer by layer, captured activations, layer caches).
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>

namespace ladimo::core {

// Peak resident set size of this process so far (getrusage ru_maxrss), in bytes: the figure
// `/usr/bin/time -f %M` reports, pages of mapped files included once touched.
std::uint64_t peakRssBytes();
// Resident set size now (/proc/self/statm), in bytes; 0 if unknown.
std::uint64_t currentRssBytes();
// Physical memory of the machine (MemTotal), in bytes; 0 if unknown.
std::uint64_t totalMemoryBytes();

// The default memory budget: half of the memory available when asked (MemAvailable / 2),
// at least 1 GiB.
std::uint64_t defaultMemoryBudget();

// "2GB", "500MB", "1.5GiB", "123456" -> bytes (decimal units as Hugging Face, binary with "iB").
// Throws Error naming the text and what was expected.
int64_t parseByteSize(const std::string& text);
// "1.2 GiB"
std::string memoryText(double bytes);

} // namespace ladimo::core

// Shared by the libFuzzer targets: each target feeds one untrusted input format to the core and
// accepts exactly one outcome besides success, a ladimo::core::Error. Anything else (another
// exception type escaping, a sanitizer report, a crash, a huge allocation) is a finding.
// One scratch folder per process (libFuzzer runs one input at a time in a process).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace ladimo::fuzz {

inline const std::filesystem::path& scratchDir()
{
    static const std::filesystem::path dir = [] {
        const char* base = std::getenv("TMPDIR");
        auto d = std::filesystem::path(base && *base ? base : "/tmp") / ("ladimo-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    return dir;
}

// Replaces `name` in the scratch folder with exactly `size` bytes of `data`.
inline std::filesystem::path writeScratch(const std::string& name, const uint8_t* data, std::size_t size)
{
    const auto path = scratchDir() / name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f)
        std::abort();
    if (size && std::fwrite(data, 1, size, f) != size)
        std::abort();
    std::fclose(f);
    return path;
}

} // namespace ladimo::fuzz

// Runs `body`; a core::Error is the expected way for bad input to end.
#define LADIMO_FUZZ_EXPECT_ONLY_ERRORS(body)                                                                           \
    do {                                                                                                               \
        try {                                                                                                          \
            body;                                                                                                      \
        } catch (const ::ladimo::core::Error&) {                                                                       \
        }                                                                                                              \
    } while (0)

// Helpers shared by the test binaries: where the shared data and the sources are, and a
// scratch folder that is removed at the end of each test.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace ladimo::test {

inline std::filesystem::path sharedData()
{
    if (const char* env = std::getenv("LADIMO_SHARED_DATA"))
        return env;
    return LADIMO_SHARED_DATA_DIR;
}

inline std::filesystem::path sourceDir() { return LADIMO_SOURCE_DIR; }

// Skips the current test (with the reason) when a file of ../shared/data is absent.
#define LADIMO_REQUIRE_SHARED(rel)                                                                                     \
    do {                                                                                                               \
        if (!std::filesystem::exists(::ladimo::test::sharedData() / (rel)))                                            \
            GTEST_SKIP() << "shared test data absent: " << (::ladimo::test::sharedData() / (rel))                      \
                         << " (see ../shared/data/README.md)";                                                         \
    } while (0)

// Skips the current test in the sanitizer build (LADIMO_SANITIZE), where the SentencePiece
// plugin cannot be loaded: it needs RTLD_DEEPBIND (model/spmapi.h), which ASan refuses.
#ifdef LADIMO_SANITIZE
#define LADIMO_REQUIRE_SPM() GTEST_SKIP() << "SentencePiece plugin unavailable under ASan (RTLD_DEEPBIND)"
#else
#define LADIMO_REQUIRE_SPM()                                                                                           \
    do {                                                                                                               \
    } while (0)
#endif

struct CommandResult {
    int status = -1; // exit status; -1 when it could not run or died by a signal
    std::string out;
};

// Runs a shell command; stderr (progress, errors) joins the output unless `stdoutOnly`.
inline CommandResult runCommand(const std::string& command, bool stdoutOnly = false)
{
    CommandResult r;
    FILE* p = popen((command + (stdoutOnly ? " 2>/dev/null" : " 2>&1")).c_str(), "r");
    if (!p)
        return r;
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
        r.out.append(buf.data(), n);
    const int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// Runs the built `ladimo` program (build/bin/ladimo) with `args`.
inline CommandResult runLadimo(const std::string& args, bool stdoutOnly = false)
{
    return runCommand(std::string(LADIMO_BIN_DIR) + "/ladimo " + args, stdoutOnly);
}

class TempDir {
public:
    TempDir()
    {
        std::random_device rd;
        m_path
            = std::filesystem::temp_directory_path() / ("ladimo-test-" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(m_path);
    }
    ~TempDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return m_path; }
    std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

private:
    std::filesystem::path m_path;
};

} // namespace ladimo::test

#include "model/spmapi.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

std::vector<fs::path> candidates()
{
    std::vector<fs::path> out;
    if (const char* env = std::getenv("LADIMO_SPM_PLUGIN"))
        out.emplace_back(env);
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        out.push_back(exe.parent_path() / "../lib/libladimo_spm.so");
        out.push_back(exe.parent_path() / "libladimo_spm.so");
        out.push_back(exe.parent_path() / "../lib/ladimo/libladimo_spm.so");
    }
#ifdef LADIMO_SPM_PLUGIN_DIR
    out.push_back(fs::path(LADIMO_SPM_PLUGIN_DIR) / "libladimo_spm.so");
#endif
    return out;
}

} // namespace

const SpmApi& spmApi()
{
    static std::once_flag once;
    static const SpmApi* api = nullptr;
    static std::string failure;
    std::call_once(once, [] {
#ifdef LADIMO_SANITIZE
        // AddressSanitizer refuses RTLD_DEEPBIND (it would bypass its interceptors), and without
        // DEEPBIND the plugin's protobuf would clash with LibTorch's: no SentencePiece here.
        failure = "the SentencePiece plugin cannot be loaded in a sanitizer build (ASan forbids "
                  "RTLD_DEEPBIND); tokenizer.model needs the normal build";
        return;
#endif
        std::string tried;
        for (const auto& p : candidates()) {
            std::error_code ec;
            if (!fs::exists(p, ec)) {
                tried += " " + p.string();
                continue;
            }
            void* handle = ::dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
            if (!handle) {
                tried += " " + p.string() + " (" + ::dlerror() + ")";
                continue;
            }
            auto fn = reinterpret_cast<const SpmApi* (*)()>(::dlsym(handle, "ladimo_spm_api"));
            const SpmApi* a = fn ? fn() : nullptr;
            if (a && a->version == kSpmApiVersion) {
                api = a;
                return;
            }
            tried += " " + p.string() + " (wrong plugin version)";
        }
        failure = "the SentencePiece plugin libladimo_spm.so was not found; tried:" + tried
            + " (set LADIMO_SPM_PLUGIN to its path)";
    });
    if (!api)
        throw Error(failure);
    return *api;
}

} // namespace ladimo::core

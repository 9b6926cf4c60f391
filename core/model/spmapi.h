// The SentencePiece bridge. Debian's libsentencepiece embeds its own protobuf 3.14 runtime whose
// exported symbols clash with LibTorch's protobuf 3.21 (the process crashes at start-up when both
// are linked). So libsentencepiece lives in a small plugin, libladimo_spm.so, loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf stays private. Only std types cross the
// boundary (same libstdc++); nothing in the plugin may write to std::cerr, which DEEPBIND leaves
// unconstructed for it. Thread-safe after loading; a loaded model is immutable.
#pragma once

#include <string>
#include <vector>

namespace ladimo::core {

struct SpmModel; // opaque, owned by the plugin

struct SpmApi {
    int version;
    SpmModel* (*load)(const std::string& path, std::string* error);
    void (*release)(SpmModel* model);
    void (*encode)(const SpmModel* model, const std::string& text, std::vector<int>* ids);
    std::string (*decode)(const SpmModel* model, const std::vector<int>& ids);
    int (*size)(const SpmModel* model);
    std::string (*piece)(const SpmModel* model, int id);
    float (*score)(const SpmModel* model, int id);
    // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (GGUF numbering)
    int (*type)(const SpmModel* model, int id);
    int (*bos)(const SpmModel* model);
    int (*eos)(const SpmModel* model);
};

constexpr int kSpmApiVersion = 1;

// Loads the plugin on first use; throws Error saying where it looked when it cannot.
const SpmApi& spmApi();

} // namespace ladimo::core

extern "C" const ladimo::core::SpmApi* ladimo_spm_api();

// libladimo_spm.so: libsentencepiece behind the SpmApi table (see core/model/spmapi.h for why it
// is a plugin). Built as a MODULE library; never linked directly.
#include <sentencepiece_processor.h>

#include "model/spmapi.h"

namespace ladimo::core {
struct SpmModel {
    sentencepiece::SentencePieceProcessor processor;
};
} // namespace ladimo::core

namespace {

using ladimo::core::SpmModel;

SpmModel* load(const std::string& path, std::string* error)
{
    auto* m = new SpmModel;
    const auto status = m->processor.Load(path);
    if (!status.ok()) {
        if (error)
            *error = status.ToString();
        delete m;
        return nullptr;
    }
    return m;
}

void release(SpmModel* m) { delete m; }

void encode(const SpmModel* m, const std::string& text, std::vector<int>* ids)
{
    ids->clear();
    m->processor.Encode(text, ids);
}

std::string decode(const SpmModel* m, const std::vector<int>& ids)
{
    std::string out;
    m->processor.Decode(ids, &out);
    return out;
}

int size(const SpmModel* m) { return m->processor.GetPieceSize(); }
std::string piece(const SpmModel* m, int id) { return m->processor.IdToPiece(id); }
float score(const SpmModel* m, int id) { return m->processor.GetScore(id); }

int type(const SpmModel* m, int id)
{
    const auto& p = m->processor;
    if (p.IsUnknown(id))
        return 2;
    if (p.IsControl(id))
        return 3;
    if (p.IsByte(id))
        return 6;
    if (p.IsUnused(id))
        return 5;
    return 1;
}

int bos(const SpmModel* m) { return m->processor.bos_id(); }
int eos(const SpmModel* m) { return m->processor.eos_id(); }

const ladimo::core::SpmApi kApi
    = {ladimo::core::kSpmApiVersion, load, release, encode, decode, size, piece, score, type, bos, eos};

} // namespace

extern "C" __attribute__((visibility("default"))) const ladimo::core::SpmApi* ladimo_spm_api() { return &kApi; }

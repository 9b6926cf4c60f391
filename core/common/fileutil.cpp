#include "common/fileutil.h"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <vector>

#include "common/error.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

fs::path temporarySibling(const fs::path& target)
{
    std::random_device rd;
    std::ostringstream name;
    name << "." << target.filename().string() << ".tmp-" << ::getpid() << "-" << std::hex << rd();
    return target.parent_path() / name.str();
}

void fsyncPath(const fs::path& p, bool directory)
{
    int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        return; // best effort for directories on file systems that refuse it
    ::fsync(fd);
    ::close(fd);
}

std::string hexDigest(const unsigned char* md, unsigned int len)
{
    static const char* kHex = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(kHex[md[i] >> 4]);
        out.push_back(kHex[md[i] & 15]);
    }
    return out;
}

struct MdCtxDeleter {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

} // namespace

void atomicWriteFile(const fs::path& target, const std::function<void(const fs::path&)>& write)
{
    const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error("cannot write '" + target.string() + "': folder '" + dir.string() +
                    "' does not exist");
    const fs::path tmp = temporarySibling(target);
    try {
        write(tmp);
        fsyncPath(tmp, false);
        fs::rename(tmp, target);
    } catch (...) {
        fs::remove(tmp, ec);
        throw;
    }
    fsyncPath(dir, true);
}

void atomicWriteFile(const fs::path& target, const std::string& bytes)
{
    atomicWriteFile(target, [&](const fs::path& tmp) {
        std::FILE* f = std::fopen(tmp.c_str(), "wb");
        if (!f)
            throw Error("cannot create '" + tmp.string() + "'");
        const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
        const bool closed = std::fclose(f) == 0;
        if (!ok || !closed)
            throw Error("cannot write '" + target.string() + "' (disk full?)");
    });
}

std::string readTextFile(const fs::path& file, std::uint64_t maxBytes)
{
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw Error("cannot open '" + file.string() + "'");
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec)
        throw Error("cannot read '" + file.string() + "': " + ec.message());
    if (size > maxBytes)
        throw Error(file.string() + ": file is " + std::to_string(size) + " bytes, more than the " +
                    std::to_string(maxBytes) + "-byte limit for this kind of file");
    std::string out;
    out.resize(static_cast<std::size_t>(size));
    in.read(out.data(), static_cast<std::streamsize>(out.size()));
    if (static_cast<uint64_t>(in.gcount()) != size || in.bad())
        throw Error("cannot read '" + file.string() + "' (changed while reading?)");
    return out;
}

std::string sha256Bytes(const void* data, std::size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr))
        throw Error("SHA-256 failed");
    return hexDigest(md, len);
}

std::string sha256File(const fs::path& file)
{
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw Error("cannot open '" + file.string() + "' to checksum it");
    std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
    if (!ctx || !EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr))
        throw Error("SHA-256 init failed");
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        const auto n = in.gcount();
        if (n > 0)
            EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n));
    }
    if (in.bad())
        throw Error("cannot read '" + file.string() + "' to checksum it");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    return hexDigest(md, len);
}

} // namespace ladimo::core

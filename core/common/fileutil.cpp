#include "common/fileutil.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <vector>

#include "common/error.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// Bytes OutputFile may still write before it fails as on a full disk; -1: no limit (the normal case).
std::atomic<int64_t>& diskBudget()
{
    static std::atomic<int64_t> budget{[] {
        const char* env = std::getenv("LADIMO_FAULT_DISK_FULL_AFTER");
        return env && *env ? static_cast<int64_t>(std::strtoll(env, nullptr, 10)) : int64_t(-1);
    }()};
    return budget;
}

// How many of `n` bytes the injected disk budget lets through (all of them without injection).
std::size_t claimDiskBudget(std::size_t n)
{
    auto& budget = diskBudget();
    int64_t left = budget.load();
    while (left >= 0) {
        const int64_t take = std::min<int64_t>(left, static_cast<int64_t>(n));
        if (budget.compare_exchange_weak(left, left - take))
            return static_cast<std::size_t>(take);
    }
    return n;
}

bool processAlive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// The PID of a temporary sibling of `target` named exactly ".NAME.tmp-PID-HEX", else 0.
pid_t temporaryOwner(const std::string& entry, const std::string& targetName)
{
    const std::string prefix = "." + targetName + ".tmp-";
    if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0)
        return 0;
    const std::string rest = entry.substr(prefix.size());
    const auto dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos || dash > 9 || dash + 1 == rest.size())
        return 0;
    if (rest.find_first_not_of("0123456789") != dash
        || rest.find_first_not_of("0123456789abcdef", dash + 1) != std::string::npos)
        return 0;
    return static_cast<pid_t>(std::stol(rest.substr(0, dash)));
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

fs::path temporarySibling(const fs::path& target)
{
    std::random_device rd;
    std::ostringstream name;
    name << "." << target.filename().string() << ".tmp-" << ::getpid() << "-" << std::hex << rd();
    return target.parent_path() / name.str();
}

std::vector<fs::path> removeStaleTemporaries(const fs::path& target)
{
    const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    const std::string name = target.filename().string();
    std::vector<fs::path> removed;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const pid_t pid = temporaryOwner(it->path().filename().string(), name);
        if (pid <= 0 || processAlive(pid))
            continue;
        std::error_code rec;
        fs::remove_all(it->path(), rec); // a symlink is removed, not followed
        if (!rec)
            removed.push_back(it->path());
    }
    return removed;
}

void injectDiskFullAfter(int64_t bytes) { diskBudget().store(bytes < 0 ? -1 : bytes); }

OutputFile::OutputFile(const fs::path& tmp, const fs::path& target)
    : m_file(std::fopen(tmp.c_str(), "wb")), m_target(target)
{
    if (!m_file)
        throw Error("cannot create '" + tmp.string() + "' for '" + target.string() + "': " + std::strerror(errno));
}

OutputFile::~OutputFile()
{
    if (m_file)
        std::fclose(m_file);
}

void OutputFile::fail(int err) const
{
    const bool full = err == ENOSPC || err == EDQUOT;
    throw Error("cannot write '" + m_target.string() + "': " + (full ? "disk full (" : "") + std::strerror(err)
                + (full ? ")" : "") + " after " + std::to_string(m_written) + " bytes");
}

void OutputFile::write(const void* data, std::size_t n)
{
    if (!m_file)
        throw Error("cannot write '" + m_target.string() + "': already closed");
    const std::size_t allowed = claimDiskBudget(n);
    errno = 0;
    if (allowed > 0 && std::fwrite(data, 1, allowed, m_file) != allowed)
        fail(errno ? errno : EIO);
    m_written += allowed;
    if (allowed < n)
        fail(ENOSPC); // injected: the disk "filled up" part-way through this write
}

void OutputFile::close()
{
    std::FILE* f = m_file;
    m_file = nullptr;
    errno = 0;
    const bool flushed = std::fflush(f) == 0;
    const int flushErr = errno;
    if (std::fclose(f) != 0 || !flushed)
        fail(!flushed && flushErr ? flushErr : errno ? errno : EIO);
}

void atomicWriteOutput(const fs::path& target, const std::function<void(OutputFile&)>& write)
{
    atomicWriteFile(target, [&](const fs::path& tmp) {
        OutputFile out(tmp, target);
        write(out);
        out.close();
    });
}

void atomicWriteFile(const fs::path& target, const std::function<void(const fs::path&)>& write)
{
    const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error("cannot write '" + target.string() + "': folder '" + dir.string() + "' does not exist");
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
    atomicWriteOutput(target, [&](OutputFile& out) { out.write(bytes.data(), bytes.size()); });
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
        throw Error(file.string() + ": file is " + std::to_string(size) + " bytes, more than the "
                    + std::to_string(maxBytes) + "-byte limit for this kind of file");
    std::string out;
    out.resize(static_cast<std::size_t>(size));
    in.read(out.data(), static_cast<std::streamsize>(out.size()));
    if (static_cast<uint64_t>(in.gcount()) != size || in.bad())
        throw Error("cannot read '" + file.string() + "' (changed while reading?)");
    return out;
}

LineReader::LineReader(const fs::path& file, std::size_t maxLineBytes, const std::string& what)
    : m_in(file, std::ios::binary), m_file(file), m_max(maxLineBytes)
{
    if (!m_in)
        throw Error("cannot open " + what + " '" + file.string() + "'");
}

bool LineReader::next(std::string& line)
{
    line.clear();
    auto* buf = m_in.rdbuf();
    int c = buf->sbumpc();
    if (c == std::char_traits<char>::eof())
        return false;
    ++m_lineNo;
    for (; c != std::char_traits<char>::eof() && c != '\n'; c = buf->sbumpc()) {
        if (line.size() >= m_max)
            throw Error(where() + ": line longer than the " + std::to_string(m_max) + "-byte limit for a line");
        line.push_back(static_cast<char>(c));
    }
    return true;
}

std::string LineReader::where() const { return m_file.string() + ":" + std::to_string(m_lineNo); }

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

void preadFully(int fd, void* dst, std::uint64_t size, std::uint64_t offset, const std::string& what,
                const fs::path& file)
{
    auto* p = static_cast<char*>(dst);
    while (size > 0) {
        const ssize_t n = ::pread(fd, p, std::min<std::uint64_t>(size, 1ull << 30), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw Error("cannot read " + what + " from '" + file.string()
                        + "': " + (n < 0 ? std::strerror(errno) : std::string("unexpected end of file (truncated?)")));
        p += n;
        offset += static_cast<std::uint64_t>(n);
        size -= static_cast<std::uint64_t>(n);
    }
}

} // namespace ladimo::core

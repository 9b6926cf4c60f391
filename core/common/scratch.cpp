#include "common/scratch.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"

namespace ladimo::core {

torch::Tensor fileBackedTensor(const std::filesystem::path& dir, at::IntArrayRef shape, torch::ScalarType dtype)
{
    int64_t numel = 1;
    for (auto d : shape)
        numel *= d;
    const auto bytes = static_cast<std::size_t>(numel) * c10::elementSize(dtype);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    std::string name = (dir / "ladimo-scratch-XXXXXX").string();
    const int fd = ::mkstemp(name.data());
    if (fd < 0)
        throw Error("cannot create a scratch file in " + dir.string() + ": " + std::strerror(errno));
    // From here on only the open descriptor and the mapping keep the file alive.
    ::unlink(name.c_str());
    if (bytes == 0) {
        ::close(fd);
        return torch::empty(shape, torch::TensorOptions().dtype(dtype));
    }
    if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); rc != 0) {
        ::close(fd);
        throw Error("not enough disk space in " + dir.string() + " for " + std::to_string(bytes >> 20)
                    + " MiB of scratch data (" + std::strerror(rc) + ")");
    }
    void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int mapErrno = errno;
    ::close(fd);
    if (map == MAP_FAILED)
        throw Error("cannot map a scratch file in " + dir.string() + ": " + std::strerror(mapErrno));
    return torch::from_blob(
        map, shape, [bytes](void* p) { ::munmap(p, bytes); }, torch::TensorOptions().dtype(dtype));
}

std::uint64_t availableMemoryBytes()
{
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::uint64_t value = 0;
    std::string unit;
    while (in >> key >> value) {
        std::getline(in, unit);
        if (key == "MemAvailable:")
            return value * 1024;
    }
    const long pages = ::sysconf(_SC_AVPHYS_PAGES), size = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(size) : 0;
}

} // namespace ladimo::core

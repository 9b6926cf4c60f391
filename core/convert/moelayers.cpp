#include "convert/moelayers.h"

#include <map>
#include <mutex>

#include "common/error.h"
#include "convert/convert.h"
#include "model/safetensors.h"

namespace ladimo::core {

struct MoeLayers::Impl {
    std::vector<MoeLayer> resident; // resident sets; streamed ones once resident() was asked
    std::vector<std::filesystem::path> files;
    torch::Device device = torch::kCPU;
    torch::ScalarType dtype = torch::kFloat32;
    int64_t experts = 0;
    std::uint64_t layerBytes = 0;
    bool streamed = false;

    std::mutex mutex; // guards what follows
    std::map<std::size_t, std::shared_ptr<const MoeLayer>> cache;
    std::pair<std::size_t, std::shared_ptr<const MoeLayer>> last{0, nullptr};
    std::uint64_t cacheBudget = 0;
    std::uint64_t cached = 0;
};

MoeLayers::MoeLayers() : m(std::make_shared<Impl>()) { }

MoeLayers::MoeLayers(std::vector<MoeLayer> layers) : m(std::make_shared<Impl>())
{
    m->resident = std::move(layers);
    m->experts = m->resident.empty() ? 0 : m->resident.front().numExperts();
}

MoeLayers MoeLayers::streamed(std::vector<std::filesystem::path> files, torch::Device device, torch::ScalarType dtype)
{
    MoeLayers s;
    s.m->streamed = true;
    s.m->device = device;
    s.m->dtype = dtype;
    if (!files.empty()) {
        auto st = SafetensorsFile::open(files.front());
        const auto* router = st->find("router");
        if (!router || router->shape.size() != 2)
            throw Error(files.front().string() + ": not a LaDiMo MoE layer file (no router [N, H])");
        s.m->experts = router->shape[0];
        std::uint64_t elements = 0;
        for (const auto& t : st->tensors())
            elements += static_cast<std::uint64_t>(t.numel());
        s.m->layerBytes = elements * c10::elementSize(dtype);
    }
    s.m->files = std::move(files);
    return s;
}

std::size_t MoeLayers::size() const { return m->streamed ? m->files.size() : m->resident.size(); }

bool MoeLayers::streamed() const { return m->streamed; }

int64_t MoeLayers::numExperts() const { return m->experts; }

std::shared_ptr<const MoeLayer> MoeLayers::get(std::size_t l) const
{
    if (l >= size())
        throw Error("MoE layer " + std::to_string(l) + " is outside 0.." + std::to_string(size()) + ")");
    if (!m->streamed) // an aliasing pointer that owns nothing: the set holds the layer
        return std::shared_ptr<const MoeLayer>(std::shared_ptr<void>(), &m->resident[l]);
    {
        std::lock_guard<std::mutex> lock(m->mutex);
        if (!m->resident.empty())
            return std::shared_ptr<const MoeLayer>(std::shared_ptr<void>(), &m->resident[l]);
        auto c = m->cache.find(l);
        if (c != m->cache.end())
            return c->second;
        if (m->last.second && m->last.first == l)
            return m->last.second;
    }
    auto layer = std::make_shared<const MoeLayer>(loadMoeLayer(m->files[l], m->device, m->dtype));
    std::lock_guard<std::mutex> lock(m->mutex);
    if (m->cached + m->layerBytes <= m->cacheBudget && !m->cache.count(l)) {
        m->cache[l] = layer;
        m->cached += m->layerBytes;
    }
    m->last = {l, layer};
    return layer;
}

const std::vector<MoeLayer>& MoeLayers::resident() const
{
    if (!m->streamed)
        return m->resident;
    std::lock_guard<std::mutex> lock(m->mutex);
    if (m->resident.empty())
        for (const auto& f : m->files)
            m->resident.push_back(loadMoeLayer(f, m->device, m->dtype));
    m->cache.clear();
    m->cached = 0;
    m->last = {0, nullptr};
    return m->resident;
}

void MoeLayers::setCache(std::uint64_t bytes) const
{
    std::lock_guard<std::mutex> lock(m->mutex);
    m->cacheBudget = bytes;
    while (m->cached > bytes && !m->cache.empty()) {
        m->cache.erase(std::prev(m->cache.end()));
        m->cached -= m->layerBytes;
    }
}

} // namespace ladimo::core

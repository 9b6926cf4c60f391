#include "model/device.h"

#include <sstream>

#include "common/error.h"

namespace ladimo::core {

torch::Device parseDevice(const std::string& spec)
{
    if (spec.empty() || spec == "auto")
        return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    if (spec == "cpu")
        return torch::Device(torch::kCPU);
    if (spec.rfind("cuda", 0) == 0) {
        if (!torch::cuda::is_available())
            throw Error("device '" + spec + "' requested but this LibTorch build sees no CUDA GPU");
        int index = 0;
        if (spec.size() > 4) {
            if (spec[4] != ':')
                throw Error("bad device '" + spec + "' (expected cpu, cuda or cuda:N)");
            try {
                std::size_t used = 0;
                index = std::stoi(spec.substr(5), &used);
                if (used != spec.size() - 5)
                    throw std::invalid_argument(spec);
            } catch (const std::exception&) {
                throw Error("bad device '" + spec + "' (expected cuda:N with N an integer)");
            }
        }
        const int count = static_cast<int>(torch::cuda::device_count());
        if (index < 0 || index >= count)
            throw Error("device '" + spec + "' does not exist (" + std::to_string(count) + " CUDA device(s))");
        return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
    }
    throw Error("bad device '" + spec + "' (expected auto, cpu, cuda or cuda:N)");
}

std::vector<torch::Device> parseDevices(const std::string& spec)
{
    std::vector<torch::Device> out;
    std::stringstream ss(spec.empty() ? std::string("auto") : spec);
    std::string item;
    while (std::getline(ss, item, ','))
        out.push_back(parseDevice(item));
    if (out.empty())
        throw Error("empty device list");
    return out;
}

torch::ScalarType parseComputeDType(const std::string& spec, const torch::Device& device)
{
    if (spec.empty() || spec == "auto")
        return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
    if (spec == "float32" || spec == "f32" || spec == "fp32")
        return torch::kFloat32;
    if (spec == "bfloat16" || spec == "bf16")
        return torch::kBFloat16;
    if (spec == "float16" || spec == "f16" || spec == "fp16")
        return torch::kFloat16;
    throw Error("bad compute dtype '" + spec + "' (expected auto, float32, bfloat16 or float16)");
}

} // namespace ladimo::core

// The latest conversion run of a project with its dense model and every MoE layer loaded, as
// evaluation, profiling and export need it; shared by the CLI and the workbench. Throws an Error
// naming the unfinished layers when the run is incomplete.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "convert/moelayers.h"
#include "model/llama.h"
#include "moe/moelayer.h"
#include "store/records.h"

namespace ladimo::core {

// What the caller tells the user to do, appended to the messages (the CLI names its commands,
// the workbench its buttons).
struct LatestRunHints {
    std::string noRun = "; convert first";                    // after "P: no conversion run yet"
    std::string unfinished = "; finish the conversion first"; // after "run #R has unfinished layers (...)"
};

struct LatestRun {
    int64_t runId = 0;
    ConversionRun run;
    std::string modelDir;            // the dense source model
    std::optional<LlamaModel> model; // loaded with the caller's options
    // Every layer, on the model's device and dtype: streamed when the dense model is streamed or
    // the layers take more than half the memory budget, else resident.
    MoeLayers layers;
    int trainTopK() const; // the k the run trained for: its column, else its settings "train_top_k"
};

// Opens the project read-only, loads the dense model with `options` and every finished layer.
// With `expertDtype` the layers are resident and their experts (gate, up, down) are kept in that
// dtype instead, the router in the model's: an export in bf16 or f16 holds half the memory and
// writes the same bytes.
LatestRun loadLatestRun(const std::string& projectFile, const LoadOptions& options, const LatestRunHints& hints = {},
                        std::optional<torch::ScalarType> expertDtype = std::nullopt);

} // namespace ladimo::core

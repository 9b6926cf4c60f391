// Each `ladimo` subcommand registers itself on the CLI11 app; main() owns the app and turns
// ladimo::core::Error into a message + exit code 1 at the boundary.
#pragma once

#include <CLI/CLI.hpp>

namespace ladimo::cli {

void registerInspectCommand(CLI::App& app);
void registerEvalCommand(CLI::App& app);
void registerGenerateCommand(CLI::App& app);
void registerBenchCommand(CLI::App& app);
void registerPretrainCommand(CLI::App& app);
void registerProjectCommand(CLI::App& app);
void registerConvertCommand(CLI::App& app);
void registerCaptureCommand(CLI::App& app);
void registerAssembleCommand(CLI::App& app);
void registerProfileCommand(CLI::App& app);
void registerLatencyCommand(CLI::App& app);
void registerPolicyCommand(CLI::App& app);
void registerTradeoffCommand(CLI::App& app);
void registerExportCommand(CLI::App& app);
void registerImportCommand(CLI::App& app);
void registerRunCommand(CLI::App& app);
void registerRouteCommand(CLI::App& app);

} // namespace ladimo::cli

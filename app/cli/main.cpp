// `ladimo`: the headless twin of the workbench. Links ladimo_core only (no Qt).
#include <cstdio>
#include <exception>

#include <torch/torch.h>

#include "cliutil.h"
#include "commands.h"
#include "common/processtuning.h"
#include "common/error.h"
#include "common/memory.h"

int main(int argc, char** argv)
{
    ladimo::core::tuneProcessForTensors();
    CLI::App app{"LaDiMo Workbench: convert dense LLaMA-family models into Mixture-of-Experts models "
                 "(layer-wise distillation + adaptive routing policy)",
                 "ladimo"};
    app.set_version_flag("--version", std::string("ladimo ") + LADIMO_VERSION);
    app.require_subcommand(1);
    bool peakMemory = false;
    app.add_flag("--peak-memory", peakMemory,
                 "After the command, print the process's peak resident memory on stderr (as /usr/bin/time -f %M)");
    ladimo::cli::registerInspectCommand(app);
    ladimo::cli::registerEvalCommand(app);
    ladimo::cli::registerGenerateCommand(app);
    ladimo::cli::registerBenchCommand(app);
    ladimo::cli::registerRunCommand(app);
    ladimo::cli::registerConvertCommand(app);
    ladimo::cli::registerCaptureCommand(app);
    ladimo::cli::registerAssembleCommand(app);
    ladimo::cli::registerProfileCommand(app);
    ladimo::cli::registerRouteCommand(app);
    ladimo::cli::registerLatencyCommand(app);
    ladimo::cli::registerPolicyCommand(app);
    ladimo::cli::registerTradeoffCommand(app);
    ladimo::cli::registerPretrainCommand(app);
    ladimo::cli::registerProjectCommand(app);
    ladimo::cli::registerExportCommand(app);
    ladimo::cli::registerImportCommand(app);
    ladimo::cli::installInterruptHandler();
    struct PeakReport {
        const bool& on;
        ~PeakReport()
        {
            if (on)
                std::fprintf(stderr, "ladimo: peak resident memory %s (%llu bytes)\n",
                             ladimo::core::memoryText(static_cast<double>(ladimo::core::peakRssBytes())).c_str(),
                             static_cast<unsigned long long>(ladimo::core::peakRssBytes()));
        }
    } peakReport{peakMemory};
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const ladimo::core::Cancelled&) {
        std::fprintf(stderr, "ladimo: cancelled\n");
        return 130;
    } catch (const ladimo::core::Error& e) {
        std::fprintf(stderr, "ladimo: error: %s\n", e.what());
        return 1;
    } catch (const c10::Error& e) {
        std::fprintf(stderr, "ladimo: internal tensor error: %s\n", e.what_without_backtrace());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ladimo: error: %s\n", e.what());
        return 2;
    }
    return 0;
}

// ladimo-workbench: parses the command line and shows the MainWindow.
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include <algorithm>
#include <cstdio>

#include "calibrationview.h"
#include "mainwindow.h"
#include "playgroundview.h"
#include "routingview.h"
#include "common/processtuning.h"

int main(int argc, char** argv)
{
    ladimo::core::tuneProcessForTensors();
    QApplication app(argc, argv);
    QApplication::setOrganizationName("LaDiMo");
    QApplication::setApplicationName("LaDiMo Workbench");
    QApplication::setApplicationVersion(LADIMO_VERSION);

    QCommandLineParser parser;
    parser.setApplicationDescription("Convert dense LLaMA-family models into Mixture-of-Experts models");
    parser.addHelpOption();
    parser.addVersionOption();
    QCommandLineOption openOption("open", "Model folder (or project) to open.", "path");
    QCommandLineOption demoOption("demo", "Open the bundled demo model.");
    QCommandLineOption shotOption("screenshot", "Render the window to a PNG file and exit.", "file");
    QCommandLineOption viewOption(
        "view", "View to show (model, calibration, convert, routing, policy, tradeoff, playground, evaluate, export).",
        "name", "model");
    QCommandLineOption promptOption("prompt",
                                    "Playground: generate from this prompt with the dense and the converted model "
                                    "(with --screenshot: once both finished and the text is routed).",
                                    "text");
    QCommandLineOption maxTokensOption("max-tokens", "Playground: tokens to generate with --prompt.", "n", "48");
    QCommandLineOption seedOption("seed", "Playground: sampling seed with --prompt.", "n", "0");
    QCommandLineOption deadOption("dead-below", "Routing view: dead-expert threshold (times the even share).", "x");
    QCommandLineOption hotOption("hot-above", "Routing view: hot-expert threshold (times the even share).", "x");
    parser.addOptions({openOption, demoOption, shotOption, viewOption, promptOption, maxTokensOption, seedOption,
                       deadOption, hotOption});
    parser.addPositionalArgument("path", "Model folder to open.", "[path]");
    parser.process(app);

    ladimo::gui::MainWindow window;
    if (parser.isSet(deadOption) || parser.isSet(hotOption)) {
        ladimo::core::ExpertLoadThresholds t;
        bool deadOk = true, hotOk = true;
        if (parser.isSet(deadOption))
            t.deadBelow = parser.value(deadOption).toDouble(&deadOk);
        if (parser.isSet(hotOption))
            t.hotAbove = parser.value(hotOption).toDouble(&hotOk);
        if (!deadOk || !hotOk) {
            std::fprintf(stderr, "ladimo-workbench: --dead-below and --hot-above expect numbers\n");
            return 2;
        }
        try {
            window.routingView()->setLoadThresholds(t);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ladimo-workbench: %s\n", e.what());
            return 2;
        }
    }
    QString path = parser.value(openOption);
    if (path.isEmpty() && !parser.positionalArguments().isEmpty())
        path = parser.positionalArguments().front();
    if (path.isEmpty() && parser.isSet(demoOption))
        path = ladimo::gui::MainWindow::demoModelPath();

    const QString shot = parser.value(shotOption);
    if (!shot.isEmpty()) {
        window.setProperty("quiet", true);
        auto grab = [&] {
            QTimer::singleShot(200, &app, [&] {
                const bool ok = window.grab().save(shot);
                std::fprintf(stderr, ok ? "wrote %s\n" : "could not write %s\n", qPrintable(shot));
                app.exit(ok ? 0 : 1);
            });
        };
        auto render = [&] {
            if (!window.selectView(parser.value(viewOption)))
                std::fprintf(stderr, "ladimo-workbench: no view named '%s'\n", qPrintable(parser.value(viewOption)));
            // The Calibration view shows its token count and first tokens once it has read them.
            auto* calibration = window.calibrationView();
            if (parser.value(viewOption).compare("calibration", Qt::CaseInsensitive) == 0
                && calibration->startPreview())
                QObject::connect(calibration, &ladimo::gui::CalibrationView::previewFinished, &app, grab);
            else if (!parser.isSet(promptOption))
                grab();
        };
        // The Playground: once the run is loaded, generate; once the text is routed, grab.
        if (parser.isSet(promptOption)) {
            auto* playground = window.playgroundView();
            QObject::connect(playground, &ladimo::gui::PlaygroundView::routed, &app, [grab, playground] {
                playground->selectToken(std::min(5, static_cast<int>(playground->routedIds().size()) - 1));
                grab();
            });
            QObject::connect(playground, &ladimo::gui::PlaygroundView::loadFailed, &app, [&](const QString& msg) {
                std::fprintf(stderr, "ladimo-workbench: %s\n", qPrintable(msg));
                app.exit(1);
            });
        }
        QObject::connect(&window, &ladimo::gui::MainWindow::modelOpened, &app, render);
        QObject::connect(&window, &ladimo::gui::MainWindow::openFailed, &app, [&](const QString& msg) {
            std::fprintf(stderr, "ladimo-workbench: %s\n", qPrintable(msg));
            app.exit(1);
        });
        if (path.isEmpty())
            QTimer::singleShot(0, &app, render);
    }
    if (parser.isSet(promptOption)) {
        auto* playground = window.playgroundView();
        QObject::connect(playground, &ladimo::gui::PlaygroundView::modelLoaded, &app, [&, playground] {
            playground->setPrompt(parser.value(promptOption));
            playground->setSampling(0.8, parser.value(maxTokensOption).toInt(), parser.value(seedOption).toInt());
            if (!playground->generate())
                std::fprintf(stderr, "ladimo-workbench: %s\n", qPrintable(playground->statusText()));
        });
    }
    window.show();
    if (!path.isEmpty())
        window.openPath(path);
    return app.exec();
}

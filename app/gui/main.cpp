// ladimo-workbench: parses the command line and shows the MainWindow.
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include <cstdio>

#include "calibrationview.h"
#include "mainwindow.h"
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
        "view", "View to show (model, calibration, convert, routing, policy, tradeoff, evaluate, export).", "name",
        "model");
    parser.addOptions({openOption, demoOption, shotOption, viewOption});
    parser.addPositionalArgument("path", "Model folder to open.", "[path]");
    parser.process(app);

    ladimo::gui::MainWindow window;
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
            else
                grab();
        };
        QObject::connect(&window, &ladimo::gui::MainWindow::modelOpened, &app, render);
        QObject::connect(&window, &ladimo::gui::MainWindow::openFailed, &app, [&](const QString& msg) {
            std::fprintf(stderr, "ladimo-workbench: %s\n", qPrintable(msg));
            app.exit(1);
        });
        if (path.isEmpty())
            QTimer::singleShot(0, &app, render);
    }
    window.show();
    if (!path.isEmpty())
        window.openPath(path);
    return app.exec();
}

// The first screen's one-click pipeline (`ladimo run`): a parameter budget, an output folder, Run
// and Cancel, the step in progress, and the report when it ends. The window runs the job with the
// Calibration and Convert views' settings (MainWindow::startPipeline); this widget only shows it.
// GUI thread only.
#pragma once

#include <QGroupBox>
#include <QString>

class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;

namespace ladimo::gui {

class PipelineView : public QGroupBox {
    Q_OBJECT
public:
    explicit PipelineView(QWidget* parent = nullptr);

    double budget() const;
    QString outDir() const;
    void setOutDir(const QString& dir);
    // Run is enabled when a model is open and no job runs; Cancel while the pipeline runs.
    void setState(bool modelOpen, bool jobRunning, bool pipelineRunning);
    void showStep(const QString& step, const QString& line);
    void showProgress(const QString& stage, double done, double total);
    void showReport(const QString& text);
    // A model or project was opened: the report of its last pipeline run (report.txt beside the
    // project; empty: none) and what Run would do.
    void showOpened(const QString& storedReport, const QString& outDir);
    void showFinished(bool cancelled, const QString& error, double seconds);
    QString reportText() const;
    QString statusText() const;

Q_SIGNALS:
    void runRequested();
    void cancelRequested();

private:
    QDoubleSpinBox* m_budget = nullptr;
    QLineEdit* m_out = nullptr;
    QPushButton* m_browse = nullptr;
    QPushButton* m_run = nullptr;
    QPushButton* m_cancel = nullptr;
    QLabel* m_status = nullptr;
    QProgressBar* m_progress = nullptr;
    QPlainTextEdit* m_report = nullptr;
};

} // namespace ladimo::gui

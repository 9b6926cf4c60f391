// ExportView: exports the open project's latest conversion (hf-mixtral, gguf) or its dense model
// (hf-llama, gguf-llama) on a worker thread with progress and Cancel, as `ladimo export` does,
// records the export in the project, shows the report (exact, or the plain-language notes; files,
// bytes, SHA-256) and lists the project's earlier exports. GUI thread only.
#pragma once

#include <QString>
#include <QWidget>

#include <vector>

#include "store/project.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableView;

namespace ladimo::gui {

class ExportTableModel;
class WorkbenchJob;

class ExportView : public QWidget {
    Q_OBJECT
public:
    explicit ExportView(QWidget* parent = nullptr);
    ~ExportView() override;

    void setProject(const QString& projectFile, int experts, const std::vector<core::Policy>& policies,
                    const std::vector<core::ExportRecord>& exports);
    void clear(const QString& message);

    bool startExport(); // false when no project is set, no destination is given or a job runs
    void cancel();
    bool isRunning() const;
    ExportTableModel* model() const { return m_model; }
    QString reportText() const;

Q_SIGNALS:
    void runningChanged(bool running); // a job of this view started or ended
    void exportFinished(bool cancelled, const QString& error);

private:
    void onExported(const QString& reportJson);
    void onFinished(bool cancelled, const QString& error);
    void setRunning(bool running);

    QString m_project;
    bool m_running = false;
    QComboBox* m_format = nullptr;
    QComboBox* m_dtype = nullptr;
    QComboBox* m_policy = nullptr;
    QSpinBox* m_topK = nullptr;
    QLineEdit* m_out = nullptr;
    QPushButton* m_browse = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QLabel* m_report = nullptr;
    QTableView* m_table = nullptr;
    ExportTableModel* m_model = nullptr;
    WorkbenchJob* m_job = nullptr;
};

} // namespace ladimo::gui

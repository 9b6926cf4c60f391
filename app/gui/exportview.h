// ExportView: exports the open project's latest conversion or its dense model, in a format of the
// registry (core/export/formats.h), on a worker thread with progress and Cancel, as `ladimo export` does,
// records the export in the project, shows the report (exact, or the plain-language notes; files,
// bytes, SHA-256) and lists the project's earlier exports. GUI thread only.
#pragma once

#include <QString>

#include <vector>

#include "jobview.h"
#include "store/project.h"

class QComboBox;
class QLineEdit;
class QPushButton;
class QSpinBox;

namespace ladimo::gui {

class ExportTableModel;

class ExportView : public JobView {
    Q_OBJECT
public:
    explicit ExportView(QWidget* parent = nullptr);

    void setProject(const QString& projectFile, int experts, const std::vector<core::Policy>& policies,
                    const std::vector<core::ExportRecord>& exports);
    void clear(const QString& message);

    bool startExport(); // false when no project is set, no destination is given or a job runs
    ExportTableModel* model() const { return m_model; }
    QString reportText() const { return resultText(); }

Q_SIGNALS:
    void exportFinished(bool cancelled, const QString& error);

protected:
    QList<QWidget*> formWidgets() const override;
    void refineEnabled(bool editable) override;
    void jobFinished(bool cancelled, const QString& error) override;

private:
    void onExported(const QString& reportJson);

    QComboBox* m_format = nullptr;
    QComboBox* m_dtype = nullptr;
    QComboBox* m_policy = nullptr;
    QSpinBox* m_topK = nullptr;
    QLineEdit* m_out = nullptr;
    QPushButton* m_browse = nullptr;
    ExportTableModel* m_model = nullptr;
};

} // namespace ladimo::gui

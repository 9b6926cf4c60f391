// JobView: the base of the run-and-list views (Evaluate, Export). A form in a group box, Start and
// Cancel with a progress bar and a status line, the last result, and the table of the project's
// records; one job at a time on a worker thread (WorkbenchJob), which follows the view's
// lifetime. A subclass adds its form fields (form()), starts its job and fills the result.
// GUI thread only.
#pragma once

#include <QList>
#include <QString>
#include <QWidget>

class QAbstractItemModel;
class QGridLayout;
class QLabel;
class QProgressBar;
class QPushButton;
class QTableView;

namespace ladimo::gui {

class WorkbenchJob;

// The object names and words a job view shows (tests find the widgets by these names).
struct JobViewText {
    QString title; // of the group box
    QString start; // the Start button's text, with its & shortcut
    QString startTip;
    QString cancelTip;
    const char* startName; // object names
    const char* cancelName;
    const char* progressName;
    const char* resultName;
    QString noResult;   // the result line before anything ran
    QString recordsTip; // of the table
    QString failed;     // "Evaluation failed: %1"
    QString cancelled;  // "Evaluation cancelled; nothing was stored."
    QString done;       // "Measured and stored in the project."
};

class JobView : public QWidget {
    Q_OBJECT
public:
    ~JobView() override;

    bool isRunning() const;
    void cancel();
    QString resultText() const;

Q_SIGNALS:
    void runningChanged(bool running); // a job of this view started or ended

protected:
    JobView(const JobViewText& text, QWidget* parent);

    QGridLayout* form() const { return m_form; }
    // A form label whose shortcut focuses `buddy`.
    static QLabel* label(const QString& text, QWidget* buddy);
    // Call at the end of the subclass's constructor, after its fields are in form(): the actions
    // and status go below them, spanning `columns` columns; the table of `records` below all.
    void finishForm(int columns, QAbstractItemModel* records);
    WorkbenchJob* job() const { return m_job; }
    const QString& project() const { return m_project; }
    void setProjectFile(const QString& file) { m_project = file; }
    void showStatus(const QString& text);
    void showResult(const QString& html);
    // Enables Start / Cancel and the form widgets for the state; subclasses refine the fields.
    void setRunning(bool running);
    // The job started: progress reset, `status` shown, running.
    void jobStarted(const QString& status);

    // The fields disabled while a job runs or no project is open.
    virtual QList<QWidget*> formWidgets() const = 0;
    // Extra enabling rules of the subclass, after the common ones (`editable`: no job, a project).
    virtual void refineEnabled(bool editable) { (void)editable; }
    // The job ended; the status line says how; then the subclass's own signal.
    virtual void jobFinished(bool cancelled, const QString& error) = 0;

private:
    void onFinished(bool cancelled, const QString& error);

    JobViewText m_text;
    QString m_project;
    bool m_running = false;
    QGridLayout* m_form = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QLabel* m_result = nullptr;
    QTableView* m_table = nullptr;
    WorkbenchJob* m_job = nullptr;

protected:
    QPushButton* startButton() const { return m_start; }
};

} // namespace ladimo::gui

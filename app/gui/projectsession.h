// ProjectSession: the workbench's open model or project, and the one place in the GUI that reads
// and writes project files. It opens a model folder or a *.ladimo project off the GUI thread,
// reloads it on request (after a job) and when another process changes it (a `ladimo` command
// in a terminal: the file and its write-ahead log are watched), stores settings and policies,
// and owns the undo stack of policy edits. Views show what it holds and ask it to write.
// GUI thread only; the destructor waits for a read in progress.
#pragma once

#include <QFutureWatcher>
#include <QObject>
#include <QString>
#include <QTimer>

#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "project/pipeline.h"
#include "projectdata.h"
#include "store/project.h"

class QFileSystemWatcher;
class QUndoStack;

namespace ladimo::core {
struct RouteModel;
}

namespace ladimo::gui {

// What opening a model yields; produced on a worker thread.
struct OpenedModel {
    QString path;      // what the user opened: a model folder or a *.ladimo project
    QString modelPath; // the dense model folder
    core::ModelConfig config;
    QString tokenizer; // kind, or empty
    bool isProject = false;
    std::optional<core::RunSnapshot> run;         // the project's latest conversion run
    std::optional<core::EndToEndRecord> endToEnd; // its end-to-end stage, when it ran (or was skipped)
    std::vector<core::RoutingProfile> profiles;   // its routing profiles (ladimo profile)
    std::vector<RoutingRun> routingRuns;          // every profiled run, newest first (comparison)
    PolicyData policy;                            // the Policy view's data, when there are profiles
    std::vector<core::Policy> policies;           // the project's stored policies
    std::vector<core::Evaluation> evaluations;    // and evaluations
    std::vector<core::ExportRecord> exports;      // and exports
    QString calibrationJson;   // the project's calibration setting (core::kCalibrationSetting), or empty
    QString pipelineReport;    // report.txt of the whole-pipeline run beside the project (`ladimo run`), or empty
    core::PipelineFacts facts; // what the pipeline step states derive from
    QString error;             // non-empty when opening failed
};

class ProjectSession : public QObject {
    Q_OBJECT
public:
    explicit ProjectSession(QObject* parent = nullptr);
    ~ProjectSession() override;

    // Reads (blocking; call on a worker thread). They never throw: errors land in `error`.
    static OpenedModel read(const QString& path);
    static PolicyData readPolicyData(const QString& projectPath);
    // The project's latest run loaded for routing and generation (the Playground): dense model,
    // MoE layers, tokenizer and stored policies (core::loadRouteModel). Null with `error` set
    // when it cannot be loaded.
    static std::shared_ptr<const core::RouteModel> readRouteModel(const QString& projectPath, QString* error);

    // Starts reading `path` in the background; opened or openFailed follows. A read in progress
    // is superseded: only the newest path is reported.
    void open(const QString& path);
    // Reads the current path again (after a job stored something).
    void reload();
    const OpenedModel& current() const { return m_current; }
    QString path() const { return m_current.path; }
    bool isProject() const { return m_current.isProject; }
    bool isReading() const { return m_watcher.isRunning(); }

    // Reload when the project file changes on disk (another process), a moment after the last
    // change; off while the workbench's own job writes it (the job's end reloads anyway).
    void setWatching(bool on);

    // The undo stack of policy edits (cleared when another project opens).
    QUndoStack* undoStack() const { return m_undo; }

    // Stores a project setting (a short write transaction); throws core::Error.
    void storeSetting(const std::string& key, const nlohmann::json& value);
    // Stores `policy` under its name (replacing one of the same name) on a worker thread;
    // policySaved follows with the project's policies after the save, or the error.
    void savePolicy(const QString& projectPath, const core::Policy& policy);

Q_SIGNALS:
    void opened(const ladimo::gui::OpenedModel& model);
    void openFailed(const QString& path, const QString& error);
    void policySaved(const QString& name, const std::vector<ladimo::core::Policy>& policies, const QString& error);

private:
    struct SaveResult {
        QString name;
        std::vector<core::Policy> policies;
        QString error;
    };
    void onReadFinished();
    void watch(const QString& path);

    OpenedModel m_current;
    QString m_pending; // the path being read
    QFutureWatcher<OpenedModel> m_watcher;
    QFutureWatcher<SaveResult> m_saveWatcher;
    QFileSystemWatcher* m_files = nullptr;
    QTimer m_settle;
    bool m_watching = true;
    QString m_signature; // the project files' sizes and times after the session's own last read or write
    QUndoStack* m_undo = nullptr;
};

} // namespace ladimo::gui

#include "projectsession.h"

#include <QDateTime>
#include <QFileInfo>
#include <QFileSystemWatcher>
#include <QUndoStack>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"
#include "project/route.h"
#include "routing/policy.h"

namespace ladimo::gui {

std::shared_ptr<const core::RouteModel> ProjectSession::readRouteModel(const QString& projectPath, QString* error)
{
    try {
        core::LatestRunHints hints;
        hints.noRun = "; convert it first (Convert view)";
        hints.unfinished = "; finish the conversion first (Convert view)";
        return core::loadRouteModel(projectPath.toStdString(), {}, hints);
    } catch (const std::exception& e) {
        if (error)
            *error = QString::fromStdString(e.what());
        return nullptr;
    }
}

namespace {

// What the project's database files look like: their sizes and modification times (the -shm
// index changes on every read and is left out).
QString fileSignature(const QString& path)
{
    QString s;
    for (const QString& f : {path, path + QStringLiteral("-wal")}) {
        const QFileInfo info(f);
        s += info.exists() ? QStringLiteral("%1:%2;").arg(info.size()).arg(info.lastModified().toMSecsSinceEpoch())
                           : QStringLiteral("-;");
    }
    return s;
}

QString runDescription(const core::ConversionRun& r)
{
    return QObject::tr("run #%1 (%2 experts, %3, top-%4)")
        .arg(r.id)
        .arg(r.experts)
        .arg(QString::fromStdString(r.partition))
        .arg(r.trainTopK);
}

// Every run of the project that has routing profiles, newest first.
std::vector<RoutingRun> readRoutingRuns(core::Project& p)
{
    std::vector<RoutingRun> runs;
    auto all = p.runs();
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
    for (const auto& r : all) {
        RoutingRun rr;
        rr.runId = r.id;
        rr.description = runDescription(r);
        rr.profiles = p.routingProfiles(r.id);
        if (!rr.profiles.empty())
            runs.push_back(std::move(rr));
    }
    return runs;
}

// The Policy view's data from an open project (throws core::Error).
PolicyData policyDataOf(core::Project& p, const QString& projectPath)
{
    PolicyData d;
    d.path = projectPath;
    const auto runId = p.latestRunId();
    if (!runId)
        throw core::Error(projectPath.toStdString() + ": no conversion run yet");
    d.run = p.run(*runId);
    // The latency model of the device the model would run on, else the CPU's (as `ladimo policy`).
    std::string device;
    d.tables = core::loadPolicyTablesFor(p, *runId, "auto", &device);
    d.device = QString::fromStdString(device);
    const int layers = static_cast<int>(d.tables.layers.size());
    for (const auto& policy : p.policies()) {
        if (policy.runId != 0 && policy.runId != *runId)
            continue;
        try {
            d.policyRules.push_back(core::policyRules(policy, layers, d.run.experts));
            d.policies.push_back(policy);
        } catch (const core::Error&) {
            // A policy for another layer count (a partly profiled run): not offered.
        }
    }
    d.evaluations = p.evaluations();
    computeFronts(d);
    return d;
}

PolicyData policyDataOrError(const std::function<PolicyData()>& read, const QString& projectPath)
{
    try {
        return read();
    } catch (const std::exception& e) {
        PolicyData d;
        d.path = projectPath;
        d.error = QString::fromStdString(e.what());
        return d;
    }
}

} // namespace

OpenedModel ProjectSession::read(const QString& path)
{
    OpenedModel m;
    m.path = path;
    m.modelPath = path;
    try {
        std::filesystem::path dir = path.toStdString();
        if (path.endsWith(".ladimo")) {
            // Read-only: the GUI is a reader; a converter may be writing at the same time.
            auto p = core::Project::open(dir, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
            m.isProject = true;
            const auto runId = p.latestRunId();
            const auto models = p.models();
            if (runId) {
                m.run = p.snapshot(*runId);
                m.endToEnd = p.endToEnd(*runId);
                m.profiles = p.routingProfiles(*runId);
                m.policies = p.policies();
                m.evaluations = p.evaluations();
                m.exports = p.exports();
                if (!m.profiles.empty())
                    m.policy = policyDataOrError([&] { return policyDataOf(p, path); }, path);
                m.routingRuns = readRoutingRuns(p);
                dir = p.model(m.run->run.modelId).path;
            } else if (!models.empty()) {
                dir = models.front().path;
            } else {
                throw core::Error(path.toStdString() + ": the project has no model yet");
            }
            m.facts = core::readPipelineFacts(p);
            // A project made by the whole pipeline (`ladimo run`, Run all steps) has its report beside it.
            const auto report = std::filesystem::path(path.toStdString()).parent_path() / "report.txt";
            std::error_code ec;
            if (std::filesystem::is_regular_file(report, ec) && std::filesystem::file_size(report, ec) < (1 << 20))
                m.pipelineReport = QString::fromStdString(core::readTextFile(report, 1 << 20));
            if (m.facts.calibration)
                m.calibrationJson = QString::fromStdString(m.facts.calibration->dump());
            m.modelPath = QString::fromStdString(dir.string());
        }
        m.config = core::ModelConfig::load(dir / "config.json");
        m.facts.modelOpen = true;
        m.facts.modelName = dir.filename().string();
        m.facts.modelLayers = static_cast<int>(m.config.numLayers);
        if (auto tok = core::Tokenizer::loadForModel(dir))
            m.tokenizer = QString::fromStdString(tok->kind());
    } catch (const std::exception& e) {
        m.error = QString::fromStdString(e.what());
    }
    return m;
}

PolicyData ProjectSession::readPolicyData(const QString& projectPath)
{
    return policyDataOrError(
        [&] {
            // Read-only: a converter may be writing; saves open it for writing, one transaction each.
            auto p = core::Project::open(projectPath.toStdString(),
                                         {core::Project::Access::ReadOnly, core::Project::Verify::None});
            return policyDataOf(p, projectPath);
        },
        projectPath);
}

ProjectSession::ProjectSession(QObject* parent) : QObject(parent)
{
    m_undo = new QUndoStack(this);
    m_files = new QFileSystemWatcher(this);
    m_settle.setSingleShot(true);
    m_settle.setInterval(700); // a conversion commits a layer in a few writes: reload once after them
    connect(&m_settle, &QTimer::timeout, this, [this] {
        // Reads open the database too (SQLite makes and removes its -wal / -shm files then): only
        // a change of the files since the session's own last read or write counts.
        if (!m_watching || !m_current.isProject)
            return;
        if (isReading() || m_saveWatcher.isRunning())
            m_settle.start(); // look again once they are done
        else if (fileSignature(m_current.path) != m_signature)
            reload();
    });
    const auto changed = [this](const QString&) {
        if (m_watching)
            m_settle.start();
    };
    connect(m_files, &QFileSystemWatcher::fileChanged, this, changed);
    // A writer's write-ahead log appears and goes (its first commit, its last checkpoint) in the
    // project's folder: watch the folder for it, and the log itself while it is there.
    connect(m_files, &QFileSystemWatcher::directoryChanged, this, [this, changed](const QString& dir) {
        const QString wal = m_current.path + QStringLiteral("-wal");
        if (QFileInfo::exists(wal) && !m_files->files().contains(wal))
            m_files->addPath(wal);
        changed(dir);
    });
    connect(&m_watcher, &QFutureWatcher<OpenedModel>::finished, this, &ProjectSession::onReadFinished);
    connect(&m_saveWatcher, &QFutureWatcher<SaveResult>::finished, this, [this] {
        const SaveResult r = m_saveWatcher.result();
        if (m_current.isProject)
            m_signature = fileSignature(m_current.path); // the session's own change
        Q_EMIT policySaved(r.name, r.policies, r.error);
    });
}

ProjectSession::~ProjectSession()
{
    m_watcher.disconnect();
    m_watcher.waitForFinished();
    m_saveWatcher.disconnect();
    m_saveWatcher.waitForFinished();
}

void ProjectSession::open(const QString& path)
{
    m_pending = path;
    if (m_watcher.isRunning())
        return; // onReadFinished starts the newest path
    m_watcher.setFuture(QtConcurrent::run(&ProjectSession::read, path));
}

void ProjectSession::reload()
{
    if (!m_current.path.isEmpty())
        open(m_current.path);
}

void ProjectSession::onReadFinished()
{
    OpenedModel m = m_watcher.result();
    if (m.path != m_pending) { // superseded while reading
        m_watcher.setFuture(QtConcurrent::run(&ProjectSession::read, m_pending));
        return;
    }
    if (!m.error.isEmpty()) {
        Q_EMIT openFailed(m.path, m.error);
        return;
    }
    if (m.path != m_current.path)
        m_undo->clear(); // edits of another project cannot be undone here
    m_current = std::move(m);
    m_signature = m_current.isProject ? fileSignature(m_current.path) : QString();
    watch(m_current.isProject ? m_current.path : QString());
    Q_EMIT opened(m_current);
}

void ProjectSession::watch(const QString& path)
{
    if (!m_files->files().isEmpty())
        m_files->removePaths(m_files->files());
    if (!m_files->directories().isEmpty())
        m_files->removePaths(m_files->directories());
    if (path.isEmpty())
        return;
    // The database file and its write-ahead log (where a writer's commits land first).
    for (const QString& f : {path, path + QStringLiteral("-wal")})
        if (QFileInfo::exists(f))
            m_files->addPath(f);
    m_files->addPath(QFileInfo(path).absolutePath());
}

void ProjectSession::setWatching(bool on)
{
    m_watching = on;
    if (!on)
        m_settle.stop();
}

void ProjectSession::storeSetting(const std::string& key, const nlohmann::json& value)
{
    if (!m_current.isProject)
        throw core::Error("no project is open");
    {
        auto p = core::Project::open(m_current.path.toStdString(),
                                     {core::Project::Access::ReadWrite, core::Project::Verify::None});
        p.setSetting(key, value);
    }
    m_signature = fileSignature(m_current.path); // the session's own change
}

void ProjectSession::savePolicy(const QString& projectPath, const core::Policy& toSave)
{
    m_saveWatcher.waitForFinished(); // one save at a time, in order
    m_saveWatcher.setFuture(QtConcurrent::run([path = projectPath, toSave] {
        SaveResult r;
        r.name = QString::fromStdString(toSave.name);
        core::Policy policy = toSave;
        try {
            // Writable only for this one transaction; throws when a converter holds the writer lock.
            auto p = core::Project::open(path.toStdString(),
                                         {core::Project::Access::ReadWrite, core::Project::Verify::None});
            for (const auto& existing : p.policies())
                if (existing.name == policy.name)
                    policy.id = existing.id;
            p.savePolicy(policy);
            r.policies = p.policies();
        } catch (const std::exception& e) {
            r.error = QString::fromStdString(e.what());
        }
        return r;
    }));
}

} // namespace ladimo::gui

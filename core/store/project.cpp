#include "store/project.h"
#include "store/assemble.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <chrono>
#include <map>
#include <utility>

#include "common/error.h"
#include "common/fileutil.h"

#ifndef LADIMO_VERSION
#define LADIMO_VERSION "0.0.0-dev"
#endif

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// Schema history. kMigrations[v] takes a database from user_version v to v + 1; a new project
// runs them all, so a fresh project and a migrated one go through the same code. Never edit a
// released step: add the next one (and a fixture of the old schema under tests/data/store/).
//
// v1: project, model, calibration sets, runs, per-layer results, routing profiles, policies,
//     evaluations.
// v2: loss curves (per layer and step), exports, free-form extra run settings.
// v3: free-form extra routing-profile measures (cumulative top-k mass, threshold grid).
// v4: latency models per run and device.
// v5: project settings (named JSON values, e.g. the calibration choice of the workbench).
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE project (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created TEXT NOT NULL,
    tool_version TEXT NOT NULL
);
CREATE TABLE source_model (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    config_json TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    total_params INTEGER NOT NULL DEFAULT 0,
    embedding_params INTEGER NOT NULL DEFAULT 0,
    attention_params INTEGER NOT NULL DEFAULT 0,
    ffn_params INTEGER NOT NULL DEFAULT 0,
    added TEXT NOT NULL
);
CREATE TABLE calibration_set (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('file', 'self_sample')),
    file_path TEXT,
    file_sha256 TEXT,
    seed INTEGER,
    tokens INTEGER NOT NULL,
    seq_len INTEGER NOT NULL DEFAULT 0,
    split TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE TABLE conversion_run (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES source_model(id),
    calibration_set_id INTEGER REFERENCES calibration_set(id),
    layers INTEGER NOT NULL,
    experts INTEGER NOT NULL,
    expert_size INTEGER NOT NULL,
    partition TEXT NOT NULL,
    gating TEXT NOT NULL,
    train_top_k INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    lr REAL NOT NULL,
    batch INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('parallel', 'sequential')),
    device TEXT NOT NULL,
    seed INTEGER NOT NULL,
    tool_version TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled', 'interrupted'))
);
CREATE TABLE layer_result (
    run_id INTEGER NOT NULL REFERENCES conversion_run(id) ON DELETE CASCADE,
    layer INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    final_loss REAL,
    relative_error REAL,
    wall_seconds REAL,
    weights_path TEXT,
    weights_sha256 TEXT,
    failure_reason TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (run_id, layer),
    CHECK (status <> 'done' OR (weights_path IS NOT NULL AND weights_sha256 IS NOT NULL))
);
CREATE TABLE routing_profile (
    run_id INTEGER NOT NULL,
    layer INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    bin_edges BLOB NOT NULL,
    ranks INTEGER NOT NULL,
    rank_histograms BLOB NOT NULL,
    expert_load BLOB NOT NULL,
    entropy REAL NOT NULL,
    error_by_k BLOB NOT NULL,
    PRIMARY KEY (run_id, layer),
    FOREIGN KEY (run_id, layer) REFERENCES layer_result(run_id, layer) ON DELETE CASCADE
);
CREATE TABLE policy (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL CHECK (origin IN ('auto', 'manual', 'imported')),
    run_id INTEGER REFERENCES conversion_run(id) ON DELETE SET NULL,
    rules_json TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE evaluation (
    id INTEGER PRIMARY KEY,
    policy_id INTEGER REFERENCES policy(id) ON DELETE SET NULL,
    run_id INTEGER REFERENCES conversion_run(id) ON DELETE SET NULL,
    data TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    device TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
PRAGMA application_id = 1279544655;
PRAGMA user_version = 1;
)sql",
    R"sql(
CREATE TABLE loss_curve (
    run_id INTEGER NOT NULL,
    layer INTEGER NOT NULL,
    step INTEGER NOT NULL,
    loss REAL NOT NULL,
    PRIMARY KEY (run_id, layer, step),
    FOREIGN KEY (run_id, layer) REFERENCES layer_result(run_id, layer) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE export_record (
    id INTEGER PRIMARY KEY,
    format TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    policy_id INTEGER REFERENCES policy(id) ON DELETE SET NULL,
    run_id INTEGER REFERENCES conversion_run(id) ON DELETE SET NULL,
    created TEXT NOT NULL
);
CREATE INDEX evaluation_by_policy ON evaluation(policy_id);
ALTER TABLE conversion_run ADD COLUMN extra_json TEXT NOT NULL DEFAULT '{}';
PRAGMA user_version = 2;
)sql",
    R"sql(
ALTER TABLE routing_profile ADD COLUMN extra_json TEXT NOT NULL DEFAULT '{}';
PRAGMA user_version = 3;
)sql",
    R"sql(
CREATE TABLE latency_model (
    run_id INTEGER NOT NULL REFERENCES conversion_run(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    model_json TEXT NOT NULL,
    measured TEXT NOT NULL,
    PRIMARY KEY (run_id, device)
);
PRAGMA user_version = 4;
)sql",
    R"sql(
CREATE TABLE setting (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    updated TEXT NOT NULL
);
PRAGMA user_version = 5;
)sql",
    R"sql(
CREATE TABLE end_to_end (
    run_id INTEGER PRIMARY KEY REFERENCES conversion_run(id) ON DELETE CASCADE,
    steps INTEGER NOT NULL,
    initial_kl REAL NOT NULL,
    final_kl REAL NOT NULL,
    wall_seconds REAL NOT NULL,
    note TEXT NOT NULL,
    curve_json TEXT NOT NULL,
    updated TEXT NOT NULL
);
PRAGMA user_version = 6;
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == Project::kSchemaVersion,
              "one migration step per schema version");

constexpr int kBusyTimeoutMs = 10000;

nlohmann::json parseJson(const std::string& text, const std::string& what)
{
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(what + " is not valid JSON: " + e.what());
    }
}

std::string layerName(int layer)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "layer-%03d.safetensors", layer);
    return buf;
}

bool isInside(const fs::path& child, const fs::path& parent)
{
    auto c = child.begin();
    for (auto p = parent.begin(); p != parent.end(); ++p, ++c)
        if (c == child.end() || *c != *p)
            return false;
    return true;
}

// The checks that need nothing but a read-only connection; throw before anything is written.
int checkIsProject(Database& db)
{
    const std::string name = "'" + db.file().string() + "'";
    int64_t appId = 0;
    try {
        appId = db.pragmaInt("application_id");
    } catch (const Error&) {
        throw Error(name + " is not a LaDiMo project: it is not an SQLite database");
    }
    if (appId != Project::kApplicationId || !db.tableExists("project"))
        throw Error(name + " is not a LaDiMo project: it is an SQLite database without the project tables");
    const int64_t version = db.pragmaInt("user_version");
    if (version > Project::kSchemaVersion)
        throw Error(name + " was written by a newer LaDiMo (project schema version " + std::to_string(version)
                    + "; ladimo " + currentToolVersion() + " reads up to version "
                    + std::to_string(Project::kSchemaVersion) + "): update ladimo to open it");
    if (version < 1)
        throw Error(name + " is not a LaDiMo project: its schema version is " + std::to_string(version));
    auto st = db.prepare("SELECT count(*) FROM project");
    if (!st.step() || st.columnInt(0) != 1)
        throw Error(name + " is a damaged LaDiMo project: the project table must hold exactly one row");
    return static_cast<int>(version);
}

LayerResult readLayer(const Statement& st, int64_t runId)
{
    // columns: layer, status, final_loss, relative_error, wall_seconds, weights_path,
    //          weights_sha256, failure_reason, updated
    LayerResult r;
    r.runId = runId;
    r.layer = static_cast<int>(st.columnInt(0));
    r.status = parseLayerStatus(st.columnText(1));
    if (!st.isNull(2))
        r.finalLoss = st.columnDouble(2);
    if (!st.isNull(3))
        r.relativeError = st.columnDouble(3);
    if (!st.isNull(4))
        r.wallSeconds = st.columnDouble(4);
    r.weightsPath = st.columnText(5);
    r.weightsSha256 = st.columnText(6);
    r.failureReason = st.columnText(7);
    r.updated = st.columnText(8);
    return r;
}

const char* const kLayerColumns
    = "layer, status, final_loss, relative_error, wall_seconds, weights_path, weights_sha256, failure_reason, updated";

const char* const kRunColumns
    = "id, model_id, calibration_set_id, layers, experts, expert_size, partition, gating, train_top_k, epochs, lr, "
      "batch, mode, device, seed, tool_version, started, finished, status, extra_json";

ConversionRun readRun(const Statement& st)
{
    ConversionRun r;
    r.id = st.columnInt(0);
    r.modelId = st.columnInt(1);
    r.calibrationSetId = st.columnInt(2);
    r.layers = static_cast<int>(st.columnInt(3));
    r.experts = st.columnInt(4);
    r.expertSize = st.columnInt(5);
    r.partition = st.columnText(6);
    r.gating = st.columnText(7);
    r.trainTopK = static_cast<int>(st.columnInt(8));
    r.epochs = static_cast<int>(st.columnInt(9));
    r.lr = st.columnDouble(10);
    r.batch = st.columnInt(11);
    r.mode = st.columnText(12);
    r.device = st.columnText(13);
    r.seed = static_cast<uint64_t>(st.columnInt(14));
    r.toolVersion = st.columnText(15);
    r.started = st.columnText(16);
    r.finished = st.columnText(17);
    r.status = parseRunStatus(st.columnText(18));
    r.extra = parseJson(st.columnText(19), "extra settings of run " + std::to_string(r.id));
    return r;
}

const char* const kModelColumns
    = "id, path, config_json, weights_sha256, total_params, embedding_params, attention_params, ffn_params, added";

SourceModel readModel(const Statement& st)
{
    SourceModel m;
    m.id = st.columnInt(0);
    m.path = st.columnText(1);
    m.config = parseJson(st.columnText(2), "config of model " + std::to_string(m.id));
    m.weightsSha256 = st.columnText(3);
    m.totalParams = st.columnInt(4);
    m.embeddingParams = st.columnInt(5);
    m.attentionParams = st.columnInt(6);
    m.ffnParams = st.columnInt(7);
    m.added = st.columnText(8);
    return m;
}

const char* const kCalibrationColumns = "id, name, source, file_path, file_sha256, seed, tokens, seq_len, split, added";

CalibrationSet readCalibration(const Statement& st)
{
    CalibrationSet c;
    c.id = st.columnInt(0);
    c.name = st.columnText(1);
    c.source = parseCalibrationSource(st.columnText(2));
    c.filePath = st.columnText(3);
    c.fileSha256 = st.columnText(4);
    c.seed = static_cast<uint64_t>(st.columnInt(5));
    c.tokens = st.columnInt(6);
    c.seqLen = st.columnInt(7);
    c.split = st.columnText(8);
    c.added = st.columnText(9);
    return c;
}

const char* const kPolicyColumns = "id, name, origin, run_id, rules_json, created";

Policy readPolicy(const Statement& st)
{
    Policy p;
    p.id = st.columnInt(0);
    p.name = st.columnText(1);
    p.origin = parsePolicyOrigin(st.columnText(2));
    p.runId = st.columnInt(3);
    p.rules = parseJson(st.columnText(4), "rules of policy '" + p.name + "'");
    p.created = st.columnText(5);
    return p;
}

const char* const kProfileColumns
    = "run_id, layer, tokens, bin_edges, ranks, rank_histograms, expert_load, entropy, error_by_k, extra_json";

RoutingProfile readProfile(const Statement& st)
{
    RoutingProfile p;
    p.runId = st.columnInt(0);
    p.layer = static_cast<int>(st.columnInt(1));
    const std::string what = "routing profile of run " + std::to_string(p.runId) + " layer " + std::to_string(p.layer);
    p.tokens = st.columnInt(2);
    p.binEdges = blobToDoubles(st.columnBlob(3), what);
    const int64_t ranks = st.columnInt(4);
    const auto flat = blobToDoubles(st.columnBlob(5), what);
    if (ranks < 0 || (ranks == 0 && !flat.empty()) || (ranks > 0 && flat.size() % static_cast<std::size_t>(ranks) != 0))
        throw Error(what + ": " + std::to_string(flat.size()) + " histogram values do not split into "
                    + std::to_string(ranks) + " ranks");
    const std::size_t bins = ranks > 0 ? flat.size() / static_cast<std::size_t>(ranks) : 0;
    for (int64_t r = 0; r < ranks; ++r)
        p.rankHistograms.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(r * bins),
                                      flat.begin() + static_cast<std::ptrdiff_t>((r + 1) * bins));
    p.expertLoad = blobToDoubles(st.columnBlob(6), what);
    p.entropy = st.columnDouble(7);
    p.errorByK = blobToDoubles(st.columnBlob(8), what);
    try {
        p.extra = nlohmann::json::parse(st.columnText(9));
    } catch (const nlohmann::json::exception& e) {
        throw Error(what + ": extra measures are not valid JSON: " + e.what());
    }
    return p;
}

} // namespace

// ---------------------------------------------------------------------------------------------

std::string currentToolVersion() { return LADIMO_VERSION; }

std::string nowUtc()
{
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[80];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    return buf;
}

std::vector<int> VerifyReport::badLayers(int64_t runId) const
{
    std::vector<int> out;
    for (const auto& p : problems)
        if (p.runId == runId)
            out.push_back(p.layer);
    return out;
}

std::string VerifyReport::describe() const
{
    std::string out;
    for (const auto& p : problems) {
        out += "run " + std::to_string(p.runId) + " layer " + std::to_string(p.layer) + ": '" + p.path + "' ";
        switch (p.kind) {
        case VerifyProblem::Kind::Missing: out += "is missing"; break;
        case VerifyProblem::Kind::Corrupt: out += "fails its checksum"; break;
        case VerifyProblem::Kind::BadPath: out += "is not a valid project path"; break;
        }
        if (!p.detail.empty())
            out += " (" + p.detail + ")";
        out += "\n";
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Opening

Project::Project(Database db, fs::path file, bool writable)
    : m_db(std::move(db)), m_file(std::move(file)), m_dataDir(dataDirFor(m_file)), m_writable(writable)
{
}

Project::Project(Project&& o) noexcept
    : m_db(std::move(o.m_db)), m_file(std::move(o.m_file)), m_dataDir(std::move(o.m_dataDir)), m_writable(o.m_writable),
      m_lockFd(std::exchange(o.m_lockFd, -1)), m_recovered(std::move(o.m_recovered))
{
}

Project& Project::operator=(Project&& o) noexcept
{
    if (this != &o) {
        if (m_lockFd >= 0)
            ::close(m_lockFd);
        m_db = std::move(o.m_db);
        m_file = std::move(o.m_file);
        m_dataDir = std::move(o.m_dataDir);
        m_writable = o.m_writable;
        m_lockFd = std::exchange(o.m_lockFd, -1);
        m_recovered = std::move(o.m_recovered);
    }
    return *this;
}

Project::~Project()
{
    // The connection closes first (member order is irrelevant here: the lock only guards
    // against a second writer, and SQLite's own locks keep the file consistent).
    if (m_lockFd >= 0)
        ::close(m_lockFd);
}

fs::path Project::dataDirFor(const fs::path& file)
{
    fs::path d = file;
    d += ".d";
    return d;
}

void Project::configureWriter()
{
    // Take the writer lock before the first write. flock() locks die with the process, so a
    // killed worker never leaves the project locked.
    std::error_code ec;
    fs::create_directories(m_dataDir, ec);
    if (!fs::is_directory(m_dataDir))
        throw Error("cannot create the project folder '" + m_dataDir.string() + "'");
    const fs::path lock = m_dataDir / "writer.lock";
    m_lockFd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m_lockFd < 0)
        throw Error("cannot create '" + lock.string() + "': " + std::strerror(errno));
    if (::flock(m_lockFd, LOCK_EX | LOCK_NB) != 0) {
        ::close(m_lockFd);
        m_lockFd = -1;
        throw Error("'" + m_file.string()
                    + "' is already open for writing by another process or window; "
                      "open it read-only or close the other one");
    }
    m_db.setBusyTimeout(kBusyTimeoutMs);
    // WAL: readers never block the writer and always see whole commits. NORMAL sync: a killed
    // process loses nothing committed; a power cut may lose the last commits, never consistency.
    m_db.exec("PRAGMA journal_mode = WAL");
    m_db.exec("PRAGMA synchronous = NORMAL");
    m_db.exec("PRAGMA foreign_keys = ON");
}

void Project::migrate()
{
    const int from = static_cast<int>(m_db.pragmaInt("user_version"));
    if (from >= kSchemaVersion)
        return;
    Transaction tx(m_db);
    for (int v = from; v < kSchemaVersion; ++v)
        m_db.exec(kMigrations[v]);
    if (from == 0) {
        auto st = m_db.prepare("INSERT INTO project (id, created, tool_version) VALUES (1, ?1, ?2)");
        st.bind(1, nowUtc()).bind(2, currentToolVersion()).run();
    }
    // The migrated schema must still hold together before it is committed.
    auto fk = m_db.prepare("PRAGMA foreign_key_check");
    if (fk.step())
        throw Error("'" + m_file.string() + "': migration from schema version " + std::to_string(from)
                    + " found a broken reference in table '" + fk.columnText(0) + "'");
    tx.commit();
}

Project Project::create(const fs::path& file)
{
    std::error_code ec;
    if (fs::exists(file, ec))
        throw Error("cannot create project '" + file.string() + "': the file already exists");
    if (file.has_parent_path() && !fs::is_directory(file.parent_path(), ec))
        throw Error("cannot create project '" + file.string() + "': folder '" + file.parent_path().string()
                    + "' does not exist");
    // Built under a temporary name and linked into place once its schema is committed, so a
    // process killed while creating never leaves a file that exists but is not a project (the
    // rerun would refuse to open it).
    const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
    const fs::path tmp = dir / ("." + file.filename().string() + ".creating-" + std::to_string(::getpid()));
    const auto cleanup = [&] {
        std::error_code ignored;
        for (const char* suffix : {"", "-wal", "-shm", "-journal"})
            fs::remove(tmp.string() + suffix, ignored);
        fs::remove_all(dataDirFor(tmp), ignored);
    };
    cleanup(); // a previous process with our pid that was killed here
    try {
        {
            Project p(Database(tmp, Database::Mode::Create), tmp, true);
            p.configureWriter();
            p.migrate();
        } // closed: the WAL is checkpointed into the file
        if (int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
            ::fsync(fd);
            ::close(fd);
        }
        if (::link(tmp.c_str(), file.c_str()) != 0) // never replaces a file that appeared meanwhile
            throw Error("cannot create project '" + file.string() + "': " + std::strerror(errno));
    } catch (...) {
        cleanup();
        throw;
    }
    cleanup();
    return open(file, {Access::ReadWrite, Verify::None});
}

Project Project::open(const fs::path& file, const OpenOptions& options)
{
    std::error_code ec;
    if (!fs::exists(file, ec))
        throw Error("project '" + file.string() + "' does not exist");
    if (!fs::is_regular_file(file, ec))
        throw Error("'" + file.string() + "' is not a LaDiMo project file (expected a *.ladimo file)");

    int version = 0;
    {
        // Read-only first: nothing below may touch a file that turns out not to be ours.
        Project ro(Database(file, Database::Mode::ReadOnly), file, false);
        ro.m_db.setBusyTimeout(kBusyTimeoutMs);
        version = checkIsProject(ro.m_db);
        // v4 differs from v5 only by the settings table, which a reader treats as empty.
        if (options.access == Access::ReadOnly && version < 4)
            throw Error("'" + file.string() + "' uses project schema version " + std::to_string(version)
                        + " (current: " + std::to_string(kSchemaVersion) + "); open it for writing once to upgrade it");
        if (options.verify != Verify::None) {
            const auto report = ro.verify(options.verify);
            if (!report.ok()) {
                std::string list = report.describe();
                list.pop_back();
                for (auto& c : list)
                    if (c == '\n')
                        c = ';';
                throw Error("project '" + file.string() + "': " + std::to_string(report.problems.size())
                            + " tensor file(s) missing or corrupt: " + list
                            + ". Run `ladimo project verify --repair` to mark these layers pending for a rerun");
            }
        }
        if (options.access == Access::ReadOnly)
            return ro;
    }

    Project p(Database(file, Database::Mode::ReadWrite), file, true);
    p.configureWriter();
    p.migrate();
    p.m_recovered = p.recoverInterrupted();
    p.removeStaleTemporaryFiles();
    return p;
}

ProjectInfo Project::info()
{
    ProjectInfo info;
    auto st = m_db.prepare("SELECT created, tool_version FROM project WHERE id = 1");
    if (st.step()) {
        info.created = st.columnText(0);
        info.toolVersion = st.columnText(1);
    }
    info.schemaVersion = static_cast<int>(m_db.pragmaInt("user_version"));
    return info;
}

void Project::requireWritable(const char* what) const
{
    if (!m_writable)
        throw Error("cannot " + std::string(what) + ": project '" + m_file.string() + "' is open read-only");
}

void Project::removeStaleTemporaryFiles()
{
    // atomicWriteFile's temporaries (".name.tmp-PID-X") of a killed writer; we hold the lock,
    // so none of them belongs to a live writer. Scale-out workers (store/assemble.h) write
    // without the writer lock but hold workers.lock shared: sweep only while none runs (and
    // none can start), else leave the sweep to a later open.
    WorkerLock::whileNoWorkers(m_dataDir, [this] {
        std::error_code ec;
        std::vector<fs::path> stale;
        for (fs::recursive_directory_iterator it(m_dataDir, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (it->is_regular_file(ec) && name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos)
                stale.push_back(it->path());
        }
        for (const auto& f : stale)
            fs::remove(f, ec);
    });
}

// ---------------------------------------------------------------------------------------------
// Paths

std::string Project::layerWeightsPath(int64_t runId, int layer)
{
    return "runs/" + std::to_string(runId) + "/" + layerName(layer);
}

std::string Project::activationsPath(int64_t calibrationSetId, int layer)
{
    return "activations/" + std::to_string(calibrationSetId) + "/" + layerName(layer);
}

void Project::validateRelativePath(const std::string& relative)
{
    const auto bad = [&](const std::string& why) { return Error("invalid project path '" + relative + "': " + why); };
    if (relative.empty())
        throw bad("empty");
    if (relative.find('\0') != std::string::npos || relative.find('\\') != std::string::npos)
        throw bad("it contains a backslash or NUL");
    if (relative.find("//") != std::string::npos)
        throw bad("it must not contain empty components");
    const fs::path p(relative);
    if (p.is_absolute() || p.has_root_path() || relative.front() == '/')
        throw bad("it must be relative to the project folder");
    for (const auto& part : p) {
        const std::string s = part.string();
        if (s == "..")
            throw bad("'..' would leave the project folder");
        if (s == "." || s.empty())
            throw bad("it must not contain '.' or empty components");
    }
    if (relative.back() == '/')
        throw bad("it names a folder, not a file");
}

fs::path Project::absolutePath(const std::string& relative) const
{
    validateRelativePath(relative);
    const fs::path p = m_dataDir / relative;
    std::error_code ec;
    if (fs::exists(fs::symlink_status(p, ec)) || fs::exists(p.parent_path(), ec)) {
        // A symlink inside the folder must not lead outside it either.
        const fs::path root = fs::weakly_canonical(m_dataDir, ec);
        const fs::path real = fs::weakly_canonical(p, ec);
        if (!ec && !isInside(real, root))
            throw Error("invalid project path '" + relative + "': it resolves to '" + real.string()
                        + "', outside the project folder '" + root.string() + "'");
    }
    return p;
}

fs::path Project::prepareFile(const std::string& relative) const
{
    validateRelativePath(relative);
    std::error_code ec;
    fs::create_directories((m_dataDir / relative).parent_path(), ec);
    if (ec)
        throw Error("cannot create folder for '" + (m_dataDir / relative).string() + "': " + ec.message());
    return absolutePath(relative);
}

// ---------------------------------------------------------------------------------------------
// Models and calibration sets

int64_t Project::addModel(const SourceModel& m)
{
    requireWritable("add a model");
    auto st
        = m_db.prepare("INSERT INTO source_model (path, config_json, weights_sha256, total_params, embedding_params, "
                       "attention_params, ffn_params, added) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    st.bind(1, m.path).bind(2, m.config.dump()).bind(3, m.weightsSha256).bind(4, m.totalParams);
    st.bind(5, m.embeddingParams).bind(6, m.attentionParams).bind(7, m.ffnParams);
    st.bind(8, m.added.empty() ? nowUtc() : m.added).run();
    return m_db.lastInsertId();
}

SourceModel Project::model(int64_t id)
{
    auto st = m_db.prepare(std::string("SELECT ") + kModelColumns + " FROM source_model WHERE id = ?1");
    st.bind(1, id);
    if (!st.step())
        throw Error("project '" + m_file.string() + "' has no model " + std::to_string(id));
    return readModel(st);
}

std::vector<SourceModel> Project::models()
{
    std::vector<SourceModel> out;
    auto st = m_db.prepare(std::string("SELECT ") + kModelColumns + " FROM source_model ORDER BY id");
    while (st.step())
        out.push_back(readModel(st));
    return out;
}

int64_t Project::addCalibrationSet(const CalibrationSet& c)
{
    requireWritable("add a calibration set");
    auto st = m_db.prepare("INSERT INTO calibration_set (name, source, file_path, file_sha256, seed, tokens, "
                           "seq_len, split, added) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    st.bind(1, c.name).bind(2, calibrationSourceName(c.source));
    if (c.source == CalibrationSource::File) {
        st.bind(3, c.filePath).bind(4, c.fileSha256).bindNull(5);
    } else {
        st.bindNull(3).bindNull(4).bind(5, static_cast<int64_t>(c.seed));
    }
    st.bind(6, c.tokens).bind(7, c.seqLen).bind(8, c.split).bind(9, c.added.empty() ? nowUtc() : c.added).run();
    return m_db.lastInsertId();
}

CalibrationSet Project::calibrationSet(int64_t id)
{
    auto st = m_db.prepare(std::string("SELECT ") + kCalibrationColumns + " FROM calibration_set WHERE id = ?1");
    st.bind(1, id);
    if (!st.step())
        throw Error("project '" + m_file.string() + "' has no calibration set " + std::to_string(id));
    return readCalibration(st);
}

std::vector<CalibrationSet> Project::calibrationSets()
{
    std::vector<CalibrationSet> out;
    auto st = m_db.prepare(std::string("SELECT ") + kCalibrationColumns + " FROM calibration_set ORDER BY id");
    while (st.step())
        out.push_back(readCalibration(st));
    return out;
}

// ---------------------------------------------------------------------------------------------
// Runs and layers

int64_t Project::startRun(const ConversionRun& r)
{
    requireWritable("start a conversion run");
    if (r.layers <= 0)
        throw Error("a conversion run needs at least one layer (got " + std::to_string(r.layers) + ")");
    Transaction tx(m_db);
    auto st = m_db.prepare(
        "INSERT INTO conversion_run (model_id, calibration_set_id, layers, experts, expert_size, partition, gating, "
        "train_top_k, epochs, lr, batch, mode, device, seed, tool_version, started, finished, status, extra_json) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, NULL, 'running', ?17)");
    st.bind(1, r.modelId).bindIdOrNull(2, r.calibrationSetId).bind(3, r.layers).bind(4, r.experts);
    st.bind(5, r.expertSize).bind(6, r.partition).bind(7, r.gating).bind(8, r.trainTopK).bind(9, r.epochs);
    st.bind(10, r.lr).bind(11, r.batch).bind(12, r.mode).bind(13, r.device).bind(14, static_cast<int64_t>(r.seed));
    st.bind(15, r.toolVersion.empty() ? currentToolVersion() : r.toolVersion);
    st.bind(16, r.started.empty() ? nowUtc() : r.started).bind(17, r.extra.dump());
    st.run();
    const int64_t id = m_db.lastInsertId();
    auto layer
        = m_db.prepare("INSERT INTO layer_result (run_id, layer, status, updated) VALUES (?1, ?2, 'pending', ?3)");
    const std::string now = nowUtc();
    for (int i = 0; i < r.layers; ++i) {
        layer.reset();
        layer.bind(1, id).bind(2, i).bind(3, now).run();
    }
    tx.commit();
    return id;
}

void Project::setRunStatus(int64_t runId, RunStatus status)
{
    requireWritable("change a run's status");
    auto st = m_db.prepare("UPDATE conversion_run SET status = ?1, finished = ?2 WHERE id = ?3");
    st.bind(1, runStatusName(status));
    if (status == RunStatus::Running)
        st.bindNull(2);
    else
        st.bind(2, nowUtc());
    st.bind(3, runId).run();
    if (m_db.changes() == 0)
        throw Error("project '" + m_file.string() + "' has no conversion run " + std::to_string(runId));
}

ConversionRun Project::run(int64_t runId)
{
    auto st = m_db.prepare(std::string("SELECT ") + kRunColumns + " FROM conversion_run WHERE id = ?1");
    st.bind(1, runId);
    if (!st.step())
        throw Error("project '" + m_file.string() + "' has no conversion run " + std::to_string(runId));
    return readRun(st);
}

std::vector<ConversionRun> Project::runs()
{
    std::vector<ConversionRun> out;
    auto st = m_db.prepare(std::string("SELECT ") + kRunColumns + " FROM conversion_run ORDER BY id");
    while (st.step())
        out.push_back(readRun(st));
    return out;
}

std::optional<int64_t> Project::latestRunId()
{
    auto st = m_db.prepare("SELECT max(id) FROM conversion_run");
    if (st.step() && !st.isNull(0))
        return st.columnInt(0);
    return std::nullopt;
}

void Project::markLayerRunning(int64_t runId, int layer)
{
    requireWritable("start a layer");
    auto st = m_db.prepare("UPDATE layer_result SET status = 'running', failure_reason = NULL, updated = ?1 "
                           "WHERE run_id = ?2 AND layer = ?3");
    st.bind(1, nowUtc()).bind(2, runId).bind(3, layer).run();
    if (m_db.changes() == 0)
        throw Error("conversion run " + std::to_string(runId) + " has no layer " + std::to_string(layer));
}

void Project::finishLayer(int64_t runId, int layer, const LayerOutcome& o, const LossCurve& curve)
{
    requireWritable("record a finished layer");
    const fs::path file = absolutePath(o.weightsPath);
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
        throw Error("cannot record layer " + std::to_string(layer) + " as done: its weights file '" + file.string()
                    + "' does not exist");
    const std::string sha = o.weightsSha256.empty() ? sha256File(file) : o.weightsSha256;

    Transaction tx(m_db);
    auto st = m_db.prepare("UPDATE layer_result SET status = 'done', final_loss = ?1, relative_error = ?2, "
                           "wall_seconds = ?3, weights_path = ?4, weights_sha256 = ?5, failure_reason = NULL, "
                           "updated = ?6 WHERE run_id = ?7 AND layer = ?8");
    st.bind(1, o.finalLoss).bind(2, o.relativeError).bind(3, o.wallSeconds).bind(4, o.weightsPath).bind(5, sha);
    st.bind(6, nowUtc()).bind(7, runId).bind(8, layer).run();
    if (m_db.changes() == 0)
        throw Error("conversion run " + std::to_string(runId) + " has no layer " + std::to_string(layer));
    auto del = m_db.prepare("DELETE FROM loss_curve WHERE run_id = ?1 AND layer = ?2");
    del.bind(1, runId).bind(2, layer).run();
    auto ins = m_db.prepare("INSERT INTO loss_curve (run_id, layer, step, loss) VALUES (?1, ?2, ?3, ?4)");
    for (const auto& p : curve) {
        ins.reset();
        ins.bind(1, runId).bind(2, layer).bind(3, p.step).bind(4, p.loss).run();
    }
    tx.commit();
}

void Project::failLayer(int64_t runId, int layer, const std::string& reason)
{
    requireWritable("record a failed layer");
    auto st = m_db.prepare("UPDATE layer_result SET status = 'failed', failure_reason = ?1, updated = ?2 "
                           "WHERE run_id = ?3 AND layer = ?4");
    st.bind(1, reason).bind(2, nowUtc()).bind(3, runId).bind(4, layer).run();
    if (m_db.changes() == 0)
        throw Error("conversion run " + std::to_string(runId) + " has no layer " + std::to_string(layer));
}

void Project::resetLayers(int64_t runId, const std::vector<int>& layers)
{
    requireWritable("reset layers");
    Transaction tx(m_db);
    auto st = m_db.prepare("UPDATE layer_result SET status = 'pending', final_loss = NULL, relative_error = NULL, "
                           "wall_seconds = NULL, weights_path = NULL, weights_sha256 = NULL, failure_reason = NULL, "
                           "updated = ?1 WHERE run_id = ?2 AND layer = ?3");
    auto del = m_db.prepare("DELETE FROM loss_curve WHERE run_id = ?1 AND layer = ?2");
    const std::string now = nowUtc();
    for (int layer : layers) {
        st.reset();
        st.bind(1, now).bind(2, runId).bind(3, layer).run();
        del.reset();
        del.bind(1, runId).bind(2, layer).run();
    }
    tx.commit();
}

void Project::resetLayers(const VerifyReport& report)
{
    std::map<int64_t, std::vector<int>> byRun;
    for (const auto& p : report.problems)
        byRun[p.runId].push_back(p.layer);
    for (const auto& [run, layers] : byRun)
        resetLayers(run, layers);
}

std::vector<LayerResult> Project::layers(int64_t runId)
{
    std::vector<LayerResult> out;
    auto st
        = m_db.prepare(std::string("SELECT ") + kLayerColumns + " FROM layer_result WHERE run_id = ?1 ORDER BY layer");
    st.bind(1, runId);
    while (st.step())
        out.push_back(readLayer(st, runId));
    return out;
}

LayerResult Project::layer(int64_t runId, int layer)
{
    auto st
        = m_db.prepare(std::string("SELECT ") + kLayerColumns + " FROM layer_result WHERE run_id = ?1 AND layer = ?2");
    st.bind(1, runId).bind(2, layer);
    if (!st.step())
        throw Error("conversion run " + std::to_string(runId) + " has no layer " + std::to_string(layer));
    return readLayer(st, runId);
}

LossCurve Project::lossCurve(int64_t runId, int layer)
{
    LossCurve out;
    auto st = m_db.prepare("SELECT step, loss FROM loss_curve WHERE run_id = ?1 AND layer = ?2 ORDER BY step");
    st.bind(1, runId).bind(2, layer);
    while (st.step())
        out.push_back({st.columnInt(0), st.columnDouble(1)});
    return out;
}

void Project::finishEndToEnd(const EndToEndRecord& r, const std::map<int, LayerOutcome>& outcomes)
{
    requireWritable("record the end-to-end stage");
    std::map<int, std::string> sha;
    for (const auto& [layer, o] : outcomes) {
        const fs::path file = absolutePath(o.weightsPath);
        std::error_code ec;
        if (!fs::is_regular_file(file, ec))
            throw Error("cannot record the end-to-end weights of layer " + std::to_string(layer) + ": '" + file.string()
                        + "' does not exist");
        sha[layer] = o.weightsSha256.empty() ? sha256File(file) : o.weightsSha256;
    }
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& p : r.curve)
        curve.push_back({p.step, p.loss});
    Transaction tx(m_db);
    for (const auto& [layer, o] : outcomes) {
        auto st = m_db.prepare("UPDATE layer_result SET weights_path = ?1, weights_sha256 = ?2, updated = ?3 "
                               "WHERE run_id = ?4 AND layer = ?5 AND status = 'done'");
        st.bind(1, o.weightsPath).bind(2, sha[layer]).bind(3, nowUtc()).bind(4, r.runId).bind(5, layer).run();
        if (m_db.changes() == 0)
            throw Error("conversion run " + std::to_string(r.runId) + " has no finished layer " + std::to_string(layer)
                        + " to take end-to-end weights");
    }
    auto st = m_db.prepare("INSERT OR REPLACE INTO end_to_end (run_id, steps, initial_kl, final_kl, wall_seconds, "
                           "note, curve_json, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    st.bind(1, r.runId).bind(2, static_cast<int64_t>(r.steps)).bind(3, r.initialKl).bind(4, r.finalKl);
    st.bind(5, r.wallSeconds).bind(6, r.note).bind(7, curve.dump()).bind(8, nowUtc()).run();
    tx.commit();
}

std::optional<EndToEndRecord> Project::endToEnd(int64_t runId)
{
    auto st = m_db.prepare("SELECT steps, initial_kl, final_kl, wall_seconds, note, curve_json, updated "
                           "FROM end_to_end WHERE run_id = ?1");
    st.bind(1, runId);
    if (!st.step())
        return std::nullopt;
    EndToEndRecord r;
    r.runId = runId;
    r.steps = static_cast<int>(st.columnInt(0));
    r.initialKl = st.columnDouble(1);
    r.finalKl = st.columnDouble(2);
    r.wallSeconds = st.columnDouble(3);
    r.note = st.columnText(4);
    for (const auto& p : nlohmann::json::parse(st.columnText(5)))
        r.curve.push_back({p.at(0).get<int64_t>(), p.at(1).get<double>()});
    r.updated = st.columnText(6);
    return r;
}

std::vector<int> Project::resumableLayers(int64_t runId)
{
    std::vector<int> out;
    auto st = m_db.prepare("SELECT layer FROM layer_result WHERE run_id = ?1 AND status <> 'done' ORDER BY layer");
    st.bind(1, runId);
    while (st.step())
        out.push_back(static_cast<int>(st.columnInt(0)));
    return out;
}

RunSnapshot Project::snapshot(int64_t runId)
{
    // One read transaction: in WAL mode it pins one committed state for every statement.
    Transaction tx(m_db, Transaction::Kind::Deferred);
    RunSnapshot s;
    s.run = run(runId);
    s.layers = layers(runId);
    s.lossCurves.resize(s.layers.size());
    std::map<int, std::size_t> index;
    for (std::size_t i = 0; i < s.layers.size(); ++i)
        index[s.layers[i].layer] = i;
    auto st = m_db.prepare("SELECT layer, step, loss FROM loss_curve WHERE run_id = ?1 ORDER BY layer, step");
    st.bind(1, runId);
    while (st.step()) {
        const auto it = index.find(static_cast<int>(st.columnInt(0)));
        if (it != index.end())
            s.lossCurves[it->second].push_back({st.columnInt(1), st.columnDouble(2)});
    }
    tx.commit();
    return s;
}

// ---------------------------------------------------------------------------------------------
// Routing profiles

void Project::saveRoutingProfile(const RoutingProfile& p)
{
    requireWritable("save a routing profile");
    std::vector<double> flat;
    for (const auto& h : p.rankHistograms) {
        if (h.size() != p.rankHistograms.front().size())
            throw Error("routing profile of layer " + std::to_string(p.layer) + ": ranks have different bin counts");
        if (!p.binEdges.empty() && h.size() + 1 != p.binEdges.size())
            throw Error("routing profile of layer " + std::to_string(p.layer) + ": " + std::to_string(h.size())
                        + " bins need " + std::to_string(h.size() + 1) + " edges, got "
                        + std::to_string(p.binEdges.size()));
        flat.insert(flat.end(), h.begin(), h.end());
    }
    const auto edges = doublesToBlob(p.binEdges), hist = doublesToBlob(flat), load = doublesToBlob(p.expertLoad),
               err = doublesToBlob(p.errorByK);
    auto st = m_db.prepare("INSERT OR REPLACE INTO routing_profile (run_id, layer, tokens, bin_edges, ranks, "
                           "rank_histograms, expert_load, entropy, error_by_k, extra_json) VALUES (?1, ?2, ?3, ?4, ?5, "
                           "?6, ?7, ?8, ?9, ?10)");
    st.bind(1, p.runId).bind(2, p.layer).bind(3, p.tokens).bindBlob(4, edges.data(), edges.size());
    st.bind(5, static_cast<int64_t>(p.rankHistograms.size())).bindBlob(6, hist.data(), hist.size());
    st.bindBlob(7, load.data(), load.size()).bind(8, p.entropy).bindBlob(9, err.data(), err.size());
    st.bind(10, p.extra.dump()).run();
}

std::optional<RoutingProfile> Project::routingProfile(int64_t runId, int layer)
{
    auto st = m_db.prepare(std::string("SELECT ") + kProfileColumns
                           + " FROM routing_profile WHERE run_id = ?1 AND layer = ?2");
    st.bind(1, runId).bind(2, layer);
    if (!st.step())
        return std::nullopt;
    return readProfile(st);
}

std::vector<RoutingProfile> Project::routingProfiles(int64_t runId)
{
    std::vector<RoutingProfile> out;
    auto st = m_db.prepare(std::string("SELECT ") + kProfileColumns
                           + " FROM routing_profile WHERE run_id = ?1 ORDER BY layer");
    st.bind(1, runId);
    while (st.step())
        out.push_back(readProfile(st));
    return out;
}

// ---------------------------------------------------------------------------------------------
// Settings

void Project::setSetting(const std::string& key, const nlohmann::json& value)
{
    requireWritable("save a setting");
    auto st
        = m_db.prepare("INSERT INTO setting (key, value_json, updated) VALUES (?1, ?2, ?3) "
                       "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json, updated = excluded.updated");
    st.bind(1, key).bind(2, value.dump()).bind(3, nowUtc()).run();
}

std::optional<nlohmann::json> Project::setting(const std::string& key)
{
    {
        // A v4 project opened read-only has no settings table yet.
        auto t = m_db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'setting'");
        if (!t.step())
            return std::nullopt;
    }
    auto st = m_db.prepare("SELECT value_json FROM setting WHERE key = ?1");
    st.bind(1, key);
    if (!st.step())
        return std::nullopt;
    try {
        return nlohmann::json::parse(st.columnText(0));
    } catch (const nlohmann::json::exception& e) {
        throw Error("project '" + m_file.string() + "': setting '" + key + "' is not valid JSON: " + e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// Policies, evaluations, exports

int64_t Project::savePolicy(const Policy& p)
{
    requireWritable("save a policy");
    if (p.name.empty())
        throw Error("a policy needs a name");
    {
        auto dup = m_db.prepare("SELECT id FROM policy WHERE name = ?1 AND id <> ?2");
        dup.bind(1, p.name).bind(2, p.id);
        if (dup.step())
            throw Error("project '" + m_file.string() + "' already has a policy named '" + p.name + "'");
    }
    if (p.id == 0) {
        auto st = m_db.prepare(
            "INSERT INTO policy (name, origin, run_id, rules_json, created) VALUES (?1, ?2, ?3, ?4, ?5)");
        st.bind(1, p.name).bind(2, policyOriginName(p.origin)).bindIdOrNull(3, p.runId).bind(4, p.rules.dump());
        st.bind(5, p.created.empty() ? nowUtc() : p.created).run();
        return m_db.lastInsertId();
    }
    auto st = m_db.prepare("UPDATE policy SET name = ?1, origin = ?2, run_id = ?3, rules_json = ?4 WHERE id = ?5");
    st.bind(1, p.name).bind(2, policyOriginName(p.origin)).bindIdOrNull(3, p.runId).bind(4, p.rules.dump());
    st.bind(5, p.id).run();
    if (m_db.changes() == 0)
        throw Error("project '" + m_file.string() + "' has no policy " + std::to_string(p.id));
    return p.id;
}

Policy Project::policy(int64_t id)
{
    auto st = m_db.prepare(std::string("SELECT ") + kPolicyColumns + " FROM policy WHERE id = ?1");
    st.bind(1, id);
    if (!st.step())
        throw Error("project '" + m_file.string() + "' has no policy " + std::to_string(id));
    return readPolicy(st);
}

std::vector<Policy> Project::policies()
{
    std::vector<Policy> out;
    auto st = m_db.prepare(std::string("SELECT ") + kPolicyColumns + " FROM policy ORDER BY id");
    while (st.step())
        out.push_back(readPolicy(st));
    return out;
}

void Project::deletePolicy(int64_t id)
{
    requireWritable("delete a policy");
    auto st = m_db.prepare("DELETE FROM policy WHERE id = ?1");
    st.bind(1, id).run();
}

int64_t Project::addEvaluation(const Evaluation& e)
{
    requireWritable("record an evaluation");
    auto st = m_db.prepare("INSERT INTO evaluation (policy_id, run_id, data, metrics_json, device, timestamp) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    st.bindIdOrNull(1, e.policyId).bindIdOrNull(2, e.runId).bind(3, e.data).bind(4, e.metrics.dump());
    st.bind(5, e.device).bind(6, e.timestamp.empty() ? nowUtc() : e.timestamp).run();
    return m_db.lastInsertId();
}

void Project::saveLatencyModel(int64_t runId, const std::string& device, const nlohmann::json& model)
{
    requireWritable("save a latency model");
    auto st = m_db.prepare(
        "INSERT OR REPLACE INTO latency_model (run_id, device, model_json, measured) VALUES (?1, ?2, ?3, ?4)");
    st.bind(1, runId).bind(2, device).bind(3, model.dump()).bind(4, nowUtc()).run();
}

std::optional<nlohmann::json> Project::latencyModel(int64_t runId, const std::string& device)
{
    auto st = m_db.prepare("SELECT model_json FROM latency_model WHERE run_id = ?1 AND device = ?2");
    st.bind(1, runId).bind(2, device);
    if (!st.step())
        return std::nullopt;
    return parseJson(st.columnText(0), "latency model of run " + std::to_string(runId) + " on " + device);
}

std::vector<Evaluation> Project::evaluations()
{
    std::vector<Evaluation> out;
    auto st = m_db.prepare(
        "SELECT id, policy_id, run_id, data, metrics_json, device, timestamp FROM evaluation ORDER BY id");
    while (st.step()) {
        Evaluation e;
        e.id = st.columnInt(0);
        e.policyId = st.columnInt(1);
        e.runId = st.columnInt(2);
        e.data = st.columnText(3);
        e.metrics = parseJson(st.columnText(4), "metrics of evaluation " + std::to_string(e.id));
        e.device = st.columnText(5);
        e.timestamp = st.columnText(6);
        out.push_back(std::move(e));
    }
    return out;
}

int64_t Project::addExport(const ExportRecord& r)
{
    requireWritable("record an export");
    auto st = m_db.prepare("INSERT INTO export_record (format, path, sha256, policy_id, run_id, created) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    st.bind(1, r.format).bind(2, r.path).bind(3, r.sha256).bindIdOrNull(4, r.policyId).bindIdOrNull(5, r.runId);
    st.bind(6, r.created.empty() ? nowUtc() : r.created).run();
    return m_db.lastInsertId();
}

std::vector<ExportRecord> Project::exports()
{
    std::vector<ExportRecord> out;
    auto st
        = m_db.prepare("SELECT id, format, path, sha256, policy_id, run_id, created FROM export_record ORDER BY id");
    while (st.step()) {
        ExportRecord r;
        r.id = st.columnInt(0);
        r.format = st.columnText(1);
        r.path = st.columnText(2);
        r.sha256 = st.columnText(3);
        r.policyId = st.columnInt(4);
        r.runId = st.columnInt(5);
        r.created = st.columnText(6);
        out.push_back(std::move(r));
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Integrity

VerifyReport Project::verify(Verify level)
{
    VerifyReport report;
    if (level == Verify::None)
        return report;
    struct Row {
        int64_t run;
        int layer;
        std::string path, sha;
    };
    std::vector<Row> rows;
    {
        auto st = m_db.prepare("SELECT run_id, layer, weights_path, weights_sha256 FROM layer_result "
                               "WHERE status = 'done' ORDER BY run_id, layer");
        while (st.step())
            rows.push_back({st.columnInt(0), static_cast<int>(st.columnInt(1)), st.columnText(2), st.columnText(3)});
    }
    for (const auto& r : rows) {
        VerifyProblem p{r.run, r.layer, r.path, VerifyProblem::Kind::Missing, {}};
        fs::path file;
        try {
            file = absolutePath(r.path);
        } catch (const Error& e) {
            p.kind = VerifyProblem::Kind::BadPath;
            p.detail = e.what();
            report.problems.push_back(p);
            continue;
        }
        std::error_code ec;
        if (!fs::is_regular_file(file, ec)) {
            report.problems.push_back(p);
            continue;
        }
        if (level == Verify::Checksums) {
            const std::string actual = sha256File(file);
            if (actual != r.sha) {
                p.kind = VerifyProblem::Kind::Corrupt;
                p.detail = "expected SHA-256 " + r.sha + ", found " + actual;
                report.problems.push_back(p);
            }
        }
    }
    return report;
}

std::vector<LayerRef> Project::recoverInterrupted()
{
    requireWritable("recover interrupted layers");
    std::vector<LayerRef> out;
    Transaction tx(m_db);
    {
        auto st
            = m_db.prepare("SELECT run_id, layer FROM layer_result WHERE status = 'running' ORDER BY run_id, layer");
        while (st.step())
            out.push_back({st.columnInt(0), static_cast<int>(st.columnInt(1))});
    }
    auto st = m_db.prepare("UPDATE layer_result SET status = 'pending', final_loss = NULL, relative_error = NULL, "
                           "wall_seconds = NULL, weights_path = NULL, weights_sha256 = NULL, updated = ?1 "
                           "WHERE run_id = ?2 AND layer = ?3");
    auto del = m_db.prepare("DELETE FROM loss_curve WHERE run_id = ?1 AND layer = ?2");
    const std::string now = nowUtc();
    for (const auto& l : out) {
        st.reset();
        st.bind(1, now).bind(2, l.runId).bind(3, l.layer).run();
        del.reset();
        del.bind(1, l.runId).bind(2, l.layer).run();
    }
    auto runs = m_db.prepare("UPDATE conversion_run SET status = 'interrupted' WHERE status = 'running'");
    runs.run();
    tx.commit();
    return out;
}

} // namespace ladimo::core

#include "store/database.h"

#include <sqlite3.h>

#include <cstring>
#include <utility>

#include "common/error.h"

namespace ladimo::core {

// ---------------------------------------------------------------------------------------------
// Database

Database::Database(const std::filesystem::path& file, Mode mode) : m_file(file), m_readOnly(mode == Mode::ReadOnly)
{
    int flags = SQLITE_OPEN_NOMUTEX; // one thread per connection (see header)
    switch (mode) {
    case Mode::ReadOnly: flags |= SQLITE_OPEN_READONLY; break;
    case Mode::ReadWrite: flags |= SQLITE_OPEN_READWRITE; break;
    case Mode::Create: flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE; break;
    }
    const int rc = sqlite3_open_v2(file.c_str(), &m_db, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = m_db ? sqlite3_errmsg(m_db) : sqlite3_errstr(rc);
        close();
        throw Error("cannot open '" + file.string() + "': " + msg);
    }
    sqlite3_extended_result_codes(m_db, 1);
}

Database::Database(Database&& other) noexcept
    : m_db(std::exchange(other.m_db, nullptr)), m_file(std::move(other.m_file)), m_readOnly(other.m_readOnly)
{
}

Database& Database::operator=(Database&& other) noexcept
{
    if (this != &other) {
        close();
        m_db = std::exchange(other.m_db, nullptr);
        m_file = std::move(other.m_file);
        m_readOnly = other.m_readOnly;
    }
    return *this;
}

Database::~Database() { close(); }

void Database::close()
{
    if (m_db) {
        sqlite3_close_v2(m_db);
        m_db = nullptr;
    }
}

void Database::fail(int rc, const std::string& what) const
{
    std::string msg = m_db ? sqlite3_errmsg(m_db) : sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_NOTADB)
        msg = "not an SQLite database (" + msg + ")";
    throw Error("'" + m_file.string() + "': " + what + ": " + msg);
}

void Database::exec(const std::string& sql)
{
    char* err = nullptr;
    const int rc = sqlite3_exec(m_db, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        if ((rc & 0xff) == SQLITE_NOTADB)
            msg = "not an SQLite database (" + msg + ")";
        throw Error("'" + m_file.string() + "': " + msg);
    }
}

Statement Database::prepare(const std::string& sql)
{
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v2(m_db, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr);
    if (rc != SQLITE_OK)
        fail(rc, "cannot prepare '" + sql.substr(0, 60) + "'");
    return Statement(this, stmt);
}

int64_t Database::lastInsertId() const { return sqlite3_last_insert_rowid(m_db); }
int Database::changes() const { return sqlite3_changes(m_db); }

int64_t Database::pragmaInt(const char* name)
{
    // `name` is always one of our own constants, never user input.
    auto st = prepare(std::string("PRAGMA ") + name);
    return st.step() ? st.columnInt(0) : 0;
}

bool Database::tableExists(const std::string& table)
{
    auto st = prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    st.bind(1, table);
    return st.step();
}

void Database::setBusyTimeout(int milliseconds) { sqlite3_busy_timeout(m_db, milliseconds); }

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept
    : m_db(std::exchange(other.m_db, nullptr)), m_stmt(std::exchange(other.m_stmt, nullptr))
{
}

Statement& Statement::operator=(Statement&& other) noexcept
{
    if (this != &other) {
        sqlite3_finalize(m_stmt);
        m_db = std::exchange(other.m_db, nullptr);
        m_stmt = std::exchange(other.m_stmt, nullptr);
    }
    return *this;
}

Statement::~Statement() { sqlite3_finalize(m_stmt); }

void Statement::check(int rc, const char* what) const
{
    if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        m_db->fail(rc, std::string(what) + " '" + std::string(sqlite3_sql(m_stmt)).substr(0, 60) + "'");
}

Statement& Statement::bind(int index, int64_t value)
{
    check(sqlite3_bind_int64(m_stmt, index, value), "cannot bind");
    return *this;
}

Statement& Statement::bind(int index, double value)
{
    check(sqlite3_bind_double(m_stmt, index, value), "cannot bind");
    return *this;
}

Statement& Statement::bind(int index, const std::string& value)
{
    check(sqlite3_bind_text(m_stmt, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT),
          "cannot bind");
    return *this;
}

Statement& Statement::bindNull(int index)
{
    check(sqlite3_bind_null(m_stmt, index), "cannot bind");
    return *this;
}

Statement& Statement::bindBlob(int index, const void* data, std::size_t size)
{
    // A zero-length blob with a null pointer would bind NULL; keep it an empty blob.
    static const char kEmpty = 0;
    check(sqlite3_bind_blob(m_stmt, index, size ? data : &kEmpty, static_cast<int>(size), SQLITE_TRANSIENT),
          "cannot bind");
    return *this;
}

Statement& Statement::bindIdOrNull(int index, int64_t id) { return id ? bind(index, id) : bindNull(index); }

bool Statement::step()
{
    const int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE)
        return false;
    m_db->fail(rc, "cannot run '" + std::string(sqlite3_sql(m_stmt)).substr(0, 60) + "'");
}

void Statement::run()
{
    while (step()) { }
}

void Statement::reset()
{
    sqlite3_reset(m_stmt);
    sqlite3_clear_bindings(m_stmt);
}

bool Statement::isNull(int column) const { return sqlite3_column_type(m_stmt, column) == SQLITE_NULL; }
int64_t Statement::columnInt(int column) const { return sqlite3_column_int64(m_stmt, column); }
double Statement::columnDouble(int column) const { return sqlite3_column_double(m_stmt, column); }

std::string Statement::columnText(int column) const
{
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt, column));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(m_stmt, column))) : std::string();
}

std::string Statement::columnBlob(int column) const
{
    const auto* p = static_cast<const char*>(sqlite3_column_blob(m_stmt, column));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(m_stmt, column))) : std::string();
}

// ---------------------------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Database& db, Kind kind) : m_db(db)
{
    m_db.exec(kind == Kind::Immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
    m_open = true;
}

Transaction::~Transaction()
{
    if (m_open)
        sqlite3_exec(m_db.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit()
{
    m_db.exec("COMMIT");
    m_open = false;
}

// ---------------------------------------------------------------------------------------------
// Blobs of doubles

std::string doublesToBlob(const std::vector<double>& values)
{
    std::string out(values.size() * 8, '\0');
    for (std::size_t i = 0; i < values.size(); ++i) {
        uint64_t bits = 0;
        std::memcpy(&bits, &values[i], 8);
        for (int b = 0; b < 8; ++b)
            out[i * 8 + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
    }
    return out;
}

std::vector<double> blobToDoubles(const std::string& blob, const std::string& what)
{
    if (blob.size() % 8 != 0)
        throw Error(what + ": stored array has " + std::to_string(blob.size())
                    + " bytes, not a whole number of float64 values");
    std::vector<double> out(blob.size() / 8);
    for (std::size_t i = 0; i < out.size(); ++i) {
        uint64_t bits = 0;
        for (int b = 0; b < 8; ++b)
            bits |= static_cast<uint64_t>(static_cast<unsigned char>(blob[i * 8 + b])) << (8 * b);
        std::memcpy(&out[i], &bits, 8);
    }
    return out;
}

} // namespace ladimo::core

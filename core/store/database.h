// A small RAII wrapper over the SQLite C API: Database owns one connection, Statement one
// prepared statement (bound by 1-based index, never by pasting values into SQL), Transaction
// one BEGIN..COMMIT that rolls back in its destructor unless committed. A connection and its
// statements belong to the thread that uses them: use each Database from one thread at a time
// and open another connection for another thread (see store/project.h for the WAL set-up).
// Every SQLite failure becomes a ladimo::core::Error naming the database file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace ladimo::core {

class Database;

class Statement {
public:
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&& other) noexcept;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    // Parameters are 1-based, as in sqlite3_bind_*.
    Statement& bind(int index, int64_t value);
    Statement& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
    Statement& bind(int index, double value);
    Statement& bind(int index, const std::string& value);
    Statement& bind(int index, const char* value) { return bind(index, std::string(value)); }
    Statement& bindNull(int index);
    Statement& bindBlob(int index, const void* data, std::size_t size);
    // Binds 0 / empty as NULL: for optional foreign keys and optional text.
    Statement& bindIdOrNull(int index, int64_t id);

    // Advances to the next row: true while a row is available, false when done.
    bool step();
    // Runs a statement that returns no rows.
    void run();
    void reset();

    // Column getters (0-based, as in sqlite3_column_*); NULL reads as 0 / "" / empty.
    bool isNull(int column) const;
    int64_t columnInt(int column) const;
    double columnDouble(int column) const;
    std::string columnText(int column) const;
    std::string columnBlob(int column) const;

private:
    friend class Database;
    Statement(Database* db, sqlite3_stmt* stmt) : m_db(db), m_stmt(stmt) { }
    void check(int rc, const char* what) const;

    Database* m_db = nullptr;
    sqlite3_stmt* m_stmt = nullptr;
};

class Database {
public:
    enum class Mode { ReadOnly, ReadWrite, Create };

    // Opens (or, with Create, creates) the file. Nothing is read yet, so a file that is not a
    // database only fails at the first statement.
    Database(const std::filesystem::path& file, Mode mode);
    Database(Database&& other) noexcept;
    Database& operator=(Database&& other) noexcept;
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    // Runs fixed SQL (schema, pragmas). Never for values: use prepare() + bind().
    void exec(const std::string& sql);
    Statement prepare(const std::string& sql);
    int64_t lastInsertId() const;
    int changes() const;
    // Reads an integer pragma such as user_version or application_id.
    int64_t pragmaInt(const char* name);
    bool tableExists(const std::string& table);
    void setBusyTimeout(int milliseconds);
    bool readOnly() const { return m_readOnly; }

    const std::filesystem::path& file() const { return m_file; }
    sqlite3* handle() const { return m_db; }

    // Throws Error("<file>: <what>: <sqlite message>") for a non-OK result code.
    [[noreturn]] void fail(int rc, const std::string& what) const;

private:
    void close();

    sqlite3* m_db = nullptr;
    std::filesystem::path m_file;
    bool m_readOnly = false;
};

// BEGIN on construction; the destructor rolls back unless commit() ran. Writers use
// Immediate (takes the write lock at once, so two writers wait instead of deadlocking);
// readers use Deferred to read one consistent snapshot across several statements.
class Transaction {
public:
    enum class Kind { Deferred, Immediate };
    explicit Transaction(Database& db, Kind kind = Kind::Immediate);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& m_db;
    bool m_open = false;
};

// Doubles stored as a BLOB: IEEE-754 binary64 in little-endian byte order.
std::string doublesToBlob(const std::vector<double>& values);
std::vector<double> blobToDoubles(const std::string& blob, const std::string& what);

} // namespace ladimo::core

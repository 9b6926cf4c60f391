// The export formats, one registry read by the core, the CLI and the workbench alike: the name
// users type, what it writes, where it goes (a folder or one file), its weight dtypes and its
// writer. Adding a format is one file with its writer plus one row in formats.cpp.
#pragma once

#include <string>
#include <vector>

namespace ladimo::core {

// export/export.h; declared only, so that the registry costs its readers (the workbench's views)
// no LibTorch headers.
struct ExportInput;
struct ExportOptions;
struct ExportReport;

struct ExportFormat {
    const char* name;                // "hf-mixtral": what --format takes and the project records
    const char* description;         // one line, for --help and the workbench's tooltip
    bool moe;                        // writes the conversion (true) or the dense source model
    bool singleFile;                 // the destination is one file (absent) rather than a folder (absent or empty)
    bool shards;                     // honours ExportOptions::shardBytes
    std::vector<std::string> dtypes; // ExportOptions::dtype values it accepts, the default first
    const char* fileFilter;          // a save dialog's filter for single-file formats ("GGUF (*.gguf)"), else ""
    ExportReport (*write)(const ExportInput&, const ExportOptions&);
};

// Every format, in the order the CLI and the workbench list them.
const std::vector<ExportFormat>& exportFormats();
// The format named `name`; an Error names the formats there are otherwise.
const ExportFormat& exportFormat(const std::string& name);
// The same, or nullptr (a record written by a newer version, say).
const ExportFormat* findExportFormat(const std::string& name);
// "hf-mixtral, gguf, ... or policy-json" (moeOnly: only those that write the conversion).
std::string exportFormatNames(bool moeOnly = false);

} // namespace ladimo::core

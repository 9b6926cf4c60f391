// The one error type of ladimo_core. Every failure a user can cause (bad file, bad key, bad
// setting) is reported as an Error whose message names the file / tensor / key and what was
// expected. The CLI and the GUI catch it at their boundary; LibTorch errors are wrapped into it.
// Thread-safe: plain value type.
#pragma once

#include <stdexcept>
#include <string>

namespace ladimo::core {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) { }
};

// Raised when a CancelToken was triggered; long jobs unwind with it and leave the project
// consistent. Callers usually treat it as "stopped", not as a failure.
class Cancelled : public Error {
public:
    Cancelled() : Error("cancelled") { }
};

} // namespace ladimo::core

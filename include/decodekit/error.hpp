#pragma once
/// \file error.hpp
/// How configuration errors are reported.
///
/// Configuration is validated once, up front. Every `_params` / `_config` aggregate has
///   `std::optional<std::string> check() const`  -- the first problem, naming the field and the
///                                                 allowed range, or nullopt; never throws;
///   `void validate() const`                      -- check(), then report through raise().
/// With exceptions (DECODEKIT_EXCEPTIONS == 1) raise() throws decodekit::config_error.
/// Without, it calls the handler installed by set_error_handler() (default: print to stderr
/// and abort). A handler must not return normally; if it does, decodekit aborts.

#include <decodekit/config.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#if DECODEKIT_EXCEPTIONS
#include <stdexcept>
#endif

DECODEKIT_BEGIN_NAMESPACE

#if DECODEKIT_EXCEPTIONS
/// Thrown for invalid configuration; what() names the field and the allowed range.
class config_error : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};
#endif

/// Signature of the handler used when exceptions are disabled.
using error_handler = void (*)(const char* message);

namespace detail {
[[noreturn]] inline void default_error_handler(const char* message) noexcept {
    std::fprintf(stderr, "decodekit: configuration error: %s\n", message);
    std::abort();
}
inline error_handler& error_handler_slot() noexcept {
    static error_handler handler = nullptr;
    return handler;
}
}  // namespace detail

/// Installs the handler called by raise() when exceptions are disabled; returns the old one.
inline error_handler set_error_handler(error_handler handler) noexcept {
    error_handler old = detail::error_handler_slot();
    detail::error_handler_slot() = handler;
    return old;
}

/// Reports a configuration error: throws config_error, or calls the handler then aborts.
[[noreturn]] inline void raise(const std::string& message) {
#if DECODEKIT_EXCEPTIONS
    throw config_error(message);
#else
    if (error_handler h = detail::error_handler_slot()) {
        h(message.c_str());
        // the handler returned (it must not): abort without printing its message a second time
        std::fputs("decodekit: the error handler returned; aborting\n", stderr);
        std::abort();
    }
    detail::default_error_handler(message.c_str());
#endif
}

/// raise() if `problem` holds a message.
inline void raise_if(const std::optional<std::string>& problem) {
    if (problem) raise(*problem);
}

namespace detail {
/// "field must be in [lo, hi], got v" style messages, built in one place.
inline std::string range_message(std::string_view field, std::string_view allowed, double got) {
    std::string m(field);
    m += " must be ";
    m += allowed;
    m += ", got ";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", got);
    m += buf;
    return m;
}
}  // namespace detail

DECODEKIT_END_NAMESPACE

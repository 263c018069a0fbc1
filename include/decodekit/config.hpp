#pragma once
/// \file config.hpp
/// Macros: namespaces, exceptions, assertions, error handler. Every boolean macro is 0 or 1.
///
/// Override idiom (as fmt): define the macro yourself before including decodekit to decide;
/// otherwise it is detected; otherwise the default applies.

#include <decodekit/version.hpp>

#include <cstdio>
#include <cstdlib>

#define DECODEKIT_BEGIN_NAMESPACE \
    namespace decodekit {         \
    inline namespace DECODEKIT_ABI_NAMESPACE {
#define DECODEKIT_END_NAMESPACE \
    }                           \
    }

/// DECODEKIT_EXCEPTIONS: 1 when configuration errors throw decodekit::config_error.
#ifdef DECODEKIT_EXCEPTIONS
// user decides
#elif defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define DECODEKIT_EXCEPTIONS 1
#else
#define DECODEKIT_EXCEPTIONS 0
#endif

/// DECODEKIT_ASSERT(cond, msg): checks a precondition of a noexcept kernel. On by default
/// unless NDEBUG; define DECODEKIT_ASSERT yourself to route it elsewhere.
#ifdef DECODEKIT_ASSERT
// user decides
#elif defined(NDEBUG)
#define DECODEKIT_ASSERT(cond, msg) static_cast<void>(0)
#else
#define DECODEKIT_ASSERT(cond, msg)                                                                \
    ((cond) ? static_cast<void>(0)                                                                 \
            : (std::fprintf(stderr, "%s:%d: decodekit assertion failed: %s\n", __FILE__, __LINE__, \
                            msg),                                                                  \
               std::abort()))
#endif

/// DECODEKIT_ALWAYS_INLINE: on the per-vector lambdas of the row passes whose inlining decides
/// the loop's code. Written after a lambda's parameter list, before its body (such a lambda is not
/// marked noexcept: GCC and Clang disagree on the order). Empty on compilers without the GNU
/// attribute (MSVC: its own heuristics decide); define it yourself to override, with something
/// valid both before a function and after a lambda's parameter list (`__forceinline` is not).
#ifdef DECODEKIT_ALWAYS_INLINE
// user decides
#elif defined(__GNUC__) || defined(__clang__)
#define DECODEKIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define DECODEKIT_ALWAYS_INLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DECODEKIT_LIKELY(x) __builtin_expect(!!(x), 1)
#define DECODEKIT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DECODEKIT_RESTRICT __restrict__
#else
#define DECODEKIT_LIKELY(x) (x)
#define DECODEKIT_UNLIKELY(x) (x)
#define DECODEKIT_RESTRICT
#endif

// How configuration errors are reported: with exceptions a config_error naming the field; without
// them the installed handler runs once and the program aborts (a handler that returns does not
// get the message printed a second time).
#include "dk_test.hpp"

#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <string>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_error_handler {

using namespace decodekit;

#if DECODEKIT_EXCEPTIONS
TEST_CASE("raise throws config_error with the message", "[error]") {
    try {
        raise("sampling_params.top_p must be in [0, 1], got 2");
        FAIL("raise returned");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()) == "sampling_params.top_p must be in [0, 1], got 2");
    }
}
#else
namespace {
void returning_handler(const char* message) { std::fprintf(stderr, "handler: %s\n", message); }

// Runs raise(message) in a child whose stderr is captured; returns {stderr text, aborted}.
std::pair<std::string, bool> raise_in_child(error_handler h, const char* message) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        set_error_handler(h);
        raise(message);
    }
    close(fds[1]);
    std::string text;
    char buf[256];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, std::size_t(n));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return {text, WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT};
}
std::size_t count(const std::string& hay, const std::string& needle) {
    std::size_t n = 0;
    for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
}
}  // namespace

TEST_CASE("without exceptions: the handler runs once, then the program aborts", "[error]") {
    const char* msg = "sampling_params.top_p must be in [0, 1], got 2";
    SECTION("a handler that returns: its message once, then a note and abort") {
        const auto [text, aborted] = raise_in_child(returning_handler, msg);
        CHECK(aborted);
        CHECK(count(text, msg) == 1);
        CHECK(text.find("error handler returned") != std::string::npos);
    }
    SECTION("no handler: the default prints the message once and aborts") {
        const auto [text, aborted] = raise_in_child(nullptr, msg);
        CHECK(aborted);
        CHECK(count(text, msg) == 1);
    }
}
#endif
}  // namespace dk_t_error_handler

// What a run ran on, added to Google Benchmark's context (the JSON's "context" object, read by
// scripts/bench_report.py): the CPU model (Linux /proc/cpuinfo), the compiler and the flags the
// benchmarks were built with. Run-time facts (commit, repetitions) come from
// bench/run_bench.cmake's --benchmark_context.

#include <benchmark/benchmark.h>

#include <fstream>
#include <string>

#ifndef DK_BENCH_FLAGS
#define DK_BENCH_FLAGS "unknown"
#endif

namespace {

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) != 0) continue;
        const auto colon = line.find(':');
        if (colon == std::string::npos) break;
        const auto start = line.find_first_not_of(" \t", colon + 1);
        return start == std::string::npos ? std::string() : line.substr(start);
    }
    return "unknown";
}

std::string compiler() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "g++ " __VERSION__;
#else
    return "unknown";
#endif
}

[[maybe_unused]] const bool context_added = [] {
    benchmark::AddCustomContext("cpu_model", cpu_model());
    benchmark::AddCustomContext("compiler", compiler());
    benchmark::AddCustomContext("flags", DK_BENCH_FLAGS);
    return true;
}();

}  // namespace

#!/usr/bin/env python3
"""Runs decodekit-engine (the command line after this script's name) and checks its JSON output:
one object per request with the documented fields and types, every request equal_alone, the
strategies of the workload all present, then one summary object per mode. Exit 0 when all hold."""
import json
import subprocess
import sys

REQUEST = {"id": int, "strategy": str, "tokens": list, "text": str, "stop_reason": str,
           "ttft_ms": (int, float), "tpot_ms": (int, float), "tokens_per_s": (int, float),
           "equal_alone": bool}
SUMMARY = {"mode": str, "requests": int, "throughput_tok_s": (int, float),
           "ttft_p50_ms": (int, float), "ttft_p99_ms": (int, float), "tpot_p50_ms": (int, float)}
STRATEGIES = {"greedy", "llama_cpp_chain", "hf_temp_top_p_rep", "logprobs_top5",
              "stop_string_min_new", "beam", "speculative_ngram", "speculative_early_exit"}
REASONS = {"max_new_tokens", "eos", "stop_sequence", "callback", "no_valid_token",
           "stop_string", "cancelled", "constraint_done"}


def fail(msg):
    print("check_engine_json: FAIL: " + msg)
    sys.exit(1)


def main():
    cmd = sys.argv[1:]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        fail("exit status %d" % proc.returncode)
    requests, summaries = [], []
    for n, line in enumerate(proc.stdout.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            fail("line %d is not JSON: %s" % (n, e))
        (summaries if "mode" in obj else requests).append(obj)
    if not summaries:
        fail("no summary object")
    modes = [s["mode"] for s in summaries]
    mode = cmd[cmd.index("--mode") + 1] if "--mode" in cmd else "continuous"
    want_modes = ["continuous", "static"] if mode == "both" else [mode]
    if modes != want_modes:
        fail("summary modes %s, want %s" % (modes, want_modes))
    for r in requests:
        for k, t in REQUEST.items():
            if k not in r:
                fail("request %s lacks %s" % (r.get("id"), k))
            if not isinstance(r[k], t) or (t is int and isinstance(r[k], bool)):
                fail("request %s: %s has type %s" % (r.get("id"), k, type(r[k]).__name__))
        if not all(isinstance(t, int) for t in r["tokens"]):
            fail("request %s: tokens are not integers" % r["id"])
        if r["stop_reason"] not in REASONS:
            fail("request %s: stop_reason %r" % (r["id"], r["stop_reason"]))
        if not r["equal_alone"]:
            fail("request %s (%s) is not equal to its run alone" % (r["id"], r["strategy"]))
        if r["ttft_ms"] < 0 or r["tpot_ms"] < 0 or r["tokens_per_s"] < 0:
            fail("request %s: a negative time" % r["id"])
        if r["strategy"] == "logprobs_top5":
            top = r.get("top_logprobs")
            if top is None or len(top) != len(r["tokens"]):
                fail("request %s: top_logprobs missing or not one per token" % r["id"])
            for row, tok in zip(top, r["tokens"]):
                if len(row) != 5 or any(row[i][1] < row[i + 1][1] for i in range(4)):
                    fail("request %s: a top_logprobs row is not 5 entries best first" % r["id"])
    per_mode = len(requests) // len(summaries)
    if per_mode * len(summaries) != len(requests):
        fail("%d request objects for %d modes" % (len(requests), len(summaries)))
    if {r["strategy"] for r in requests} != STRATEGIES:
        fail("strategies %s" % sorted({r["strategy"] for r in requests}))
    for s in summaries:
        for k, t in SUMMARY.items():
            if k not in s or not isinstance(s[k], t):
                fail("summary %s: field %s missing or mistyped" % (s.get("mode"), k))
        if s["requests"] != per_mode:
            fail("summary %s: requests %d, %d request objects" % (s["mode"], s["requests"],
                                                                  per_mode))
        if s.get("all_equal_alone") is not True:
            fail("summary %s: all_equal_alone is not true" % s["mode"])
    print("check_engine_json: OK: %d requests x %d modes, every request equal_alone"
          % (per_mode, len(summaries)))


if __name__ == "__main__":
    main()

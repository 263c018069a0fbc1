#!/usr/bin/env python3
"""Tests of scripts/bench_report.py on a synthetic Google Benchmark JSON whose figures are chosen
so every verdict is known: ratios to the floor of the same row, the worst shape and worst/best,
each bar met or NOT MET, medians picked from aggregates, errors listed, and the splice into
RESULTS.md. Run by ctest (bench_report_selftest); exits non-zero on the first failure."""
import importlib.util
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("bench_report",
                                              os.path.join(ROOT, "scripts", "bench_report.py"))
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)

V = br.BAR_V
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)


def entry(name, us, aggregate="median", **counters):
    e = {"name": f"{name}_{aggregate}", "run_name": name, "run_type": "aggregate",
         "aggregate_name": aggregate, "iterations": 5, "real_time": us * 1000.0,
         "cpu_time": us * 1000.0, "time_unit": "ns"}
    e.update(counters)
    return e


def synthetic():
    b = []
    for shape in br.SHAPES:
        b.append(entry(f"BM_floor_read/{shape}/V:{V}", 2.0))
        b.append(entry(f"BM_floor_exp/{shape}/V:{V}", 20.0))
        # a mean far from the median: the report must take the median
        b.append(entry(f"BM_floor_read/{shape}/V:{V}", 999.0, aggregate="mean"))
    # greedy: 1.2x / 1.4x / 1.0x / 1.1x the read floor -> worst zipf 1.4x (bar 1.5 met),
    # spread 1.4 (met)
    for shape, r in zip(br.SHAPES, [1.2, 1.4, 1.0, 1.1]):
        b.append(entry(f"BM_sample/greedy/{shape}/V:{V}", 2.0 * r, kept=1))
    # top-p: 1.5x on peaked, 10x on flat the exp floor -> bar 3 not met, spread 6.67 not met
    for shape, r in zip(br.SHAPES, [1.5, 2.0, 2.5, 10.0]):
        b.append(entry(f"BM_sample/top_p95/{shape}/V:{V}", 20.0 * r))
    # its HF T 1.5 variant: 2.9x everywhere -> met, spread 1.0
    for shape in br.SHAPES:
        b.append(entry(f"BM_sample/top_p95_hf15/{shape}/V:{V}", 58.0))
    # min-p (chosen on): 1.0x / 1.0x / 1.0x / 1.3x the exp floor -> worst 1.3x, bar 1.2 NOT MET,
    # spread 1.3 met (bars differ per setting)
    for shape, r in zip(br.SHAPES, [1.0, 1.0, 1.0, 1.3]):
        b.append(entry(f"BM_sample/min_p05/{shape}/V:{V}", 20.0 * r))
    # history: last64 1.4x (met), whole 3x (NOT MET); GB appends /iterations:256
    b.append(entry("BM_history/last64/H:300/iterations:256", 10.0))
    b.append(entry("BM_history/last64/H:100000/iterations:256", 14.0))
    b.append(entry("BM_history/whole/H:300/iterations:256", 10.0))
    b.append(entry("BM_history/whole/H:100000/iterations:256", 30.0))
    # request: new / warm = 1.5 (met) and 20 (NOT MET)
    b.append(entry("BM_request/a/warm", 10.0))
    b.append(entry("BM_request/a/new", 15.0))
    b.append(entry("BM_request/b/warm", 2.0))
    b.append(entry("BM_request/b/new", 40.0))
    # memory: 3000 bytes (met) and 3.6 MB (NOT MET)
    b.append(entry("BM_memory/a/iterations:1", 1.0, bytes_per_sampler=3000.0, sizeof_sampler=500))
    b.append(entry("BM_memory/b/iterations:1", 1.0, bytes_per_sampler=3.6e6, sizeof_sampler=500))
    # beam: 4 beams at 4 x 1.25 x the exp floor -> 1.25x per beam (met)
    for shape in br.SHAPES:
        b.append(entry(f"BM_beam_family/{shape}/V:{V}", 4 * 1.25 * 20.0, beams=4))
    # masks: the llama.cpp chain at 5 us, with a 50 % mask 5.5 us except 6.5 us on gauss ->
    # worst gauss 1.3x (NOT MET); the mask apply at 3 us over a read floor of 2 -> 1.5x (met)
    for shape in br.SHAPES:
        b.append(entry(f"BM_sample/llama_chain/{shape}/V:{V}", 5.0))
        b.append(entry(f"BM_sample/llama_chain_mask50/{shape}/V:{V}",
                       6.5 if shape == "gauss" else 5.5))
    b.append(entry(f"BM_mask_apply<50>/V:{V}", 3.0))
    # errored benchmarks: a setting, and a memory figure that could not be measured
    b.append({"name": "BM_memory/c/iterations:1", "run_name": "BM_memory/c/iterations:1",
              "run_type": "iteration", "error_occurred": True,
              "error_message": "no heap statistics here"})
    b.append({"name": "BM_sample/typical90/flat/V:128256", "run_name":
              "BM_sample/typical90/flat/V:128256", "run_type": "iteration",
              "error_occurred": True, "error_message": "sample() did not return status ok"})
    b.append(entry("BM_something_else/V:128256", 4.0, custom=7.0))
    return {"context": {"date": "today", "host_name": "h", "num_cpus": 2, "mhz_per_cpu": 1000,
                        "cpu_model": "CPU X", "caches": [], "load_avg": [0.1, 0.2, 0.3]},
            "benchmarks": b}


def main():
    run = br.Run(synthetic())
    check(run.floor("read", "peaked", V) == 2.0, "median, not mean, of an aggregate")

    g = br.family_row(run, "greedy", "read", 1.5)
    check(g is not None and g["worst"] == "zipf" and abs(g["worst_ratio"] - 1.4) < 1e-9,
          f"greedy worst shape zipf 1.4x: {g}")
    check(g["best"] == "gauss" and abs(g["spread"] - 1.4) < 1e-9, "greedy best gauss, spread 1.4")
    check(g["bar_met"] and g["spread_met"] and g["complete"], "greedy bars met")

    p = br.family_row(run, "top_p95", "exp", 3.0)
    check(p["worst"] == "flat" and abs(p["worst_ratio"] - 10.0) < 1e-9, "top-p worst flat 10x")
    check(not p["bar_met"] and not p["spread_met"], "top-p bars not met")
    h = br.family_row(run, "top_p95_hf15", "exp", 3.0)
    check(h["bar_met"] and abs(h["spread"] - 1.0) < 1e-9, "hf15 variant met")
    m = br.family_row(run, "min_p05", "exp", 1.2)
    check(not m["bar_met"] and m["spread_met"], "min-p: bar not met, spread met")
    check(br.family_row(run, "typical90", "exp", 3.0) is None, "an errored setting has no row")

    names = [s[0] for s in br.family_settings(run)]
    check("top_p95_hf15" in names and "greedy_hf15" not in names,
          "variants listed only when measured")

    hist = {r[0]: r for r in br.history_rows(run)}
    last = hist[dict(br.HISTORY)["last64"]]
    whole = hist[dict(br.HISTORY)["whole"]]
    check(abs(last[3] - 1.4) < 1e-9 and last[4], "history last64 1.4x met (iterations stripped)")
    check(abs(whole[3] - 3.0) < 1e-9 and not whole[4], "history whole 3x not met")

    req = {r[0]: r for r in br.request_rows(run)}
    check(req["a"][4] and not req["b"][4] and abs(req["b"][3] - 20.0) < 1e-9, "request ratios")
    mem = {r[0]: r for r in br.memory_rows(run)}
    check(mem["a"][3] and not mem["b"][3], "memory verdicts")
    check(mem["c"][1] is None and mem["c"][3] is None, "an unmeasured memory figure has no verdict")

    masks = br.mask_rows(run)
    check(len(masks) == 1 and masks[0][1] == "gauss" and abs(masks[0][2] - 1.3) < 1e-9
          and not masks[0][3], f"masked chain worst gauss 1.3x, not met: {masks}")

    verdicts = {label: ok for label, _, ok in br.bars(run)}
    check(any(k.startswith("mask apply") and v for k, v in verdicts.items()),
          "mask apply 1.5x the read floor: met")
    check(any("50 % bitmask" in k and v is False for k, v in verdicts.items()),
          "masked chain bar listed, not met")
    check(verdicts.get("typical 0.9 <= 3x exp floor (worst shape)", "absent") is None,
          "a setting with no figures is 'not measured'")
    check(any(k.startswith("beam step") and v for k, v in verdicts.items()), "beam bar met")
    check(verdicts.get(f"memory per idle request c <= {br.MEMORY_BAR} bytes", "absent") is None,
          "an unmeasured memory bar is listed as not measured")

    text = br.render(run)
    check("**Bars:" in text and "NOT MET" in text, "summary line and NOT MET marks")
    check("sample() did not return status ok" in text, "errors are listed")
    check("BM_something_else/V:128256" in text and "custom 7" in text,
          "unlisted benchmarks and their counters appear in 'Everything else'")
    check("CPU X" in text, "machine from the context")

    doc = f"# title\n\nintro\n\n{br.BEGIN}\nold tables\n{br.END}\n\nhistory\n"
    new = br.splice(doc, "new tables\n")
    check(new.startswith("# title\n\nintro\n\n") and new.endswith(f"{br.END}\n\nhistory\n"),
          "splice keeps what is outside the markers")
    check("new tables" in new and "old tables" not in new, "splice replaces the inside")
    try:
        br.splice("no markers", "x")
        check(False, "splice without markers must fail")
    except ValueError:
        pass

    with tempfile.TemporaryDirectory() as d:
        js, md = os.path.join(d, "b.json"), os.path.join(d, "R.md")
        with open(js, "w") as f:
            json.dump(synthetic(), f)
        with open(md, "w") as f:
            f.write(doc)
        check(br.main([js, "--update", md]) == 0, "main --update returns 0")
        with open(md) as f:
            check("greedy" in f.read(), "--update writes the tables into the file")

    for f in FAILURES:
        print("FAILED:", f)
    print(f"bench_report self-test: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

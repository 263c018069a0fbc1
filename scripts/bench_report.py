#!/usr/bin/env python3
"""Turns one Google Benchmark JSON file of decodekit_bench into the Markdown tables of
bench/RESULTS.md: the machine and the command, medians, each figure as a ratio to the floor
measured on the same row in the same run, for every sampler setting the worst shape of the row
family beside the peaked one and worst/best, and every bar of issue 12 (and the kernel bars:
each kernel within its multiple of the floor) marked met or NOT MET.

    cmake --workflow --preset bench          # runs the benchmarks, writes build/bench/bench.json
                                             # and build/bench/bench-tables.md (this script)
    python3 scripts/bench_report.py [build/bench/bench.json] [-o tables.md]
    python3 scripts/bench_report.py --update bench/RESULTS.md   # splice the tables into it

Every number comes from the file: nothing here is measured or typed in by hand. Benchmarks are
matched by name (bench/bench_common.hpp: BM_<what>[/<setting>]/<shape>/V:<vocab>, older ones
BM_<what>/V:<vocab>[/...]); a benchmark absent from the file is left out of the tables, and a
bar whose figures are absent is listed as "not measured".
"""
import argparse
import json
import os
import re
import sys

VOCABS = [32000, 128256, 151936, 256000]
BAR_V = 128256
SHAPES = ["peaked", "zipf", "gauss", "flat"]
SPREAD_BAR = 2.0  # worst shape <= 2x the best shape, per setting
HF15 = "_hf15"  # the family's variant: Hugging Face order at temperature 1.5

# Sampler settings of the family (bench/bench_family.cpp): (name, label, floor, bar x floor).
SETTINGS = [
    ("greedy", "greedy", "read", 1.5),
    ("temperature", "temperature 0.8", "exp", 3.0),
    ("temperature_nolp", "temperature 0.8, no chosen logprob", "exp", 3.0),
    ("top_k40", "top-k 40", "read", 4.0),
    ("llama_chain", "llama.cpp chain (top-k 40, top-p 0.95, min-p 0.05, T 0.8)", "read", 4.0),
    ("top_p95", "top-p 0.95", "exp", 3.0),
    ("hf_t15_top_p99", "HF order, T 1.5, top-p 0.99", "exp", 3.0),
    ("min_p05", "min-p 0.05, chosen logprob on", "exp", 1.2),
    ("min_p05_nolp", "min-p 0.05, chosen logprob off", "read", 4.0),
    ("typical90", "typical 0.9", "exp", 3.0),
    ("epsilon3e-4", "epsilon 3e-4", "exp", 3.0),
    ("eta3e-4", "eta 3e-4", "exp", 3.0),
    ("top_n_sigma1", "top-n-sigma 1", "exp", 3.0),
    ("mirostat2", "mirostat v2 (tau 5, eta 0.1)", "exp", 3.0),
    ("xtc", "XTC (probability 1, threshold 0.1)", "exp", 3.0),
]
HISTORY = [
    ("last64", "repetition 1.1 + frequency 0.1, last 64 tokens"),
    ("whole", "repetition 1.1 + frequency 0.1, whole history"),
    ("ngram3", "no-repeat-ngram 3"),
    # the same with 300 distinct ids at both lengths: the history-length term alone (whole's
    # H = 100000 has 2 000 distinct ids, O(distinct) work the issue allows)
    ("whole_300ids", "repetition 1.1 + frequency 0.1, whole history, 300 distinct ids"),
]
HISTORY_BAR = 1.5  # per step at H = 100000 over H = 300
REQUEST_BAR = 2.0  # new sampler + first draw over a warm draw
# Memory per idle request: 4 KiB + the params' heap + the history state. The report allows
# 32 bytes per distinct token of the 300-token history (counts of what it has seen) and no
# more: everything above is O(vocabulary) or a workspace a request should not hold.
MEMORY_BAR = 4096 + 32 * 300
BEAM_BAR = 1.5  # per beam, x the exp floor of the shape
SPEC_BAR = 3.0  # verification with top-p 0.95: the top-p bar
MASK_BAR = 1.2  # issue 14: a sampler setting with a 50 % bitmask over the same without
MASK_APPLY_BAR = 2.0  # issue 14: an in-place mask apply over the row, x the read floor
MASKED = [("llama.cpp chain", "llama_chain")]

# Kernels on the peaked row (the kernel bars): kernel -> (floor, naive baselines).
KERNELS = [
    ("argmax", "read", ["argmax_std"]),
    ("top_k<40>", "read", ["top_k_std_partial_sort<40>", "top_k_std_nth_element<40>"]),
    ("top_k<1024>", "read", ["top_k_std_partial_sort<1024>", "top_k_std_nth_element<1024>"]),
    ("top_k_unordered<40>", "read", ["top_k_std_nth_element_only<40>"]),
    ("top_k_unordered<1024>", "read", ["top_k_std_nth_element_only<1024>"]),
    ("min_p_filter", "read", ["min_p_filter_std"]),
    ("draw_inverse_cdf", "read", ["draw_inverse_cdf_std"]),
    ("draw_temperature", "read", ["draw_temperature_std"]),
    ("logsumexp", "exp", ["logsumexp_std"]),
    ("softmax", "exp", ["softmax_std"]),
    ("top_p", "exp", ["top_p_std_sort"]),
]
KERNEL_BARS = [
    ("argmax <= 1.5x read floor", "argmax", "read", 1.5),
    ("top-k(40) <= 3x read floor", "top_k<40>", "read", 3.0),
    ("top-k selection(1024) <= 3x read floor", "top_k_unordered<1024>", "read", 3.0),
    ("min-p filter <= 2x read floor", "min_p_filter", "read", 2.0),
    ("logsumexp <= 1.3x exp floor", "logsumexp", "exp", 1.3),
    ("softmax <= 1.3x exp floor", "softmax", "exp", 1.3),
    ("top-p(0.95) <= 2x exp floor", "top_p", "exp", 2.0),
]

FAMILY_RE = re.compile(r"^BM_(?P<what>[A-Za-z_]+)/(?:(?P<setting>[^/]+)/)?"
                       r"(?P<shape>peaked|zipf|gauss|flat)/V:(?P<v>\d+)$")


class Run:
    """The medians of one JSON file: name -> benchmark entry (time in us, clock, counters)."""

    def __init__(self, data):
        self.context = data.get("context", {})
        self.entries = {}
        self.errors = {}
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            name = re.sub(r"/iterations:\d+", "", b.get("run_name", b["name"]))
            if b.get("error_occurred"):
                self.errors[name] = b.get("error_message", "error")
                continue
            scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b.get("time_unit", "ns")]
            real = name.endswith("/real_time") or name.endswith("/manual_time")
            t = (b["real_time"] if real else b["cpu_time"]) * scale
            self.entries[name] = dict(b, us=t, clock="wall" if real else "cpu")
        self.used = set()

    def time(self, name):
        e = self.entries.get(name)
        if e is None:
            return None
        self.used.add(name)
        return e["us"]

    def counter(self, name, key):
        e = self.entries.get(name)
        return None if e is None else e.get(key)

    def floor(self, kind, shape, v):
        return self.time(f"BM_floor_{kind}/{shape}/V:{v}")


def fmt(t):
    if t is None:
        return "-"
    return f"{t:.2f}" if t < 100 else f"{t:.0f}"


def fmt_count(n):
    if n is None:
        return "-"
    return f"{n:.0f}" if n < 10000 else f"{n / 1000:.0f}k"


def mark(ok):
    return "met" if ok else "**NOT MET**"


# ---------------------------------------------------------------------------------------------
# The figures (plain data, tested by tests/meta/test_bench_report.py)

def family_row(run, name, floor, bar, v=BAR_V):
    """One setting on every shape at V = v: per-shape (us, ratio to the shape's floor, kept),
    the worst and best shapes, worst/best, and whether the bar and the spread bar are met."""
    cells = {}
    for shape in SHAPES:
        t = run.time(f"BM_sample/{name}/{shape}/V:{v}")
        f = run.floor(floor, shape, v)
        if t is None or not f:
            continue
        cells[shape] = (t, t / f, run.counter(f"BM_sample/{name}/{shape}/V:{v}", "kept"))
    if not cells:
        return None
    worst = max(cells, key=lambda s: cells[s][1])
    best = min(cells, key=lambda s: cells[s][1])
    spread = cells[worst][1] / cells[best][1]
    return {
        "cells": cells,
        "worst": worst,
        "worst_ratio": cells[worst][1],
        "best": best,
        "spread": spread,
        "bar_met": cells[worst][1] <= bar,
        "spread_met": spread <= SPREAD_BAR,
        "complete": len(cells) == len(SHAPES),
    }


def family_settings(run):
    """(name, label, floor, bar) of every setting present in the run, each followed by its HF
    order T 1.5 variant when measured."""
    out = []
    for name, label, floor, bar in SETTINGS:
        out.append((name, label, floor, bar))
        if any(f"BM_sample/{name}{HF15}/{s}/V:{BAR_V}" in run.entries for s in SHAPES):
            out.append((name + HF15, label + ", HF order T 1.5", floor, bar))
    return out


def ratio_rows(run, prefix, suffixes, bar):
    """[(label, a, b, b / a, met)] for benchmark pairs prefix/<x>/<suffix_a|suffix_b>."""
    rows = []
    for key, label in suffixes:
        a = run.time(f"{prefix}/{key}/{bar[0]}")
        b = run.time(f"{prefix}/{key}/{bar[1]}")
        if a is None or b is None:
            continue
        rows.append((label, a, b, b / a, b / a <= bar[2]))
    return rows


def history_rows(run):
    return ratio_rows(run, "BM_history", HISTORY, ("H:300", "H:100000", HISTORY_BAR))


def request_rows(run):
    names = sorted({m.group(1) for k in run.entries
                    for m in [re.match(r"^BM_request/([^/]+)/(new|warm)$", k)] if m})
    return ratio_rows(run, "BM_request", [(n, n) for n in names], ("warm", "new", REQUEST_BAR))


def memory_rows(run):
    """[(setting, bytes per sampler, sizeof(sampler), met)]; bytes and met are None when the
    benchmark could not measure (an error: no heap statistics under a sanitizer, for example)."""
    rows = []
    for k in sorted(set(run.entries) | set(run.errors)):
        m = re.match(r"^BM_memory/([^/]+)$", k)
        if not m:
            continue
        run.used.add(k)
        b = run.counter(k, "bytes_per_sampler")
        rows.append((m.group(1), b, run.counter(k, "sizeof_sampler"),
                     None if b is None else b <= MEMORY_BAR))
    return rows


def mask_rows(run, v=BAR_V):
    """[(label, worst shape, its ratio, met)]: BM_sample/<setting>_mask50/<shape> over
    BM_sample/<setting>/<shape> (same run), the worst shape."""
    rows = []
    for label, setting in MASKED:
        ratios = []
        for shape in SHAPES:
            a = run.time(f"BM_sample/{setting}/{shape}/V:{v}")
            b = run.time(f"BM_sample/{setting}_mask50/{shape}/V:{v}")
            if a and b:
                ratios.append((b / a, shape))
        if ratios:
            r, shape = max(ratios)
            rows.append((label, shape, r, r <= MASK_BAR))
    return rows


def shape_rows(run, what, floor, bar, per=1.0, v=BAR_V):
    """[(shape, us, us / per, ratio to the shape's floor, met, entry name)] of BM_<what>/..."""
    rows = []
    for shape in SHAPES:
        name = f"BM_{what}/{shape}/V:{v}"
        t = run.time(name)
        f = run.floor(floor, shape, v)
        if t is None or not f:
            continue
        r = t / per / f
        rows.append((shape, t, t / per, r, bar is None or r <= bar, name))
    return rows


def bars(run):
    """Every bar of the run: [(label, measured text, met or None when not measured)]."""
    out = []
    for name, label, floor, bar in family_settings(run):
        row = family_row(run, name, floor, bar)
        if row is None:
            out.append((f"{label} <= {bar:g}x {floor} floor (worst shape)", "not measured", None))
            continue
        out.append((f"{label} <= {bar:g}x {floor} floor (worst shape)",
                    f"{row['worst_ratio']:.2f}x ({row['worst']})", row["bar_met"]))
        out.append((f"{label}: worst shape <= {SPREAD_BAR:g}x best",
                    f"{row['spread']:.2f}x ({row['worst']} / {row['best']})", row["spread_met"]))
    for label, a, b, r, ok in history_rows(run):
        out.append((f"{label}: per step at H = 100000 <= {HISTORY_BAR:g}x H = 300", f"{r:.2f}x",
                    ok))
    for label, a, b, r, ok in request_rows(run):
        out.append((f"request {label}: new sampler + first draw <= {REQUEST_BAR:g}x warm draw",
                    f"{r:.2f}x", ok))
    for label, b, size, ok in memory_rows(run):
        out.append((f"memory per idle request {label} <= {MEMORY_BAR} bytes",
                    f"{b:.0f} bytes" if b is not None else "not measured", ok))
    beam = shape_rows(run, "beam_family", "exp", BEAM_BAR, per=4.0)
    if beam:
        w = max(beam, key=lambda r: r[3])
        out.append((f"beam step (4 beams) <= {BEAM_BAR:g}x exp floor per beam (worst shape)",
                    f"{w[3]:.2f}x ({w[0]})", w[4]))
    spec = shape_rows(run, "spec_family", "exp", SPEC_BAR)
    if spec:
        w = max(spec, key=lambda r: r[3])
        out.append((f"speculative verification, top-p 0.95 target <= {SPEC_BAR:g}x exp floor "
                    "(worst shape)", f"{w[3]:.2f}x ({w[0]})", w[4]))
    for label, name, floor, bar in KERNEL_BARS:
        t, f = run.time(f"BM_{name}/V:{BAR_V}"), run.floor(floor, "peaked", BAR_V)
        if t is None or not f:
            continue
        out.append((f"kernel {label} (peaked row)", f"{t / f:.2f}x", t / f <= bar))
    for label, shape, r, ok in mask_rows(run):
        out.append((f"{label} with a 50 % bitmask <= {MASK_BAR:g}x the same without (worst shape)",
                    f"{r:.2f}x ({shape})", ok))
    t, f = run.time(f"BM_mask_apply<50>/V:{BAR_V}"), run.floor("read", "peaked", BAR_V)
    if t is not None and f:
        out.append((f"mask apply in place (50 %) <= {MASK_APPLY_BAR:g}x read floor (peaked row)",
                    f"{t / f:.2f}x", t / f <= MASK_APPLY_BAR))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering

def render(run, source="bench.json"):
    out = []
    c = run.context
    cpu = c.get("cpu_model", "?")
    caches = ", ".join(f"L{x['level']}{'d' if x.get('type') == 'Data' else ''} "
                       f"{x['size'] // 1024} KiB" + (f" x{c.get('num_cpus', 1) // x['num_sharing']}"
                                                    if x.get("num_sharing") else "")
                       for x in c.get("caches", []) if x.get("type") != "Instruction")
    out.append(f"Run {c.get('date', '?')} on {c.get('host_name', '?')}: {cpu}, "
               f"{c.get('num_cpus', '?')} CPUs at {c.get('mhz_per_cpu', '?')} MHz ({caches}), "
               f"load average {', '.join(f'{x:.2f}' for x in c.get('load_avg', []))} at the "
               f"start. Built with {c.get('compiler', '?')}, flags `{c.get('flags', '?')}`, at "
               f"commit {c.get('commit', '?')}. Medians of {c.get('repetitions', '?')} "
               f"repetitions, CPU time of the benchmark thread unless marked wall, in us "
               f"(`{os.path.basename(source)}`).\n")

    results = bars(run)
    met = [b for b in results if b[2] is True]
    missed = [b for b in results if b[2] is False]
    out.append(f"**Bars: {len(met)} met, {len(missed)} not met** (every bar is listed in "
               "\"All bars\" below).\n")

    out.append("### Floors (us), per row shape\n")
    out.append("| V | " + " | ".join(f"read {s}" for s in SHAPES) + " | " +
               " | ".join(f"exp {s}" for s in SHAPES) + " |")
    out.append("|---|" + "---|" * (2 * len(SHAPES)))
    for v in VOCABS:
        cells = [fmt(run.floor(k, s, v)) for k in ("read", "exp") for s in SHAPES]
        if any(x != "-" for x in cells):
            out.append(f"| {v} | " + " | ".join(cells) + " |")

    out.append(f"\n### Samplers on the row family: whole `sample()` call at V = {BAR_V}\n")
    out.append("Each cell: median us (x the floor of that row). Worst = the shape with the "
               "highest ratio; spread = worst / best ratio (bar <= "
               f"{SPREAD_BAR:g}x). `kept` (the size of the final set) is in the JSON.\n")
    out.append("| setting | floor | bar | " + " | ".join(SHAPES) +
               " | worst | spread | bar | spread |")
    out.append("|---|---|---|" + "---|" * len(SHAPES) + "---|---|---|---|")
    for name, label, floor, bar in family_settings(run):
        row = family_row(run, name, floor, bar)
        if row is None:
            continue
        cells = [f"{fmt(row['cells'][s][0])} ({row['cells'][s][1]:.2f}x)"
                 if s in row["cells"] else "-" for s in SHAPES]
        out.append(f"| {label} | {floor} | {bar:g}x | " + " | ".join(cells) +
                   f" | {row['worst']} {row['worst_ratio']:.2f}x | {row['spread']:.2f}x | "
                   f"{mark(row['bar_met'])} | {mark(row['spread_met'])} |")

    kept_lines = []
    for name, label, floor, bar in family_settings(run):
        ks = [run.counter(f"BM_sample/{name}/{s}/V:{BAR_V}", "kept") for s in SHAPES]
        if any(k is not None for k in ks):
            kept_lines.append(f"{label} " + " / ".join(fmt_count(k) for k in ks))
    if kept_lines:
        out.append("\nKept set (" + " / ".join(SHAPES) + "): " + "; ".join(kept_lines) + ".")

    out.append("\n### Cost against V (peaked and flat rows): median us (x the floor of that row)\n")
    out.append("| setting | shape | " + " | ".join(f"V = {v}" for v in VOCABS) + " |")
    out.append("|---|---|" + "---|" * len(VOCABS))
    for name, label, floor, _ in SETTINGS:
        for shape in ("peaked", "flat"):
            cells = []
            for v in VOCABS:
                t = run.time(f"BM_sample/{name}/{shape}/V:{v}")
                f = run.floor(floor, shape, v)
                cells.append(f"{fmt(t)} ({t / f:.2f}x)" if t is not None and f else "-")
            if sum(x != "-" for x in cells) > 1:
                out.append(f"| {label} | {shape} | " + " | ".join(cells) + " |")

    dist = [(s, run.time(f"BM_distribution/top_p95/{s}/V:{BAR_V}"),
             run.time(f"BM_distribution_unordered/top_p95/{s}/V:{BAR_V}"),
             run.counter(f"BM_distribution/top_p95/{s}/V:{BAR_V}", "kept"),
             run.floor("exp", s, BAR_V)) for s in SHAPES]
    dist = [d for d in dist if d[1] is not None and d[4]]
    if dist:
        out.append(f"\n### distribution() with top-p 0.95 at V = {BAR_V} (no bar: it returns "
                   "its set sorted)\n")
        out.append("| shape | kept | distribution() | distribution_unordered() |\n|---|---|---|---|")
        for s, a, b, k, f in dist:
            ub = f"{fmt(b)} ({b / f:.2f}x exp)" if b is not None else "-"
            out.append(f"| {s} | {fmt_count(k)} | {fmt(a)} ({a / f:.2f}x exp) | {ub} |")

    hist = history_rows(run)
    if hist:
        out.append(f"\n### History: per step, generating (llama.cpp chain, V = {BAR_V}, peaked "
                   "row; history cycling through 2 000 ids)\n")
        out.append("| processors | H = 300 (us) | H = 100000 (us) | ratio | bar "
                   f"<= {HISTORY_BAR:g}x |\n|---|---|---|---|---|")
        for label, a, b, r, ok in hist:
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {r:.2f}x | {mark(ok)} |")
    req = request_rows(run)
    if req:
        out.append(f"\n### A request's sampler (V = {BAR_V}, peaked row)\n")
        out.append(f"| setting | warm draw (us) | new sampler + first draw (us) | ratio | bar "
                   f"<= {REQUEST_BAR:g}x |\n|---|---|---|---|---|")
        for label, a, b, r, ok in req:
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {r:.2f}x | {mark(ok)} |")
    mem = memory_rows(run)
    if mem:
        out.append(f"\nMemory held per idle request (16 samplers, each drawn once with a "
                   f"300-token history; heap growth / 16, object included; bar: 4 KiB + params "
                   f"+ history state, judged here as <= {MEMORY_BAR} bytes):\n")
        out.append("| setting | bytes per sampler | sizeof(sampler) | |\n|---|---|---|---|")
        for label, b, size, ok in mem:
            bs = f"{b:,.0f}" if b is not None else "-"
            ss = f"{size:.0f}" if size is not None else "-"
            out.append(f"| {label} | {bs} | {ss} | {'not measured' if ok is None else mark(ok)} |")

    beam = shape_rows(run, "beam_family", "exp", BEAM_BAR, per=4.0)
    spec = shape_rows(run, "spec_family", "exp", SPEC_BAR)
    if beam or spec:
        out.append(f"\n### Strategies on the row family (V = {BAR_V})\n")
        out.append("| | " + " | ".join(SHAPES) + " |\n|---|" + "---|" * len(SHAPES))
        if beam:
            by = {r[0]: r for r in beam}
            out.append(f"| beam step, 4 beams: us per beam (x exp floor; bar <= {BEAM_BAR:g}x) | " +
                       " | ".join(f"{fmt(by[s][2])} ({by[s][3]:.2f}x)" if s in by else "-"
                                  for s in SHAPES) + " |")
        if spec:
            by = {r[0]: r for r in spec}
            out.append("| verified draft token, target top-p 0.95: us (x exp floor; bar <= "
                       f"{SPEC_BAR:g}x) | " +
                       " | ".join(f"{fmt(by[s][1])} ({by[s][3]:.2f}x)" if s in by else "-"
                                  for s in SHAPES) + " |")
            out.append("| ... acceptance rate / target set size | " + " | ".join(
                f"{run.counter(by[s][5], 'accept') or 0:.2f} / "
                f"{fmt_count(run.counter(by[s][5], 'kept'))}" if s in by else "-"
                for s in SHAPES) + " |")

    out.append("\n### Kernels on the peaked row: median (x its floor) [x faster than the best "
               "naive baseline]\n")
    out.append("| kernel | floor | " + " | ".join(f"V = {v}" for v in VOCABS) + " |")
    out.append("|---|---|" + "---|" * len(VOCABS))
    for name, floor, bases in KERNELS:
        cells = []
        for v in VOCABS:
            t = run.time(f"BM_{name}/V:{v}")
            f = run.floor(floor, "peaked", v)
            if t is None or not f:
                cells.append("-")
                continue
            base = [b for b in (run.time(f"BM_{x}/V:{v}") for x in bases) if b is not None]
            speed = f" [{min(base) / t:.0f}x]" if base else ""
            cells.append(f"{fmt(t)} ({t / f:.2f}x){speed}")
        if any(x != "-" for x in cells):
            out.append(f"| {name} | {floor} | " + " | ".join(cells) + " |")
    sel = [(v, run.time(f"BM_top_k_unordered<40>/V:{v}"),
            run.time(f"BM_top_k_unordered<1024>/V:{v}"), run.time(f"BM_top_k<1024>/V:{v}"))
           for v in VOCABS]
    sel = [x for x in sel if x[1] and x[2]]
    if sel:
        out.append("\nFlat in k: top-k selection (top_k_unordered) at k = 1024 over k = 40: " +
                   ", ".join(f"{b / a:.2f}x at V = {v}" for v, a, b, _ in sel) +
                   ". top_k adds the O(k) sort of the selected set: " +
                   ", ".join(f"{c - b:.2f} us at V = {v}" for v, _, b, c in sel if c) +
                   " for k = 1024.")
    bl = [f"{b} " + " / ".join(fmt(run.time(f"BM_{b}/V:{v}")) for v in VOCABS)
          for _, _, bases in KERNELS for b in bases
          if any(run.time(f"BM_{b}/V:{v}") is not None for v in VOCABS)]
    if bl:
        out.append("\nNaive baselines (us, V = " + " / ".join(map(str, VOCABS)) + "): " +
                   "; ".join(bl) + ".")

    out.append("\n### All bars\n")
    out.append("| bar | measured | |\n|---|---|---|")
    for label, measured, ok in results:
        out.append(f"| {label} | {measured} | "
                   f"{'not measured' if ok is None else mark(ok)} |")

    if run.errors:
        out.append("\n### Benchmarks that reported an error\n")
        for k, msg in sorted(run.errors.items()):
            out.append(f"- `{k}`: {msg}")

    rest = sorted(k for k in run.entries if k not in run.used and not k.startswith("BM_floor_"))
    if rest:
        out.append("\n### Everything else in the run (median)\n")
        out.append("| benchmark | us | clock | x read floor (peaked row, same V) | counters |")
        out.append("|---|---|---|---|---|")
        skip = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads",
                "iterations", "real_time", "cpu_time", "time_unit", "aggregate_name",
                "aggregate_unit", "family_index", "per_family_instance_index", "us", "clock",
                "items_per_second", "bytes_per_second", "label"}
        for k in rest:
            e = run.entries[k]
            m = re.search(r"/V:(\d+)", k)
            f = run.floor("read", "peaked", int(m.group(1))) if m else None
            ratio = f"{e['us'] / f:.1f}x" if f else ""
            one = k.replace("threads:2", "threads:1")
            if one != k and one in run.entries:
                ratio += f" (2 threads: {run.entries[one]['us'] / e['us']:.2f}x faster than 1)"
            counters = ", ".join(f"{x} {e[x]:.3g}" for x in sorted(e)
                                 if x not in skip and isinstance(e[x], (int, float)))
            out.append(f"| `{k}` | {fmt(e['us'])} | {e['clock']} | {ratio} | {counters} |")
    return "\n".join(out) + "\n"


BEGIN = "<!-- bench_report.py: begin (generated; edit scripts/bench_report.py, not this) -->"
END = "<!-- bench_report.py: end -->"


def splice(doc, tables):
    """doc with the text between the BEGIN and END markers replaced by tables."""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        raise ValueError(f"markers not found: put the lines\n{BEGIN}\n{END}\nwhere the tables go")
    return doc[:i + len(BEGIN)] + "\n" + tables + doc[j:]


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="?", default=os.path.join(root, "build", "bench", "bench.json"),
                    help="decodekit_bench --benchmark_out JSON (default: build/bench/bench.json)")
    ap.add_argument("-o", "--output", help="write the tables here (default: stdout)")
    ap.add_argument("--update", metavar="RESULTS_MD",
                    help="replace the generated part of this file (between its markers)")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        run = Run(json.load(f))
    tables = render(run, args.json)
    if args.output:
        with open(args.output, "w") as f:
            f.write(tables)
    if args.update:
        with open(args.update) as f:
            doc = f.read()
        with open(args.update, "w") as f:
            f.write(splice(doc, tables))
    if not args.output and not args.update:
        sys.stdout.write(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())

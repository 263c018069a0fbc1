#!/usr/bin/env python3
"""Turns one Google Benchmark JSON file of decodekit_bench into the Markdown tables of
bench/RESULTS.md: medians, each figure as a ratio to its floor (read or exp, same V, same run)
and to its naive std:: baseline, and the DESIGN.md bars at V = 128256 with "holds" or "MISSED".

    build/bench/bench/decodekit_bench --benchmark_repetitions=5 \
        --benchmark_report_aggregates_only=true \
        --benchmark_out=bench.json --benchmark_out_format=json
    python3 scripts/bench_report.py bench.json > tables.md

Every number comes from the file: nothing here is measured or typed in by hand. Benchmarks are
matched by name (BM_<name>/V:<vocab>[/...]); a benchmark absent from the file is left out.
"""
import json
import re
import sys

VOCABS = [32000, 128256, 151936, 256000]
BAR_V = 128256

# kernel -> (floor, naive baselines)
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
SAMPLERS = [
    ("sampler_greedy", "read", "greedy"),
    ("sampler_temperature", "exp", "temperature 0.8, full row"),
    ("sampler_top_k40", "read", "top-k 40"),
    ("sampler_top_p95", "exp", "top-p 0.95"),
    ("sampler_min_p05", "read", "min-p 0.05"),
    ("sampler_llama_chain", "read", "llama.cpp chain (top-k 40, top-p 0.95, min-p 0.05, T 0.8)"),
    ("sampler_chain_penalties64", "read", "chain + penalties, 64-token window"),
    ("sampler_chain_raw_logprob", "exp", "chain + raw logprob"),
    ("sampler_temperature_draw", "read", "temperature 0.8, no chosen logprob (envelope draw)"),
]
# (label, benchmark, floor, bar) at V = 128256
BARS = [
    ("argmax <= 1.5x read floor", "argmax", "read", 1.5),
    ("top-k(40) <= 3x read floor", "top_k<40>", "read", 3.0),
    ("top-k selection(1024) <= 3x read floor (flat in k; top_k_unordered)",
     "top_k_unordered<1024>", "read", 3.0),
    ("min-p filter <= 2x read floor", "min_p_filter", "read", 2.0),
    ("logsumexp <= 1.3x exp floor", "logsumexp", "exp", 1.3),
    ("softmax <= 1.3x exp floor", "softmax", "exp", 1.3),
    ("top-p(0.95) <= 2x exp floor", "top_p", "exp", 2.0),
    ("sampler: greedy <= 1.5x read floor", "sampler_greedy", "read", 1.5),
    ("sampler: top-k 40 <= 4x read floor", "sampler_top_k40", "read", 4.0),
    ("sampler: min-p 0.05 <= 4x read floor", "sampler_min_p05", "read", 4.0),
    ("sampler: llama.cpp chain <= 4x read floor", "sampler_llama_chain", "read", 4.0),
    ("sampler: temperature (full row) <= 2x exp floor", "sampler_temperature", "exp", 2.0),
    ("sampler: top-p 0.95 <= 2x exp floor", "sampler_top_p95", "exp", 2.0),
    ("stretch: temperature draw without per-element exp < 4x read floor", "draw_temperature",
     "read", 4.0),
]


def load(path):
    with open(path) as f:
        data = json.load(f)
    med = {}  # run_name -> (time in us, which clock)
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b.get("time_unit", "ns")]
        real = name.endswith("/real_time")
        t = (b["real_time"] if real else b["cpu_time"]) * scale
        med[name] = (t, "wall" if real else "cpu")
    return data.get("context", {}), med


def get(med, name, v):
    key = f"BM_{name}/V:{v}"
    return med[key][0] if key in med else None


def fmt(t):
    return f"{t:.2f}" if t < 100 else f"{t:.0f}"


def main():
    ctx, med = load(sys.argv[1])
    out = []
    floors = {v: {"read": get(med, "floor_read", v), "exp": get(med, "floor_exp", v)} for v in VOCABS}
    vs = [v for v in VOCABS if floors[v]["read"]]
    out.append(f"Run: {ctx.get('date', '?')}, host {ctx.get('host_name', '?')}, "
               f"{ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
               f"load average {', '.join(f'{x:.2f}' for x in ctx.get('load_avg', []))} at the start. "
               "Times are medians (CPU time of the benchmark thread unless marked wall) in us.\n")
    out.append("### Floors\n")
    out.append("| V | read floor (us) | exp floor (us) |\n|---|---|---|")
    for v in vs:
        out.append(f"| {v} | {fmt(floors[v]['read'])} | {fmt(floors[v]['exp'])} |")

    out.append("\n### Kernels: median (x its floor) [x faster than the best naive baseline]\n")
    out.append("| kernel | floor | " + " | ".join(f"V = {v}" for v in vs) + " |")
    out.append("|---|---|" + "---|" * len(vs))
    for name, floor, bases in KERNELS:
        cells = []
        for v in vs:
            t = get(med, name, v)
            if t is None:
                cells.append("")
                continue
            base = [b for b in (get(med, x, v) for x in bases) if b is not None]
            speed = f" [{min(base) / t:.0f}x]" if base else ""
            cells.append(f"{fmt(t)} ({t / floors[v][floor]:.2f}x){speed}")
        if any(cells):
            out.append(f"| {name} | {floor} | " + " | ".join(cells) + " |")
    out.append("\nNaive baselines (us): " + "; ".join(
        f"{b} " + " / ".join(fmt(get(med, b, v)) if get(med, b, v) else "-" for v in vs)
        for _, _, bases in KERNELS for b in bases if any(get(med, b, v) for v in vs)) + ".")

    out.append("\n### Samplers: whole `sample()` call, median (x its floor)\n")
    out.append("| sampler | floor | " + " | ".join(f"V = {v}" for v in vs) + " |")
    out.append("|---|---|" + "---|" * len(vs))
    for name, floor, label in SAMPLERS:
        cells = []
        for v in vs:
            t = get(med, name, v)
            cells.append(f"{fmt(t)} ({t / floors[v][floor]:.2f}x)" if t is not None else "")
        if any(cells):
            out.append(f"| {label} | {floor} | " + " | ".join(cells) + " |")

    out.append(f"\n### Bars at V = {BAR_V}\n")
    out.append("| bar | measured | |\n|---|---|---|")
    for label, name, floor, bar in BARS:
        t = get(med, name, BAR_V)
        if t is None or not floors.get(BAR_V, {}).get(floor):
            continue
        r = t / floors[BAR_V][floor]
        out.append(f"| {label} | {r:.2f}x | {'holds' if r <= bar else 'MISSED'} |")

    sel = [(v, get(med, "top_k_unordered<40>", v), get(med, "top_k_unordered<1024>", v))
           for v in vs]
    if all(a and b for _, a, b in sel):
        out.append("\nFlat in k: top-k selection (top_k_unordered) at k = 1024 over k = 40: " +
                   ", ".join(f"{b / a:.2f}x at V = {v}" for v, a, b in sel) +
                   ". top_k adds the O(k) sort of the selected set: " +
                   ", ".join(f"{get(med, 'top_k<1024>', v) - b:.2f} us at V = {v}"
                             for v, _, b in sel if get(med, "top_k<1024>", v)) +
                   " for k = 1024.")

    shown = {f"BM_{n}/V:{v}" for n, _, _ in KERNELS for v in VOCABS}
    shown |= {f"BM_{b}/V:{v}" for _, _, bs in KERNELS for b in bs for v in VOCABS}
    shown |= {f"BM_{n}/V:{v}" for n, _, _ in SAMPLERS for v in VOCABS}
    shown |= {f"BM_floor_{f}/V:{v}" for f in ("read", "exp") for v in VOCABS}
    rest = sorted(k for k in med if k not in shown)
    if rest:
        out.append("\n### Everything else in the run (median, us)\n")
        out.append("| benchmark | median (us) | clock | x read floor (same V) |\n|---|---|---|---|")
        for k in rest:
            t, clock = med[k]
            m = re.search(r"/V:(\d+)", k)
            v = int(m.group(1)) if m else None
            ratio = f"{t / floors[v]['read']:.1f}x" if v in floors and floors[v]["read"] else ""
            one = k.replace("threads:2", "threads:1")
            if one != k and one in med:
                ratio += f" (2 threads: {med[one][0] / t:.2f}x faster than 1)"
            out.append(f"| `{k}` | {fmt(t)} | {clock} | {ratio} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

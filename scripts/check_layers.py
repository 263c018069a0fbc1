#!/usr/bin/env python3
"""Checks decodekit's include graph against its layer list: a header includes only headers of its
own layer or of layers before it, and no include cycle exists; and tests/ includes the library
only as <decodekit/decodekit.hpp> (the single-header preset builds the tests against
single_include/, which has no other header; fuzz/ builds against include/). Exit 1 on a violation.

Layers, in order (README.md, "Layout"):
  config.hpp version.hpp | simd/ | types.hpp error.hpp | random.hpp | candidates.hpp | kernels/ |
  processors/ | sampling/ | model.hpp | decoding/ | decodekit.hpp generate.hpp (umbrella and
  forwarding headers)
"""
import pathlib
import re
import sys

LAYERS = [
    ["config.hpp", "version.hpp"],
    ["simd/"],
    ["types.hpp", "error.hpp"],
    ["random.hpp"],
    ["candidates.hpp"],
    ["kernels/"],
    ["processors/"],
    ["sampling/"],
    ["model.hpp"],
    ["decoding/"],
    ["decodekit.hpp", "generate.hpp"],
]


def layer_of(rel):
    for i, names in enumerate(LAYERS):
        for n in names:
            if (n.endswith("/") and rel.startswith(n)) or rel == n:
                return i
    return None


def selftest():
    """A tree with one upward include and one cycle must give exactly those problems."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        base = pathlib.Path(d) / "include" / "decodekit"
        (base / "kernels").mkdir(parents=True)
        (base / "sampling").mkdir()
        (base / "config.hpp").write_text("#pragma once\n")
        (base / "kernels" / "a.hpp").write_text("#include <decodekit/sampling/b.hpp>\n")
        (base / "sampling" / "b.hpp").write_text("#include <decodekit/sampling/c.hpp>\n")
        (base / "sampling" / "c.hpp").write_text("#include <decodekit/sampling/b.hpp>\n")
        found = check(base)
        tests = pathlib.Path(d) / "tests"
        tests.mkdir()
        (tests / "t.cpp").write_text("#include <decodekit/decodekit.hpp>\n"
                                     "#include <decodekit/kernels/a.hpp>\n")
        found += check_users(pathlib.Path(d))
    ok = len(found) == 3 and "later layer" in found[0] + found[1] and any(
        "cycle" in f for f in found) and "kernels/a.hpp" in found[2]
    print("selftest:", "ok" if ok else "FAILED", found)
    return 0 if ok else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--selftest":
        return selftest()
    repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems = check(repo / "include" / "decodekit") + check_users(repo)
    for p in problems:
        print(p)
    print(f"layers: {len(problems)} problems")
    return 1 if problems else 0


def check(root):
    include = re.compile(r'^\s*#\s*include\s*<decodekit/([^>]+)>', re.M)
    graph, problems = {}, []
    for path in sorted(root.rglob("*.hpp")):
        rel = path.relative_to(root).as_posix()
        me = layer_of(rel)
        if me is None:
            problems.append(f"{rel}: not in any layer (add it to scripts/check_layers.py)")
            continue
        deps = include.findall(path.read_text())
        graph[rel] = deps
        for d in deps:
            other = layer_of(d)
            if other is None:
                problems.append(f"{rel}: includes {d}, which is in no layer")
            elif other > me:
                problems.append(
                    f"{rel} (layer {me}: {' '.join(LAYERS[me])}) includes {d} "
                    f"(layer {other}: {' '.join(LAYERS[other])}), a later layer")
    # cycles (depth-first search)
    state = {}

    def visit(n, stack):
        state[n] = 1
        for d in graph.get(n, []):
            if state.get(d) == 1:
                problems.append("include cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d in graph and state.get(d) is None:
                visit(d, stack + [d])
        state[n] = 2

    for n in graph:
        if state.get(n) is None:
            visit(n, [n])
    return problems


def check_users(repo):
    """tests/ sources that include a library header other than the umbrella."""
    include = re.compile(r'^\s*#\s*include\s*<decodekit/([^>]+)>', re.M)
    problems = []
    for top in ("tests",):
        for path in sorted((repo / top).rglob("*")):
            if path.suffix not in (".cpp", ".hpp") or not path.is_file():
                continue
            for d in include.findall(path.read_text()):
                if d != "decodekit.hpp":
                    problems.append(f"{path.relative_to(repo).as_posix()}: includes decodekit/{d}; "
                                    "tests include the library as <decodekit/decodekit.hpp> "
                                    "(dk_test.hpp) only")
    return problems


if __name__ == "__main__":
    sys.exit(main())

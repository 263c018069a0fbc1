#!/usr/bin/env python3
"""Checks that decodekit's documentation stands on its own and that its references resolve:
  1. no file of the repository cites a document users do not have (ALGORITHMS.md, or a
     ../shared/*.md note outside the repository);
  2. every link to a repository Markdown file with an anchor (docs/semantics.md#top-p, also
     relative ones inside docs/) names a file that exists and a heading it has (GitHub's anchor
     rule), every in-page link (#anchor) of README.md and docs/*.md names a heading of that page,
     and every relative link of README.md and docs/*.md names a file that exists;
  3. every test docs/bad-input.md names (`file: "TEST_CASE name"`, "..." at either end abbreviates)
     exists in tests/unit/test_<file>.cpp or tests/e2e/test_<file>.cpp, and every fuzz_<name>
     it names exists in fuzz/;
  4. every ```cpp block of README.md appears in tests/unit/test_readme_examples.cpp, each
     paragraph (lines between blank lines) as consecutive lines, leading and trailing spaces
     aside: the README's code compiles and runs.
Exit 1 and one line per problem on a violation. --selftest checks the checker on a small tree.
"""
import pathlib
import re
import sys

SCANNED = ["include", "docs", "tests", "bench", "examples", "scripts", "fuzz", "packaging", "cmake"]
TEXT_EXT = {".hpp", ".cpp", ".h", ".md", ".py", ".sh", ".cmake", ".txt", ".json"}
FORBIDDEN = [re.compile(r"ALGORITHMS\.md"), re.compile(r"\.\./shared/[\w./-]*\.md")]
ANCHOR_LINK = re.compile(r"((?:\.\./|\./)?(?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TEST_REF = re.compile(r"(\w+)(?: \(e2e\))?: ((?:\"[^\"]*\"(?:, )?)+)")
THIS = pathlib.Path(__file__).name


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(md):
    out, fence = set(), False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def files(root):
    for top in SCANNED:
        base = root / top
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and p.suffix in TEXT_EXT and "build" not in p.relative_to(root).parts:
                    yield p
    for p in (root / "README.md", root / "CMakeLists.txt"):
        if p.is_file():
            yield p


def resolve(root, src, target):
    """The repository file a link in `src` to `target` names."""
    if target.startswith("docs/") or not target.startswith("."):
        cand = [src.parent / target, root / target]
    else:
        cand = [src.parent / target]
    for c in cand:
        if c.is_file():
            return c.resolve()
    return None


def test_names(root):
    names = {}
    for sub in ("unit", "e2e"):
        for f in sorted((root / "tests" / sub).glob("test_*.cpp")):
            src = f.read_text(encoding="utf-8")
            # adjacent string literals inside TEST_CASE( ... ) are one name
            for m in re.finditer(r"TEST_CASE\(\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+)", src):
                name = "".join(re.findall(r"\"((?:[^\"\\]|\\.)*)\"", m.group(1)))
                names.setdefault(f.stem[len("test_"):], set()).add(name)
    return names


def readme_snippets(root):
    readme = root / "README.md"
    test = root / "tests" / "unit" / "test_readme_examples.cpp"
    if not readme.is_file():
        return []
    blocks, cur, start = [], None, 0
    for n, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if cur is None and s == "```cpp":
            cur, start = [], n + 1
        elif cur is not None and s == "```":
            blocks.append((start, cur))
            cur = None
        elif cur is not None:
            cur.append((n, s))
    if not blocks:
        return []
    if not test.is_file():
        return [f"README.md: C++ snippets but no {test.relative_to(root)}"]
    code = [l.strip() for l in test.read_text(encoding="utf-8").splitlines()]
    problems = []
    for start, lines in blocks:
        para = []
        for n, s in lines + [(0, "")]:
            if s:
                para.append((n, s))
                continue
            if para:
                want = [x for _, x in para]
                if not any(code[i:i + len(want)] == want for i in range(len(code))):
                    problems.append(f"README.md:{para[0][0]}: snippet paragraph not in "
                                    f"tests/unit/test_readme_examples.cpp: {want[0]}")
            para = []
    return problems


def check(root):
    root = pathlib.Path(root).resolve()
    problems = []
    cache = {}
    for p in files(root):
        rel = p.relative_to(root)
        if p.name == THIS:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for pat in FORBIDDEN:
                if pat.search(line):
                    problems.append(f"{rel}:{n}: cites a document users do not have: {line.strip()}")
            for m in ANCHOR_LINK.finditer(line):
                target = resolve(root, p, m.group(1))
                if target is None:
                    problems.append(f"{rel}:{n}: no file {m.group(1)}")
                    continue
                if target not in cache:
                    cache[target] = anchors(target)
                if m.group(2) not in cache[target]:
                    problems.append(f"{rel}:{n}: {m.group(1)} has no heading #{m.group(2)}")
            if p.suffix == ".md" and (p.parent.name == "docs" or rel == pathlib.Path("README.md")):
                for m in re.finditer(r"\]\(#([\w-]+)\)", line):  # a link inside the page
                    if p.resolve() not in cache:
                        cache[p.resolve()] = anchors(p)
                    if m.group(1) not in cache[p.resolve()]:
                        problems.append(f"{rel}:{n}: no heading #{m.group(1)} in this page")
                for m in MD_LINK.finditer(line):
                    t = m.group(1)
                    if "://" in t or t.startswith("mailto:"):
                        continue
                    if not (p.parent / t).exists():
                        problems.append(f"{rel}:{n}: link to a missing file {t}")
    problems += readme_snippets(root)
    bad_input = root / "docs" / "bad-input.md"
    if bad_input.is_file():
        names = test_names(root)
        for n, line in enumerate(bad_input.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith("|"):
                continue
            checked_by = line.rstrip().rstrip("|").split("|")[-1]
            for m in TEST_REF.finditer(checked_by):
                f = m.group(1)
                for t in re.findall(r"\"([^\"]*)\"", m.group(2)):
                    if f not in names:
                        problems.append(f"docs/bad-input.md:{n}: no test file for {f}: \"{t}\"")
                    elif t.startswith("...") or t.endswith("..."):
                        part = t.strip(".").strip()
                        if not any(part in x for x in names[f]):
                            problems.append(f"docs/bad-input.md:{n}: no {f} test like \"{t}\"")
                    elif t not in names[f]:
                        problems.append(f"docs/bad-input.md:{n}: no {f} test \"{t}\"")
            for m in re.finditer(r"\bfuzz_(\w+)", checked_by):
                if not (root / "fuzz" / f"fuzz_{m.group(1)}.cpp").is_file():
                    problems.append(f"docs/bad-input.md:{n}: no fuzz/fuzz_{m.group(1)}.cpp")
    return problems


def selftest():
    """A tree with one problem of each kind must give exactly those problems."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        r = pathlib.Path(d)
        (r / "docs").mkdir()
        (r / "include").mkdir()
        (r / "tests" / "unit").mkdir(parents=True)
        (r / "fuzz").mkdir()
        (r / "docs" / "semantics.md").write_text(
            "# Title\n[ok](#top-p) [bad](#nowhere)\n## Top-p\n```\n# not a heading\n```\n")
        (r / "include" / "a.hpp").write_text(
            "/// see docs/semantics.md#top-p\n/// see docs/semantics.md#not-a-heading\n"
            "/// see ALGORITHMS.md 3(b)\n/// see docs/missing.md#x\n")
        (r / "README.md").write_text("[ok](docs/semantics.md) [bad](docs/nope.md)\n"
                                     "```cpp\nint a = 1;\n  int b = 2;\n\nint c = 3;\n```\n")
        (r / "tests" / "unit" / "test_readme_examples.cpp").write_text(
            "void f() {\n    int a = 1;\nint b = 2;\n int c = 4;\n}\n")
        (r / "tests" / "unit" / "test_foo.cpp").write_text(
            'TEST_CASE("a split "\n          "name", "[x]") {}\nTEST_CASE("other") {}\n')
        (r / "fuzz" / "fuzz_bar.cpp").write_text("")
        (r / "docs" / "bad-input.md").write_text(
            "| a | b | c | foo: \"a split name\", \"oth...\"; fuzz_bar |\n"
            "| a | b | c | foo: \"missing\"; baz: \"x\"; fuzz_qux |\n")
        got = sorted(p.split(": ", 1)[1] for p in check(r))
        want = sorted([
            "docs/semantics.md has no heading #not-a-heading",
            "no heading #nowhere in this page",
            "cites a document users do not have: /// see ALGORITHMS.md 3(b)",
            "no file docs/missing.md",
            "link to a missing file docs/nope.md",
            "no foo test \"missing\"",
            "no test file for baz: \"x\"",
            "no fuzz/fuzz_qux.cpp",
            "snippet paragraph not in tests/unit/test_readme_examples.cpp: int c = 3;",
        ])
        if got != want:
            print("selftest failed:\n  got  " + "\n       ".join(got) + "\n  want " +
                  "\n       ".join(want))
            return 1
    print("check_docs selftest: ok")
    return 0


def main(argv):
    if len(argv) > 1 and argv[1] == "--selftest":
        return selftest()
    root = argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        return 1
    print("check_docs: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

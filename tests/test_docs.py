"""The documentation: the README's shape, the module table, the profiles' comments, the links.

A newcomer reads README.md first, so it stays short, shows the two commands on its first screen
and the layout before any results. docs/architecture.md names every module. The comments of
params/*.yaml say what a value does and why, never which run measured what (that history lives in
docs/results.md). Every relative link points at a file that exists.

These tests read files only: no TensorFlow, no data, milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
SRC = ROOT / "src" / "brainmri"
PARAMS = sorted((ROOT / "params").glob("*.yaml"))
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]

README_MAX_LINES = 250
FIRST_SCREEN = 40  # lines
MAX_COMMENT_LINES = 3
MODULE_TABLE_HEADING = "The modules"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# A run of 7 to 40 hex digits standing alone, with at least one decimal digit in it (a commit
# hash such as 07bbeb3 or 2cf1ef7; an English word made of a-f only, like "defaced", is not one).
_HASH_LIKE = re.compile(r"(?<![0-9A-Za-z_])(?=[0-9A-Fa-f]*[0-9])[0-9A-Fa-f]{7,40}(?![0-9A-Za-z_])")


# --- helpers -------------------------------------------------------------------------------------


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text with fenced code blocks blanked (line numbers kept)."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return out


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every ATX heading outside fenced code."""
    found = []
    for i, line in enumerate(prose_lines(text)):
        m = _HEADING.match(line)
        if m:
            found.append((i, len(m.group(1)), m.group(2)))
    return found


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return slug.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _, _, title in headings(text):
        slug = github_anchor(_CODE_SPAN.sub(lambda m: m.group(0).strip("`"), title))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link that is not a URL or a same-page anchor; links in
    code (fenced blocks and `spans`) are not links."""
    found = []
    for number, line in enumerate(prose_lines(text), start=1):
        line = _CODE_SPAN.sub("", line)
        targets = _INLINE_LINK.findall(line)
        ref = _REFERENCE_LINK.match(line)
        if ref:
            targets.append(ref.group(1))
        for target in targets:
            if target and not target.startswith("#") and not _SCHEME.match(target):
                found.append((number, target))
    return found


def module_names(src: Path) -> list[str]:
    """Every module and package under src, dotted and relative to it; the top package is named
    by its folder ("brainmri"), a package by its path ("data"), a module by its ("data.audit")."""
    names = set()
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts) if parts else src.name)
    return sorted(names)


def _normalise(name: str, package: str) -> str:
    name = name.strip().removesuffix(".py").replace("/", ".").strip(".")
    return name.removeprefix(f"{package}.")


def module_table_names(text: str, package: str = "brainmri") -> set[str]:
    """The names in `code` in the first cell of each row of the table under the heading
    MODULE_TABLE_HEADING (until the next heading of the same or a higher level)."""
    lines = prose_lines(text)
    marks = headings(text)
    start = next(((i, lvl) for i, lvl, title in marks if title == MODULE_TABLE_HEADING), None)
    assert start is not None, f"no heading '{MODULE_TABLE_HEADING}'"
    end = next((i for i, lvl, _ in marks if i > start[0] and lvl <= start[1]), len(lines))
    names = set()
    for line in lines[start[0] + 1 : end]:
        if not line.lstrip().startswith("|"):
            continue
        first = line.strip().strip("|").split("|")[0]
        if set(first.strip()) <= set("-: "):  # the separator row
            continue
        names.update(_normalise(n, package) for n in re.findall(r"`([^`]+)`", first))
    return names


def split_comment(line: str) -> tuple[str, str | None]:
    """A YAML line's code and its comment (None when it has none). A # starts a comment at the
    start of the line or after whitespace, outside quotes, as YAML has it."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i + 1 :].strip()
    return line, None


def comment_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, comment lines) of every comment block: consecutive whole-line
    comments, joined by the inline comment of the value right after them, which annotates the
    same value; an inline comment alone is a block of one line."""
    blocks: list[tuple[int, list[str]]] = []
    run: list[str] = []
    run_start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        code, comment = split_comment(line)
        if comment is not None and not code.strip():
            if not run:
                run_start = number
            run.append(comment)
            continue
        if comment is not None:  # a value with its own comment: ends a run, or is one alone
            blocks.append((run_start, [*run, comment]) if run else (number, [comment]))
        elif run:
            blocks.append((run_start, run))
        run = []
    if run:
        blocks.append((run_start, run))
    return blocks


def hash_like(text: str) -> list[str]:
    """The commit-hash-like tokens of a text."""
    return _HASH_LIKE.findall(text)


# --- the helpers do what the checks rely on -------------------------------------------------------


def test_hash_like_finds_commit_hashes_not_words_or_numbers_with_units():
    assert hash_like("a run with 7 (commit bacee55) and 59377b7's") == ["bacee55", "59377b7"]
    assert hash_like("full " + "0123456789abcdef" * 2 + "01234567") == [
        "0123456789abcdef0123456789abcdef01234567"
    ]
    assert hash_like("x" + "a1" * 21) == []  # glued to a letter: not a token
    assert hash_like("0123456789abcdef" * 3) == []  # 48 hex digits: no commit hash
    assert hash_like("defaced effaced, 1.0e-5, 2e-5, 0.067, 2026-12-01, 15/224, 1.56x") == []


def test_split_comment_sees_inline_comments_but_not_hashes_in_quotes():
    assert split_comment("  epochs: 14   # why") == ("  epochs: 14   ", "why")
    assert split_comment("  # whole line") == ("  ", "whole line")
    assert split_comment("  name: 'a # b'") == ("  name: 'a # b'", None)
    assert split_comment("  url: x#y") == ("  url: x#y", None)


def test_comment_blocks_join_a_values_inline_comment_and_break_at_blank_lines():
    text = "# one\n# two\nkey: 1  # three\n\n# four\n\nother: 2  # alone\nlast: 3\n"
    assert comment_blocks(text) == [(1, ["one", "two", "three"]), (5, ["four"]), (7, ["alone"])]


def test_relative_links_skip_urls_anchors_and_code():
    text = (
        "[a](docs/a.md) [b](https://x.org/b.md) [c](#here) `[d](d.md)`\n"
        "```\n[e](e.md)\n```\n"
        '![f](img/f.png "title")\n'
        "[g]: ../g.md\n"
    )
    assert relative_links(text) == [(1, "docs/a.md"), (5, "img/f.png"), (6, "../g.md")]


def test_anchors_follow_github():
    text = "# Stages → modules → artefacts\n## Evaluation protocols (`data.protocol`)\n## Results\n"
    text += "## Results\n"
    assert anchors(text) == {
        "stages--modules--artefacts",
        "evaluation-protocols-dataprotocol",
        "results",
        "results-1",
    }


def test_module_names_name_packages_and_modules(tmp_path):
    src = tmp_path / "pkg"
    for relative in ("__init__.py", "cli.py", "data/__init__.py", "data/audit.py", "x/_p.py"):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text("")
    assert module_names(src) == ["cli", "data", "data.audit", "pkg", "x._p"]


def test_module_table_names_reads_only_the_first_cells_of_its_section():
    text = (
        "## Other\n| `elsewhere` | x |\n"
        "## The modules\n| module | job |\n| --- | --- |\n"
        "| `cli` | uses `io` |\n| `brainmri.data.audit`, `data/splits.py` | y |\n"
        "### Sub\n| `sub` | z |\n## Next\n| `after` | w |\n"
    )
    assert module_table_names(text) == {"cli", "data.audit", "data.splits", "sub"}


# --- the documentation ---------------------------------------------------------------------------


def test_readme_is_short_and_shows_the_two_commands_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move detail to docs/"
    )
    first_screen = "\n".join(lines[:FIRST_SCREEN])
    for command in ("make all", "make test"):
        assert command in first_screen, f"`{command}` not in README.md's first {FIRST_SCREEN} lines"


def test_readme_layout_comes_before_any_results():
    marks = headings(README.read_text(encoding="utf-8"))
    layout = [i for i, _, title in marks if re.match(r"layout\b", title, re.IGNORECASE)]
    results = [(i, title) for i, _, title in marks if re.search(r"result", title, re.IGNORECASE)]
    assert layout, "README.md has no Layout heading"
    assert results, "README.md has no Results heading"
    early = [f"line {i + 1}: {title}" for i, title in results if i < layout[0]]
    assert not early, f"results before the Layout heading (line {layout[0] + 1}): {early}"


def test_architecture_names_every_module_and_package():
    named = module_table_names(ARCHITECTURE.read_text(encoding="utf-8"))
    modules = module_names(SRC)
    missing = [m for m in modules if m not in named]
    assert not missing, (
        f"docs/architecture.md's table under '{MODULE_TABLE_HEADING}' does not name: "
        + ", ".join(missing)
    )
    stale = sorted(named - set(modules))
    assert not stale, f"docs/architecture.md names modules that do not exist: {', '.join(stale)}"


@pytest.mark.parametrize("profile", PARAMS, ids=lambda p: p.name)
def test_profile_comments_hold_no_commit_hashes(profile):
    found = [
        f"line {number}: {token}"
        for number, lines in comment_blocks(profile.read_text(encoding="utf-8"))
        for token in hash_like(" ".join(lines))
    ]
    assert not found, (
        f"{profile.name}: commit-hash-like tokens in comments (run history belongs in "
        f"docs/results.md): {found}"
    )


@pytest.mark.parametrize("profile", PARAMS, ids=lambda p: p.name)
def test_profile_comments_are_at_most_three_lines(profile):
    long = [
        f"line {number} ({len(lines)} lines)"
        for number, lines in comment_blocks(profile.read_text(encoding="utf-8"))
        if len(lines) > MAX_COMMENT_LINES
    ]
    assert not long, f"{profile.name}: comment blocks over {MAX_COMMENT_LINES} lines: {long}"


def test_the_profiles_and_markdown_files_are_found():
    assert {p.name for p in PARAMS} >= {"default.yaml", "cpu.yaml", "demo.yaml", "smoke.yaml"}
    assert ARCHITECTURE in MARKDOWN and README in MARKDOWN


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(document):
    broken = []
    for number, target in relative_links(document.read_text(encoding="utf-8")):
        path, _, fragment = target.partition("#")
        file = (document.parent / path).resolve()
        if not file.exists():
            broken.append(f"line {number}: {target} (no such file)")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text("utf-8")):
            broken.append(f"line {number}: {target} (no such heading)")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: {broken}"

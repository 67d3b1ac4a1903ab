"""One writer for the sections of ``benchmarks/RESULTS.md``.

Every benchmark script owns one section, fenced by ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``; a re-run replaces what lies between its own markers and
nothing else.  (Sections found by their heading used to run "to the next
heading" and swallowed the marker line of the section after them.)  A section
written before it had markers is found by ``legacy_heading`` and replaced up to
the next heading or marker line.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")


def markers(name: str) -> tuple[str, str]:
    """The begin / end marker lines of section ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(name: str, text: str, *, legacy_heading: str | None = None, path: Path = RESULTS) -> None:
    """Put ``text`` into section ``name`` of ``path`` (its markers are added when ``text`` lacks them).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "R.md"
    >>> _ = p.write_text("# Benchmark results\\n\\n## old a\\n\\nx\\n<!-- b:begin -->\\n## b\\n<!-- b:end -->\\n")
    >>> write_section("a", "## a\\n\\ny", legacy_heading="## old a", path=p)
    >>> write_section("a", "## a\\n\\nz", path=p)
    >>> print(p.read_text())
    # Benchmark results
    <BLANKLINE>
    <!-- a:begin -->
    ## a
    <BLANKLINE>
    z
    <!-- a:end -->
    <!-- b:begin -->
    ## b
    <!-- b:end -->
    <BLANKLINE>
    """
    begin, end = markers(name)
    body = text.strip("\n")
    if not body.startswith(begin):
        body = f"{begin}\n{body}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if begin in old and end in old:
        a, b = old.index(begin), old.index(end) + len(end)
        new = old[:a] + body + old[b:]
    elif legacy_heading and legacy_heading in old:
        a = old.index(legacy_heading)
        stops = [i for i in (old.find("\n## ", a + len(legacy_heading)), old.find("\n<!-- ", a)) if i >= 0]
        b = min(stops) + 1 if stops else len(old)
        new = old[:a] + body + "\n" + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(new, encoding="utf-8")

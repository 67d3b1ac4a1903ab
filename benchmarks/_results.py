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


KEPT = "_Not re-run when this section was last written: kept as an earlier run wrote it._"


def earlier_tables(section: str, headings: dict[str, str], *, stop: tuple[str, ...] = (),
                   last: str | None = None) -> dict[str, str]:
    r"""The tables of an earlier version of a section, by key, each marked as kept (:data:`KEPT`).

    A script's ``--write`` keeps the tables of the parts it did not run and has no JSON for (a fresh clone has
    no ``benchmarks/_work``), rather than drop them.  ``headings``: key -> the start of its ``### `` heading
    line; a table runs to the next ``### `` heading, to a line starting with one of ``stop`` (left out), or
    through a line starting with ``last`` (kept).

    Examples
    --------
    >>> sec = "## x\n\n### NIST steel\n\n| a |\n\n### Speed\n\n| b |\nTarget: t\n\nNotes: y"
    >>> t = earlier_tables(sec, {"nist": "### NIST", "speed": "### Speed", "gone": "### Gone"}, stop=("Notes",))
    >>> sorted(t), t["speed"].splitlines()
    (['nist', 'speed'], ['### Speed', '', '_Not re-run when this section was last written: kept as an earlier run wrote it._', '', '| b |', 'Target: t'])
    >>> earlier_tables(sec, {"speed": "### Speed"}, last="Target:")["speed"].splitlines()[-1]
    'Target: t'
    """
    lines = section.splitlines()
    out = {}
    for key, heading in headings.items():
        a = next((i for i, ln in enumerate(lines) if ln.startswith(heading)), None)
        if a is None:
            continue
        b = a + 1
        while b < len(lines) and not lines[b].startswith(("### ", *stop)):
            b += 1
            if last and lines[b - 1].startswith(last):
                break
        block = lines[a:b]
        marks = [i for i, ln in enumerate(block) if ln.startswith("_Not re-run")]  # (any wording of the mark)
        if marks:
            block[marks[0]] = KEPT
        else:
            block[1:1] = ["", KEPT]
        out[key] = "\n".join(block).rstrip() + "\n"
    return out

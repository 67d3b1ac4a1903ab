"""A wheel built from the repo must carry models/ and sample_images/ (they are easy to lose)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [line for line in out.stdout.splitlines() if line and not line.endswith(".gitkeep")]


@pytest.mark.slow
def test_wheel_contains_models_and_sample_images(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheels = list(tmp_path.glob("micro_seg-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert "napari_plugin/napari.yaml" in names
    assert "micro_seg/cli.py" in names
    for folder in ("models", "sample_images"):
        files = _tracked(folder)
        assert files, f"{folder}/ has no tracked files"
        for f in files:
            rel = Path(f).relative_to(folder).as_posix()
            assert f"micro_seg/_bundled/{folder}/{rel}" in names, f"{f} missing from the wheel"


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    setup_and_run, setup_and_test = cmds
    assert "sample_images" in setup_and_run and "python3 -m venv .venv" in setup_and_run
    assert "pytest" in setup_and_test
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert setup_and_test in ci.splitlines(), "the README test command and .ci/run have drifted apart"


def test_readme_install_can_read_the_property_tables_link_accepts():
    """`micro-seg link` reads .xlsx property tables (its --help says so); pandas needs openpyxl for them, and the
    README's install (`-e ".[gui]"`) must bring it, or a lab's Excel table is refused after installing as told."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = project["dependencies"] + project["optional-dependencies"]["gui"]
    names = {d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in installed}
    assert "openpyxl" in names

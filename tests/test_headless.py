"""The engine must never import napari or Qt (clusters and scripts have no display)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import micro_seg

GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui")


def _engine_modules() -> list[str]:
    names = ["micro_seg"]
    for info in pkgutil.walk_packages(micro_seg.__path__, prefix="micro_seg."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_engine_modules_exist():
    mods = _engine_modules()
    assert "micro_seg.cli" in mods and "micro_seg.errors" in mods


def test_importing_every_engine_module_imports_no_gui():
    mods = _engine_modules()
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"GUI modules imported by the engine: {out.stdout.strip()}"


def test_cli_builds_with_every_command_in_a_headless_process():
    code = (
        "import sys\n"
        "from micro_seg.cli import build_parser\n"
        "build_parser()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_cli_parser_does_not_import_torch_so_info_starts_fast():
    code = (
        "import sys\n"
        "from micro_seg.cli import build_parser\n"
        "build_parser()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_train_classifier_choices_match_the_engine():
    from micro_seg.classifier import ARCHITECTURES
    from micro_seg.commands.train_classifier import CLASSIFIER_ARCHITECTURES

    assert sorted(CLASSIFIER_ARCHITECTURES) == sorted(ARCHITECTURES)

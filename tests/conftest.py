"""Shared pytest fixtures.

Tests never need ``../shared`` (a user's fresh clone has none): tests marked
``shared_data`` are skipped when the datasets folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("MICRO_SEG_SHARED", REPO_ROOT.parent / "shared")) / "datasets"


def pytest_configure(config) -> None:
    """Load torch's compiler stack (and Triton, with the CUDA build) before any test opens an OpenGL context.

    torch loads Triton when the first optimizer is made; loading it after a napari viewer has made a GL context
    on Mesa (as under xvfb) is a segmentation fault. napari jobs guard against it
    (``napari_plugin._common.avoid_triton_crash``, tested in a fresh process); this keeps in-process training tests
    safe whatever GUI test ran before them, as in the CLI, which never has a GL context.
    """
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path to ``../shared/datasets``; skips the test when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present (fresh clone)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (training tests: 2 shared cores), restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt for the test, as in a terminal: a run started in the background
    (``nohup pytest &``, some CI runners) inherits SIGINT ignored, and a simulated Ctrl-C would do nothing."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def dirs(tmp_path):
    """Empty ``images/`` and ``labels/`` folders for training pairs."""
    img_dir, lab_dir = tmp_path / "images", tmp_path / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    return img_dir, lab_dir


@pytest.fixture
def notes():
    """napari notifications shown during the test, as ``(severity, message)`` (severity lower-case)."""
    from napari.utils.notifications import notification_manager

    got: list[tuple[str, str]] = []

    def grab(n):
        got.append((str(n.severity).lower(), str(n.message)))

    notification_manager.notification_ready.connect(grab)
    yield got
    notification_manager.notification_ready.disconnect(grab)


def pytest_collection_modifyitems(config, items):
    if SHARED_DATASETS.is_dir():
        return
    skip = pytest.mark.skip(reason="../shared/datasets is not present (fresh clone)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)

"""Helpers for the napari GUI tests (tests/test_napari_*.py)."""

from __future__ import annotations

import numpy as np


def two_phase_image(shape=(96, 96), seed=0):
    """Bright disks on a dark matrix with noise; returns (uint8 image, bool truth mask)."""
    from micro_seg.synth import boolean_disks

    mask = boolean_disks(shape, intensity=1.2e-3, radius=7.0, seed=seed)
    rng = np.random.default_rng(seed)
    img = np.where(mask, 185.0, 65.0) + rng.normal(0, 10, shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def tiny_model(folder, *, classes=("matrix", "particle"), task="semantic", name="tiny", seed=0):
    """Save a random-init tiny msnet model folder (fast on 2 cores); returns the folder."""
    import torch

    from micro_seg.nets import build_network
    from micro_seg.registry import ModelCard, save_model

    torch.manual_seed(seed)
    card = ModelCard(name=name, task=task, arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=list(classes), tile_size=128)
    net = build_network(card.arch, in_channels=1, num_classes=len(classes), **card.arch_kwargs)
    return save_model(folder, net, card)


def wait_idle(qtbot, widget, timeout=60_000):
    """Wait until the widget's background job (if any) has finished."""
    qtbot.waitUntil(lambda: not getattr(widget, "busy", widget._runner.running), timeout=timeout)

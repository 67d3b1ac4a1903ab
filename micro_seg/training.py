"""Train or fine-tune a segmentation network from image/label pairs.

Label convention (used by :func:`train_segmenter`, ``micro-seg train`` and
:mod:`micro_seg.datasets`)
------------------------------------------------------------------------
* ``0`` = **unlabelled**: ignored by the loss and the metrics, so sparse
  scribbles and partially labelled images work;
* ``c`` (``1 <= c <= n_classes``) = class ``classes[c - 1]``; the network's
  output channel ``c - 1``, and the value ``c - 1`` in a predicted class-label
  image (predictions are 0-based as in the CLI contract, training labels are
  1-based because 0 is reserved for "unlabelled").

What it does
------------
Random patches are cut from the training images (each image's chance is
proportional to its labelled pixels, and a fraction of patches is centred on a
rare class), augmented (:mod:`micro_seg.augment`: flips, 90-degree rotations,
scale jitter, contrast/brightness/gamma, noise, blur), and fed to AdamW with a
warm-up + cosine learning-rate schedule.  The loss is cross-entropy with
``ignore_index`` and class weights (``"auto"`` = inverse square root of class
frequency), optionally plus a soft Dice term.  Validation images are split off
**by image** (never by patch; only images with labelled pixels); after each epoch the whole validation images
are predicted and per-class IoU computed; the best epoch is kept and training
stops early after ``patience`` epochs without improvement (0 or None: never).  Finally
(``calibrate=True``) per-class logit offsets that maximise the validation mean
IoU are chosen (:func:`calibrate_logit_offsets`: a decision threshold for any
number of classes, undoing the prior shift that class weights and rare-class
patches cause) and folded into the bias of the logits layer, so every
consumer of the model uses them.  Checkpoints (no
pickles: safetensors + a JSON record naming them with their sha256, replaced
last, so a run stopped at any moment leaves a consistent checkpoint) allow
``resume=True``.  With the same ``seed``
(and thread count) two runs give identical weights; a ``time_limit_s`` changes
that only when the epochs do not fit in it (judged on the first steps): the
schedule then follows the clock and the result depends on the machine's speed.

Examples
--------
>>> import numpy as np
>>> from micro_seg.training import train_segmenter
>>> img = np.zeros((64, 64), np.uint8); img[:, 32:] = 200
>>> lab = np.zeros((64, 64), np.uint8); lab[:, :8] = 1; lab[:, -8:] = 2   # scribbles
>>> net, card, history = train_segmenter([img], [lab], classes=["dark", "bright"],
...     arch_kwargs={"widths": (8, 16), "blocks": (1, 1)}, epochs=2, patch_size=32, batch_size=4,
...     val_fraction=0, augment=False)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np

from micro_seg.augment import AugmentConfig, augment_pair, sample_patch
from micro_seg.errors import CancelledError, ModelError, TrainingDataError

__all__ = [
    "TrainResult",
    "TrainingDivergedError",
    "train_segmenter",
    "iter_train_segmenter",
    "confusion_matrix",
    "segmentation_metrics",
    "auto_class_weights",
    "boundary_f1",
    "predict_logits",
    "segmentation_loss",
    "pairs_sha256",
    "split_by_image",
    "calibrate_logit_offsets",
    "check_grain_classes",
    "offset_metrics",
    "DEFAULT_PSEUDO_LABEL_THRESHOLD",
]


class TrainingDivergedError(TrainingDataError):
    """The loss (or the weights) became NaN or infinite during training: no model is made."""


@dataclass
class TrainResult:
    """What training returns: the network (best epoch), its card and the history."""

    network: Any
    card: Any
    history: list[dict] = field(default_factory=list)

    def __iter__(self):  # allows ``net, card, history = result``
        return iter((self.network, self.card, self.history))


# ----------------------------------------------------------------- metrics


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts ``[true, pred]`` over labelled pixels.

    ``truth`` uses the training convention (0 unlabelled, class c = c);
    ``pred`` is 0-based (value ``c - 1`` means class c).

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1]), np.array([1, 2, 0]), 2).tolist()
    [[1, 0], [0, 1]]
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = (truth > 0) & (truth <= n_classes)
    idx = (truth[keep] - 1) * n_classes + np.clip(pred[keep], 0, n_classes - 1)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def segmentation_metrics(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict:
    """Per-class IoU, mean IoU, pixel-weighted IoU and accuracy from a confusion matrix.

    ``mean_iou`` averages the classes present in the ground truth;
    ``weighted_iou`` weights each class IoU by its ground-truth pixel share.

    Examples
    --------
    >>> m = segmentation_metrics(np.array([[3, 1], [0, 4]]), ["a", "b"])
    >>> round(m["iou"]["a"], 3), round(m["iou"]["b"], 3), round(m["accuracy"], 3)
    (0.75, 0.8, 0.875)
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.shape[0]
    classes = list(classes) if classes is not None else [str(i + 1) for i in range(n)]
    tp = np.diag(cm)
    gt = cm.sum(1)
    pr = cm.sum(0)
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = gt > 0
    total = cm.sum()
    mean_iou = float(np.nanmean(iou[present])) if present.any() else float("nan")
    weighted = float(np.nansum(iou[present] * gt[present]) / total) if total else float("nan")
    return {
        "iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, iou)},
        "mean_iou": mean_iou,
        "weighted_iou": weighted,
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "labelled_pixels": int(total),
    }


def boundary_f1(pred: np.ndarray, truth: np.ndarray, *, tolerance_px: float = 2.0, valid: np.ndarray | None = None) -> dict:
    """Boundary precision / recall / F1 with a distance tolerance (BSDS-style).

    Both boolean boundary masks are thinned to 1-px skeletons; a predicted
    skeleton pixel is correct if a true one lies within ``tolerance_px``
    (Euclidean), and vice versa for recall.  ``valid`` restricts the count to
    labelled pixels.

    Examples
    --------
    >>> t = np.zeros((20, 20), bool); t[10] = True
    >>> p = np.zeros((20, 20), bool); p[11] = True        # 1 px off
    >>> round(boundary_f1(p, t)["f1"], 3)
    1.0
    >>> round(boundary_f1(p, t, tolerance_px=0.5)["f1"], 3)
    0.0
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    pred = skeletonize(np.asarray(pred, bool))
    truth = skeletonize(np.asarray(truth, bool))
    if valid is not None:
        valid = np.asarray(valid, bool)
    d_to_true = ndi.distance_transform_edt(~truth) if truth.any() else np.full(truth.shape, np.inf)
    d_to_pred = ndi.distance_transform_edt(~pred) if pred.any() else np.full(pred.shape, np.inf)
    p_sel = pred & valid if valid is not None else pred
    t_sel = truth & valid if valid is not None else truth
    n_p, n_t = int(p_sel.sum()), int(t_sel.sum())
    tp_p = int((d_to_true[p_sel] <= tolerance_px).sum())
    tp_t = int((d_to_pred[t_sel] <= tolerance_px).sum())
    precision = tp_p / n_p if n_p else float("nan")
    recall = tp_t / n_t if n_t else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if n_p and n_t and (precision + recall) > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_pred": n_p, "n_true": n_t,
            "matched_pred": tp_p, "matched_true": tp_t}


def auto_class_weights(labels: Sequence[np.ndarray], n_classes: int, *, power: float = 0.5, max_ratio: float = 20.0) -> np.ndarray:
    """Inverse-frequency class weights ``f_c ** -power``, normalised to mean 1 over pixels.

    Absent classes get weight 1; the ratio between largest and smallest
    weight is capped at ``max_ratio``.

    Examples
    --------
    >>> w = auto_class_weights([np.array([1, 1, 1, 2])], 2)
    >>> bool(w[1] > w[0])
    True
    """
    counts = class_pixel_counts(labels, n_classes).sum(axis=0).astype(np.float64)
    if counts.sum() == 0:
        return np.ones(n_classes, np.float32)
    freq = counts / counts.sum()
    w = np.ones(n_classes)
    present = freq > 0
    w[present] = freq[present] ** -power
    w[present] /= (w[present] * freq[present]).sum()
    w = np.clip(w, w[present].min(), w[present].min() * max_ratio)
    w[~present] = 1.0
    return w.astype(np.float32)


# ------------------------------------------------------------- prediction


def predict_logits(network, x: np.ndarray, *, tile: int = 1024, overlap: int = 64) -> np.ndarray:
    """Logits ``(n_classes, rows, cols)`` of a (C, rows, cols) network input.

    Inputs are reflect-padded to the network stride; images larger than
    ``tile`` are processed in overlapping tiles whose centres are stitched.
    (The product's tiled, blended inference is :mod:`micro_seg.inference`;
    this is the lean version used for validation during training.)
    """
    import torch

    from micro_seg.nets import required_stride

    stride = required_stride(network)
    c, rows, cols = x.shape

    def run(block: np.ndarray) -> np.ndarray:
        r, q = block.shape[1:]
        pr, pq = (-r) % stride, (-q) % stride
        if pr or pq:
            mode = "reflect" if (r > pr and q > pq) else "edge"
            block = np.pad(block, ((0, 0), (0, pr), (0, pq)), mode=mode)
        with torch.inference_mode():
            out = network(torch.from_numpy(np.ascontiguousarray(block))[None])[0].numpy()
        return out[:, :r, :q]

    if rows <= tile and cols <= tile:
        return run(x)
    out = None
    step = tile - 2 * overlap
    for r0 in range(0, rows, step):
        for c0 in range(0, cols, step):
            a0, b0 = max(0, r0 - overlap), max(0, c0 - overlap)
            a1, b1 = min(rows, r0 + step + overlap), min(cols, c0 + step + overlap)
            y = run(x[:, a0:a1, b0:b1])
            if out is None:
                out = np.empty((y.shape[0], rows, cols), np.float32)
            e0, f0 = min(rows, r0 + step), min(cols, c0 + step)
            out[:, r0:e0, c0:f0] = y[:, r0 - a0 : e0 - a0, c0 - b0 : f0 - b0]
    return out


def validation_logits(network, x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`predict_logits` of a network input, brought to the labels' ``shape`` (rows, cols) when the network
    works at another scale (``input_scale``) the way segmenting brings its answer back: class probabilities
    resampled bilinearly (:func:`micro_seg.inference.predict`); returned as their log, whose argmax is that
    segmentation's.

    Examples
    --------
    >>> from micro_seg.nets import build_network
    >>> net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]).eval()
    >>> validation_logits(net, np.zeros((1, 8, 8), np.float32), (16, 16)).shape
    (2, 16, 16)
    """
    logits = predict_logits(network, x)
    rows, cols = shape
    if logits.shape[1:] == (rows, cols):
        return logits
    from micro_seg.inference import _linear_weights

    z = logits - logits.max(axis=0, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=0, keepdims=True)
    y0, y1, wy = _linear_weights(rows, p.shape[1])
    x0, x1, wx = _linear_weights(cols, p.shape[2])
    # np.take: the same values as fancy indexing, a few times faster along the last axis (this runs every epoch)
    a = np.take(p, y0, axis=1)
    band = a + (np.take(p, y1, axis=1) - a) * wy[0, :, None]
    left = np.take(band, x0, axis=2)
    p = left + (np.take(band, x1, axis=2) - left) * wx[None]
    return np.log(np.maximum(p, np.finfo(np.float32).tiny), out=p).astype(np.float32, copy=False)


def calibrate_logit_offsets(
    logits: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    max_offset: float = 4.0,
    step: float = 0.125,
    rounds: int = 3,
    max_pixels: int = 1_000_000,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict, dict]:
    """Per-class logit offsets that maximise mean IoU on labelled (validation) pixels.

    The decision ``argmax(logits + offsets)`` generalises a probability
    threshold to any number of classes: for two classes, an offset ``b`` on
    class 2 is the threshold ``p_2 > 1 / (1 + exp(b))``.  A network trained
    with class weights or on patches oversampled around a rare class has
    shifted class priors; the offsets undo that shift where it matters, on
    whole held-out images.  Offsets are searched on a grid (``-max_offset ..
    max_offset`` by ``step``) one class at a time (the first class with
    labelled pixels stays at 0) for ``rounds`` rounds; among equally good
    values the one closest to 0 wins.  A class without labelled pixels keeps
    0: its false positives alone would push its offset down until it is never
    called, with nothing to weigh against them.  Choose them on a validation
    split, never on test images.

    Parameters
    ----------
    logits : sequence of ndarray
        ``(n_classes, rows, cols)`` logits per image.
    labels : sequence of ndarray
        Matching label images in the training convention (0 = unlabelled,
        ``c`` = class ``c``).
    max_offset, step, rounds
        Search grid and number of coordinate-ascent rounds.
    max_pixels : int
        Labelled pixels used (a seeded random subset beyond that).
    seed : int
        Seed of that subset.
    classes : sequence of str, optional
        Class names for the returned metrics (default "1", "2", ...).

    Returns
    -------
    offsets : ndarray
        ``(n_classes,)`` float32, first entry 0.
    before, after : dict
        :func:`segmentation_metrics` without and with the offsets.

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 2]])
    >>> lg = np.stack([np.zeros((1, 4)), np.array([[-3.0, -3, -3, -0.5]])])  # class 2 under-called
    >>> off, before, after = calibrate_logit_offsets([lg], [truth])
    >>> before["iou"]["2"], after["iou"]["2"], bool(0.5 < off[1] < 3.0)
    (0.0, 1.0, True)
    >>> lg3 = np.concatenate([lg, np.array([[[-9.0, -9, 9, -9]]])])  # class 3, absent from the truth, called once
    >>> calibrate_logit_offsets([lg3], [truth])[0].tolist()[2]  # not pushed down on no evidence
    0.0
    """
    if len(logits) != len(labels) or not len(logits):
        raise TrainingDataError(f"need matching, non-empty logits and labels, got {len(logits)} and {len(labels)}")
    n_classes = int(np.asarray(logits[0]).shape[0])
    zs, ts = [], []
    for lg, lab in zip(logits, labels):
        lg, lab = np.asarray(lg, np.float32), np.asarray(lab).astype(np.int64)
        if lg.shape[1:] != lab.shape or lg.shape[0] != n_classes:
            raise TrainingDataError(f"logits {lg.shape} do not match labels {lab.shape}")
        keep = (lab > 0) & (lab <= n_classes)
        zs.append(lg[:, keep].T)
        ts.append(lab[keep] - 1)
    z, t = np.concatenate(zs), np.concatenate(ts)
    if len(t) > max_pixels:
        pick = np.random.default_rng(seed).choice(len(t), max_pixels, replace=False)
        z, t = z[pick], t[pick]

    def score(off: np.ndarray) -> tuple[float, np.ndarray]:
        pred = np.argmax(z + off, axis=1)
        cm = np.bincount(t * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        return segmentation_metrics(cm)["mean_iou"], cm

    offsets = np.zeros(n_classes, np.float64)
    base_score, cm0 = score(offsets)
    best = base_score
    grid = np.arange(-max_offset, max_offset + step / 2, step)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]  # ties go to the smallest |offset|
    labelled = np.flatnonzero(np.bincount(t, minlength=n_classes))  # classes with pixels to weigh their offset by
    if len(t) and not np.isnan(base_score):
        for _ in range(rounds):
            changed = False
            for c in labelled[1:]:  # the first of them is the reference, at 0
                for v in grid:
                    trial = offsets.copy()
                    trial[c] = v
                    s, _ = score(trial)
                    if s > best + 1e-9:
                        best, offsets, changed = s, trial, True
            if not changed:
                break
    _, cm1 = score(offsets)
    names = list(classes) if classes is not None else [str(i + 1) for i in range(n_classes)]
    return offsets.astype(np.float32), segmentation_metrics(cm0, names), segmentation_metrics(cm1, names)


def check_input_scale(scale: float, what: str = "input_scale") -> None:
    """Raise :class:`TrainingDataError` unless ``scale`` lies in :data:`~micro_seg.registry.INPUT_SCALE_RANGE`."""
    from micro_seg.registry import INPUT_SCALE_RANGE

    lo, hi = INPUT_SCALE_RANGE
    if not lo <= scale <= hi:
        raise TrainingDataError(f"{what} must be between {lo:g} and {hi:g}, got {scale}")


def check_grain_classes(classes: Sequence[str], what: str = "classes") -> None:
    """Raise :class:`TrainingDataError` unless one of ``classes`` is a boundary class, as a grain model needs
    (:func:`micro_seg.postprocess.boundary_class_index` finds it by name when the model segments grains).

    >>> check_grain_classes(["grain", "boundary"])
    >>> check_grain_classes(["a", "b"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    micro_seg.errors.TrainingDataError: a grain model needs a boundary class named one of boundary, ...
    """
    from micro_seg.postprocess import BOUNDARY_CLASS_NAMES, boundary_class_index

    try:
        boundary_class_index(classes)
    except ModelError:
        raise TrainingDataError(
            f"a grain model needs a boundary class named one of {', '.join(BOUNDARY_CLASS_NAMES)} (its grains are "
            f"the regions the boundaries enclose); {what} are {', '.join(classes)}") from None


#: The pseudo-label confidence offered by default (napari Train widget, benchmarks): unlabelled pixels
#: the base model gives >= 90% are trained on its answer.
DEFAULT_PSEUDO_LABEL_THRESHOLD = 0.9


def check_pseudo_label_threshold(threshold: float, what: str = "pseudo-label confidence threshold") -> None:
    """Raise :class:`TrainingDataError` unless ``threshold`` is in [0.5, 1) (``what`` names it in the message)."""
    if not 0.5 <= float(threshold) < 1.0:
        raise TrainingDataError(f"{what} must be in [0.5, 1), got {threshold}")


def pseudo_labels(network, inputs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                  threshold: float) -> list[np.ndarray]:
    """Fill unlabelled pixels (0) with the network's own class where it is at least ``threshold`` sure.

    Used when fine-tuning from scribbles: the base model's confident
    predictions anchor the pixels the user did not label, so a few strokes
    correct its mistakes without teaching it a bias of the strokes' shape
    (e.g. boundaries as thick as the strokes drawn along them).  User labels
    always win.  ``inputs`` are network inputs ``(C, rows, cols)``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1)); _ = torch.nn.init.zeros_(net[0].weight)
    >>> with torch.no_grad(): _ = net[0].bias.copy_(torch.tensor([0.0, 5.0]))  # "class 2" everywhere, p = 0.993
    >>> lab = np.zeros((4, 4), np.int64); lab[0, 0] = 1
    >>> pseudo_labels(net, [np.zeros((1, 4, 4), np.float32)], [lab], threshold=0.9)[0][:2].tolist()
    [[1, 2, 2, 2], [2, 2, 2, 2]]
    """
    import torch

    check_pseudo_label_threshold(threshold)
    network.eval()
    out = []
    for x, lab in zip(inputs, labels):
        p = torch.softmax(torch.from_numpy(predict_logits(network, x)), 0).numpy()
        fill = (np.asarray(lab) == 0) & (p.max(0) >= threshold)
        out.append(np.where(fill, p.argmax(0) + 1, lab).astype(np.int64))
    return out


def offset_metrics(logits: Sequence[np.ndarray], labels: Sequence[np.ndarray], offsets: np.ndarray,
                   classes: Sequence[str]) -> dict:
    """:func:`segmentation_metrics` of the decision ``argmax(logits + offsets)`` over every labelled pixel of
    ``labels`` (training convention), unlike :func:`calibrate_logit_offsets`'s figures (a sample of them).

    Examples
    --------
    >>> lg = np.stack([np.zeros((1, 4)), np.array([[-3.0, -3, -3, -0.5]])])
    >>> offset_metrics([lg], [np.array([[1, 1, 1, 2]])], np.array([0.0, 1.0]), ["a", "b"])["iou"]
    {'a': 1.0, 'b': 1.0}
    """
    n = len(classes)
    off = np.asarray(offsets, np.float32)[:, None, None]
    cm = sum(confusion_matrix((np.asarray(lg) + off).argmax(0), lab, n) for lg, lab in zip(logits, labels))
    return segmentation_metrics(cm, classes)


def _output_bias(network):
    """The bias of the network's last (1x1 logits) convolution (an ensemble's decision offsets), or None."""
    import torch

    from micro_seg.nets import Ensemble

    if isinstance(network, Ensemble):
        return network.offsets

    head = getattr(network, "head", None)
    if not isinstance(head, torch.nn.Conv2d):
        seg = getattr(network, "segmentation_head", None)
        head = seg[0] if seg is not None and isinstance(seg[0], torch.nn.Conv2d) else None
    return None if head is None else head.bias


# ---------------------------------------------------------------- helpers


def split_by_image(n: int, val_fraction: float, seed: int, *, class_pixels: np.ndarray | None = None,
                   candidates: int = 256) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: ``round(n * val_fraction)`` whole images go to validation.

    At least one image stays in training; with ``val_fraction > 0`` and
    ``n >= 2`` at least one goes to validation.

    With ``class_pixels`` (an ``(n, n_classes)`` array of labelled pixels per
    image and class) the split is stratified by class: of ``candidates``
    seeded draws (the first is the plain seeded draw) the one is kept that
    leaves fewest classes on one side only (of those labelled in >= 2
    images), then whose validation share of every class's pixels is
    closest to ``val_fraction`` (the worst class decides; ties keep the
    earlier draw).  A rare class that only a few images hold then lands in
    both parts where it can, instead of wholly in validation (no training
    signal) or wholly in training (no check and no calibration).

    Examples
    --------
    >>> split_by_image(5, 0.2, 0)[1].__len__()
    1
    >>> px = np.array([[100, 0], [100, 0], [100, 0], [100, 50], [100, 50]])
    >>> val = split_by_image(5, 0.4, 0, class_pixels=px)[1]
    >>> sum(i in (3, 4) for i in val)  # one of the two images holding class 2
    1
    """
    if not 0 <= val_fraction < 1:
        raise TrainingDataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if class_pixels is not None and n_val > 0:
        px = np.asarray(class_pixels, np.float64).reshape(n, -1)
        total = px.sum(axis=0)
        shared = (px > 0).sum(axis=0) >= 2  # classes that can be on both sides
        present = total > 0
        best_cost = None
        for k in range(max(1, int(candidates))):
            cand = order if k == 0 else rng.permutation(n)
            share = px[cand[:n_val]].sum(axis=0)[present] / total[present]
            one_sided = int(((share == 0) | (share == 1))[shared[present]].sum())
            cost = (one_sided, round(float(np.abs(share - val_fraction).max()), 9) if share.size else 0.0)
            if best_cost is None or cost < best_cost:
                best_cost, best = cost, cand
        order = best
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


def class_pixel_counts(labels: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """``(n_images, n_classes)`` labelled pixels per image and class (label value ``c + 1`` is class ``c``)."""
    return np.stack([np.bincount(np.asarray(l).ravel().astype(np.int64), minlength=n_classes + 1)[1 : n_classes + 1]
                     for l in labels]) if len(labels) else np.zeros((0, n_classes), np.int64)


def _check_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], n_classes: int, what: str) -> None:
    if len(images) != len(labels):
        raise TrainingDataError(f"{what}: {len(images)} images but {len(labels)} label images")
    for i, (img, lab) in enumerate(zip(images, labels)):
        img, lab = np.asarray(img), np.asarray(lab)
        if lab.ndim != 2:
            raise TrainingDataError(f"{what} pair {i}: labels must be 2-D, got shape {lab.shape}")
        if img.shape[:2] != lab.shape:
            raise TrainingDataError(f"{what} pair {i}: image is {img.shape[:2]} but labels are {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer) and not np.issubdtype(lab.dtype, np.bool_):
            raise TrainingDataError(f"{what} pair {i}: labels must be integers, got {lab.dtype}")
        mx = int(lab.max()) if lab.size else 0
        if mx > n_classes or (lab.size and int(lab.min()) < 0):
            raise TrainingDataError(
                f"{what} pair {i}: label values must be 0 (unlabelled) .. {n_classes} (classes), found {int(lab.min())}..{mx}"
            )


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def trained_pixel_size_range(pixel_sizes: Sequence[float | None]) -> tuple[float, float] | None:
    """The pixel-size range a model trained on images of these pixel sizes (um) records on its card; ``None``
    (unknown) when any image is uncalibrated or none is given.  A fine-tune records its own images' range, not its
    base model's.

    >>> trained_pixel_size_range([0.05, 0.08]), trained_pixel_size_range([0.5, None]), trained_pixel_size_range([])
    ((0.05, 0.08), None, None)
    """
    sizes = list(pixel_sizes)
    if not sizes or any(p is None for p in sizes):
        return None
    return float(min(sizes)), float(max(sizes))


def pairs_sha256(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> str:
    """sha256 of image/label pairs (shapes, dtypes and bytes, in order): the cards' training-data hashes."""
    h = hashlib.sha256()
    for img, lab in zip(images, labels):
        for a in (np.ascontiguousarray(img), np.ascontiguousarray(lab)):
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _state_to_tensors(network, optimizer) -> dict:
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in network.state_dict().items()}
    for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
        for k, v in optimizer.state.get(p, {}).items():
            import torch

            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{i}.{k}"] = t.detach().clone().contiguous()
    return tensors


#: The checkpoint's record: epoch, history, settings, and the weights files with their sha256.
CHECKPOINT_RECORD = "last.json"


def _write_checkpoint_weights(ckpt: Path, stem: str, tensors: dict) -> dict:
    """Write ``tensors`` to ``ckpt/<stem>.safetensors`` (a new name each epoch, so the record still names
    complete files until it is replaced); ``{"file": name, "sha256": hex}``."""
    from micro_seg.registry import sha256_file, write_safetensors

    path = write_safetensors(tensors, ckpt / f"{stem}.safetensors")
    return {"file": path.name, "sha256": sha256_file(path)}


def _write_checkpoint_record(ckpt: Path, meta: dict) -> None:
    """Replace the checkpoint record (through a temporary file) by ``meta``, then remove the weights files it no
    longer names: a run stopped at any moment leaves a record whose files are there and are the ones it names."""
    import re

    from micro_seg.registry import replace_text

    replace_text(ckpt / CHECKPOINT_RECORD, json.dumps(meta, default=float))
    named = {f["file"] for f in meta["files"].values()}
    # only the files the checkpoint writes (and their temporary files, left by a stop): a user's checkpoint
    # folder may hold other weights, such as best-unet.safetensors
    ours = re.compile(r"(last|best)-\d+\.safetensors(\.tmp)?|last\.json\.tmp")
    for old in [*(p for p in ckpt.iterdir() if ours.fullmatch(p.name)),
                ckpt / "last.safetensors", ckpt / "best.safetensors"]:  # the last two: older micro-seg
        if old.name not in named:
            old.unlink(missing_ok=True)


def _read_checkpoint(ckpt: Path) -> tuple[dict, dict, dict | None]:
    """``(record, training state, best weights or None)`` of a checkpoint folder.

    Raises :class:`TrainingDataError` naming the file when the record is unreadable, or a weights file is
    missing, unreadable or not the one the record names (its sha256 differs).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from micro_seg.registry import sha256_file

    path = ckpt / CHECKPOINT_RECORD
    again = "train without --resume to start again"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict) \
                or not isinstance(meta["history"], list):
            raise ValueError("not a checkpoint record")
        int(meta["epoch"]), float(meta["best_score"]), int(meta["best_epoch"])
        files = meta.get("files")
        if files is None:  # written by an older micro-seg: fixed names, no sha256
            files = {"weights": {"file": "last.safetensors"}}
            if (ckpt / "best.safetensors").exists():
                files["best"] = {"file": "best.safetensors"}
        if not isinstance(files, dict) or "weights" not in files \
                or not all(isinstance(f, dict) and isinstance(f.get("file"), str) for f in files.values()):
            raise ValueError("no weights files named")
        meta["files"] = files  # the best weights of an older record are carried into the next record
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise TrainingDataError(f"{path}: checkpoint record is unreadable ({exc}); {again}") from None
    tensors = {}
    for key, entry in files.items():
        weights = ckpt / Path(entry["file"]).name
        if not weights.is_file():
            raise TrainingDataError(f"{weights}: checkpoint weights named by {path} are missing; {again}")
        if entry.get("sha256") and sha256_file(weights) != entry["sha256"]:
            raise TrainingDataError(f"{weights}: checkpoint weights are not the ones {path} names (sha256 "
                                    f"differs: truncated or changed); {again}")
        try:
            tensors[key] = load_file(str(weights))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise TrainingDataError(f"{weights}: checkpoint weights are unreadable ({' '.join(str(exc).split())}); "
                                    f"{again}") from None
    return meta, tensors["weights"], tensors.get("best")


def _load_state(network, optimizer, tensors: dict) -> None:
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    network.load_state_dict(model_sd)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            optimizer.state[params[int(i)]][k] = v.clone()


def _soft_dice(logits, target, n_classes: int):
    import torch
    import torch.nn.functional as F

    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(target.clamp(min=0), n_classes).permute(0, 3, 1, 2).to(prob.dtype)
    m = valid[:, None].to(prob.dtype)
    inter = (prob * onehot * m).sum((0, 2, 3))
    denom = ((prob + onehot) * m).sum((0, 2, 3))
    present = onehot.mul(m).sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[present].mean() if bool(present.any()) else logits.sum() * 0.0


def segmentation_loss(logits, labels, *, class_weights=None, dice_weight: float = 0.0):
    """Weighted cross-entropy (+ optional soft Dice) that ignores unlabelled pixels.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, n_classes, rows, cols)`` network output.
    labels : torch.Tensor
        ``(N, rows, cols)`` int64 in the training convention: 0 = unlabelled
        (contributes nothing, not even a gradient), ``c`` = class ``c``.
    class_weights : torch.Tensor, optional
        One weight per class.
    dice_weight : float
        Weight of the soft Dice term (computed over labelled pixels only).

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 2, 1, 2); logits[0, 0, 0, 0] = 5.0
    >>> a = segmentation_loss(logits, torch.tensor([[[1, 0]]]))
    >>> logits[0, 1, 0, 1] = 9.0   # change only the unlabelled pixel
    >>> bool(segmentation_loss(logits, torch.tensor([[[1, 0]]])) == a)
    True
    """
    import torch.nn.functional as F

    target = labels.long() - 1  # -1 = unlabelled
    n_classes = logits.shape[1]
    if bool((target >= 0).any()):
        loss = F.cross_entropy(logits, target, weight=class_weights, ignore_index=-1)
    else:
        loss = logits.sum() * 0.0
    if dice_weight:
        loss = loss + dice_weight * _soft_dice(logits, target, n_classes)
    return loss


# -------------------------------------------------------------- training

#: Fraction of the run (steps, or wall time when the epochs do not fit in the time limit) spent warming the
#: learning rate up.
_WARMUP_FRACTION = 0.03

#: Training steps timed before judging whether the epochs fit in the time limit.
_STEPS_TIMED = 5

#: Settings that may differ between a checkpoint and the run resuming it.
_RESUMABLE_CHANGES = ("lr", "epochs", "calibrate")


def patch_size_advice(shapes: Sequence[tuple[int, int]], patch_size: int, *, stride: int = 16,
                      max_padding: float = 0.5) -> str | None:
    """A warning when most of each training patch would be padding, else ``None``.

    Images smaller than the patch are padded (the padding is unlabelled, so it
    costs time and teaches nothing).  ``shapes`` are the training images'
    ``(rows, cols)`` as the network sees them (after ``input_scale``).  When
    more than ``max_padding`` of the average patch is padding, the advice names
    a patch size: the median longer image side rounded up to the network
    ``stride``.

    >>> msg = patch_size_advice([(40, 42), (38, 50), (45, 30)], 64)
    >>> msg.startswith("patch size 64 px is mostly padding (60% of an average patch)")
    True
    >>> msg.endswith("a patch size of 48 px spends less time on padding")
    True
    >>> patch_size_advice([(40, 42), (38, 50), (45, 30)], 48) is None
    True
    """
    if not shapes:
        return None
    filled = [min(r, patch_size) * min(c, patch_size) / patch_size**2 for r, c in shapes]
    padding = 1.0 - float(np.mean(filled))
    if padding <= max_padding:
        return None
    from micro_seg.inference import _round_up  # the rounding inference pads its tiles with

    side = int(np.median([max(r, c) for r, c in shapes]))
    suggest = max(stride, _round_up(side, stride))
    return (f"patch size {patch_size} px is mostly padding ({100 * padding:.0f}% of an average patch): the training "
            f"images are smaller (median {int(np.median([r for r, _ in shapes]))} x "
            f"{int(np.median([c for _, c in shapes]))} px as the network sees them); a patch size of {suggest} px "
            "spends less time on padding")


def iter_train_segmenter(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    classes: Sequence[str],
    arch: str = "msnet",
    arch_kwargs: dict | None = None,
    base: Any = None,
    task: str | None = None,
    in_channels: int | None = None,
    normalisation: dict | None = None,
    epochs: int = 40,
    patch_size: int = 256,
    batch_size: int = 8,
    patches_per_epoch: int | None = None,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    class_weights: str | Sequence[float] | None = "auto",
    dice_weight: float = 0.0,
    rare_class_fraction: float = 0.3,
    calibrate: bool = True,
    image_weights: Sequence[float] | None = None,
    augment: bool | AugmentConfig = True,
    seed: int = 0,
    split_seed: int | None = None,
    patience: int | None = 10,
    keep: str = "best",
    input_scale: float | None = None,
    pseudo_label_threshold: float | None = None,
    time_limit_s: float | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    num_threads: int | None = None,
    cancel: Any = None,
    name: str | None = None,
    card_extra: dict | None = None,
) -> Generator[dict, None, TrainResult]:
    """Generator form of :func:`train_segmenter`: yields progress dicts, returns a TrainResult.

    Progress dicts have ``"stage"`` = ``"start"``, ``"step"`` or ``"epoch"``,
    plus ``epoch``, ``epochs``, ``step``, ``steps_per_epoch``, ``loss``,
    ``seconds`` and for epochs the validation metrics ``val``.  See
    :func:`train_segmenter` for the parameters.
    """
    import torch

    from micro_seg.nets import build_network, prefers_channels_last
    from micro_seg.preprocess import to_network_input

    t_start = time.perf_counter()
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes < 2:
        raise TrainingDataError(f"need at least 2 classes, got {classes}")
    from micro_seg.registry import class_names_problem

    problem = class_names_problem(classes)
    if problem:  # checked before training, not when the card is written at its end
        raise TrainingDataError(f"class names {classes}: {problem}")
    if not images:
        raise TrainingDataError("no training images given")
    if epochs < 1 or patch_size < 8 or batch_size < 1:
        raise TrainingDataError(f"epochs ({epochs}), patch_size ({patch_size}) and batch_size ({batch_size}) must be positive (patch >= 8)")
    if not (math.isfinite(float(lr)) and lr > 0):
        raise TrainingDataError(f"lr must be a positive number, got {lr}")
    if not (math.isfinite(float(dice_weight)) and dice_weight >= 0):
        raise TrainingDataError(f"dice_weight must be a number >= 0, got {dice_weight}")
    if pseudo_label_threshold is not None:
        if base is None:
            raise TrainingDataError("pseudo-labels come from a base model: give base= (fine-tuning) to use them")
        check_pseudo_label_threshold(pseudo_label_threshold)
    images, labels = list(images), list(labels)
    _check_pairs(images, labels, n_classes, "training")
    # the data as given (before the split, rescaling and pseudo-labels, which depend on float rounding): a resumed
    # run must continue on the same pairs
    given_sha256 = None
    if checkpoint_dir:
        given_sha256 = [pairs_sha256(images, labels)]
        if val_images is not None and val_labels is not None:
            val_images, val_labels = list(val_images), list(val_labels)
            given_sha256.append(pairs_sha256(val_images, val_labels))
    split_seed = seed if split_seed is None else int(split_seed)
    if (val_images is None) != (val_labels is None):
        raise TrainingDataError("give both val_images and val_labels, or neither")
    warnings: list[str] = []
    if val_images is not None:
        val_images, val_labels = list(val_images), list(val_labels)
        _check_pairs(val_images, val_labels, n_classes, "validation")
        train_idx, val_idx, val_sha256 = list(range(len(images))), None, None
    else:
        # only images with labelled pixels can validate: an unlabelled one held out gave a NaN mean IoU every epoch
        counts = class_pixel_counts(labels, n_classes)
        usable = [i for i in range(len(images)) if counts[i].sum() > 0]
        _, val_pos = split_by_image(len(usable), val_fraction, split_seed, class_pixels=counts[usable])
        val_idx = [usable[i] for i in val_pos]
        train_idx = [i for i in range(len(images)) if i not in val_idx]
        if val_fraction > 0 and not val_idx:
            why = "one training image" if len(images) == 1 else \
                f"only {len(usable)} of the {len(images)} images has labelled pixels"
            kept = "the last epoch" if keep == "last" else "the epoch with the lowest training loss"
            warnings.append(f"no validation ({why}; validation holds out whole labelled images): {kept} is kept "
                            "and no logit offsets are calibrated")
        val_images = [images[i] for i in val_idx]
        val_labels = [labels[i] for i in val_idx]
        val_sha256 = pairs_sha256(val_images, val_labels)  # as given: lets an ensemble check it is calibrated on these
        images = [images[i] for i in train_idx]
        labels = [labels[i] for i in train_idx]
        if image_weights is not None and len(image_weights) == len(train_idx) + len(val_idx):
            image_weights = [image_weights[i] for i in train_idx]
    labels = [np.asarray(l).astype(np.int64) for l in labels]
    val_labels = [np.asarray(l).astype(np.int64) for l in val_labels]
    if sum(int((l > 0).sum()) for l in labels) == 0:
        raise TrainingDataError("the training labels contain no labelled pixel (all 0 = unlabelled)")
    if val_labels:
        trained, held = class_pixel_counts(labels, n_classes).sum(0), class_pixel_counts(val_labels, n_classes).sum(0)
        unseen = [classes[c] for c in range(n_classes) if trained[c] and not held[c]]
        if unseen:
            warnings.append(f"class(es) {', '.join(unseen)} have no labelled pixel in the {len(val_labels)} validation "
                            "image(s): the validation metrics leave them out (the mean IoU is of the other classes) "
                            "and their decision offsets are not calibrated")

    if num_threads:
        torch.set_num_threads(int(num_threads))

    # --- network and card defaults (fine-tuning starts from a loaded model)
    base_card = None
    if base is not None:
        from micro_seg.registry import load_model

        loaded = load_model(base) if isinstance(base, (str, Path)) else base
        if hasattr(loaded, "card") and hasattr(loaded, "network"):
            network, base_card = loaded.network, loaded.card
        else:
            network, base_card = loaded
        if loaded is base:  # the caller's model: train a copy, so theirs keeps its weights (and layout) whatever happens
            import copy

            network = copy.deepcopy(network)
        arch = base_card.arch
        arch_kwargs = dict(base_card.arch_kwargs or {})
        in_channels = base_card.in_channels
        normalisation = base_card.normalisation
        rows = head_rows_to_keep(base_card.classes, classes)
        if rows != list(range(len(base_card.classes))):  # not the base's own rows in order (renamed ones are)
            _replace_head(network, n_classes, arch, keep=rows)
    if task is None:  # a fine-tuned model does the base model's task unless told otherwise
        task = base_card.task if base_card is not None else "semantic"
    if task == "grains":
        check_grain_classes(classes)
    if in_channels is None:
        in_channels = 3 if any(np.asarray(i).ndim == 3 and np.asarray(i).shape[2] >= 3 for i in images) else 1
    if normalisation is None:
        from micro_seg.preprocess import DEFAULT_NORMALISATION

        normalisation = dict(DEFAULT_NORMALISATION)
    arch_kwargs = dict(arch_kwargs or {})
    if input_scale is None:
        input_scale = float(getattr(base_card, "input_scale", 1.0)) if base_card is not None else 1.0
    input_scale = float(input_scale)
    check_input_scale(input_scale)
    if input_scale != 1.0:  # the network works at this pixel scale; inference resizes the same way
        from micro_seg.preprocess import rescale_image, rescale_labels

        images = [rescale_image(np.asarray(i), input_scale) for i in images]
        labels = [rescale_labels(l, i.shape[:2]) for l, i in zip(labels, images)]
        # the validation labels keep the images' own pixels: the network's answers are brought back to them as
        # segmenting does (validation_logits), so the card's metrics are those of the model a user runs
        val_images = [rescale_image(np.asarray(i), input_scale) for i in val_images]
        if sum(int((l > 0).sum()) for l in labels) == 0:
            raise TrainingDataError(f"no labelled pixel is left after resizing the labels by input_scale {input_scale}")

    xs = [to_network_input(np.asarray(i), in_channels=in_channels, normalisation=normalisation) for i in images]
    vxs = [to_network_input(np.asarray(i), in_channels=in_channels, normalisation=normalisation) for i in val_images]

    torch.manual_seed(seed)
    if base is None:
        network = build_network(arch, in_channels=in_channels, num_classes=n_classes, **arch_kwargs)
    network = network.float()
    channels_last = prefers_channels_last(network)
    if channels_last:  # weights go back to the usual layout when training ends
        network = network.to(memory_format=torch.channels_last)
    if pseudo_label_threshold is not None:
        labels = pseudo_labels(network, xs, labels, threshold=pseudo_label_threshold)

    if isinstance(class_weights, str):
        if class_weights != "auto":
            raise TrainingDataError(f"class_weights must be 'auto', None or one weight per class, got {class_weights!r}")
        weights = auto_class_weights(labels, n_classes)
    elif class_weights is None:
        weights = np.ones(n_classes, np.float32)
    else:
        weights = np.asarray(class_weights, np.float32)
        if weights.shape != (n_classes,) or not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise TrainingDataError(f"class_weights needs {n_classes} non-negative values, got {list(class_weights)}")
        if not (weights > 0).any():
            raise TrainingDataError(f"class_weights are all 0 ({list(class_weights)}): the loss would be 0 / 0 (NaN); "
                                    "give at least one class a positive weight")
    weight_t = torch.from_numpy(weights)

    aug_cfg = augment if isinstance(augment, AugmentConfig) else AugmentConfig(enabled=bool(augment))
    per_image = class_pixel_counts(labels, n_classes).astype(np.float64)  # (images, classes) labelled pixels
    labelled = np.maximum(1.0, per_image.sum(axis=1))
    if image_weights is not None:
        iw = np.asarray(image_weights, np.float64)
        if iw.shape != (len(labels),) or (iw < 0).any() or iw.sum() <= 0:
            raise TrainingDataError(f"image_weights needs {len(labels)} non-negative values (one per training image)")
        labelled = labelled * iw
    img_p = labelled / labelled.sum()
    class_present = per_image.sum(axis=0)
    if not (weights[class_present > 0] > 0).any():
        labelled_classes = [c for c, n in zip(classes, class_present) if n > 0]
        raise TrainingDataError(
            f"class weights {[float(w) for w in weights]} give weight 0 to every class that has labelled pixels "
            f"({', '.join(labelled_classes)}): the loss would be 0 / 0; give one of them a positive weight")
    rare_p = np.where(class_present > 0, 1.0 / np.maximum(class_present, 1), 0)
    rare_p = np.sqrt(rare_p)
    rare_p = rare_p / rare_p.sum() if rare_p.sum() else rare_p
    if patches_per_epoch is None:
        total = sum(l.size for l in labels)
        patches_per_epoch = max(batch_size, int(math.ceil(2 * total / patch_size**2)))
    steps_per_epoch = max(1, int(math.ceil(patches_per_epoch / batch_size)))
    total_steps = epochs * steps_per_epoch
    warmup = max(1, int(_WARMUP_FRACTION * total_steps))

    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    best_score, best_epoch, best_state = -math.inf, -1, None
    start_epoch = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    config = {
        "arch": arch, "arch_kwargs": arch_kwargs, "classes": classes, "in_channels": in_channels,
        "normalisation": normalisation, "epochs": epochs, "patch_size": patch_size, "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch, "lr": lr, "weight_decay": weight_decay, "seed": seed, "split_seed": split_seed,
        "class_weights": [float(w) for w in weights], "dice_weight": dice_weight,
        "rare_class_fraction": rare_class_fraction, "calibrate": bool(calibrate), "augment": aug_cfg.as_dict(),
        "input_scale": input_scale, "pseudo_label_threshold": pseudo_label_threshold,
        "base": None if base is None else str(getattr(base_card, "name", base)),
        # the data and the images held out: a resumed run on other pairs, or with another validation split,
        # would validate on images it already trained on
        "data_sha256": given_sha256,
        "val_indices": None if val_idx is None else [int(i) for i in val_idx],
    }
    best_file = None  # the checkpoint's best-weights file: {"file": name, "sha256": hex}
    seconds_before = 0.0  # training time of the epochs a resumed checkpoint holds
    if ckpt is not None and resume and (ckpt / "last.json").exists():
        meta, last_tensors, best_tensors = _read_checkpoint(ckpt)
        # the learning rate and the epoch count may change when continuing a run; nothing else may
        same = {k: v for k, v in json.loads(json.dumps(config)).items() if k not in _RESUMABLE_CHANGES}
        # checkpoints from before input_scale / pseudo-labels existed were made without them
        old_config = {"input_scale": 1.0, "pseudo_label_threshold": None, **meta.get("config", {})}
        old_config.setdefault("split_seed", old_config.get("seed"))  # before split_seed, the seed split the images
        for key in ("data_sha256", "val_indices"):  # checkpoints from before these were recorded
            if key not in old_config:
                same.pop(key, None)
        old_same = {k: v for k, v in old_config.items() if k not in _RESUMABLE_CHANGES}
        if old_same != same:
            differ = sorted(k for k in set(old_same) | set(same) if old_same.get(k) != same.get(k))
            names = {"data_sha256": "the training images / labels", "val_indices": "the validation images"}
            raise TrainingDataError(f"{ckpt}: checkpoint was made with different settings "
                                    f"({', '.join(names.get(k, k) for k in differ)}); cannot resume "
                                    "(use a new checkpoint_dir)")
        try:
            _load_state(network, opt, last_tensors)
        except (RuntimeError, KeyError, IndexError, ValueError) as exc:
            raise TrainingDataError(f"{ckpt}: checkpoint weights do not fit this network "
                                    f"({' '.join(str(exc).split())[:200]}); train without --resume") from None
        history = meta["history"]
        start_epoch = int(meta["epoch"]) + 1
        if history and isinstance(history[-1].get("seconds"), (int, float)):
            seconds_before = float(history[-1]["seconds"])  # the run's time so far: the card says how long it took
        best_score, best_epoch = float(meta["best_score"]), int(meta["best_epoch"])
        if best_tensors is not None:
            best_state, best_file = best_tensors, (meta.get("files") or {}).get("best")

    from micro_seg.nets import required_stride

    advice = patch_size_advice([x.shape[1:] for x in xs], patch_size, stride=required_stride(network))
    yield {"stage": "start", "epoch": start_epoch, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
           "warnings": warnings + ([advice] if advice else []),
           "n_train": len(xs), "n_val": len(vxs), "class_weights": config["class_weights"], "seconds": 0.0}

    # The schedule runs over the steps of the epochs, so the same seed gives the same model whatever the machine's
    # speed.  Only once the steps timed so far say the epochs will not fit in the time limit does it follow the
    # clock instead (warm-up and cosine end with the time budget): such a run depends on the machine's speed.
    follow_clock = False

    def lr_at(step: int) -> float:
        frac = step / total_steps
        if follow_clock:
            frac = max(frac, (time.perf_counter() - t_start) / time_limit_s)
        # warm-up over the first 3% of the run, measured like the schedule: with a time limit and a
        # generous epoch count the step-based warm-up alone would never end (lr stuck near 0)
        warm = max((step + 1) / warmup, frac / _WARMUP_FRACTION)
        if warm < 1.0:
            return lr * warm
        return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    stopped = None
    t_loop, steps_done = time.perf_counter(), 0
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 100_003 + epoch)
        network.train()
        losses = []
        for step in range(steps_per_epoch):
            if _is_cancelled(cancel):
                raise CancelledError("training cancelled")
            bx, by = [], []
            for _ in range(batch_size):
                i = int(rng.choice(len(xs), p=img_p))
                focus = None
                if rare_class_fraction and rng.random() < rare_class_fraction and rare_p.sum():
                    focus = int(rng.choice(n_classes, p=rare_p)) + 1
                scale = 1.0
                if aug_cfg.enabled and rng.random() < aug_cfg.p_scale:
                    lo, hi = aug_cfg.scale_range
                    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                x, y = sample_patch(xs[i], labels[i], patch_size=patch_size, rng=rng, scale=scale, focus_class=focus)
                x, y = augment_pair(x, y, rng=rng, config=aug_cfg)
                bx.append(x)
                by.append(y)
            xb = torch.from_numpy(np.stack(bx))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(np.stack(by).astype(np.int64))
            gstep = epoch * steps_per_epoch + step
            for g in opt.param_groups:
                g["lr"] = lr_at(gstep)
            loss = segmentation_loss(network(xb), yb, class_weights=weight_t, dice_weight=dice_weight)
            if not math.isfinite(float(loss.detach())):
                value = "NaN" if math.isnan(float(loss.detach())) else "infinite"
                raise TrainingDivergedError(
                    f"training diverged: loss is {value} at epoch {epoch + 1}, step {step + 1}; no model was saved "
                    f"(try a lower learning rate, now {lr:g}, or other class weights)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            yield {"stage": "step", "epoch": epoch, "epochs": epochs, "step": step,
                   "steps_per_epoch": steps_per_epoch, "loss": losses[-1], "lr": opt.param_groups[0]["lr"],
                   "seconds": seconds_before + time.perf_counter() - t_start}
            steps_done += 1
            if time_limit_s and not follow_clock and steps_done >= _STEPS_TIMED:
                now = time.perf_counter()  # validation time counts: it is part of the time per step
                left = total_steps - (epoch * steps_per_epoch + step + 1)
                follow_clock = now - t_start + left * (now - t_loop) / steps_done > time_limit_s
            if time_limit_s and time.perf_counter() - t_start >= time_limit_s:
                break  # out of time mid-epoch: validate, checkpoint and stop below
        if not all(bool(torch.isfinite(v).all()) for v in network.state_dict().values() if v.is_floating_point()):
            raise TrainingDivergedError(
                f"training diverged: the weights are no longer finite (NaN or inf) at epoch {epoch + 1}; no model was "
                f"saved (try a lower learning rate, now {lr:g})")
        rec: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": lr_at((epoch + 1) * steps_per_epoch - 1)}
        if vxs:
            network.eval()
            cm = np.zeros((n_classes, n_classes), np.int64)
            for vx, vy in zip(vxs, val_labels):
                pred = validation_logits(network, vx, vy.shape).argmax(0)
                cm += confusion_matrix(pred, vy, n_classes)
            rec["val"] = segmentation_metrics(cm, classes)
            score = rec["val"]["mean_iou"]
        else:
            score = -rec["loss"]
        rec["seconds"] = seconds_before + time.perf_counter() - t_start
        history.append(rec)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            files = {"weights": _write_checkpoint_weights(ckpt, f"last-{epoch}", _state_to_tensors(network, opt))}
            if best_epoch == epoch:
                best_file = _write_checkpoint_weights(ckpt, f"best-{epoch}",
                                                      {k: v.contiguous() for k, v in best_state.items()})
            if best_file is not None:
                files["best"] = best_file
            meta = {"epoch": epoch, "history": history, "best_score": best_score, "best_epoch": best_epoch,
                    "config": config, "files": files}
            _write_checkpoint_record(ckpt, meta)
        yield {"stage": "epoch", "epoch": epoch, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
               "loss": rec["loss"], "val": rec.get("val"), "best_epoch": best_epoch, "seconds": rec["seconds"]}
        if patience and vxs and epoch - best_epoch >= patience:  # 0 or None: no early stopping
            stopped = f"early stop: no validation improvement for {patience} epochs"
            break
        if time_limit_s and time.perf_counter() - t_start >= time_limit_s:
            stopped = f"time limit of {time_limit_s:.0f} s reached"
            break
    if follow_clock:  # say why two runs with the same seed may differ
        stopped = (f"{stopped or 'all epochs done'}; the epochs did not fit in the time limit, so the learning-rate "
                   "schedule followed the clock: the result depends on the machine's speed")

    if keep not in ("best", "last"):
        raise TrainingDataError(f"keep must be 'best' or 'last', got {keep!r}")
    kept = "the last epoch" if keep == "last" else "the best validation mean IoU" if vxs else \
        "the lowest training loss (no validation images)"
    if keep == "best" and best_state is None and history and best_epoch != history[-1]["epoch"]:
        # a resumed checkpoint without the best epoch's weights: say that the last epoch is kept, with its metrics
        kept = f"the last epoch (the weights of the best epoch {best_epoch} were not in the checkpoint)"
        best_epoch = history[-1]["epoch"]
    if keep == "last" and history:
        best_epoch = history[-1]["epoch"]
    elif best_state is not None:
        network.load_state_dict(best_state)
    network = network.to(memory_format=torch.contiguous_format).eval()
    best = history[best_epoch - history[0]["epoch"]] if history and best_epoch >= history[0]["epoch"] else (history[-1] if history else {})
    bias = _output_bias(network)
    if calibrate and vxs and bias is not None and history:
        # class-prior shift from class weights / rare-class patches, undone on whole validation images
        vlog = [validation_logits(network, vx, vy.shape) for vx, vy in zip(vxs, val_labels)]
        offsets, _, _ = calibrate_logit_offsets(vlog, val_labels, seed=seed, classes=classes)
        if np.any(offsets != 0):
            import torch

            with torch.no_grad():
                bias += torch.from_numpy(offsets).to(bias.dtype)
            best = dict(best)
            before = best.get("val") or {}
            added = offsets
            if input_scale != 1.0:  # the offsets act before the probabilities are resampled: measure the model kept
                vlog = [validation_logits(network, vx, vy.shape) for vx, vy in zip(vxs, val_labels)]
                added = np.zeros_like(offsets)
            best["val"] = {**offset_metrics(vlog, val_labels, added, classes),
                           "note": "after per-class logit offsets chosen on this validation split",
                           "before_offsets": {"iou": before.get("iou"), "mean_iou": before.get("mean_iou")}}
        config = {**config, "logit_offsets": [float(o) for o in offsets]}
    card = _make_card(
        name=name, arch=arch, arch_kwargs=arch_kwargs, task=task, classes=classes, in_channels=in_channels,
        normalisation=normalisation, config=config, best=best, best_epoch=best_epoch, history=history,
        data_sha256=pairs_sha256(images, labels), n_train=len(xs), n_val=len(vxs), val_indices=val_idx,
        val_sha256=val_sha256, stopped=stopped, kept=kept,
        seconds=seconds_before + time.perf_counter() - t_start, base_card=base_card, extra=card_extra,
    )
    return TrainResult(network, card, history)


def head_rows_to_keep(base_classes: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """For each of ``classes``, the base model's output row it continues when fine-tuning, or None (new class).

    Classes are matched by name; when no name matches but the counts agree (the user renamed the classes), rows
    are kept by position, as a fine-tune of the same classes under other names.

    >>> head_rows_to_keep(["grain", "boundary"], ["grain", "boundary", "twin"])
    [0, 1, None]
    >>> head_rows_to_keep(["grain", "boundary"], ["a", "b"])
    [0, 1]
    >>> head_rows_to_keep(["grain", "boundary"], ["a", "b", "c"])
    [None, None, None]
    """
    base = list(base_classes)
    keep = [base.index(c) if c in base else None for c in classes]
    if all(k is None for k in keep) and len(base) == len(classes):
        keep = list(range(len(classes)))
    return keep


def _replace_head(network, n_classes: int, arch: str, keep: Sequence[int | None] | None = None) -> None:
    """Give ``network`` a logits layer for ``n_classes`` classes (fine-tuning to other classes).

    ``keep[i]``: the base's output row that new class ``i`` continues (same class name), or None for a new class
    (fresh initialisation). Rows are kept whenever the class names match, so adding or reordering classes does
    not throw away what the base learnt about the classes it already knew.
    """
    import torch

    head = getattr(network, "head", None)
    seg = getattr(network, "segmentation_head", None)
    if isinstance(head, torch.nn.Conv2d):
        old = head
    elif seg is not None and isinstance(seg[0], torch.nn.Conv2d):
        old = seg[0]
    else:
        raise ModelError(f"{arch}: cannot change the number of classes of this architecture when fine-tuning")
    new = torch.nn.Conv2d(old.in_channels, n_classes, old.kernel_size, padding=old.padding,
                          bias=old.bias is not None)
    with torch.no_grad():
        for i, j in enumerate(keep or []):
            if j is not None:
                new.weight[i] = old.weight[j]
                if old.bias is not None:
                    new.bias[i] = old.bias[j]
    if isinstance(head, torch.nn.Conv2d):
        network.head = new
    else:
        seg[0] = new


def _make_card(*, name, arch, arch_kwargs, task, classes, in_channels, normalisation, config, best, best_epoch,
               history, data_sha256, n_train, n_val, stopped, seconds, base_card, extra, val_indices=None,
               val_sha256=None, kept=None):
    from micro_seg.registry import ModelCard

    metrics: dict[str, Any] = {}
    if best.get("val"):
        metrics["validation"] = {"data": f"{n_val} validation images held out by image", **best["val"]}
    training = {
        # best_epoch counts from 0, as the epochs in the history do; kept: how the weights kept were chosen
        "n_train_images": n_train, "n_val_images": n_val, "best_epoch": best_epoch, "kept": kept,
        "epochs_run": len(history),
        "seconds": round(seconds, 1), "stopped": stopped,
        **{k: v for k, v in config.items() if k not in ("arch", "arch_kwargs", "classes", "in_channels", "normalisation")},
    }
    try:  # record the fully resolved architecture, so later preset changes cannot break loading
        from micro_seg.nets import resolved_arch_kwargs

        arch_kwargs = resolved_arch_kwargs(arch, arch_kwargs)
    except ImportError:  # pragma: no cover
        pass
    fields: dict[str, Any] = dict(
        name=name or (f"{base_card.name}-finetuned" if base_card is not None else "custom"),
        task=task, arch=arch, arch_kwargs=dict(arch_kwargs), in_channels=in_channels, classes=list(classes),
        normalisation=dict(normalisation), input_scale=float(config.get("input_scale", 1.0)), metrics=metrics,
        training_data={"sha256": data_sha256, "n_train_images": n_train, "n_val_images": n_val,
                       **({"val_indices": list(val_indices), "val_sha256": val_sha256}
                          if val_indices is not None else {})},
        extra={"training": training},
    )
    if base_card is not None:
        # the base's scale, tiling and post-processing carry over; its material and description do not: a
        # fine-tune is trained on the caller's images (set ``material`` through ``card_extra``)
        for key in ("pixel_size_um_range", "tile_size", "postprocess"):
            fields[key] = getattr(base_card, key)
        fields["description"] = (f"Fine-tuned from {base_card.name!r}"
                                 + (f" ({base_card.material})" if base_card.material else "")
                                 + f" on {n_train} training image{'s' if n_train != 1 else ''}.")
        if base_card.task != task:
            fields["postprocess"] = {}  # another task: the base model's post-processing options do not apply
        # the base's countable classes stay countable whatever classes are added or dropped
        fields["defect_classes"] = [c for c in base_card.defect_classes if c in classes]
        fields["extra"]["base_model"] = base_card.name
    for k, v in (extra or {}).items():
        if k in ("extra", "training_data", "metrics") and isinstance(v, dict):
            fields[k] = {**fields.get(k, {}), **v}
        else:
            fields[k] = v
    return ModelCard(**fields)


def train_segmenter(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    classes: Sequence[str],
    progress: Callable[[dict], None] | None = None,
    out: str | Path | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train (or fine-tune with ``base=``) a segmentation network.

    Parameters
    ----------
    images : sequence of ndarray
        Micrographs, 2-D grey or rows x cols x channels, any dtype.
    labels : sequence of ndarray
        Integer label images of the same rows x cols: **0 = unlabelled
        (ignored)**, ``c`` = class ``classes[c - 1]``.
    classes : sequence of str
        Class names, in output-channel order.
    progress : callable, optional
        Called with every progress dict (see :func:`iter_train_segmenter`).
    out : path, optional
        If given, the trained model is written there with
        :func:`micro_seg.registry.save_model` (``--model PATH`` accepts it); a
        model already there is kept in ``out/previous``.
    **kwargs
        ``arch`` ("msnet"), ``arch_kwargs``, ``base`` (model name/folder, a
        loaded model or ``(network, card)`` to fine-tune; a given network is
        copied, never changed), ``task`` (default "semantic", or the
        base model's), ``in_channels``,
        ``normalisation``, ``epochs``, ``patch_size``, ``batch_size``,
        ``patches_per_epoch``, ``lr``, ``weight_decay``, ``val_fraction``
        or ``val_images``/``val_labels`` (split by image), ``class_weights``
        ("auto", None or a list), ``dice_weight``, ``rare_class_fraction``,
        ``calibrate`` (validation-chosen logit offsets, default True), ``image_weights``
        (relative sampling weight per training image, on top of its
        labelled-pixel count),
        ``augment`` (bool or :class:`~micro_seg.augment.AugmentConfig`),
        ``seed``, ``split_seed`` (seed of the validation split, default
        ``seed``: runs that differ only in ``seed`` but share ``split_seed``
        hold out the same images, so an ensemble of them can be calibrated on
        images none of its members trained on), ``patience`` (early
        stopping after this many epochs without improvement; 0 or None:
        never), ``keep`` ("best"
        epoch by validation mean IoU, or "last"), ``input_scale`` (train on
        the micrographs resized by this factor, e.g. 0.5 when the structures
        are many pixels across; recorded on the card, and inference resizes
        the same way; default 1, or the base model's),
        ``pseudo_label_threshold`` (fine-tuning only: unlabelled pixels the
        base model classifies with at least this probability are trained on
        its class, see :func:`pseudo_labels`), ``time_limit_s`` (stops the
        run; when the first steps show that the epochs will not fit in it, the
        learning-rate schedule follows the clock instead of the steps, so the
        result depends on the machine's speed),
        ``checkpoint_dir``, ``resume`` (continue from the checkpoint; only
        ``lr`` and ``epochs`` may differ from the checkpointed run), ``num_threads``, ``cancel`` (callable
        or ``threading.Event``; raises :class:`CancelledError`), ``name``,
        ``card_extra`` (extra card fields).

    Returns
    -------
    TrainResult
        ``(network, card, history)``; the network holds the best epoch's
        weights (by validation mean IoU), in eval mode.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((64, 64), np.uint8); img[:, 32:] = 200
    >>> lab = np.zeros((64, 64), np.uint8); lab[:, :8] = 1; lab[:, -8:] = 2
    >>> net, card, hist = train_segmenter([img], [lab], classes=["dark", "bright"],
    ...     arch_kwargs={"widths": (8, 16), "blocks": (1, 1)}, epochs=1, patch_size=32, batch_size=2,
    ...     val_fraction=0, augment=False)  # doctest: +SKIP
    """
    gen = iter_train_segmenter(images, labels, classes=classes, **kwargs)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if progress is not None:
            progress(event)
    if out is not None:
        from micro_seg.registry import save_model

        save_model(out, result.network, result.card, keep_previous=True)
    return result

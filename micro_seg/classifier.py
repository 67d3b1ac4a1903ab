"""Image classification: a compact CNN, training, calibration, OOD score, Grad-CAM.

One class per image (a field, a part, a surface patch).  The network
(:class:`ClassifierNet`, architecture ``"mscls"``) is a small plain CNN --
stride-2 stem, four stages of 3x3 conv + BN + ReLU, global average pooling,
dropout and a linear head -- sized to train in minutes on a CPU.  No weights
are downloaded.

After training, three things are fitted on held-out data and stored with the
model (the tensors in the safetensors file, the numbers in the card):

**Temperature scaling** (Guo et al., "On calibration of modern neural
networks", ICML 2017): one scalar ``T`` divides the logits so that the
softmax probabilities are calibrated; fitted by minimising the negative
log-likelihood on the validation split.

**Out-of-distribution score**: the Mahalanobis distance of the pooled
features to the nearest class mean under a shared covariance (Lee et al.,
"A simple unified framework for detecting out-of-distribution samples and
adversarial attacks", NeurIPS 2018), fitted on the training images.  The
card stores a threshold: the ``ood_percentile`` (default 95th) percentile of
the scores of the in-distribution validation images.  ``ood`` is True above
it, so about 5% of familiar images are flagged by construction and images of
another kind are flagged far more often.

Images are assumed to have no preferred orientation (``symmetry="d8"``:
the 8 flips / quarter turns are used as augmentations); surfaces with a
direction (rolling marks, grinding stripes) use ``symmetry="flips"`` (the 4
mirror images only).  Predictions average the pooled features over the same
views (test-time augmentation, ``tta`` in the card); calibration and OOD
statistics are fitted on the same averaged features.

**Grad-CAM** (Selvaraju et al., ICCV 2017) of the last stage explains a
decision as a heat map over the image (:func:`grad_cam`).

Models are ordinary micro-seg model folders (``card.yaml`` with ``task:
classification`` + ``model.safetensors`` with its sha256), written with
:func:`micro_seg.registry.save_model` and read with :func:`load_classifier`.

Examples
--------
>>> import numpy as np, torch
>>> from micro_seg.classifier import ClassifierNet, prepare_image
>>> net = ClassifierNet(1, 3, widths=(4, 8, 8, 8)).eval()
>>> x = prepare_image(np.zeros((50, 40), np.uint8), input_size=32)
>>> with torch.inference_mode():
...     net(torch.from_numpy(x)[None]).shape
torch.Size([1, 3])
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from micro_seg.errors import (
    CancelledError,
    InputFileNotFoundError,
    ModelError,
    TrainingDataError,
)

__all__ = [
    "ARCHITECTURES",
    "ClassifierNet",
    "ClassifierConfig",
    "ClassifierTrainResult",
    "build_classifier",
    "prepare_image",
    "load_class_folders",
    "stratified_split",
    "iter_train_classifier",
    "train_classifier",
    "fit_temperature",
    "expected_calibration_error",
    "classification_metrics",
    "load_classifier",
    "classify",
    "classify_batch",
    "grad_cam",
    "auroc",
    "apply_decision",
    "choose_recall_threshold",
    "encoder_features",
    "fit_feature_gaussian",
    "gaussian_scores",
    "DEFAULT_NORMALISATION",
]

#: Architecture presets (``arch`` in the card -> ``ClassifierNet`` options).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mscls": {"widths": (16, 32, 64, 128), "blocks": (1, 2, 2, 2)},
    "mscls-s": {"widths": (8, 16, 32, 64), "blocks": (1, 1, 2, 2)},
    "mscls-l": {"widths": (24, 48, 96, 192), "blocks": (1, 2, 2, 2)},
}

#: Per-image normalisation used by classifiers (see :mod:`micro_seg.preprocess`).
DEFAULT_NORMALISATION: dict[str, Any] = {"mode": "percentile", "low": 0.5, "high": 99.5}


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ClassifierNet(nn.Module):
    """Compact CNN image classifier with stored calibration / OOD statistics.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels (1 grey, 3 RGB) and number of classes.
    widths : sequence of int
        Channels of the four (or more) stages; stage ``i > 0`` halves the
        resolution, the stem halves it once more.
    blocks : sequence of int, optional
        3x3 convs per stage.
    dropout : float
        Dropout before the linear head (training only).
    pool : {"avg", "avgmax"}
        Global pooling: average, or average and maximum concatenated (the
        maximum keeps small local defects from being averaged away).

    Notes
    -----
    Buffers saved with the weights: ``temperature`` (1,), ``ood_means``
    (num_classes, features) and ``ood_precision`` (features, features).

    Examples
    --------
    >>> import torch
    >>> net = ClassifierNet(1, 2, widths=(4, 8, 8)).eval()
    >>> net.features(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] | None = None,
        dropout: float = 0.2,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise ModelError(f"mscls: pool must be 'avg' or 'avgmax', got {pool!r}")
        self.pool = pool
        widths = [int(w) for w in widths]
        blocks = [1] * len(widths) if blocks is None else [int(b) for b in blocks]
        if len(widths) < 2 or min(widths) < 1 or len(blocks) != len(widths) or min(blocks) < 1:
            raise ModelError(f"mscls: widths {widths} / blocks {blocks} must be >= 2 positive values of equal length")
        self.stem = _conv_bn_relu(in_channels, widths[0], stride=2)
        stages, prev = [], widths[0]
        for i, (w, b) in enumerate(zip(widths, blocks)):
            layers = [_conv_bn_relu(prev, w, stride=1 if i == 0 else 2)]
            layers += [_conv_bn_relu(w, w) for _ in range(b - 1)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(float(dropout))
        self.num_features = prev * (2 if pool == "avgmax" else 1)
        self.head = nn.Linear(self.num_features, num_classes)
        self.register_buffer("temperature", torch.ones(1))
        self.register_buffer("ood_means", torch.zeros(num_classes, self.num_features))
        self.register_buffer("ood_precision", torch.eye(self.num_features))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last stage, ``(N, features, r, c)``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, ``(N, features)``."""
        fmap = self.feature_map(x)
        if self.pool == "avgmax":
            return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)
        return fmap.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.dropout(self.features(x)))

    def ood_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of ``feats`` to the nearest class mean."""
        diff = feats[:, None, :] - self.ood_means[None, :, :]
        d2 = torch.einsum("ncf,fg,ncg->nc", diff, self.ood_precision, diff)
        return d2.min(dim=1).values


def build_classifier(arch: str, *, in_channels: int, num_classes: int, **arch_kwargs: Any) -> ClassifierNet:
    """Build a randomly initialised classifier by architecture name.

    Examples
    --------
    >>> build_classifier("mscls-s", in_channels=1, num_classes=4).num_features
    64
    """
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown classifier architecture {arch!r}; available: {', '.join(ARCHITECTURES)}")
    kwargs = {**ARCHITECTURES[arch], **arch_kwargs}
    try:
        return ClassifierNet(int(in_channels), int(num_classes), **kwargs)
    except TypeError as exc:
        raise ModelError(f"{arch}: invalid architecture options {arch_kwargs}: {exc}") from exc


# --------------------------------------------------------------------------- data


def prepare_image(
    image: np.ndarray,
    *,
    input_size: int,
    in_channels: int = 1,
    normalisation: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Turn any image into the classifier input: float32 ``(C, size, size)``.

    Channels and per-image normalisation as in
    :func:`micro_seg.preprocess.to_network_input`; then an anti-aliased
    resize to ``input_size`` squared (the aspect ratio is not kept, the same
    way in training and inference).

    Examples
    --------
    >>> import numpy as np
    >>> prepare_image(np.arange(600, dtype=np.uint16).reshape(20, 30), input_size=16).shape
    (1, 16, 16)
    """
    from skimage.transform import resize

    from micro_seg.preprocess import to_network_input

    x = to_network_input(np.asarray(image), in_channels=in_channels,
                         normalisation=dict(normalisation or DEFAULT_NORMALISATION))
    size = int(input_size)
    if x.shape[1:] != (size, size):
        x = np.stack([resize(c, (size, size), order=1, anti_aliasing=True, preserve_range=True) for c in x])
    return np.ascontiguousarray(x, dtype=np.float32)


def _image_files(folder: Path) -> list[Path]:
    from micro_seg.io import SUPPORTED_EXTENSIONS

    # hidden files and everything under hidden folders (.thumbs, .ipynb_checkpoints) are not training images
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def load_class_folders(
    data_dir: str | os.PathLike, *, classes: Sequence[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """List the images of a folder with one sub-folder per class.

    Sub-folders are searched recursively; hidden folders are skipped.

    Returns
    -------
    paths : list of Path
    labels : ndarray of int64
        Class index per path.
    classes : list of str
        Sub-folder names (sorted), or ``classes`` if given.

    Raises
    ------
    InputFileNotFoundError, TrainingDataError
        Missing folder, fewer than two classes, a class without images, or
        class folders that all hold their images only in the same sub-folders
        (a ``DATA/train/<class>``, ``DATA/val/<class>`` layout).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputFileNotFoundError(f"{root}: training data folder not found")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(classes) if classes is not None else found
    missing = [c for c in names if not (root / c).is_dir()]
    if missing:
        raise TrainingDataError(f"{root}: class folders {missing} not found (found: {', '.join(found) or 'none'})")
    if len(names) < 2:
        raise TrainingDataError(f"{root}: need one sub-folder per class and at least 2 classes, found {names}")
    paths: list[Path] = []
    labels: list[int] = []
    subfolders = []
    for idx, name in enumerate(names):
        files = _image_files(root / name)
        if not files:
            raise TrainingDataError(f"{root / name}: class folder holds no supported images")
        paths += files
        labels += [idx] * len(files)
        subfolders.append({f.relative_to(root / name).parts[0] if f.parent != root / name else None for f in files})
    # images grouped inside each class (ferrite/x100, ferrite/x500) are fine; split folders as classes are not
    if ({str(n).lower() for n in names} <= _SPLIT_FOLDER_NAMES and None not in subfolders[0]
            and all(s == subfolders[0] for s in subfolders)):
        # DATA/train/{a,b}, DATA/val/{a,b}: 'train' and 'val' would be the classes, in silence
        hint = root / ("train" if "train" in names else names[0])
        raise TrainingDataError(f"{root}: the folders {', '.join(names)} all hold their images only in the same "
                                f"sub-folders ({', '.join(sorted(subfolders[0]))}): this looks like a train/validation "
                                f"layout, not one folder per class; point at {hint} (one folder per class, the "
                                "validation split is made from it)")
    return paths, np.asarray(labels, dtype=np.int64), names


#: Folder names of a train / validation / test layout: as the only "classes" they mean the user pointed one level
#: too high.
_SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def stratified_split(labels: np.ndarray, val_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class: ``round(n_c * val_fraction)`` of each class to validation.

    Every class keeps at least one training image and, when it has two or
    more, gives at least one to validation.

    Examples
    --------
    >>> tr, va = stratified_split(np.array([0] * 10 + [1] * 5), 0.2, seed=0)
    >>> len(tr), len(va)
    (12, 3)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingDataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def _pixels_hash(pixels: np.ndarray) -> str:
    """sha256 of decoded pixels (shape, dtype and values): the same image saved as PNG and as TIFF hashes alike."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256(f"{arr.shape}\t{arr.dtype.str}\n".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _split_warnings(paths: Sequence[Path], labels: np.ndarray, names: Sequence[str], train_idx: np.ndarray,
                    val_idx: np.ndarray, hashes: Sequence[str]) -> list[str]:
    """What makes the validation figures (accuracy, temperature, OOD threshold) less than they seem: a class with
    no validation image drops out of them, a pixel-identical copy of a training image in validation is no
    held-out image, and the same image in two class folders has contradictory labels.  ``hashes``:
    :func:`_pixels_hash` of each path's pixels as the classifier reads them."""
    out = []
    absent = [names[c] for c in range(len(names)) if not np.any(labels[val_idx] == c)]
    if absent:
        out.append(f"class(es) {', '.join(absent)} have no validation image (too few images): they are missing from "
                   "the validation metrics")
    first: dict[str, int] = {}
    clashes = []
    for i, h in enumerate(hashes):
        j = first.setdefault(h, i)
        if j != i and labels[j] != labels[i]:
            clashes.append((j, i))
    if clashes:
        j, i = clashes[0]
        out.append(f"{len(clashes)} image(s) are in two class folders with the same pixels (e.g. {paths[j]} "
                   f"({names[labels[j]]}) = {paths[i]} ({names[labels[i]]})): contradictory labels; keep each image "
                   "in one class folder")
    train_hashes = {hashes[i]: paths[i] for i in train_idx}
    copies = [(paths[i], train_hashes[hashes[i]]) for i in val_idx if hashes[i] in train_hashes]
    if copies:
        v, t = copies[0]
        out.append(f"{len(copies)} validation image(s) are pixel-identical copies of training images (e.g. {v} = {t}): "
                   "the validation accuracy, calibration and OOD threshold are optimistic; remove the copies")
    return out


# --------------------------------------------------------------------------- metrics


def classification_metrics(pred: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, confusion matrix (rows = truth) and per-class precision / recall / F1.

    Examples
    --------
    >>> m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    >>> m["accuracy"], m["confusion_matrix"], m["per_class"]["a"]["recall"]
    (0.6666666666666666, [[1, 1], [0, 1]], 0.5)
    """
    n = len(classes)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(truth, int), np.asarray(pred, int)), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if predicted and support and (precision + recall) > 0 else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = int(cm.sum())
    return {
        "accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "n": total,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, *, n_bins: int = 10) -> float:
    """ECE: bin-weighted |accuracy - confidence| over ``n_bins`` confidence bins.

    Examples
    --------
    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
    0.4
    """
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(truth)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(round(ece, 12))


#: Search range of :func:`fit_temperature`: a temperature this close to either end found no real optimum.
TEMPERATURE_BOUNDS = (0.25, 20.0)


def temperature_at_bound(temperature: float, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> str | None:
    """``"low"`` / ``"high"`` when the fitted ``temperature`` stopped at that end of its search range, else None.

    >>> temperature_at_bound(0.25), temperature_at_bound(1.3), temperature_at_bound(19.995)
    ('low', None, 'high')
    """
    if temperature <= bounds[0] * 1.0004:
        return "low"
    if temperature >= bounds[1] * 0.9995:
        return "high"
    return None


def fit_temperature(logits: np.ndarray, truth: np.ndarray, *,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    A 1-D bounded search over ``log T`` (golden section, 60 steps); the NLL is
    convex in ``1/T``, so the optimum is unique.  When the validation images
    hold no errors the NLL keeps falling as ``T -> 0``; the lower bound (0.25,
    i.e. at most 4x sharper than the trained network) keeps probabilities
    from collapsing to 0/1 on such perfectly separated validation sets.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.integers(0, 3, 2000)
    >>> clean = np.eye(3)[truth] * 2.0 + rng.normal(0, 1, (2000, 3))
    >>> round(fit_temperature(clean * 4.0, truth) / fit_temperature(clean, truth), 1)
    4.0
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(truth), dtype=torch.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise TrainingDataError(f"fit_temperature: need (n, classes) logits and n labels, got {tuple(z.shape)} and {tuple(y.shape)}")

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(math.exp((a + b) / 2))


def auroc(scores_negative: Sequence[float], scores_positive: Sequence[float]) -> float:
    """Area under the ROC curve: P(positive score > negative score), ties count 1/2.

    Examples
    --------
    >>> auroc([1, 2, 3], [4, 5, 6]), auroc([1, 2], [1, 2])
    (1.0, 0.5)
    """
    neg = np.asarray(scores_negative, dtype=np.float64)
    pos = np.asarray(scores_positive, dtype=np.float64)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def apply_decision(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """Predicted class indices: ``positive`` when its probability >= ``threshold`` or it is the most probable
    class anyway (a recall rule for a class that must not be missed is never stricter than plain argmax), else
    the best other class.

    Examples
    --------
    >>> apply_decision(np.array([[0.3, 0.7], [0.6, 0.4]]), 0, 0.25).tolist()
    [0, 0]
    >>> apply_decision(np.array([[0.4966, 0.5034]]), 1, 0.50336).tolist()  # a threshold above 0.5: argmax still
    [1]
    """
    probs = np.asarray(probs, dtype=np.float64)
    others = probs.copy()
    others[:, positive] = -1.0
    flagged = (probs[:, positive] >= threshold) | (probs.argmax(1) == positive)
    return np.where(flagged, positive, others.argmax(1))


def choose_recall_threshold(probs: np.ndarray, truth: np.ndarray, positive: int, *,
                            target_recall: float) -> dict[str, float]:
    """Highest probability threshold on class ``positive`` whose recall reaches ``target_recall``.

    For QC flagging, where a missed defect costs more than a false alarm.
    Returns ``{"threshold", "target_recall", "val_recall", "val_precision"}``
    measured on the data given (use separate data to judge it).

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]])
    >>> choose_recall_threshold(p, np.array([0, 0, 1, 1]), 0, target_recall=1.0)["threshold"]
    0.4
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth)
    pos = probs[truth == positive, positive]
    if pos.size == 0:
        raise TrainingDataError(f"no validation images of the positive class (index {positive}) to choose a "
                                "threshold: give that class more images or a larger --val-fraction")
    candidates = np.sort(np.unique(pos))[::-1]
    threshold = float(candidates[-1])
    for t in candidates:
        if np.mean(pos >= t) >= target_recall - 1e-12:
            threshold = float(t)
            break
    pred = apply_decision(probs, positive, threshold)
    tp = float(np.sum((pred == positive) & (truth == positive)))
    return {"threshold": threshold, "target_recall": float(target_recall),
            "val_recall": tp / pos.size, "val_precision": tp / max(1.0, float(np.sum(pred == positive)))}


# --------------------------------------------------------------------------- feature OOD (any network)


def encoder_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Globally pooled deepest features of a classifier or segmentation network.

    Works for :class:`ClassifierNet`, micro-seg's ``MSNet`` (its ``encoder``
    stages) and segmentation-models-pytorch models (``encoder(x)[-1]``), so
    the Mahalanobis OOD score applies to segmentation models too.

    Examples
    --------
    >>> from micro_seg.nets import build_network
    >>> net = build_network("msnet", in_channels=1, num_classes=2, widths=(4, 8, 12)).eval()
    >>> encoder_features(net, torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 12])
    """
    if isinstance(network, ClassifierNet):
        return network.features(x)
    encoder = getattr(network, "encoder", None)
    if isinstance(encoder, nn.ModuleList):
        for stage in encoder:
            x = stage(x)
        return x.mean(dim=(2, 3))
    if isinstance(encoder, nn.Module):
        feats = encoder(x)
        last = feats[-1] if isinstance(feats, (list, tuple)) else feats
        return last.mean(dim=(2, 3))
    raise ModelError(f"{type(network).__name__}: no encoder found to take OOD features from")


def fit_feature_gaussian(feats: np.ndarray, *, shrinkage: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (ridge-shrunk) precision matrix of in-distribution features.

    Examples
    --------
    >>> f = np.random.default_rng(0).normal(size=(200, 3))
    >>> mean, prec = fit_feature_gaussian(f)
    >>> mean.shape, prec.shape
    ((3,), (3, 3))
    """
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise TrainingDataError(f"need >= 2 feature vectors of shape (n, features), got {f.shape}")
    mean, precision = _fit_mahalanobis(f, np.zeros(len(f), dtype=np.int64), 1, shrinkage=shrinkage)
    return mean[0], precision


def gaussian_scores(feats: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of feature rows to ``mean``.

    Examples
    --------
    >>> gaussian_scores(np.array([[1.0, 0.0]]), np.zeros(2), np.eye(2))
    array([1.])
    """
    d = np.asarray(feats, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    return np.einsum("nf,fg,ng->n", d, np.asarray(precision, dtype=np.float64), d)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ClassifierConfig:
    """Training settings (all recorded in the model card).

    ``max_minutes`` bounds the training time: the learning-rate schedule
    (warm-up, cosine decay) follows the larger of the fraction of steps and the
    fraction of the time budget used, so it always completes in time;
    ``epochs`` is then an upper bound.  ``balanced`` samples
    classes equally often per epoch (imbalanced data sets).  ``in_channels``
    0 picks the input: 3 (RGB) when any training image is colour with
    channels that differ, else 1 (grey); the card records the choice.
    """

    arch: str = "mscls-s"
    arch_kwargs: dict = field(default_factory=dict)
    input_size: int = 128
    in_channels: int = 1
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    val_fraction: float = 0.2
    seed: int = 0
    max_minutes: float | None = None
    balanced: bool = False
    augment: bool = True
    scale_range: tuple[float, float] = (0.7, 1.0)
    ood_percentile: float = 95.0
    threads: int | None = None
    tta: bool = True
    symmetry: str = "d8"
    positive_class: str | None = None
    target_recall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the card."""
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d


def _lr_at(progress: float, peak: float, warmup: float = 0.15) -> float:
    """Learning rate at a fraction of training: linear warm-up from peak / 25, then cosine to ~0.

    Examples
    --------
    >>> _lr_at(0.15, 1.0), round(_lr_at(1.0, 1.0), 6)
    (1.0, 0.0)
    """
    if progress < warmup:
        return peak * (0.04 + 0.96 * progress / warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))


@dataclass
class ClassifierTrainResult:
    """What :func:`train_classifier` returns."""

    network: ClassifierNet
    card: Any
    history: list[dict] = field(default_factory=list)
    folder: Path | None = None


def _views(symmetry: str) -> list[int]:
    """Indices for :func:`_dihedral` of the symmetry group's views."""
    return {"d8": list(range(8)), "flips": [0, 2, 4, 6], "none": [0]}[symmetry]


def _augment_batch(x: torch.Tensor, rng: np.random.Generator, config: ClassifierConfig) -> torch.Tensor:
    """Symmetry views (flips / quarter turns), random resized crop, contrast/brightness, noise."""
    n, _, size, _ = x.shape
    views = _views(config.symmetry)
    picks = rng.integers(0, len(views), n)
    if len(views) > 1:
        x = torch.stack([_dihedral(x[i:i + 1], views[int(j)])[0] for i, j in enumerate(picks)])
    lo, hi = config.scale_range
    frac = float(rng.uniform(lo, hi))
    if frac < 0.999:
        crop = max(8, int(round(size * math.sqrt(frac))))
        r0 = rng.integers(0, size - crop + 1, n)
        c0 = rng.integers(0, size - crop + 1, n)
        x = torch.stack([x[i, :, r0[i]:r0[i] + crop, c0[i]:c0[i] + crop] for i in range(n)])
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    gain = torch.from_numpy(rng.uniform(0.8, 1.25, (n, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.08, (n, 1, 1, 1)).astype(np.float32))
    x = (x - 0.5) * gain + 0.5 + bias
    sd = torch.from_numpy(rng.uniform(0.0, 0.04, (n, 1, 1, 1)).astype(np.float32))
    return x + sd * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips / quarter turns of a (N, C, r, c) batch (k = 2: half turn)."""
    x = torch.rot90(x, k % 4, dims=(2, 3))
    return x.flip(3) if k >= 4 else x


@torch.inference_mode()
def _predict(net: ClassifierNet, x: np.ndarray, batch_size: int = 64, *, tta: bool = False,
             symmetry: str = "d8") -> tuple[np.ndarray, np.ndarray]:
    """Logits and pooled features (eval mode, no temperature).

    With ``tta`` the features are averaged over the views of ``symmetry``
    and the logits are those of the averaged features.
    """
    net.eval()
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size])
        if tta:
            f = torch.stack([net.features(_dihedral(xb, k)) for k in _views(symmetry)]).mean(0)
        else:
            f = net.features(xb)
        feats.append(f)
        logits.append(net.head(f))
    if not logits:
        return np.zeros((0, net.head.out_features), np.float32), np.zeros((0, net.num_features), np.float32)
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def _fit_mahalanobis(feats: np.ndarray, labels: np.ndarray, n_classes: int, *,
                     shrinkage: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the shared precision (shrunk covariance, well conditioned)."""
    f = feats.astype(np.float64)
    means = np.zeros((n_classes, f.shape[1]))
    centred = []
    for c in range(n_classes):
        sel = f[labels == c]
        if len(sel):
            means[c] = sel.mean(axis=0)
            centred.append(sel - means[c])
    z = np.concatenate(centred)
    cov = z.T @ z / max(1, len(z) - 1)
    shrink = shrinkage * np.trace(cov) / cov.shape[0] + 1e-6  # ridge: stable with few images per class
    precision = np.linalg.inv(cov + shrink * np.eye(cov.shape[0]))
    return means.astype(np.float32), precision.astype(np.float32)


def _files_hash(paths: Sequence[Path], labels: np.ndarray) -> str:
    """sha256 over the training set: each file's content hash, name and class (an edited image changes it)."""
    from micro_seg.registry import sha256_file

    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        h.update(f"{sha256_file(p)}\t{Path(p).name}\t{int(y)}\n".encode())
    return h.hexdigest()


def _read_for_classifier(path: Path) -> np.ndarray:
    return _read_with_colour(path)[0]


def _read_with_colour(path: Path) -> tuple[np.ndarray, bool]:
    """The analysed pixels and whether they hold colour: 3+ channels that differ beyond the reader's tolerance
    for grey images saved as colour (JPEG noise counts as grey, ``Micrograph.meta["is_grey_rgb"]``)."""
    from micro_seg.io import read_micrograph

    m = read_micrograph(path)
    data = m.analysis_data
    return data, bool(data.ndim == 3 and data.shape[-1] >= 3 and not m.meta.get("is_grey_rgb"))


def _relative(path: Path, folder) -> str:
    """``path`` relative to ``folder`` (as a POSIX path), or absolute when it is not inside it."""
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _diverged(data_dir, what: str, lr: float) -> TrainingDataError:
    """The error of a run whose loss or weights became NaN / infinite (as :mod:`micro_seg.training` raises it)."""
    from micro_seg.training import TrainingDivergedError

    return TrainingDivergedError(f"{data_dir}: training diverged: {what}; no model was saved (try a lower learning "
                                 f"rate, now {lr:g})")


def iter_train_classifier(
    data_dir: str | os.PathLike,
    *,
    config: ClassifierConfig | None = None,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Generator[dict, None, ClassifierTrainResult]:
    """Train a classifier from a folder with one sub-folder per class (generator).

    Yields progress dicts (``{"stage": "load", ...}``, ``{"stage": "epoch",
    "epoch", "epochs", "train_loss", "val_accuracy", "seconds"}``, ...) and
    returns a :class:`ClassifierTrainResult` whose card carries the
    validation confusion matrix, per-class metrics, temperature, ECE before /
    after calibration and the OOD threshold.

    Parameters
    ----------
    data_dir : path
        ``data_dir/<class name>/**/<image>``.
    config : ClassifierConfig, optional
    name : str, optional
        Model name for the card (default: ``data_dir``'s name + ``-classifier``).
    classes : sequence of str, optional
        Class folders to use, in this order (default: all, sorted).
    cancel : callable, optional
        Returns True to stop (raises :class:`~micro_seg.errors.CancelledError`).
    """
    from micro_seg.registry import ModelCard

    config = config or ClassifierConfig()
    if config.epochs < 1 or config.batch_size < 1 or config.input_size < 16:
        raise TrainingDataError(f"epochs ({config.epochs}) and batch_size ({config.batch_size}) must be >= 1, "
                                f"input_size ({config.input_size}) >= 16")
    if config.symmetry not in ("d8", "flips", "none"):
        raise TrainingDataError(f"symmetry must be 'd8', 'flips' or 'none', got {config.symmetry!r}")
    if not 50.0 <= config.ood_percentile < 100.0:
        raise TrainingDataError(f"ood_percentile must be in [50, 100), got {config.ood_percentile}")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    paths, labels, names = load_class_folders(data_dir, classes=classes)
    n_classes = len(names)
    if config.positive_class is not None and config.positive_class not in names:
        raise TrainingDataError(f"positive_class {config.positive_class!r} is not a class folder ({', '.join(names)})")
    if config.target_recall is not None and (config.positive_class is None or not 0.0 < config.target_recall <= 1.0):
        raise TrainingDataError(f"target_recall ({config.target_recall}) needs a positive_class and a value in (0, 1]")
    t0 = time.perf_counter()
    auto = config.in_channels == 0
    if auto and config.arch_kwargs.get("in_channels") is not None:
        raise TrainingDataError("in_channels 0 (auto) cannot be combined with arch_kwargs in_channels")
    def prepared_array(c: int) -> np.ndarray:
        return np.zeros((len(paths), c, config.input_size, config.input_size), np.float32)

    def prepare(pixels: np.ndarray, c: int) -> np.ndarray:
        return prepare_image(pixels, input_size=config.input_size, in_channels=c, normalisation=config.normalisation)

    # auto: grey until the first colour image, then the images before it are prepared again as RGB (one array in
    # memory, not a grey and an RGB copy of every image)
    channels = 1 if auto else config.in_channels
    images = prepared_array(channels)
    colour, grey_rgb = None, []  # a file whose colour channels differ / RGB files whose channels are all equal
    hashes = []
    for i, p in enumerate(paths):
        if cancel and cancel():
            raise CancelledError(f"{data_dir}: training cancelled while reading images")
        try:
            pixels, is_colour = _read_with_colour(p)
            hashes.append(_pixels_hash(pixels))
            if auto and is_colour and colour is None:
                colour, channels = p, 3
                images = prepared_array(3)
                for j in range(i):
                    images[j] = prepare(_read_with_colour(paths[j])[0], 3)
            images[i] = prepare(pixels, channels)
            if auto and pixels.ndim == 3 and pixels.shape[-1] >= 3 and not is_colour:
                grey_rgb.append(p)
        except (ValueError, OSError) as exc:
            why = str(exc).removeprefix(f"{p}: ")  # the reader names the file already
            raise TrainingDataError(f"{p}: cannot use this image for training: {why}") from exc
        if i % 100 == 0:
            yield {"stage": "load", "done": i + 1, "total": len(paths)}
    channel_warnings = []
    if auto:
        config = replace(config, in_channels=3 if colour is not None else 1)
        if colour is None and grey_rgb:
            channel_warnings.append(f"{len(grey_rgb)} RGB image(s) (e.g. {grey_rgb[0]}) have equal red, green and blue "
                                    "channels: training on grey (--channels auto); give --channels rgb to keep three "
                                    "channels")
    channels_note = ({"option": "auto", "in_channels": config.in_channels,
                      "reason": (f"colour channels differ in {colour}" if colour is not None
                                 else "no training image has colour channels that differ")} if auto
                     else {"option": "rgb" if config.in_channels == 3 else "grey" if config.in_channels == 1
                           else str(config.in_channels), "in_channels": config.in_channels})
    train_idx, val_idx = stratified_split(labels, config.val_fraction, seed=config.seed)
    if len(val_idx) == 0:
        raise TrainingDataError(f"{data_dir}: no validation images (val_fraction={config.val_fraction}); "
                                "calibration and the OOD threshold need a validation split")
    if config.positive_class is not None and config.target_recall is not None and not np.any(
            labels[val_idx] == names.index(config.positive_class)):  # found out only after training, by index
        n_pos = int(np.sum(labels == names.index(config.positive_class)))
        raise TrainingDataError(f"{data_dir}: positive class {config.positive_class!r} has no validation image "
                                f"({n_pos} image(s), val_fraction {config.val_fraction}) to choose its recall threshold "
                                "on: give that class more images or a larger --val-fraction")
    split_warnings = channel_warnings + _split_warnings(paths, labels, names, train_idx, val_idx, hashes)
    yield {"stage": "split", "train": len(train_idx), "val": len(val_idx), "seconds": time.perf_counter() - t0,
           "warnings": split_warnings}

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = build_classifier(config.arch, in_channels=config.in_channels, num_classes=n_classes, **config.arch_kwargs)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    y_all = torch.from_numpy(labels)
    counts = np.bincount(labels[train_idx], minlength=n_classes)
    sample_p = (1.0 / counts[labels[train_idx]]) if config.balanced else None
    if sample_p is not None:
        sample_p = sample_p / sample_p.sum()
    history: list[dict] = []
    # Time-budgeted schedule: progress is the larger of steps done and time used, so with
    # max_minutes the warm-up + cosine decay always completes inside the budget.
    t_train = time.perf_counter()
    budget = None
    if config.max_minutes:
        budget = max(1.0, 0.92 * (60.0 * config.max_minutes - (t_train - t0)))  # keep time for calibration
    step_i, progress = 0, 0.0
    for epoch in range(1, config.epochs + 1):
        net.train()
        if sample_p is None:
            order = rng.permutation(train_idx)
        else:
            order = rng.choice(train_idx, size=len(train_idx), replace=True, p=sample_p)
        total, seen = 0.0, 0
        for s in range(steps_per_epoch):
            if cancel and cancel():
                raise CancelledError(f"{data_dir}: training cancelled in epoch {epoch}")
            batch = order[s * config.batch_size:(s + 1) * config.batch_size]
            if len(batch) < 2:
                continue  # BatchNorm needs two samples
            progress = step_i / total_steps
            if budget is not None:
                progress = max(progress, (time.perf_counter() - t_train) / budget)
            if progress >= 1.0:
                break
            for group in opt.param_groups:
                group["lr"] = _lr_at(progress, config.lr)
            xb = torch.from_numpy(images[batch])
            if config.augment:
                xb = _augment_batch(xb, rng, config)
            loss = F.cross_entropy(net(xb), y_all[batch], label_smoothing=config.label_smoothing)
            if not math.isfinite(float(loss.detach())):  # a NaN model would be saved, reporting chance accuracy
                value = "NaN" if math.isnan(float(loss.detach())) else "infinite"
                raise _diverged(data_dir, f"loss is {value} at epoch {epoch}, step {s + 1}", config.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_i += 1
            total += loss.item() * len(batch)
            seen += len(batch)
        if not all(bool(torch.isfinite(v).all()) for v in net.state_dict().values() if v.is_floating_point()):
            raise _diverged(data_dir, f"the weights are no longer finite (NaN or inf) at epoch {epoch}", config.lr)
        logits, _ = _predict(net, images[val_idx])
        val_acc = float((logits.argmax(1) == labels[val_idx]).mean())
        rec = {"stage": "epoch", "epoch": epoch, "epochs": config.epochs, "train_loss": total / max(1, seen),
               "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
        history.append(rec)
        yield rec
        if progress >= 1.0 and epoch < config.epochs:
            yield {"stage": "time_limit", "epoch": epoch, "seconds": time.perf_counter() - t0}
            break

    # calibration, metrics and OOD statistics (eval mode, no augmentation)
    val_logits, val_feats = _predict(net, images[val_idx], tta=config.tta, symmetry=config.symmetry)
    _, train_feats = _predict(net, images[train_idx], tta=config.tta, symmetry=config.symmetry)
    y_val = labels[val_idx]
    temperature = fit_temperature(val_logits, y_val)
    warnings = list(split_warnings)
    at_bound = temperature_at_bound(temperature)
    if at_bound:  # the NLL search ran into its bound: no real optimum
        why = ("no validation error to calibrate on" if at_bound == "low"
               else "the validation predictions are little better than chance")
        warnings.append(f"probability calibration failed: the temperature stopped at its bound {temperature:.3g} "
                        f"({why}; {len(val_idx)} validation images): too few or too clean validation images, so the "
                        "confidences are not calibrated (use them to rank images, not as probabilities); give more "
                        "validation images or a larger --val-fraction")
        yield {"stage": "calibration", "temperature": temperature, "warnings": warnings[len(split_warnings):]}
    p_before = torch.softmax(torch.from_numpy(val_logits), 1).numpy()
    p_after = torch.softmax(torch.from_numpy(val_logits) / temperature, 1).numpy()
    means, precision = _fit_mahalanobis(train_feats, labels[train_idx], n_classes)
    with torch.no_grad():
        net.temperature.fill_(temperature)
        net.ood_means.copy_(torch.from_numpy(means))
        net.ood_precision.copy_(torch.from_numpy(precision))
        val_scores = net.ood_scores(torch.from_numpy(val_feats)).numpy()
    threshold = float(np.percentile(val_scores, config.ood_percentile))
    decision = None
    val_pred = p_after.argmax(1)
    if config.positive_class is not None and config.target_recall is not None:
        decision = choose_recall_threshold(p_after, y_val, names.index(config.positive_class),
                                           target_recall=config.target_recall)
        decision["positive_class"] = config.positive_class
        val_pred = apply_decision(p_after, names.index(config.positive_class), decision["threshold"])
        decision["argmax_metrics"] = classification_metrics(p_after.argmax(1), y_val, names)["per_class"][config.positive_class]
    metrics = classification_metrics(val_pred, y_val, names)
    eps = 1e-12
    metrics.update({
        "warnings": warnings,
        "validation_data": (f"{len(val_idx)} images held out ({config.val_fraction:.0%} of each class, seed "
                            f"{config.seed}) of {Path(data_dir).name}"),
        "ece_before_calibration": expected_calibration_error(p_before, y_val),
        "ece_after_calibration": expected_calibration_error(p_after, y_val),
        "nll_before_calibration": float(-np.log(p_before[np.arange(len(y_val)), y_val] + eps).mean()),
        "nll_after_calibration": float(-np.log(p_after[np.arange(len(y_val)), y_val] + eps).mean()),
        "calibration_note": "temperature fitted on the same validation images (in-sample ECE/NLL after)",
        "train_seconds": time.perf_counter() - t0,
        "epochs_run": len(history),
    })
    card = ModelCard(
        name=name or f"{Path(data_dir).resolve().name}-classifier",
        task="classification",
        arch=config.arch,
        arch_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in config.arch_kwargs.items()},
        in_channels=config.in_channels,
        classes=names,
        normalisation=dict(config.normalisation),
        tile_size=config.input_size,
        description=f"Image classifier ({n_classes} classes) trained by micro-seg train-classifier",
        training_data={
            "description": f"{len(paths)} images in {n_classes} class folders of {Path(data_dir).resolve()}",
            "sha256": _files_hash(paths, labels),
            "n_images": int(len(paths)),
            "per_class": {n: int(c) for n, c in zip(names, np.bincount(labels, minlength=n_classes))},
            # the images the validation metrics, temperature and OOD threshold come from, so they can be checked
            "val_files": [_relative(paths[i], data_dir) for i in val_idx],
        },
        metrics=metrics,
        extra={
            "input_size": config.input_size,
            "tta": bool(config.tta),
            "symmetry": config.symmetry,
            "channels": channels_note,
            "temperature": temperature,
            "temperature_at_bound": at_bound is not None,
            "decision": decision,
            "ood": {"method": "mahalanobis-min-class (tied covariance, pooled last-stage features)",
                    "threshold": threshold, "percentile": config.ood_percentile,
                    "val_median": float(np.median(val_scores))},
            "training": config.as_dict(),
            "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items() if k != "stage"}
                        for h in history],
            "how_to_retrain": f"micro-seg train-classifier {Path(data_dir).resolve()} --out MODEL_DIR "
                              f"--epochs {config.epochs} --input-size {config.input_size} --arch {config.arch} "
                              f"--channels {'rgb' if config.in_channels == 3 else 'grey'}",
        },
    )
    net.eval()
    yield {"stage": "done", "val_accuracy": metrics["accuracy"], "seconds": time.perf_counter() - t0}
    return ClassifierTrainResult(network=net, card=card, history=history)


def train_classifier(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    config: ClassifierConfig | None = None,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> ClassifierTrainResult:
    """Train (see :func:`iter_train_classifier`) and save the model folder to ``out_dir``.

    Examples
    --------
    >>> result = train_classifier("DATA", "MODEL")  # doctest: +SKIP
    >>> result.card.metrics["accuracy"]  # doctest: +SKIP
    0.99
    """
    from micro_seg.registry import save_model

    gen = iter_train_classifier(data_dir, config=config, name=name or (Path(out_dir).name if out_dir else None),
                                classes=classes)
    while True:
        try:
            update = next(gen)
        except StopIteration as stop:
            result: ClassifierTrainResult = stop.value
            break
        if progress:
            progress(update)
    if out_dir is not None:
        result.folder = save_model(out_dir, result.network, result.card, keep_previous=True)
    return result


# --------------------------------------------------------------------------- inference


@dataclass
class LoadedClassifier:
    """A classifier ready to run (card, network in eval mode, folder)."""

    card: Any
    network: ClassifierNet
    folder: Path

    @property
    def input_size(self) -> int:
        """Side of the square network input."""
        return int(self.card.extra.get("input_size", self.card.tile_size))

    @property
    def tta(self) -> bool:
        """Average over the 8 dihedral views at inference (as when calibrated)."""
        return bool(self.card.extra.get("tta", False))

    @property
    def ood_threshold(self) -> float | None:
        """Score above which an image is out of distribution (None: not fitted)."""
        ood = self.card.extra.get("ood") or {}
        value = ood.get("threshold")
        return None if value is None else float(value)


def load_classifier(name_or_path: str | os.PathLike) -> LoadedClassifier:
    """Load a classification model by name or folder, weights verified by sha256.

    Raises
    ------
    ModelError
        Unknown model, a card whose task is not ``classification``, or
        weights that do not fit the architecture.
    WeightsIntegrityError
        Missing, corrupt or tampered weights.
    """
    from micro_seg.registry import load_card, load_verified_network, resolve_model

    folder = resolve_model(name_or_path)
    card = load_card(folder)
    if card.task != "classification":
        raise ModelError(f"{folder}: model {card.name!r} is a {card.task!r} model, not an image classifier")
    net = load_verified_network(folder, card, build_classifier)
    return LoadedClassifier(card=card, network=net, folder=folder)


def _as_classifier(model: Any) -> LoadedClassifier:
    if isinstance(model, LoadedClassifier):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_classifier(model)
    raise ModelError(f"expected a classifier model name, folder or LoadedClassifier, got {type(model).__name__}")


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.analysis_data if hasattr(image, "analysis_data") else image)


def classify_batch(images: Sequence[Any], model: Any, *, batch_size: int = 32) -> list[dict[str, Any]]:
    """Classify several images; see :func:`classify` for the result keys."""
    clf = _as_classifier(model)
    card, net = clf.card, clf.network
    x = np.stack([prepare_image(_pixels(im), input_size=clf.input_size, in_channels=card.in_channels,
                                normalisation=card.normalisation) for im in images]) if len(images) else None
    if x is None:
        return []
    logits, feats = _predict(net, x, batch_size=batch_size, tta=clf.tta,
                             symmetry=str(card.extra.get("symmetry", "d8")))
    t = float(net.temperature.item())
    probs = torch.softmax(torch.from_numpy(logits) / t, 1).numpy()
    with torch.inference_mode():
        scores = net.ood_scores(torch.from_numpy(feats)).numpy()
    thr = clf.ood_threshold
    decision = card.extra.get("decision") or None
    out = []
    for p, s, z in zip(probs, scores, logits):
        k = int(p.argmax())
        if decision and decision.get("positive_class") in card.classes:
            k = int(apply_decision(p[None], card.classes.index(decision["positive_class"]), float(decision["threshold"]))[0])
        out.append({
            "class": card.classes[k],
            "probabilities": {c: float(v) for c, v in zip(card.classes, p)},
            "confidence": float(p[k]),
            "ood_score": float(s),
            "ood_threshold": thr,
            "ood": None if thr is None else bool(s > thr),
            "max_logit": float(z.max()),
            "temperature": t,
            "model": card.name,
        })
    return out


def classify(image: Any, model: Any) -> dict[str, Any]:
    """Classify one image with calibrated probabilities and an OOD score.

    Parameters
    ----------
    image : ndarray or Micrograph
        Any dtype; a Micrograph's SEM data bar is excluded.
    model : str, path or LoadedClassifier

    Returns
    -------
    dict
        ``{"class", "probabilities": {name: p}, "confidence", "ood_score",
        "ood_threshold", "ood", "max_logit", "temperature", "model"}``;
        probabilities are temperature-scaled; ``ood`` is True when
        ``ood_score > ood_threshold``.  A card with a ``decision`` (trained
        with ``positive_class`` / ``target_recall``) predicts the positive
        class whenever its probability reaches the stored threshold.

    Examples
    --------
    >>> classify(image, "my-classifier")["class"]  # doctest: +SKIP
    'scratches'
    """
    return classify_batch([image], model)[0]


def grad_cam(image: Any, model: Any, *, target_class: int | str | None = None) -> np.ndarray:
    """Grad-CAM heat map of a classifier decision, at the image's resolution.

    Parameters
    ----------
    image : ndarray or Micrograph
    model : str, path or LoadedClassifier
    target_class : int or str, optional
        Class to explain (default: the predicted class).

    Returns
    -------
    ndarray of float32, shape (rows, cols)
        Values in [0, 1]; 1 where the evidence for the class is strongest.
        The shape of the analysed pixels: for a Micrograph with an SEM data
        bar, the area above the bar (``analysis_data``), not the whole file.

    Examples
    --------
    >>> cam = grad_cam(image, "my-classifier")  # doctest: +SKIP
    """
    from skimage.transform import resize

    clf = _as_classifier(model)
    net, card = clf.network, clf.card
    pixels = _pixels(image)
    x = torch.from_numpy(prepare_image(pixels, input_size=clf.input_size, in_channels=card.in_channels,
                                       normalisation=card.normalisation))[None]
    net.eval()
    with torch.enable_grad():
        fmap = net.feature_map(x)
        pooled = fmap.mean(dim=(2, 3))
        if net.pool == "avgmax":
            pooled = torch.cat([pooled, fmap.amax(dim=(2, 3))], dim=1)
        logits = net.head(pooled)
        if target_class is None:
            k = int(logits.argmax())
        elif isinstance(target_class, str):
            if target_class not in card.classes:
                raise ModelError(f"class {target_class!r} unknown; classes: {', '.join(card.classes)}")
            k = card.classes.index(target_class)
        else:
            k = int(target_class)
        (grad,) = torch.autograd.grad(logits[0, k], fmap)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * fmap).sum(dim=1))[0].detach().numpy().astype(np.float64)
    top = cam.max()
    cam = cam / top if top > 0 else cam
    rows, cols = pixels.shape[:2]
    return resize(cam, (rows, cols), order=1, anti_aliasing=False).astype(np.float32)

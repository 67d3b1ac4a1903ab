"""Patch sampling and augmentations suited to micrographs.

Micrographs usually have no preferred orientation, so the eight dihedral
transforms (flips and 90-degree rotations) are label-preserving.  Images with a
fixed direction (grinding or polishing marks, rolling direction, scan lines)
keep it with ``rotate90=False``: only the four flips that preserve it.  Contrast,
brightness and gamma vary between instruments and etches; detector noise and
slight defocus vary between sessions; magnification varies a little around the
nominal value (scale jitter).  All randomness comes from a caller-provided
``numpy.random.Generator`` so training is reproducible with a seed.

Images here are network inputs: ``float32`` arrays of shape (C, rows, cols),
already normalised by :func:`micro_seg.preprocess.to_network_input`.  Labels
are integer (rows, cols) maps where 0 = unlabelled.

Examples
--------
>>> import numpy as np
>>> from micro_seg.augment import AugmentConfig, augment_pair
>>> rng = np.random.default_rng(0)
>>> x = np.zeros((1, 32, 32), np.float32); y = np.ones((32, 32), np.int64)
>>> xa, ya = augment_pair(x, y, rng=rng, config=AugmentConfig())
>>> xa.shape, ya.shape
((1, 32, 32), (32, 32))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AugmentConfig", "augment_pair", "sample_patch", "augment_preset", "AUGMENT_PRESETS"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (all on by default).

    Set ``enabled=False`` to switch everything off (e.g. for tests).
    """

    enabled: bool = True
    dihedral: bool = True
    rotate90: bool = True  # False: only flips that keep the image's directions (identity, h/v flips, 180 deg)
    scale_range: tuple[float, float] = (0.8, 1.25)
    p_scale: float = 0.5
    contrast_range: tuple[float, float] = (0.75, 1.33)
    brightness_sd: float = 0.15
    p_intensity: float = 0.8
    gamma_range: tuple[float, float] = (0.7, 1.4)
    p_gamma: float = 0.3
    noise_sd_max: float = 0.12
    p_noise: float = 0.3
    blur_sigma_max: float = 1.2
    p_blur: float = 0.2

    def as_dict(self) -> dict:
        """Plain dict for model cards."""
        return asdict(self)


#: Named augmentation sets (``micro-seg train --augment``): ``full`` (default) varies geometry
#: (flips, rotations, scale) and the photometry (contrast, brightness, gamma, noise, blur);
#: ``geometric`` only the geometry, for subtle low-contrast targets the photometric changes can
#: drown; ``none`` nothing.
AUGMENT_PRESETS = ("full", "geometric", "none")


def augment_preset(name: str, *, keep_orientation: bool = False) -> AugmentConfig:
    """The :class:`AugmentConfig` of a named set; ``keep_orientation`` drops the 90-degree rotations.

    Examples
    --------
    >>> c = augment_preset("geometric", keep_orientation=True)
    >>> c.enabled, c.rotate90, c.p_noise, c.p_scale
    (True, False, 0.0, 0.5)
    >>> augment_preset("none").enabled
    False
    """
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation set {name!r}: choose one of {', '.join(AUGMENT_PRESETS)}")
    if name == "none":
        return AugmentConfig(enabled=False, rotate90=not keep_orientation)
    if name == "geometric":
        return AugmentConfig(rotate90=not keep_orientation, p_intensity=0.0, p_gamma=0.0, p_noise=0.0, p_blur=0.0)
    return AugmentConfig(rotate90=not keep_orientation)


def sample_patch(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    patch_size: int,
    rng: np.random.Generator,
    scale: float = 1.0,
    focus_class: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a random ``patch_size`` square (after scaling by ``scale``).

    The region cut from the source is ``round(patch_size / scale)`` pixels
    wide and resampled to ``patch_size`` (bilinear for the image, nearest for
    labels); images smaller than the region are reflect-padded and the padding
    is labelled 0 (ignored).  With ``focus_class`` the patch is centred near a
    random pixel of that class when the class is present.
    """
    c, rows, cols = image.shape
    src = max(8, int(round(patch_size / scale)))
    if rows < src or cols < src:
        pr, pc = max(0, src - rows), max(0, src - cols)
        image = np.pad(image, ((0, 0), (0, pr), (0, pc)), mode="reflect" if min(rows, cols) > max(pr, pc) else "edge")
        labels = np.pad(labels, ((0, pr), (0, pc)), constant_values=0)
        rows, cols = labels.shape
    r0 = c0 = None
    if focus_class is not None:
        idx = np.flatnonzero(labels.ravel() == focus_class)
        if idx.size:
            pick = idx[rng.integers(idx.size)]
            pr_, pc_ = divmod(int(pick), cols)
            r0 = int(np.clip(pr_ - src // 2 + rng.integers(-src // 4, src // 4 + 1), 0, rows - src))
            c0 = int(np.clip(pc_ - src // 2 + rng.integers(-src // 4, src // 4 + 1), 0, cols - src))
    if r0 is None:
        r0 = int(rng.integers(0, rows - src + 1))
        c0 = int(rng.integers(0, cols - src + 1))
    x = image[:, r0 : r0 + src, c0 : c0 + src]
    y = labels[r0 : r0 + src, c0 : c0 + src]
    if src != patch_size:
        from scipy import ndimage as ndi  # here, not at import: the CLI reads AUGMENT_PRESETS at start-up

        f = patch_size / src
        x = np.stack([ndi.zoom(ch, f, order=1, mode="reflect", grid_mode=True) for ch in x])
        y = ndi.zoom(y, f, order=0, mode="nearest", grid_mode=True)
        x, y = x[:, :patch_size, :patch_size], y[:patch_size, :patch_size]
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def augment_pair(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Apply random dihedral, intensity, gamma, noise and blur augmentations.

    ``image`` is (C, rows, cols) float32 network input, ``labels`` (rows, cols).
    Scale jitter is applied by :func:`sample_patch` (it needs the context).
    """
    if not config.enabled:
        return image, labels
    x, y = image, labels
    if config.dihedral:
        k = int(rng.integers(4)) if config.rotate90 else 2 * int(rng.integers(2))
        flip = bool(rng.integers(2))
        x = np.rot90(x, k, axes=(1, 2))
        y = np.rot90(y, k)
        if flip:
            x, y = x[:, :, ::-1], y[:, ::-1]
    x = np.array(x, dtype=np.float32, copy=True)
    y = np.ascontiguousarray(y)
    if rng.random() < config.p_gamma:
        g = float(np.exp(rng.uniform(np.log(config.gamma_range[0]), np.log(config.gamma_range[1]))))
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:
            x = ((x - lo) / (hi - lo)) ** g * (hi - lo) + lo
    if rng.random() < config.p_intensity:
        a = float(np.exp(rng.uniform(np.log(config.contrast_range[0]), np.log(config.contrast_range[1]))))
        b = float(rng.normal(0.0, config.brightness_sd))
        m = float(x.mean())
        x = (x - m) * a + m + b
    if rng.random() < config.p_blur:
        from scipy import ndimage as ndi

        s = float(rng.uniform(0.3, config.blur_sigma_max))
        x = np.stack([ndi.gaussian_filter(ch, s) for ch in x])
    if rng.random() < config.p_noise:
        s = float(rng.uniform(0.0, config.noise_sd_max))
        x = x + rng.normal(0.0, s, size=x.shape).astype(np.float32)
    return x.astype(np.float32, copy=False), y

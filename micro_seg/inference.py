"""Tiled CPU inference with smooth blending, bounded memory and progress.

:func:`predict_iter` is a generator: it yields ``(done, total)`` tile counts
and returns a :class:`Prediction` (``StopIteration.value``); :func:`predict`
drives it with an optional ``progress`` callback.  Both are cancellable.

How it works
------------
* The image is normalised once with statistics of the whole image
  (:func:`micro_seg.preprocess.normalisation_stats`), so every tile sees the
  same intensity mapping and tiles match the untiled result.
* Tiles of ``tile_size`` (a multiple of the network stride) overlap by
  ``overlap`` pixels (rounded up to a multiple of the stride, so every tile
  starts on the stride grid and cuts the image into the same cells as an
  untiled run).  Each tile's class probabilities are weighted by a
  separable window that is 1 in the middle and falls off as a raised cosine
  across the overlap on every side that has a neighbouring tile, so seams
  vanish; sides on the image border keep weight 1.  The image is
  reflect-padded (tile by tile, never copied whole) at the bottom / right to
  a multiple of the network stride, so any size works, including images
  smaller than one tile.
* Tiles are processed row by row and accumulated in a band only one tile
  high; as soon as rows are final they are written to the outputs (labels,
  uncertainty, and optionally probabilities, float16 for large images).
  Peak memory is the outputs plus one band, not ``classes x rows x cols``
  float32 accumulators.
* ``backend="onnx"`` runs the same fused network through ONNX Runtime
  instead of torch (``pip install "micro-seg[onnx]"``): the network is
  exported in memory from the loaded (sha256-checked) weights, never read
  from an ``.onnx`` file; tiling, blending, TTA and cancelling are unchanged.

Examples
--------
>>> import numpy as np, torch
>>> from micro_seg.nets import build_network
>>> from micro_seg.registry import LoadedModel, ModelCard
>>> card = ModelCard(name="demo", task="semantic", arch="msnet", in_channels=1,
...                  classes=["a", "b"], arch_kwargs={"widths": [4, 8]})
>>> _ = torch.manual_seed(0)
>>> net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]).eval()
>>> model = LoadedModel(card=card, network=net, folder=None)
>>> image = np.random.default_rng(0).random((70, 90))
>>> pred = predict(image, model, tile_size=32, overlap=8)
>>> pred.labels.shape, pred.probabilities.shape, float(pred.uncertainty.max()) <= 1.0
((70, 90), (2, 70, 90), True)
>>> onnx = predict(image, model, tile_size=32, overlap=8, backend="onnx")  # needs micro-seg[onnx]
>>> bool(np.abs(onnx.probabilities - pred.probabilities).max() < 1e-4)
True
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Sequence

import numpy as np

from micro_seg.errors import CancelledError, InvalidImageError, MicroSegError, ModelError

__all__ = ["Prediction", "predict", "predict_iter", "configure_threads", "tile_starts", "blend_window", "BACKENDS",
           "check_backend_available"]

#: Inference backends of :func:`predict_iter`: torch, or ONNX Runtime (the ``onnx`` extra).
BACKENDS = ("torch", "onnx")

#: The fix printed when ``backend="onnx"`` lacks its packages.
ONNX_INSTALL_HINT = 'pip install "micro-seg[onnx]"'

#: Default (largest) tile side: big tiles waste less on overlaps; fully
#: convolutional networks do not care about the tile size they were trained on.
DEFAULT_TILE_SIZE = 1024

#: Rows finalised at a time (bounds the temporaries of the last step).
FLUSH_ROWS = 128

#: Images with more pixels than this get float16 probability / uncertainty outputs.
FLOAT16_ABOVE_PIXELS = 1 << 24

_threads_configured = False


@dataclass
class Prediction:
    """Result of :func:`predict`.

    Attributes
    ----------
    labels : ndarray
        ``(rows, cols)`` uint8 (uint16 with > 255 classes), the most probable
        class per pixel; value i means ``classes[i]``.
    probabilities : ndarray or None
        ``(k, rows, cols)`` probabilities of the classes in
        ``probability_classes`` (all classes by default); float32, or
        float16 for images above 16 megapixels.  None if not kept.
    uncertainty : ndarray or None
        ``(rows, cols)`` normalised entropy of the class probabilities,
        0 (certain) .. 1 (uniform).
    classes : list of str
        Class names of the model, index = class id.
    probability_classes : list of int
        Class ids of the channels in ``probabilities``.
    model : str
        Model name.
    tiles : int
        Number of tiles evaluated (per TTA pass).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    uncertainty: np.ndarray | None
    classes: list[str]
    probability_classes: list[int] = field(default_factory=list)
    model: str = ""
    tiles: int = 0

    def probability(self, class_name_or_id: str | int) -> np.ndarray:
        """Probability map of one class (by name or id), if it was kept."""
        cid = self.classes.index(class_name_or_id) if isinstance(class_name_or_id, str) else int(class_name_or_id)
        if self.probabilities is None or cid not in self.probability_classes:
            raise ModelError(f"probabilities of class {class_name_or_id!r} were not kept; pass keep_probabilities=True")
        return self.probabilities[self.probability_classes.index(cid)]


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads once: ``threads``, env ``MICRO_SEG_THREADS`` or all cores.

    Called automatically by :func:`predict_iter` the first time; an explicit
    call (or a later explicit ``threads``) always applies.

    Examples
    --------
    >>> configure_threads(1)
    1
    """
    global _threads_configured
    import torch

    if threads is None:
        env = os.environ.get("MICRO_SEG_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise InvalidImageError(f"MICRO_SEG_THREADS={env!r} is not an integer") from None
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    _threads_configured = True
    return threads


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with >= ``overlap``.

    The last tile is aligned to the end, so every tile lies inside
    ``[0, length)`` when ``length >= tile``.

    Examples
    --------
    >>> tile_starts(300, 128, 32)
    [0, 96, 172]
    >>> tile_starts(50, 128, 32)
    [0]
    """
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    n = math.ceil((length - tile) / step) + 1
    starts = [min(i * step, length - tile) for i in range(n)]
    return sorted(set(starts))


def blend_window(size: int, overlap: int, *, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blending weights: 1 inside, raised-cosine ramps over ``overlap`` at tapered ends.

    Weights are strictly positive so a pixel covered by one tile only keeps it.

    Examples
    --------
    >>> w = blend_window(8, 4, taper_start=True, taper_end=False)
    >>> [round(float(v), 3) for v in w]
    [0.038, 0.309, 0.691, 0.962, 1.0, 1.0, 1.0, 1.0]
    """
    w = np.ones(size, dtype=np.float32)
    ramp_len = min(overlap, size // 2)
    if ramp_len > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_len) + 0.5) / ramp_len).astype(np.float32) ** 2
        if taper_start:
            w[:ramp_len] = ramp
        if taper_end:
            w[size - ramp_len :] = ramp[::-1]
    return np.maximum(w, 1e-4)


def _axis_tile(length: int, tile: int, overlap: int, stride: int) -> int:
    """Tile side <= ``tile`` that covers ``length`` with the fewest, evenly spread tiles."""
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, _round_up(math.ceil((length + (n - 1) * overlap) / n), stride))


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event) or hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _pixels(value: Any, name: str) -> int:
    """``int(value)`` of a tile size / overlap / batch size, or an InvalidImageError naming it (not int()'s bare
    'invalid literal' / 'cannot convert float NaN')."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidImageError(f"{name}={value!r}: not a whole number") from None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _as_model(model: Any):
    from micro_seg.registry import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise ModelError(f"model must be a model name, folder or LoadedModel, got {type(model).__name__}")


def _as_image(image: Any) -> np.ndarray:
    from micro_seg.io import analysis_pixels

    image = analysis_pixels(image)  # released pixels were 'image is empty (0 x 512 pixels)'
    from micro_seg.measure._units import as_input_array

    image = as_input_array(image, "image")  # a masked array's mask would be dropped: the masked pixels segmented
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise InvalidImageError(f"image of shape {image.shape} is not grey (rows, cols) or colour (rows, cols, 1..4 "
                                "channels: grey, grey + alpha, RGB, RGBA)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"image is empty ({image.shape[0]} x {image.shape[1]} pixels)")
    return image


def count_nonfinite(image: np.ndarray) -> int:
    """NaN / inf values of a float image (0 for integer images), counted a block of rows at a time
    (:func:`~micro_seg.measure.labels.row_blocks`: no image-sized mask).

    >>> count_nonfinite(np.array([[1.0, np.nan], [np.inf, 2.0]])), count_nonfinite(np.zeros((2, 2), np.uint8))
    (2, 0)
    """
    from micro_seg.measure.labels import row_blocks

    image = np.asarray(image)
    if image.dtype.kind not in "fc" or image.ndim == 0:
        return 0
    return sum(int(np.count_nonzero(~np.isfinite(image[rows]))) for rows in row_blocks(image))


def _tta_forward(net, x, tta: bool):
    import torch

    probs = torch.softmax(net(x), dim=1)
    if not tta:
        return probs
    for dims in ((3,), (2,), (2, 3)):
        probs += torch.flip(torch.softmax(net(torch.flip(x, dims)), dim=1), dims)
    return probs / 4.0


_FUSED_CACHE: "weakref.WeakKeyDictionary[Any, tuple[tuple, Any]]" = weakref.WeakKeyDictionary()


def _weights_version(net: Any) -> tuple:
    """The version counters of ``net``'s parameters and buffers: they change when it is changed in place."""
    return tuple(p._version for p in net.parameters()), tuple(b._version for b in net.buffers())


def _fused_network(net: Any, channels_last: bool) -> Any:
    """The inference copy of ``net`` (BatchNorm folded into the convolutions), cached per network.

    Building it deep-copies the network (~0.1 s), which matters when a batch
    predicts many small images with one model. The cache is keyed on the
    network object and on the version counters of its parameters and
    buffers, so a network changed in place (fine-tuning) gets a fresh copy.
    """
    import torch

    from micro_seg.nets import fuse_for_inference

    key = (bool(channels_last), _weights_version(net))
    hit = _FUSED_CACHE.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    fused = fuse_for_inference(net)
    if channels_last:
        fused.to(memory_format=torch.channels_last)
    _FUSED_CACHE[net] = (key, fused)
    return fused


_ORT_CACHE: "weakref.WeakKeyDictionary[Any, tuple[tuple, Any]]" = weakref.WeakKeyDictionary()


def _check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ModelError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return str(backend)


def _import_onnxruntime() -> Any:
    """The onnxruntime module, after checking that onnx (which the TorchScript exporter needs) imports too."""
    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it to build the model proto)
        import onnxruntime as ort
    except ImportError as exc:
        raise MicroSegError(f"backend 'onnx' needs onnxruntime and onnx ({exc.name or exc} is not installed): "
                            f"{ONNX_INSTALL_HINT}") from exc
    return ort


def check_backend_available(backend: Any) -> str:
    """``backend`` checked by name and, for ``"onnx"``, that onnxruntime and onnx are installed.

    For callers that start many predictions (``micro-seg batch``): they fail
    once, before the first image, instead of once per image.

    Raises
    ------
    ModelError
        Unknown backend.
    MicroSegError
        ``"onnx"`` without onnxruntime / onnx.
    """
    backend = _check_backend(backend)
    if backend == "onnx":
        _import_onnxruntime()
    return backend


class _OnnxNetwork:
    """An ONNX Runtime session called like the torch network: float32 NCHW tensor in, logits tensor out."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, x: Any) -> Any:
        import torch

        xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": xn})[0])


def _onnx_network(net: Any, *, in_channels: int, stride: int, name: str = "") -> _OnnxNetwork:
    """ONNX Runtime session of ``net``'s fused inference copy, exported in memory; cached per network.

    The cache is keyed like :func:`_fused_network` (network object, version
    counters of its parameters and buffers) plus torch's thread count, which
    becomes the session's intra-op thread count.
    """
    ort = _import_onnxruntime()
    import io
    import warnings

    import torch

    from micro_seg.nets import fuse_for_inference

    threads = max(1, torch.get_num_threads())
    key = (threads, _weights_version(net))
    hit = _ORT_CACHE.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    fused = fuse_for_inference(net).float()  # contiguous layout; not cached: the session holds the weights
    side = max(2, 64 // stride) * stride
    dummy = torch.zeros(1, int(in_channels), side, side)
    axes = {0: "batch", 2: "rows", 3: "cols"}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(fused, (dummy,), buf, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": axes, "y": axes}, dynamo=False, opset_version=17)
    except Exception as exc:  # an architecture the exporter cannot trace
        raise ModelError(f"model {name!r}: cannot export its network to ONNX ({type(exc).__name__}: {exc}); "
                         "use backend 'torch'") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: spinning threads would slow torch's (and the blending's) work in between
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    wrapped = _OnnxNetwork(session)
    _ORT_CACHE[net] = (key, wrapped)
    return wrapped


def predict_iter(
    image: Any,
    model: Any,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    tta: bool = False,
    batch_size: int | None = None,
    keep_probabilities: bool | Sequence[int] = True,
    keep_uncertainty: bool = True,
    probability_dtype: Any = None,
    channels_last: bool | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    backend: str = "torch",
    _native: bool = False,
) -> Generator[tuple[int, int], None, Prediction]:
    """Segment ``image`` tile by tile; yield ``(done, total)``, return a :class:`Prediction`.

    Parameters
    ----------
    image : ndarray or Micrograph
        2-D grey or ``(rows, cols, 1..4)`` colour image of any dtype; for a
        :class:`~micro_seg.io.Micrograph` the ``analysis_data`` (without the
        SEM data bar) is used.
    model : LoadedModel or str or path
        A loaded model, or a model name / folder for
        :func:`micro_seg.registry.load_model`.
    tile_size : int, optional
        Largest tile side in pixels (rounded up to the network stride);
        default the card's ``tile_size`` or 1024, whichever is larger.  Each
        axis is covered by the fewest tiles of at most this size, spread
        evenly (so a 2048-pixel side takes 3 tiles of 768, not 3 of 1024).
    overlap : int, optional
        Overlap between neighbouring tiles; default ``tile_size // 16``
        (at least 32 pixels, at most half a tile); rounded up to a multiple
        of the network stride.
    tta : bool
        Test-time augmentation: average over the 4 flips (4x slower).
    batch_size : int, optional
        Tiles per forward pass; default so a batch holds about 1 megapixel.
    keep_probabilities : bool or sequence of int or str
        Keep all class probabilities (True), none (False) or only the
        listed class ids or names (e.g. ``[1]`` or ``["boundary"]`` for a
        boundary channel).
    keep_uncertainty : bool
        Compute the normalised-entropy uncertainty map.
    probability_dtype : dtype, optional
        dtype of the probability / uncertainty outputs; default float32,
        float16 above 16 megapixels.
    channels_last : bool, optional
        Run the network in channels-last memory format (default: yes for
        micro-seg's own msnet and ensembles of it, which it speeds up; no for
        smp models; see :func:`micro_seg.nets.prefers_channels_last`).
        Ignored by the onnx backend.
    cancel : callable or threading.Event, optional
        Checked before every batch; when it is set / returns True the
        generator raises :class:`~micro_seg.errors.CancelledError`.
    backend : {"torch", "onnx"}
        Run the network with torch (default) or ONNX Runtime.  ``"onnx"``
        exports the loaded network to ONNX in memory (once per network and
        thread count, cached) and needs ``pip install "micro-seg[onnx]"``;
        its probabilities match torch's to float rounding (~1e-5).

    A card whose ``input_scale`` is not 1 gets the image resized by that
    factor (:func:`micro_seg.preprocess.rescale_image`, as in training); the
    tiles (``tile_size``, ``overlap``) then refer to the resized image, and the
    class probabilities are resampled bilinearly back to the image's own
    pixel grid before labels and uncertainty are taken from them.

    Yields
    ------
    (done, total) : tuple of int
        Tiles finished so far and in all (times the TTA passes count once).

    Returns
    -------
    Prediction

    Raises
    ------
    CancelledError
        When ``cancel`` fired.
    InvalidImageError, ModelError
        Bad image or model, or an unknown ``backend``.
    MicroSegError
        ``backend="onnx"`` without onnxruntime / onnx installed.

    See the module's example (``predict`` is this generator run to the end).
    """
    import torch

    from micro_seg.nets import prefers_channels_last, required_stride
    from micro_seg.preprocess import normalisation_stats, to_network_input

    backend = _check_backend(backend)
    loaded = _as_model(model)
    card, net = loaded.card, loaded.network
    img = _as_image(image)
    rows, cols = img.shape[:2]
    num_classes = card.num_classes
    if not _threads_configured:
        configure_threads()
    stride = required_stride(net)
    if tile_size is None:
        tile_size = max(int(card.tile_size or 0), DEFAULT_TILE_SIZE)
    tile_size = _pixels(tile_size, "tile_size")
    tile = _round_up(tile_size, stride)
    if tile < stride or tile_size < 1:
        raise InvalidImageError(f"tile_size {tile_size} is smaller than the network stride {stride}")
    if overlap is None:
        overlap = min(max(32, tile // 16), tile // 2)
    overlap = _pixels(overlap, "overlap")
    if overlap < 0 or overlap >= tile:
        raise InvalidImageError(f"overlap {overlap} must be >= 0 and smaller than the tile size {tile}")
    # tiles start on the network's stride grid (tile sides are multiples of it, so the overlap is rounded up to
    # one): each tile cuts the image into the same pooling cells as an untiled run does
    overlap = min(_round_up(overlap, stride), tile - stride)
    if keep_probabilities is True:
        keep = list(range(num_classes))
    elif keep_probabilities is False or keep_probabilities is None:
        keep = []
    else:  # class ids or names ("boundary"); one of them alone
        wanted = [keep_probabilities] if isinstance(keep_probabilities, (str, int, np.integer)) else keep_probabilities
        try:
            keep = [list(card.classes).index(c) if isinstance(c, str) and c in card.classes else int(c) for c in wanted]
        except (TypeError, ValueError):
            raise ModelError(f"keep_probabilities={keep_probabilities!r}: not True, False or class ids / names of the "
                             f"model's classes {list(card.classes)}") from None
        bad = [c for c in keep if not 0 <= c < num_classes]
        if bad:
            raise ModelError(f"keep_probabilities: class ids {bad} not in 0..{num_classes - 1}")
    if probability_dtype is None:
        probability_dtype = np.float16 if rows * cols > FLOAT16_ABOVE_PIXELS else np.float32
    try:
        as_dtype = np.dtype(probability_dtype)
    except TypeError:
        as_dtype = None
    if as_dtype is None or as_dtype.kind != "f":  # 0..1 stored in an integer type is 0 (or 1) everywhere, silently
        raise ModelError(f"probability_dtype={probability_dtype!r}: must be a floating-point type (float16, float32, "
                         "float64): probabilities and uncertainty lie between 0 and 1")
    probability_dtype = as_dtype
    label_dtype = np.uint8 if num_classes <= 256 else np.uint16
    scale = float(getattr(card, "input_scale", 1.0) or 1.0)
    if scale != 1.0 and not _native:
        from micro_seg.preprocess import rescale_image

        small = yield from predict_iter(
            rescale_image(img, scale), loaded, tile_size=tile_size, overlap=overlap, tta=tta, batch_size=batch_size,
            keep_probabilities=True, keep_uncertainty=False, probability_dtype=np.float32,
            channels_last=channels_last, cancel=cancel, backend=backend, _native=True,
        )
        return _resample_prediction(small, (rows, cols), keep=keep, keep_uncertainty=keep_uncertainty,
                                    probability_dtype=probability_dtype, label_dtype=label_dtype)
    # tiles (at the network's own scale) cover the image reflect-padded to a multiple of the stride, so a
    # tiled and an untiled run see the same pixels at the bottom/right edges
    rows_p, cols_p = _round_up(rows, stride), _round_up(cols, stride)
    th, tw = _axis_tile(rows_p, tile, overlap, stride), _axis_tile(cols_p, tile, overlap, stride)
    ys = tile_starts(rows_p, th, overlap)
    xs = tile_starts(cols_p, tw, overlap)
    positions = [(y, x) for y in ys for x in xs]
    total = len(positions)
    if batch_size is None:
        batch_size = max(1, (1 << 20) // (th * tw))
    batch_size = max(1, _pixels(batch_size, "batch_size"))

    labels = np.empty((rows, cols), dtype=label_dtype)
    probs_out = np.empty((len(keep), rows, cols), dtype=probability_dtype) if keep else None
    unc_out = np.empty((rows, cols), dtype=probability_dtype) if keep_uncertainty else None

    stats = normalisation_stats(img, in_channels=card.in_channels, normalisation=card.normalisation)
    if backend == "onnx":
        channels_last = False  # ONNX Runtime takes contiguous NCHW arrays
        net = _onnx_network(net, in_channels=card.in_channels, stride=stride, name=card.name)
    else:
        if channels_last is None:
            channels_last = prefers_channels_last(net)
        net = _fused_network(net, channels_last)  # a private copy: BN folded into the convs
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    win_y = {y: blend_window(th, overlap, taper_start=y > 0, taper_end=y + th < rows_p) for y in ys}
    win_x = {x: blend_window(tw, overlap, taper_start=x > 0, taper_end=x + tw < cols_p) for x in xs}

    # band accumulators cover image rows [band_y, band_y + th)
    band_y = ys[0]
    acc = np.zeros((num_classes, th, cols), dtype=np.float32)
    wsum = np.zeros((th, cols), dtype=np.float32)

    def flush(upto: int) -> None:
        """Finalise image rows [band_y, upto) from the band accumulators."""
        for r0 in range(0, upto - band_y, FLUSH_ROWS):  # in chunks: bounded temporaries
            r1 = min(upto - band_y, r0 + FLUSH_ROWS)
            p = acc[:, r0:r1] / wsum[None, r0:r1]
            sl = slice(band_y + r0, band_y + r1)
            labels[sl] = np.argmax(p, axis=0).astype(label_dtype)
            if probs_out is not None:
                probs_out[:, sl] = p[keep]
            if unc_out is not None:
                unc_out[sl] = _normalised_entropy(p)

    def shift_band(new_y: int) -> None:
        nonlocal band_y
        n = new_y - band_y
        acc[:, : th - n] = acc[:, n:]
        acc[:, th - n :] = 0.0
        wsum[: th - n] = wsum[n:]
        wsum[th - n :] = 0.0
        band_y = new_y

    def read_tile(y: int, x: int) -> np.ndarray:
        part = img[y : y + th, x : x + tw]
        t = to_network_input(part, in_channels=card.in_channels, stats=stats)
        ph, pw = th - t.shape[1], tw - t.shape[2]
        if ph or pw:
            t = np.pad(t, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(t.shape[1:]) > 1 else "edge")
        return t

    done = 0
    yield (0, total)
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            if _is_cancelled(cancel):
                raise CancelledError("segmentation cancelled by the user")
            batch_pos = positions[start : start + batch_size]
            x = torch.from_numpy(np.stack([read_tile(y, x0) for y, x0 in batch_pos]))
            x = x.contiguous(memory_format=memory_format)
            out = _tta_forward(net, x, tta).float().contiguous().numpy()
            if out.shape[1] != num_classes or out.shape[2:] != (th, tw):
                raise ModelError(
                    f"model {card.name!r}: network output {out.shape[1:]} does not match the card's "
                    f"{num_classes} classes at tile size {th}x{tw}"
                )
            for (y, x0), prob in zip(batch_pos, out):
                if y != band_y:  # a new tile row starts: rows above it are final
                    flush(y)
                    shift_band(y)
                vh, vw = min(th, rows - y), min(tw, cols - x0)
                w = np.outer(win_y[y][:vh], win_x[x0][:vw])
                acc[:, :vh, x0 : x0 + vw] += prob[:, :vh, :vw] * w
                wsum[:vh, x0 : x0 + vw] += w
            done += len(batch_pos)
            yield (done, total)
    flush(min(rows, band_y + th))
    return Prediction(
        labels=labels,
        probabilities=probs_out,
        uncertainty=unc_out,
        classes=list(card.classes),
        probability_classes=keep,
        model=card.name,
        tiles=total,
    )


def _normalised_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of class probabilities ``p`` (classes first) divided by log(classes), in [0, 1]."""
    if p.shape[0] < 2:
        return np.zeros(p.shape[1:], np.float32)
    ent = -np.sum(p * np.log(np.clip(p, 1e-12, None)), axis=0) / math.log(p.shape[0])
    return np.clip(ent, 0.0, 1.0)


def _linear_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resampling of an axis of ``n_in`` samples to ``n_out`` (pixel centres aligned, edges clamped)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)[None, :]


def _resample_prediction(small: Prediction, shape: tuple[int, int], *, keep: list[int], keep_uncertainty: bool,
                         probability_dtype: Any, label_dtype: Any) -> Prediction:
    """Bring a prediction made on a resized image back to ``shape``: probabilities bilinearly, row block by block."""
    rows, cols = shape
    probs = small.probabilities  # (classes, r, c) float32
    y0, y1, wy = _linear_weights(rows, probs.shape[1])
    x0, x1, wx = _linear_weights(cols, probs.shape[2])
    labels = np.empty((rows, cols), dtype=label_dtype)
    probs_out = np.empty((len(keep), rows, cols), dtype=probability_dtype) if keep else None
    unc_out = np.empty((rows, cols), dtype=probability_dtype) if keep_uncertainty else None
    for r0 in range(0, rows, FLUSH_ROWS):
        r1 = min(rows, r0 + FLUSH_ROWS)
        a, b = probs[:, y0[r0:r1]], probs[:, y1[r0:r1]]
        band = a + (b - a) * wy[0, r0:r1, None]
        left = band[:, :, x0]
        p = left + (band[:, :, x1] - left) * wx[None]
        labels[r0:r1] = np.argmax(p, axis=0).astype(label_dtype)
        if probs_out is not None:
            probs_out[:, r0:r1] = p[keep]
        if unc_out is not None:
            unc_out[r0:r1] = _normalised_entropy(p)
    return Prediction(labels=labels, probabilities=probs_out, uncertainty=unc_out, classes=list(small.classes),
                      probability_classes=keep, model=small.model, tiles=small.tiles)


def predict(
    image: Any,
    model: Any,
    *,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    **kwargs: Any,
) -> Prediction:
    """Segment ``image``; call ``progress(done, total)`` per batch of tiles.

    Same options as :func:`predict_iter`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from micro_seg.nets import build_network
    >>> from micro_seg.registry import LoadedModel, ModelCard
    >>> card = ModelCard(name="demo", task="semantic", arch="msnet", in_channels=3,
    ...                  classes=["a", "b", "c"], arch_kwargs={"widths": [4, 8]})
    >>> net = build_network("msnet", in_channels=3, num_classes=3, widths=[4, 8])
    >>> seen = []
    >>> pred = predict(np.zeros((40, 50), np.uint16), LoadedModel(card, net, None),
    ...                tile_size=32, overlap=8, progress=lambda d, t: seen.append((d, t)))
    >>> seen[-1], pred.labels.dtype
    ((4, 4), dtype('uint8'))
    """
    gen = predict_iter(image, model, cancel=cancel, **kwargs)
    try:
        while True:
            done, total = next(gen)
            if progress is not None:
                progress(done, total)
    except StopIteration as stop:
        return stop.value

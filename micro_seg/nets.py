"""Segmentation network architectures known to micro-seg.

One function, :func:`build_network`, maps an architecture name (as written in
a model card) to a freshly initialised :class:`torch.nn.Module` that takes a
``(N, in_channels, rows, cols)`` float tensor and returns ``(N, num_classes,
rows, cols)`` logits.  Weights are never downloaded: smp encoders are built
with ``encoder_weights=None``; trained weights come from the model folder.

Architectures
-------------
``"msnet"``
    micro-seg's own compact U-Net for CPU throughput: a thin full-resolution
    stem, early stride-2 downsampling, plain 3x3 conv + BN + ReLU blocks,
    ``depth`` levels, bilinear upsampling with skip concatenation and logits
    at full resolution.  Keyword arguments: ``widths`` (channels per level,
    first = full-resolution width), ``blocks`` (convs per encoder level).
``"smp-unet-resnet18"``
    ``segmentation_models_pytorch.Unet("resnet18", encoder_weights=None)``,
    the reference baseline.
``"smp:<Arch>:<encoder>"``
    any segmentation-models-pytorch architecture / encoder pair, e.g.
    ``"smp:UnetPlusPlus:resnet34"``; extra keyword arguments go to the smp
    constructor.
``"ensemble"``
    several trained networks run side by side (:class:`Ensemble`), their
    class probabilities averaged (plus per-class decision offsets saved with
    the weights).  Keyword argument: ``members``, a list of
    ``{"arch": ..., "arch_kwargs": {...}}``.  Ensemble models are made from
    trained models by :func:`micro_seg.registry.combine_models`
    (``micro-seg models ensemble``).

Examples
--------
>>> import torch
>>> from micro_seg.nets import build_network, required_stride
>>> net = build_network("msnet", in_channels=1, num_classes=2).eval()
>>> with torch.inference_mode():
...     out = net(torch.zeros(1, 1, 64, 96))
>>> tuple(out.shape), required_stride(net)
((1, 2, 64, 96), 16)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from micro_seg.errors import ModelError

__all__ = [
    "build_network",
    "available_architectures",
    "required_stride",
    "prefers_channels_last",
    "count_gflops_per_mp",
    "resolved_arch_kwargs",
    "fuse_for_inference",
    "MSNet",
    "Ensemble",
]

#: Preset variants of :class:`MSNet` usable as architecture names.
MSNET_PRESETS: dict[str, dict[str, Any]] = {
    "msnet": {"widths": (8, 16, 32, 64, 128), "blocks": (1, 1, 2, 2, 2)},
    "msnet-s": {"widths": (8, 16, 32, 48, 64), "blocks": (1, 1, 1, 2, 2)},
    "msnet-l": {"widths": (16, 32, 64, 96, 128), "blocks": (1, 1, 2, 2, 2)},
}


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MSNet(nn.Module):
    """Compact U-Net for fast CPU segmentation.

    Level 0 runs at full resolution with ``widths[0]`` channels; each further
    level halves rows and cols (stride-2 conv) and uses ``widths[i]``
    channels with ``blocks[i]`` 3x3 convs.  The decoder upsamples bilinearly,
    concatenates the skip connection and fuses with one 3x3 conv per level.
    The network's stride (the size every input side should be a multiple
    of) is ``2 ** (len(widths) - 1)``.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and output classes (logits).
    widths : sequence of int
        Channels per level, full resolution first.
    blocks : sequence of int, optional
        3x3 convs per encoder level (the stride-2 conv counts as the first).
        Default: 1 for the first two levels, 2 for deeper ones (the preset's
        value when ``widths`` has the preset's length).

    Examples
    --------
    >>> import torch
    >>> net = MSNet(3, 4, widths=(8, 16, 24), blocks=(1, 1, 1)).eval()
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (8, 16, 32, 64, 128),
        blocks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ModelError(f"msnet: widths must list >= 2 positive channel counts, got {widths}")
        if blocks is None:
            blocks = [1 if i < 2 else 2 for i in range(len(widths))]
        blocks = [int(b) for b in blocks]
        if len(blocks) != len(widths) or min(blocks) < 1:
            raise ModelError(f"msnet: blocks {blocks} must have one entry >= 1 per width {widths}")
        self.widths = widths
        self.stride = 2 ** (len(widths) - 1)
        enc = []
        prev = in_channels
        for level, (w, b) in enumerate(zip(widths, blocks)):
            layers = [_conv_bn_relu(prev, w, stride=1 if level == 0 else 2)]
            layers += [_conv_bn_relu(w, w) for _ in range(b - 1)]
            enc.append(nn.Sequential(*layers))
            prev = w
        self.encoder = nn.ModuleList(enc)
        dec = []
        for level in range(len(widths) - 2, -1, -1):
            dec.append(_conv_bn_relu(prev + widths[level], widths[level]))
            prev = widths[level]
        self.decoder = nn.ModuleList(dec)
        self.head = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()
        for fuse in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([x, skip], dim=1))
        return self.head(x)


class Ensemble(nn.Module):
    """Networks run side by side; the output is the log of their mean class probabilities.

    ``softmax(ensemble(x))`` is therefore the average of the members'
    ``softmax(member(x))``, so everything downstream (tiled inference,
    test-time augmentation, entropy, post-processing) treats an ensemble as
    one network.  Averaging independently trained networks lowers the variance
    between training runs, at the cost of one forward pass per member.

    ``offsets`` (a buffer saved with the weights, zeros until calibrated) are
    per-class decision offsets added to the output, as a single network folds
    its validation-chosen offsets into its last bias: the members' average is
    not calibrated by the members' own offsets (where two members disagree
    with certainty their mean is exactly 0.5, and the argmax of a tie is the
    first class), so :func:`micro_seg.registry.combine_models` can choose the
    ensemble's own on images its members held out.

    Examples
    --------
    >>> a = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]).eval()
    >>> b = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8, 16]).eval()
    >>> ens, x = Ensemble([a, b], num_classes=2).eval(), torch.randn(1, 1, 32, 32)
    >>> mean = (a(x).softmax(1) + b(x).softmax(1)) / 2
    >>> bool(torch.allclose(ens(x).softmax(1), mean, atol=1e-6)), ens.stride
    (True, 4)
    """

    def __init__(self, members: Sequence[nn.Module], num_classes: int) -> None:
        super().__init__()
        if not members:
            raise ModelError("ensemble: needs at least one member network")
        self.members = nn.ModuleList(members)
        self.register_buffer("offsets", torch.zeros(int(num_classes)))
        stride = 1
        for m in self.members:
            stride = math.lcm(stride, required_stride(m))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        probs = torch.softmax(self.members[0](x), dim=1)
        for member in self.members[1:]:
            probs = probs + torch.softmax(member(x), dim=1)
        out = torch.log((probs / len(self.members)).clamp_min(torch.finfo(probs.dtype).tiny))
        return out + self.offsets.to(out.dtype).view(1, -1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D102
        # ensembles written before the offsets existed: no offsets (zeros)
        state_dict.setdefault(prefix + "offsets", torch.zeros_like(self.offsets))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _ensemble_members(arch_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``members`` option of an ensemble, checked: a non-empty list of ``{"arch", "arch_kwargs"}``."""
    members = arch_kwargs.get("members")
    extra = sorted(set(arch_kwargs) - {"members"})
    if extra:
        raise ModelError(f"ensemble: unknown options {extra} (only 'members')")
    if not isinstance(members, (list, tuple)) or not members:
        raise ModelError("ensemble: 'members' must be a non-empty list of {'arch': ..., 'arch_kwargs': {...}}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("arch"), str):
            raise ModelError(f"ensemble: member {i} must be a mapping with an 'arch' name, got {m!r}")
        if m["arch"] == "ensemble":
            raise ModelError(f"ensemble: member {i} is itself an ensemble; list its members instead")
        out.append({"arch": m["arch"], "arch_kwargs": dict(m.get("arch_kwargs") or {})})
    return out


def available_architectures() -> list[str]:
    """Names accepted by :func:`build_network` (``smp:`` names are open-ended).

    Examples
    --------
    >>> "msnet" in available_architectures()
    True
    """
    return sorted(MSNET_PRESETS) + ["smp-unet-resnet18", "smp:<Arch>:<encoder>", "ensemble"]


def resolved_arch_kwargs(arch: str, arch_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full architecture options of ``arch`` (preset values filled in).

    Model cards store these, so a model does not depend on preset defaults.

    Examples
    --------
    >>> resolved_arch_kwargs("msnet", {"widths": [4, 8, 16]})
    {'widths': [4, 8, 16], 'blocks': [1, 1, 2]}
    """
    arch_kwargs = dict(arch_kwargs or {})
    if arch == "ensemble":
        return {"members": [{"arch": m["arch"], "arch_kwargs": resolved_arch_kwargs(m["arch"], m["arch_kwargs"])}
                            for m in _ensemble_members(arch_kwargs)]}
    if arch not in MSNET_PRESETS:
        return arch_kwargs
    kwargs = {k: list(v) for k, v in MSNET_PRESETS[arch].items()}
    kwargs.update(arch_kwargs)
    if "widths" in arch_kwargs and "blocks" not in arch_kwargs and len(kwargs["blocks"]) != len(kwargs["widths"]):
        kwargs["blocks"] = [1 if i < 2 else 2 for i in range(len(kwargs["widths"]))]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def build_network(arch: str, *, in_channels: int, num_classes: int, **arch_kwargs: Any) -> nn.Module:
    """Build a randomly initialised segmentation network by name.

    Parameters
    ----------
    arch : str
        Architecture name, see the module docstring and
        :func:`available_architectures`.
    in_channels, num_classes : int
        Input channels (1 grey, 3 RGB) and output classes.
    **arch_kwargs
        Architecture options (``widths``/``blocks`` for msnet; smp keyword
        arguments for smp models).

    Returns
    -------
    torch.nn.Module
        Module mapping ``(N, in_channels, H, W)`` to ``(N, num_classes, H, W)``
        logits.  Its ``stride`` attribute gives the side multiple inputs must
        be padded to (see :func:`required_stride`).

    Raises
    ------
    ModelError
        Unknown architecture or invalid options (the message lists names).

    Examples
    --------
    >>> net = build_network("msnet", in_channels=3, num_classes=3, widths=(8, 16, 24))
    >>> net.stride
    4
    """
    if in_channels < 1 or num_classes < 1:
        raise ModelError(f"{arch}: in_channels ({in_channels}) and num_classes ({num_classes}) must be >= 1")
    if arch in MSNET_PRESETS:
        kwargs = resolved_arch_kwargs(arch, arch_kwargs)
        try:
            return MSNet(in_channels, num_classes, **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:  # an unknown option, widths: abc, widths: [-1]
            raise ModelError(f"{arch}: invalid architecture options {arch_kwargs}: {exc}") from exc
    if arch == "ensemble":
        return Ensemble([build_network(m["arch"], in_channels=in_channels, num_classes=num_classes, **m["arch_kwargs"])
                         for m in _ensemble_members(arch_kwargs)], num_classes=num_classes)
    if arch == "smp-unet-resnet18":
        return _build_smp("Unet", "resnet18", in_channels, num_classes, arch_kwargs)
    if arch.startswith("smp:"):
        parts = arch.split(":")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ModelError(f"{arch}: smp architectures are written 'smp:<Arch>:<encoder>', e.g. 'smp:Unet:resnet34'")
        return _build_smp(parts[1], parts[2], in_channels, num_classes, arch_kwargs)
    raise ModelError(f"unknown architecture {arch!r}; available: {', '.join(available_architectures())}")


def _build_smp(arch: str, encoder: str, in_channels: int, num_classes: int, kwargs: dict) -> nn.Module:
    import segmentation_models_pytorch as smp

    cls = getattr(smp, arch, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        names = [n for n in dir(smp) if isinstance(getattr(smp, n), type) and issubclass(getattr(smp, n), nn.Module)]
        raise ModelError(f"smp:{arch}:{encoder}: unknown smp architecture {arch!r}; available: {', '.join(sorted(names))}")
    kwargs = {k: v for k, v in kwargs.items() if k != "encoder_weights"}
    try:
        net = cls(encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes, **kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"smp:{arch}:{encoder}: cannot build: {exc}") from exc
    depth = int(kwargs.get("encoder_depth", 5))
    net.stride = 2**depth
    return net


def required_stride(net: nn.Module) -> int:
    """Side multiple that inputs to ``net`` must be padded to (default 32).

    Examples
    --------
    >>> required_stride(build_network("smp-unet-resnet18", in_channels=1, num_classes=2))
    32
    """
    return int(getattr(net, "stride", 32))


def prefers_channels_last(net: nn.Module) -> bool:
    """Whether ``net`` runs faster on the CPU with channels-last tensors: msnet and ensembles of msnet.

    Training and inference both decide by this.  Measured (1 thread, AdamW steps on batches of 8): msnet-l on
    256-px patches 3.29 -> 2.62 s per step, msnet on 48-px patches 40 -> 34 ms; ``benchmarks/bench_inference.py``
    has the forward passes (msnet 2.00 -> 3.52 MP/s) and ``predict`` with an ensemble of two msnet (0.99 -> 1.72
    MP/s).  smp networks keep the usual layout.

    Examples
    --------
    >>> prefers_channels_last(build_network("msnet", in_channels=1, num_classes=2))
    True
    >>> prefers_channels_last(build_network("smp-unet-resnet18", in_channels=1, num_classes=2))
    False
    """
    if isinstance(net, Ensemble):
        return all(isinstance(m, MSNet) for m in net.members)
    return isinstance(net, MSNet)


def count_gflops_per_mp(net: nn.Module, *, in_channels: int | None = None, size: int = 256) -> float:
    """Forward-pass cost in GFLOP per megapixel (multiply-add = 2 FLOP).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one
    ``size x size`` input and scaled to 10^6 pixels.

    Examples
    --------
    >>> net = build_network("msnet", in_channels=1, num_classes=2)
    >>> 1.0 < count_gflops_per_mp(net, in_channels=1) < 100.0
    True
    """
    from torch.utils.flop_counter import FlopCounterMode

    if in_channels is None:
        first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        in_channels = first.in_channels
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, in_channels, size, size))
    net.train(was_training)
    return counter.get_total_flops() / (size * size) * 1e6 / 1e9


def fuse_for_inference(net: nn.Module) -> nn.Module:
    """Copy of ``net`` in eval mode with each Conv2d + BatchNorm2d pair folded into one conv.

    Same function (to float rounding), one memory pass less per layer.  Folds
    pairs that follow each other in an ``nn.Sequential`` (every msnet block,
    smp decoder blocks); other modules are copied unchanged.  The original
    network is not modified.

    Examples
    --------
    >>> import torch
    >>> net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8]).eval()
    >>> fused = fuse_for_inference(net)
    >>> x = torch.randn(1, 1, 32, 32)
    >>> bool(torch.allclose(net(x), fused(x), atol=1e-5))
    True
    >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    False
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return fused

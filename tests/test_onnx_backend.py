"""The ONNX Runtime inference backend (``backend="onnx"``, ``--backend onnx``) against the torch backend."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from data_builders import grain_image
from micro_seg import inference
from micro_seg.cli import main
from micro_seg.errors import CancelledError, MicroSegError, ModelError
from micro_seg.inference import predict
from micro_seg.nets import Ensemble, build_network
from micro_seg.preprocess import to_network_input
from micro_seg.registry import LoadedModel, ModelCard, save_model


def _net(seed: int, widths=(4, 8, 16), classes: int = 3):
    torch.manual_seed(seed)
    net = build_network("msnet", in_channels=1, num_classes=classes, widths=list(widths)).eval()
    with torch.no_grad():  # sharpen and centre the random logits so labels vary across the image
        net.head.weight.mul_(300.0)
        calib = to_network_input(_image((64, 64), seed=99), in_channels=1, normalisation=_card().normalisation)
        net.head.bias.sub_(net(torch.from_numpy(calib)[None]).mean(dim=(0, 2, 3)))
    return net


def _card(name="tiny", widths=(4, 8, 16), classes=("a", "b", "c"), arch="msnet") -> ModelCard:
    return ModelCard(name=name, task="semantic", arch=arch, in_channels=1, classes=list(classes),
                     arch_kwargs={"widths": list(widths)}, tile_size=64)


def _image(shape=(150, 170), seed=0) -> np.ndarray:
    return ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)


@pytest.fixture()
def tiny() -> LoadedModel:
    return LoadedModel(_card(), _net(0), None)


@pytest.mark.parametrize("tta", [False, True])
def test_onnx_matches_torch_tiled(tiny, tta):
    image = _image()  # 150 x 170 in tiles of <= 64 overlapping by 16: 3 x 4 tiles, blended seams, padded edges
    kw = dict(tile_size=64, overlap=16, tta=tta)
    a = predict(image, tiny, **kw)
    b = predict(image, tiny, backend="onnx", **kw)
    assert a.tiles == b.tiles == 12
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    assert np.abs(a.uncertainty - b.uncertainty).max() < 1e-4
    assert len(np.unique(a.labels)) == 3  # the comparison covers all classes
    assert (a.labels != b.labels).mean() < 1e-3


def test_onnx_ensemble_matches_torch():
    ens = Ensemble([_net(0, classes=2), _net(1, widths=(4, 8), classes=2)], num_classes=2).eval()
    with torch.no_grad():
        ens.offsets.copy_(torch.tensor([0.0, 0.3]))
    model = LoadedModel(_card(name="ens", classes=("a", "b"), arch="ensemble"), ens, None)
    image = _image((100, 90), seed=3)
    a = predict(image, model, tile_size=48, overlap=8)
    b = predict(image, model, tile_size=48, overlap=8, backend="onnx")
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4


def test_session_cached_and_refreshed_after_weights_change(tiny):
    image = _image((64, 64))
    predict(image, tiny, tile_size=64, backend="onnx")
    first = inference._ORT_CACHE[tiny.network][1]
    predict(image, tiny, tile_size=64, backend="onnx")
    assert inference._ORT_CACHE[tiny.network][1] is first  # no second export
    with torch.no_grad():  # fine-tuning in place: the session must not keep the old weights
        tiny.network.head.bias.add_(torch.tensor([5.0, 0.0, 0.0]))
    b = predict(image, tiny, tile_size=64, backend="onnx")
    assert inference._ORT_CACHE[tiny.network][1] is not first
    a = predict(image, tiny, tile_size=64)
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4


def test_grain_model_same_labels_as_torch():
    from micro_seg.postprocess import segment_image
    from micro_seg.registry import load_model

    model = load_model("grain-boundaries")
    image = grain_image((256, 256), n_grains=40, seed=5)
    a = segment_image(image, model, keep_probabilities=True)
    b = segment_image(image, model, keep_probabilities=True, backend="onnx")
    assert np.abs(a.prediction.probabilities - b.prediction.probabilities).max() < 1e-4
    assert a.labels.max() > 10  # a real segmentation, not an empty one
    np.testing.assert_array_equal(a.labels, b.labels)  # identical grain labels


def test_unknown_backend_is_clear(tiny):
    with pytest.raises(ModelError, match="unknown inference backend 'tensorrt'; choose one of torch, onnx"):
        predict(_image((32, 32)), tiny, backend="tensorrt")
    with pytest.raises(ValueError):
        predict(_image((32, 32)), tiny, backend="ONNX")


@pytest.fixture()
def no_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError


def test_missing_onnxruntime_is_clear(tiny, no_onnxruntime):
    with pytest.raises(MicroSegError, match=r'pip install "micro-seg\[onnx\]"'):
        predict(_image((32, 32)), tiny, backend="onnx")


def test_cli_missing_onnxruntime_exits_2(tmp_path: Path, capsys, no_onnxruntime):
    folder = save_model(tmp_path / "model", _net(0), _card())
    tifffile.imwrite(tmp_path / "a.tif", (_image((64, 64)) * 255).astype(np.uint8))
    code = main(["segment", str(tmp_path / "a.tif"), "--model", str(folder), "--out", str(tmp_path / "out"),
                 "--backend", "onnx", "--json"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and 'pip install "micro-seg[onnx]"' in err
    assert not (tmp_path / "out" / "a_labels.tif").exists()


def test_cli_backend_onnx_same_labels(tmp_path: Path, capsys):
    folder = save_model(tmp_path / "model", _net(0), _card())
    tifffile.imwrite(tmp_path / "a.tif", (_image((90, 100)) * 255).astype(np.uint8))
    labels = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        assert main(["segment", str(tmp_path / "a.tif"), "--model", str(folder), "--out", str(out),
                     "--tile-size", "64", "--overlap", "16", "--backend", backend, "--json"]) == 0
        labels[backend] = tifffile.imread(out / "a_labels.tif")
    capsys.readouterr()
    assert (labels["torch"] != labels["onnx"]).mean() < 1e-3
    assert main(["segment", str(tmp_path / "a.tif"), "--model", str(folder), "--out", str(tmp_path / "x"),
                 "--backend", "tensorrt"]) == 2  # argparse choices


@pytest.mark.parametrize("kind", ["callable", "event"])
def test_cancel_with_onnx(tiny, kind):
    calls = {"n": 0}
    cancel = threading.Event() if kind == "event" else (lambda: calls["n"] >= 2)

    def progress(done, total):
        calls["n"] += 1
        if kind == "event" and done >= 1:
            cancel.set()

    with pytest.raises(CancelledError):
        predict(_image((128, 128)), tiny, tile_size=32, overlap=8, batch_size=1, progress=progress, cancel=cancel,
                backend="onnx")
    assert calls["n"] < 10

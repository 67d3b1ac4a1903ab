import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from micro_seg import inference
from micro_seg.errors import CancelledError, InvalidImageError, ModelError
from micro_seg.inference import blend_window, predict, predict_iter, tile_starts
from micro_seg.nets import build_network
from micro_seg.preprocess import to_network_input
from micro_seg.registry import LoadedModel, ModelCard, save_model


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(inference, "_threads_configured", True)
    torch.set_num_threads(1)


def _model(in_channels=1, classes=("grain", "boundary"), widths=(4, 8, 16), gain=300.0, seed=0):
    torch.manual_seed(seed)
    card = ModelCard(name="tiny", task="semantic", arch="msnet", in_channels=in_channels, classes=list(classes),
                     arch_kwargs={"widths": list(widths)}, tile_size=64)
    net = build_network("msnet", in_channels=in_channels, num_classes=len(classes), widths=widths).eval()
    with torch.no_grad():  # sharpen and centre the random logits so labels vary across the image
        net.head.weight.mul_(gain)
        calib = to_network_input(_image((64, 64), seed=99), in_channels=in_channels, normalisation=card.normalisation)
        net.head.bias.sub_(net(torch.from_numpy(calib)[None]).mean(dim=(0, 2, 3)))
    return LoadedModel(card=card, network=net, folder=None)


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2.0)


def test_tiled_matches_untiled_on_odd_size():
    model = _model()
    img = _image((200, 300))
    full = predict(img, model, tile_size=512)
    assert full.tiles == 1
    assert full.probabilities.std() > 0.1  # the test net's output is not flat
    assert 0.1 < full.labels.mean() < 0.9
    for tile, overlap in [(64, 16), (64, 32), (96, 24)]:
        tiled = predict(img, model, tile_size=tile, overlap=overlap)
        assert tiled.tiles > 6
        diff = np.abs(tiled.probabilities - full.probabilities)
        assert diff.max() < 0.05, (tile, overlap, diff.max())
        assert diff.mean() < 2e-3
        assert (tiled.labels != full.labels).mean() < 0.002
    np.testing.assert_allclose(full.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(full.labels, np.argmax(full.probabilities, axis=0))


def test_tiles_start_on_the_stride_grid_whatever_the_overlap():
    # stride 16: an overlap that is not a multiple of it is rounded up, so every tile cuts the image into the
    # same pooling cells as the untiled run (unaligned, tile 128 / overlap 33 differed by up to 0.035)
    model = _model(widths=(4, 8, 16, 32, 64))
    img = _image((300, 400))
    full = predict(img, model, tile_size=1024)
    assert full.tiles == 1 and full.probabilities.std() > 0.1
    for tile, overlap in [(128, 20), (128, 33), (160, 40)]:
        tiled = predict(img, model, tile_size=tile, overlap=overlap)
        assert tiled.tiles >= 9
        diff = np.abs(tiled.probabilities - full.probabilities)
        assert diff.max() < 0.01, (tile, overlap, diff.max())
        assert diff.mean() < 2e-4, (tile, overlap, diff.mean())


def test_progress_events_count_and_batching():
    model = _model()
    img = _image((100, 130))
    events = list(_drive(predict_iter(img, model, tile_size=64, overlap=16, batch_size=1)))
    ys, xs = tile_starts(112, 64, 16), tile_starts(144, 64, 16)
    total = len(ys) * len(xs)
    assert events == [(i, total) for i in range(total + 1)]
    seen = []
    predict(img, model, tile_size=64, overlap=16, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (total, total) and len(seen) == 1 + -(-total // 4)


def _drive(gen):
    try:
        while True:
            yield next(gen)
    except StopIteration as stop:
        assert stop.value is not None


def test_generator_returns_prediction():
    gen = predict_iter(_image((64, 64)), _model(), tile_size=32, overlap=8)
    with pytest.raises(StopIteration) as info:
        while True:
            next(gen)
    assert info.value.value.labels.shape == (64, 64)


@pytest.mark.parametrize("kind", ["callable", "event"])
def test_cancel_raises(kind):
    calls = {"n": 0}
    if kind == "event":
        cancel = threading.Event()
    else:
        cancel = lambda: calls["n"] >= 2  # noqa: E731

    def progress(done, total):
        calls["n"] += 1
        if kind == "event" and done >= 1:
            cancel.set()

    with pytest.raises(CancelledError):
        predict(_image((128, 128)), _model(), tile_size=32, overlap=8, batch_size=1, progress=progress, cancel=cancel)
    assert calls["n"] < 10


def test_cancel_during_the_last_tiles_stops_segment_image_before_post_processing():
    """The last batch was already running when the user cancelled: the prediction completes, but segment_image must
    not go on to post-process (as long again on a huge image) and return a result nobody wants any more."""
    from micro_seg.postprocess import segment_image

    cancel = threading.Event()

    def progress(done, total):
        if done == total:
            cancel.set()

    with pytest.raises(CancelledError):
        segment_image(_image((64, 64)), _model(), tile_size=32, overlap=8, progress=progress, cancel=cancel)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64, bool])
def test_any_dtype_same_answer(dtype):
    model = _model()
    base = _image((64, 80))
    base = (base - base.min()) / (base.max() - base.min())
    if dtype is bool:
        img = base > 0.5
    elif np.dtype(dtype).kind in "iu":
        img = (base * np.iinfo(dtype).max).astype(dtype)
    else:
        img = base.astype(dtype) * 3.0 + 10.0
    pred = predict(img, model, tile_size=64, overlap=16)
    assert pred.labels.shape == (64, 80) and pred.uncertainty.shape == (64, 80)
    if dtype is not bool:  # percentile normalisation makes bit depth / offset irrelevant
        ref = predict(base, model, tile_size=64, overlap=16)
        assert np.abs(pred.probabilities - ref.probabilities).max() < 0.02


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (17, 3), (64, 64), (65, 33), (40, 50, 3), (40, 50, 4), (30, 20, 1)])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_any_size_and_channels(shape, in_channels):
    model = _model(in_channels=in_channels, classes=("a", "b", "c"))
    rng = np.random.default_rng(1)
    img = (rng.random(shape) * 255).astype(np.uint8)
    pred = predict(img, model, tile_size=32, overlap=8)
    assert pred.labels.shape == shape[:2] and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (3, *shape[:2])
    assert np.all(pred.labels < 3)
    assert np.all((pred.uncertainty >= 0) & (pred.uncertainty <= 1))


def test_uncertainty_is_normalised_entropy():
    pred = predict(_image((64, 64)), _model(classes=("a", "b", "c")), tile_size=64)
    p = pred.probabilities.astype(np.float64)
    ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=0) / np.log(3)
    np.testing.assert_allclose(pred.uncertainty, ent, atol=1e-5)


def test_tta_and_keep_subset_and_float16():
    model = _model()
    img = _image((70, 90))
    plain = predict(img, model, tile_size=64, overlap=16)
    tta = predict(img, model, tile_size=64, overlap=16, tta=True, keep_probabilities=[1], probability_dtype=np.float16)
    assert tta.probabilities.shape == (1, 70, 90) and tta.probabilities.dtype == np.float16
    assert tta.probability_classes == [1]
    np.testing.assert_allclose(tta.probability("boundary"), tta.probabilities[0])
    assert not np.allclose(tta.probabilities[0], plain.probabilities[1], atol=1e-3)  # flips change a random net's output
    with pytest.raises(ModelError):
        tta.probability("grain")
    none = predict(img, model, tile_size=64, overlap=16, keep_probabilities=False, keep_uncertainty=False)
    assert none.probabilities is None and none.uncertainty is None
    np.testing.assert_array_equal(none.labels, plain.labels)


def test_uses_analysis_data_of_micrograph():
    class FakeMicrograph:
        data = np.zeros((80, 64))
        analysis_data = data[:60]

    pred = predict(FakeMicrograph(), _model(), tile_size=32)
    assert pred.labels.shape == (60, 64)


def test_model_by_folder_path(tmp_path):
    model = _model()
    folder = save_model(tmp_path / "m", model.network, model.card)
    img = _image((40, 40))
    np.testing.assert_allclose(predict(img, str(folder), tile_size=64).probabilities,
                               predict(img, model, tile_size=64).probabilities, atol=1e-6)


def test_bad_arguments():
    model = _model()
    with pytest.raises(InvalidImageError):
        predict(np.zeros((0, 5)), model)
    with pytest.raises(InvalidImageError):
        predict(np.zeros((4, 4, 4, 4)), model)
    with pytest.raises(InvalidImageError, match="overlap"):
        predict(np.zeros((40, 40)), model, tile_size=32, overlap=32)
    with pytest.raises(ModelError):
        predict(np.zeros((40, 40)), model, keep_probabilities=[5])
    with pytest.raises(ModelError):
        predict(np.zeros((40, 40)), object())


def test_a_file_name_or_too_many_channels_is_refused_by_name():
    """``segment_image("a.tif", model)`` (the README reads the file first; this is the natural slip) crashed with
    "min() arg is an empty sequence"; five channels were reported as an image of shape (1, 1, 5)."""
    from pathlib import Path

    from micro_seg.postprocess import segment_image

    model = _model()
    for call in (segment_image, predict):
        for name in ("a.tif", Path("a.tif")):
            with pytest.raises(InvalidImageError, match="got the file name 'a.tif', not pixels: read it first"):
                call(name, model)
        with pytest.raises(InvalidImageError, match=r"image of shape \(40, 50, 5\) is not grey"):
            call(np.zeros((40, 50, 5)), model)


def test_tile_layout_and_window():
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    assert tile_starts(128, 128, 32) == [0]
    for length in (129, 200, 1000):
        starts = tile_starts(length, 64, 16)
        assert starts[0] == 0 and starts[-1] == length - 64
        assert all(b - a <= 48 for a, b in zip(starts, starts[1:]))
    w = blend_window(64, 16, taper_start=True, taper_end=True)
    assert w.min() > 0 and w[16:48].min() == 1.0
    # raised-cosine ramps of two neighbours sum to one across an exact overlap
    np.testing.assert_allclose(w[48:] + w[:16], 1.0, atol=1e-6)


def test_threads_env(monkeypatch):
    monkeypatch.setenv("MICRO_SEG_THREADS", "1")
    assert inference.configure_threads() == 1
    monkeypatch.setenv("MICRO_SEG_THREADS", "many")
    with pytest.raises(InvalidImageError):
        inference.configure_threads()


def test_axis_tiles_are_few_and_even():
    from micro_seg.inference import _axis_tile

    assert _axis_tile(2048, 1024, 128, 16) == 768
    assert _axis_tile(1000, 1024, 64, 16) == 1000
    for length in (1025, 1500, 2048, 5000, 16384):
        t = _axis_tile(length, 1024, 64, 16)
        starts = tile_starts(length, t, 64)
        assert t <= 1024 and t % 16 == 0
        assert starts[-1] + t == length and all(b - a <= t - 64 for a, b in zip(starts, starts[1:]))
        n_max = len(tile_starts(length, 1024, 64))
        assert len(starts) == n_max  # no more tiles than full-size ones would need


def test_chunked_flush_gives_same_result(monkeypatch):
    model = _model()
    img = _image((150, 90))
    ref = predict(img, model, tile_size=64, overlap=16)
    monkeypatch.setattr(inference, "FLUSH_ROWS", 7)
    got = predict(img, model, tile_size=64, overlap=16)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.probabilities, ref.probabilities)
    np.testing.assert_array_equal(got.uncertainty, ref.uncertainty)


def test_card_and_network_class_mismatch_refused():
    model = _model(classes=("a", "b"))
    bad = LoadedModel(card=ModelCard(name="bad", task="semantic", arch="msnet", in_channels=1,
                                     classes=["a", "b", "c"]), network=model.network, folder=None)
    with pytest.raises(ModelError, match="3 classes"):
        predict(_image((40, 40)), bad, tile_size=32)


def test_fused_inference_copy_is_cached_and_refreshed_after_in_place_change():
    import torch

    from micro_seg.inference import _fused_network
    from micro_seg.nets import build_network

    torch.manual_seed(0)
    net = build_network("msnet", in_channels=1, num_classes=2).eval()
    a = _fused_network(net, True)
    assert _fused_network(net, True) is a  # no second deep copy for the next image
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # fine-tuned in place
    b = _fused_network(net, True)
    assert b is not a
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(b(x), net(x), atol=1e-4)


def test_ensemble_of_msnet_runs_channels_last_with_the_same_answer():
    """Inference picks the layout training uses (nets.prefers_channels_last): an ensemble of msnet runs
    channels-last by default, and its probabilities equal the contiguous run's."""
    from micro_seg.inference import _FUSED_CACHE
    from micro_seg.nets import Ensemble, prefers_channels_last

    members = [_model(seed=s) for s in (0, 1)]
    ens = Ensemble([m.network for m in members], num_classes=2).eval()
    card = ModelCard(name="ens", task="semantic", arch="ensemble", in_channels=1, classes=["grain", "boundary"],
                     arch_kwargs={"members": [{"arch": "msnet", "arch_kwargs": {"widths": [4, 8, 16]}}] * 2},
                     tile_size=64)
    model = LoadedModel(card=card, network=ens, folder=None)
    assert prefers_channels_last(ens)
    img = _image((100, 90))
    default = predict(img, model)
    assert _FUSED_CACHE[ens][0][0] is True  # the cached inference copy was built channels-last
    contiguous = predict(img, model, channels_last=False)
    assert np.abs(default.probabilities - contiguous.probabilities).max() < 1e-4
    assert (default.labels == contiguous.labels).mean() > 0.999


def test_input_scale_resizes_runs_and_resamples_back():
    """A card with input_scale 0.5: the network sees the half-size image; the result is the half-size
    prediction resampled bilinearly to the image grid (reference: torch's own bilinear interpolation)."""
    import dataclasses

    import torch.nn.functional as F

    from micro_seg.preprocess import rescale_image

    native = _model(classes=("a", "b", "c"))
    half = LoadedModel(dataclasses.replace(native.card, input_scale=0.5), native.network, None)
    img = _image((101, 77))
    pred = predict(img, half, tile_size=32, overlap=8)
    assert pred.labels.shape == pred.uncertainty.shape == (101, 77) and pred.probabilities.shape == (3, 101, 77)
    small = predict(rescale_image(img, 0.5), native, tile_size=32, overlap=8)
    assert small.labels.shape == (50, 38)
    ref = F.interpolate(torch.from_numpy(small.probabilities)[None], size=(101, 77), mode="bilinear",
                        align_corners=False)[0].numpy()
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, ref.argmax(0))
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    ent = -(ref * np.log(np.clip(ref, 1e-12, None))).sum(0) / np.log(3)
    np.testing.assert_allclose(pred.uncertainty, ent, atol=1e-5)
    # keep_probabilities / keep_uncertainty still honoured
    sub = predict(img, half, tile_size=32, overlap=8, keep_probabilities=[2], keep_uncertainty=False)
    assert sub.probabilities.shape == (1, 101, 77) and sub.uncertainty is None
    np.testing.assert_array_equal(sub.labels, pred.labels)


def test_input_scale_on_card_is_validated_and_saved(tmp_path):
    import dataclasses

    from micro_seg.registry import load_model

    m = _model()
    with pytest.raises(ModelError, match="input_scale"):
        dataclasses.replace(m.card, input_scale=0.0)
    with pytest.raises(ModelError, match="input_scale"):
        dataclasses.replace(m.card, input_scale="half")
    save_model(tmp_path / "m", m.network, dataclasses.replace(m.card, input_scale=0.5))
    assert load_model(tmp_path / "m").card.input_scale == 0.5


def test_masked_arrays_are_refused_and_nan_pixels_are_warned_about_by_segment_image():
    """A masked array's mask was dropped; NaN pixels in an array (read_micrograph refuses such files) changed the
    segmentation around them with no word (47 grains instead of 22 on a NIST crop with 2440 NaN pixels)."""
    from micro_seg.errors import InvalidImageError
    from micro_seg.postprocess import segment_image

    model = _model()
    with pytest.raises(InvalidImageError, match="masked array"):
        inference.predict(np.ma.masked_array(np.zeros((64, 64), np.float32)), model)
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    img[3, 5], img[10, 10] = np.nan, np.inf
    seg = segment_image(img, model)
    assert any(w.startswith("2 pixel value(s) are NaN or infinite") for w in seg.warnings), seg.warnings
    assert not any("NaN" in w for w in segment_image(np.nan_to_num(img, posinf=1.0), model).warnings)

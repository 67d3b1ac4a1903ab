from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from micro_seg.errors import ModelError, WeightsIntegrityError
from micro_seg.nets import build_network
from micro_seg.registry import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    list_models,
    load_card,
    load_model,
    resolve_model,
    save_model,
    sha256_file,
)


def _card(name="tiny", **kw):
    base = dict(name=name, task="grains", arch="msnet", arch_kwargs={"widths": [4, 8, 8]}, in_channels=1,
                classes=["grain", "boundary"], pixel_size_um_range=(0.1, 2.0), tile_size=64,
                training_data={"description": "synthetic", "sha256": "0" * 64}, metrics={"val_iou": 0.5})
    base.update(kw)
    return ModelCard(**base)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    card = _card()
    net = build_network(card.arch, in_channels=1, num_classes=2, **card.arch_kwargs)
    with torch.no_grad():  # make BN running stats non-trivial so they must round-trip
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    folder = save_model(tmp_path / "tiny", net, card)
    return folder, net


def test_safetensors_roundtrip(saved):
    folder, net = saved
    assert (folder / WEIGHTS_FILE).is_file() and (folder / CARD_FILE).is_file()
    loaded = load_model(folder)
    assert loaded.network.training is False
    assert loaded.card.weights_sha256 == sha256_file(folder / WEIGHTS_FILE)
    assert loaded.card.pixel_size_um_range == (0.1, 2.0)
    assert loaded.card.classes == ["grain", "boundary"]
    assert loaded.card.created and loaded.card.software_version
    x = torch.randn(1, 1, 64, 64)
    net.eval()
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.network(x).numpy(), net(x).numpy(), rtol=0, atol=0)
    # via card.yaml path too
    assert load_model(folder / CARD_FILE).card.name == "tiny"


_SAVE_FOUR_TIMES = """
import sys, torch
from micro_seg.nets import build_network
from micro_seg.registry import ModelCard, save_model
torch.manual_seed(0)
net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8])
for i in range(4):
    card = ModelCard(name="same", task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=["background", "pore"])
    print(save_model(f"{sys.argv[1]}/{i}", net, card) and card.weights_sha256)
"""


def test_the_same_weights_saved_twice_have_the_same_sha256(tmp_path):
    """safetensors wrote the header's metadata in a random order: the same weights saved again (another run with
    the same seed, another process) had another sha256 on the card."""
    import subprocess
    import sys

    shas = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _SAVE_FOUR_TIMES, str(tmp_path / run)], capture_output=True,
                              text=True, check=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
        shas += done.stdout.split()
    assert len(shas) == 8 and len(set(shas)) == 1, shas
    assert sha256_file(tmp_path / "a" / "0" / WEIGHTS_FILE) == shas[0]
    assert load_model(tmp_path / "b" / "3").card.weights_sha256 == shas[0]


def test_saving_over_a_model_stopped_at_any_moment_leaves_a_loadable_model(saved, monkeypatch):
    """save_model replaced the weights, then wrote the card: stopped in between, the folder held new weights under
    the old card's sha256 and the user's previous model no longer loaded. Each file operation is made to fail in
    turn: the folder then loads as the old model or the new one.

    Two saves stopped in a row: the second wrote its weights to the staged file the card left by the first one
    named, and stopped before switching the card, the folder loaded as no model (sha256 mismatch). Every pair of
    stops is tried; a later complete save leaves no staged or temporary file behind."""
    import os
    import pathlib

    folder, old_net = saved
    new_net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8, 8])
    third_net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8, 8])
    old, new, third = _state(old_net), _state(new_net), _state(third_net)
    ops = {(os, "replace"): os.replace, (os, "link"): os.link, (pathlib.Path, "write_text"): pathlib.Path.write_text,
           (pathlib.Path, "unlink"): pathlib.Path.unlink}

    def save_stopped_at(k, net):
        calls = []

        def counted(real):
            def op(*args, **kwargs):
                calls.append(real)
                if len(calls) > k:
                    raise KeyboardInterrupt
                return real(*args, **kwargs)
            return op

        for (owner, name), real in ops.items():
            monkeypatch.setattr(owner, name, counted(real))
        try:
            save_model(folder, net, _card())
            return True
        except KeyboardInterrupt:
            return False
        finally:
            for (owner, name), real in ops.items():
                monkeypatch.setattr(owner, name, real)

    for k1 in range(30):
        for k2 in range(30):
            first = save_stopped_at(k1, new_net)
            got = _state(load_model(folder).network)
            assert _same_state(got, new) or (not first and _same_state(got, old)), (k1, k2)
            second = save_stopped_at(k2, third_net)
            got = _state(load_model(folder).network)
            assert (_same_state(got, third) or (not second and _same_state(got, new))
                    or (not first and not second and _same_state(got, old))), (k1, k2)
            save_model(folder, old_net, _card())  # the old model again for the next stops
            assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, WEIGHTS_FILE], (k1, k2)
            if second:
                break
        assert second and k2 >= 2
        if first:
            break
    assert first and k1 >= 2


def test_saving_over_a_model_on_a_full_disk_leaves_the_model_the_card_names_and_no_other_file(saved, monkeypatch):
    """A save whose card could not be written (disk full) left the complete new weights under their staged name
    (model.<sha256>.safetensors, as large as the model) beside the old model; a failed rename ended in 'internal
    error: OSError'. Each file operation fails in turn: the error names the file (OutputPathError), the folder
    loads as the old model or the new one, and holds no file its card does not name."""
    import errno
    import os
    import pathlib

    from micro_seg.errors import OutputPathError
    from micro_seg.registry import load_card

    folder, old_net = saved
    new_net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8, 8])
    old, new = _state(old_net), _state(new_net)
    ops = {(os, "fsync"): os.fsync, (os, "replace"): os.replace, (os, "link"): os.link,
           (pathlib.Path, "write_text"): pathlib.Path.write_text}
    failed = 0
    for k in range(12):
        calls = []

        def counted(real):
            def op(*args, **kwargs):
                calls.append(real)
                if len(calls) == k + 1:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(*args, **kwargs)
            return op

        for (owner, name), real in ops.items():
            monkeypatch.setattr(owner, name, counted(real))
        try:
            save_model(folder, new_net, _card())
            ok = True
        except OutputPathError as exc:
            ok = False
            failed += 1
            assert "No space left on device" in str(exc) and str(folder) in str(exc), exc
        finally:
            for (owner, name), real in ops.items():
                monkeypatch.setattr(owner, name, real)
        got = _state(load_model(folder).network)
        assert _same_state(got, new) or (not ok and _same_state(got, old)), k
        assert sorted(p.name for p in folder.iterdir()) == sorted({CARD_FILE, WEIGHTS_FILE,
                                                                   load_card(folder).weights_file}), k
        save_model(folder, old_net, _card())
        if ok:
            break
    assert ok and failed >= 4


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tampered_weights_refused(saved):
    folder, _ = saved
    path = folder / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=str(path).replace("\\", "\\\\")):
        load_model(folder)


def test_weights_with_nan_are_refused_even_with_a_matching_sha256(saved):
    """A model made elsewhere with non-finite weights (its card's sha256 updated to match) gave all-background
    maps and '0 % porosity' with exit 0; it is refused on load, naming the file."""
    import re

    from safetensors.torch import load_file, save_file

    folder, _ = saved
    path = folder / WEIGHTS_FILE
    state = load_file(str(path))
    name = next(k for k, t in state.items() if t.is_floating_point() and t.ndim == 4)
    state[name][0, 0, 0, 0] = float("nan")
    save_file(state, str(path))
    card = folder / CARD_FILE
    card.write_text(re.sub(r"weights_sha256: \w+", f"weights_sha256: {sha256_file(path)}", card.read_text()))
    with pytest.raises(WeightsIntegrityError, match=rf"model\.safetensors: weights contain NaN .*'{re.escape(name)}'"):
        load_model(folder)


def test_truncated_weights_refused(saved):
    folder, _ = saved
    path = folder / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_model(folder)


def test_truncated_weights_with_matching_hash_still_refused(saved):
    # an attacker (or a broken copy) that also updates the card: safetensors parse error -> integrity error
    folder, _ = saved
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:100])
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["weights_sha256"] = sha256_file(path)
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(WeightsIntegrityError, match="cannot read"):
        load_model(folder)


def test_missing_weights_and_missing_hash_refused(saved, tmp_path):
    folder, _ = saved
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["weights_sha256"] = ""
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(WeightsIntegrityError, match="no weights_sha256"):
        load_model(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsIntegrityError, match="missing"):
        load_model(folder)


def test_weights_of_other_architecture_refused(saved):
    folder, _ = saved
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["arch_kwargs"] = {"widths": [4, 16, 8]}
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(folder)


def test_card_with_other_class_count_names_the_mismatch_on_one_line(saved):
    folder, _ = saved
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["classes"] = card["classes"] + ["extra"]
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError) as info:
        load_model(folder)
    msg = str(info.value)
    assert "\n" not in msg and f"{len(card['classes'])} classes" in msg
    assert "size mismatch for" in msg and "Error(s) in loading" not in msg


def test_invalid_yaml_card_is_one_line_with_the_position(saved):
    folder, _ = saved
    (folder / CARD_FILE).write_text("name: tiny\ntask: : :\n")
    with pytest.raises(ModelError) as info:
        load_model(folder)
    msg = str(info.value)
    assert "\n" not in msg and "not valid YAML" in msg and "(line 2, column" in msg


def test_card_with_a_duplicate_key_is_refused_naming_the_key_and_lines(saved):
    """A second ``postprocess:`` block (a hand edit) used to replace the first silently."""
    folder, _ = saved
    text = (folder / CARD_FILE).read_text()
    assert load_model(folder).card.name == "tiny"
    (folder / CARD_FILE).write_text(text + "postprocess: {threshold: 0.3}\npostprocess: {threshold: 0.7}\n")
    with pytest.raises(ModelError) as info:
        load_model(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder / CARD_FILE) in msg and "postprocess: duplicate key" in msg


def test_unknown_name_lists_available(saved, monkeypatch):
    folder, _ = saved
    monkeypatch.setenv("MICRO_SEG_MODELS", str(folder.parent))
    with pytest.raises(ModelError) as info:
        load_model("does-not-exist")
    assert "does-not-exist" in str(info.value) and "tiny" in str(info.value)
    assert resolve_model("tiny") == folder
    assert load_model("tiny").card.name == "tiny"


def test_list_models_includes_user_dir_and_extra_paths(saved, tmp_path, monkeypatch):
    folder, _ = saved
    monkeypatch.setenv("MICRO_SEG_MODELS", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert "tiny" not in [c.name for c in list_models()]
    assert "tiny" in [c.name for c in list_models(folder)]
    assert "tiny" in [c.name for c in list_models(folder.parent)]
    user = tmp_path / "xdg" / "micro-seg" / "models"
    user.mkdir(parents=True)
    net = build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8])
    save_model(user / "mine", net, _card("mine", arch_kwargs={"widths": [4, 8]}))
    assert "mine" in [c.name for c in list_models()]
    assert load_model("mine").card.name == "mine"


def test_a_grain_card_without_a_boundary_class_is_refused_naming_the_card(tmp_path):
    """A card edited to task: grains with classes that hold no boundary class loaded, then every segment failed
    with 'grain model classes [...] have no boundary class', naming neither the model nor its card."""
    folder = save_model(tmp_path / "m", build_network("msnet", in_channels=1, num_classes=2, widths=[4, 8, 8]),
                        _card(task="semantic", classes=["dark", "bright"]))
    text = (folder / CARD_FILE).read_text().replace("task: semantic", "task: grains")
    (folder / CARD_FILE).write_text(text)
    with pytest.raises(ModelError, match=rf"^{folder / CARD_FILE}: model 'tiny': grain model classes \['dark', "
                                         r"'bright'\] have no boundary class"):
        load_model(folder)
    with pytest.raises(ModelError, match="no boundary class"):
        _card(classes=["grain", "edge"])


def test_bad_cards_refused(tmp_path):
    with pytest.raises(ModelError, match="task"):
        _card(task="detection")
    with pytest.raises(ModelError, match="no classes"):
        _card(classes=[])
    with pytest.raises(ModelError, match="defect_classes"):
        _card(defect_classes=["pore"])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / CARD_FILE).write_text("name: x\n")
    with pytest.raises(ModelError, match="lacks required keys"):
        load_card(tmp_path / "m")
    (tmp_path / "m" / CARD_FILE).write_text("name: [x\n")
    with pytest.raises(ModelError, match="YAML"):
        load_card(tmp_path / "m")
    with pytest.raises(ModelError, match="not a model folder"):
        resolve_model(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope" / "x"))


@pytest.mark.parametrize("line, says", [
    ("classes: background, pore", "classes must be a list of class names"),        # split into letters before
    ("classes: bp", "classes must be a list of class names"),
    ("defect_classes: 5", "defect_classes must be a list of class names"),        # "'int' object is not iterable"
    ("normalisation: {low: 99.9, high: 0.1}", "percentile normalisation needs 0 <= low < high <= 100"),
    ("normalisation: {low: a, high: 99}", "normalisation low / high must be numbers"),
])
def test_card_value_types_are_checked_on_load_naming_the_card(saved, line, says):
    """Card mistakes a user makes by hand are refused when the card is read, with the card's path, instead of a
    model with 34 one-letter classes or an error at the first image that does not name the card."""
    folder, _ = saved
    card = folder / CARD_FILE
    key = line.split(":")[0]
    text = "\n".join(ln for ln in card.read_text().splitlines() if not ln.startswith(key + ":")
                     and not (key == "classes" and ln.startswith("- ")) and not (key == "normalisation"
                                                                                and ln.startswith("  ")))
    card.write_text(text + "\n" + line + "\n")
    with pytest.raises(ModelError) as info:
        load_card(folder)
    assert str(card) in str(info.value) and says in str(info.value), str(info.value)


@pytest.mark.parametrize("changes, says", [
    ({"extra": [1, 2]}, "extra must be a mapping (key: value lines), got list [1, 2]"),
    ({"weights_sha256": 12345}, "weights_sha256 must be the weights' sha256 as text (64 hex digits), got int 12345"),
    ({"name": ["a", "b"]}, "name must be text, got list ['a', 'b']"),
    ({"arch_kwargs": [1, 2]}, "arch_kwargs must be a mapping (key: value lines), got list [1, 2]"),
    ({"arch": ["msnet"]}, "arch must be text, got list ['msnet']"),
    ({"metrics": "good"}, "metrics must be a mapping"),
    ({"arch_kwargs": {"widths": "abc"}}, "msnet: invalid architecture options {'widths': 'abc'}"),
    ({"arch_kwargs": {"widths": [4, -8, 8]}}, "msnet: invalid architecture options"),
])
def test_card_values_of_the_wrong_yaml_type_are_refused_naming_the_card(saved, changes, says):
    """These were internal errors (exit 1): 'int' object has no attribute 'lower', unhashable type: 'list', ..."""
    folder, _ = saved
    _edit_card(folder, **changes)
    with pytest.raises(ModelError) as err:
        load_model(folder)
    assert str(folder / CARD_FILE) in str(err.value) and says in str(err.value), str(err.value)


def test_a_bad_card_among_the_models_hides_no_other_model(saved, tmp_path, monkeypatch, capsys):
    """One card with arch: [msnet] in MICRO_SEG_MODELS broke `models list` and every lookup by name."""
    import shutil

    from micro_seg.cli import main

    folder, _ = saved
    bad = folder.parent / "broken"
    shutil.copytree(folder, bad)
    _edit_card(bad, name="broken", arch=["msnet"])
    monkeypatch.setenv("MICRO_SEG_MODELS", str(folder.parent))
    skipped = []
    assert "tiny" in [c.name for c in list_models(skipped=skipped)]
    assert [f for f, _ in skipped] == [str(bad)]
    assert resolve_model("tiny") == folder and load_model("tiny").card.name == "tiny"
    assert main(["models", "list"]) == 0
    out, err = capsys.readouterr()
    assert "tiny" in out and f"{bad}: not listed: {bad / CARD_FILE}: model 'broken': arch must be text" in err
    assert main(["models", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad / CARD_FILE) in err and "arch must be text" in err


def test_weights_check_of_a_card_whose_sha256_became_a_number(saved):
    from micro_seg.registry import check_weights_file

    folder, _ = saved
    card = load_card(folder)
    card.weights_sha256 = 12345
    with pytest.raises(WeightsIntegrityError, match="does not match the card's"):
        check_weights_file(folder, card)


def test_unknown_card_keys_kept_in_extra():
    card = ModelCard.from_dict({**_card().to_dict(), "how_to_retrain": "python models/x/train.py"})
    assert card.extra["how_to_retrain"] == "python models/x/train.py"


def test_card_records_full_preset_architecture(tmp_path):
    card = _card(arch="msnet", arch_kwargs={})
    net = build_network("msnet", in_channels=1, num_classes=2)
    folder = save_model(tmp_path / "p", net, card)
    data = yaml.safe_load((folder / CARD_FILE).read_text())
    assert data["arch_kwargs"]["widths"] and len(data["arch_kwargs"]["blocks"]) == len(data["arch_kwargs"]["widths"])
    assert load_model(folder).card.arch_kwargs == data["arch_kwargs"]


def _threshold_member(folder, threshold, *, k=40.0, classes=("background", "pore"), **card_kw):
    """A saved 2-class model whose class-1 probability is sigmoid(2k (x - threshold)) of the min-max input x."""
    from data_builders import threshold_net

    net = threshold_net(2, 1, k=k)
    with torch.no_grad():
        net.head.bias[1] = -k * threshold
        net.head.bias[0] = k * threshold
    card = ModelCard(name=folder.name, task="semantic", arch="msnet", arch_kwargs={"widths": [4, 8]}, in_channels=1,
                     classes=list(classes), normalisation={"mode": "minmax"}, tile_size=64, **card_kw)
    return save_model(folder, net, card)


def test_ensemble_averages_member_probabilities(tmp_path):
    from micro_seg.inference import predict
    from micro_seg.registry import combine_models

    k, thresholds = 3.0, (0.5, 0.25, 0.3)
    folders = [_threshold_member(tmp_path / f"m{i}", t, k=k, pixel_size_um_range=(0.1 * (i + 1), 1.0))
               for i, t in enumerate(thresholds)]
    ens = load_model(combine_models(folders, tmp_path / "ens"))
    assert ens.card.arch == "ensemble" and len(ens.card.arch_kwargs["members"]) == 3
    assert [m["name"] for m in ens.card.training_data["members"]] == ["m0", "m1", "m2"]
    assert [m["name"] for m in ens.card.metrics["members"]] == ["m0", "m1", "m2"]
    assert [m["weights_sha256"] for m in ens.card.training_data["members"]] == [
        load_card(f).weights_sha256 for f in folders]
    assert ens.card.pixel_size_um_range == (0.1, 1.0)
    img = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))  # minmax: x = column / 63
    p = predict(img, ens, keep_uncertainty=False).probabilities[1]
    x = np.arange(64) / 63.0
    truth = np.mean([1 / (1 + np.exp(-2 * k * (x - t))) for t in thresholds], axis=0)
    np.testing.assert_allclose(p, np.tile(truth, (64, 1)), atol=1e-4)


def test_ensemble_of_ensembles_is_flattened_and_majority_decides(tmp_path):
    from micro_seg.inference import predict
    from micro_seg.registry import combine_models

    a = combine_models([_threshold_member(tmp_path / "a", 0.5), _threshold_member(tmp_path / "b", 0.5, k=30.0)],
                       tmp_path / "ab")
    abc = load_model(combine_models([a, _threshold_member(tmp_path / "c", 0.25)], tmp_path / "abc"))
    assert len(abc.network.members) == 3 and len(abc.card.arch_kwargs["members"]) == 3
    img = np.tile(np.arange(64, dtype=np.uint8) * 4, (8, 1))
    labels = predict(img, abc, keep_uncertainty=False).labels[0]
    x = np.arange(64) / 63.0
    # two of three members put the pore threshold at 0.5: (0.25, 0.5) is background (mean 1/3)
    np.testing.assert_array_equal(labels[np.abs(x - 0.375) < 0.1], 0)
    assert labels[x > 0.55].min() == 1 and labels[x < 0.2].max() == 0


def test_ensemble_refuses_members_that_do_not_match(tmp_path):
    from micro_seg.registry import combine_models

    a = _threshold_member(tmp_path / "a", 0.5)
    other = _threshold_member(tmp_path / "b", 0.5, classes=("matrix", "pore"))
    with pytest.raises(ModelError, match="classes differ"):
        combine_models([a, other], tmp_path / "x")
    scaled = _threshold_member(tmp_path / "c", 0.5, input_scale=0.5)
    with pytest.raises(ModelError, match="input_scale differs"):
        combine_models([a, scaled], tmp_path / "x")
    with pytest.raises(ModelError, match="at least two"):
        combine_models([a], tmp_path / "x")
    with pytest.raises(ModelError, match="folder of member"):
        combine_models([a, _threshold_member(tmp_path / "d", 0.4)], a)
    assert not (tmp_path / "x").exists()


def test_ensemble_refuses_the_same_network_twice_under_two_folders(tmp_path):
    """A copy of a member, a run repeated with the same seed, or an ensemble joined with one of its own members made
    an 'ensemble' that only weighted that network double (one folder given twice was already refused)."""
    import shutil

    from micro_seg.registry import combine_models

    a, b = _threshold_member(tmp_path / "a", 0.5), _threshold_member(tmp_path / "b", 0.3)
    copy = shutil.copytree(a, tmp_path / "a-copy")
    again = _threshold_member(tmp_path / "a-again", 0.5)  # the same weights, saved again (same seed and data)
    ab = combine_models([a, b], tmp_path / "ab")
    for members, first, second in (([a, copy], a, copy), ([a, b, again], a, again), ([ab, b], ab, b)):
        with pytest.raises(ModelError, match=rf"^{second}: holds a network with the same weights as a network of "
                                             rf"{first}; an ensemble joins different models"):
            combine_models(members, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_tampered_ensemble_weights_refused(tmp_path):
    from micro_seg.registry import combine_models

    folder = combine_models([_threshold_member(tmp_path / "a", 0.5), _threshold_member(tmp_path / "b", 0.3)],
                            tmp_path / "ens")
    w = folder / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_model(folder)


def _split_pairs():
    """Two image/label pairs (labels 1 = background, 2 = pore where x > 0.3) and the second one's sha256."""
    from micro_seg.training import pairs_sha256

    x = np.arange(64) / 63.0
    imgs = [np.tile((x * 252).astype(np.uint8), (16, 1)), np.tile((x[::-1] * 252).astype(np.uint8), (24, 1))]
    labs = [np.where(i / 252.0 > 0.3, 2, 1).astype(np.uint8) for i in imgs]
    return imgs, labs, pairs_sha256(imgs[1:], labs[1:])


def test_calibrated_ensemble_breaks_ties_the_way_the_held_out_images_say(tmp_path):
    """Member a calls pore above x = 0.3, member b above 0.7, both with certainty: on 0.3 < x < 0.7 their mean is
    exactly 0.5 and the tie goes to background.  The truth is pore above 0.3 (member a's answer): calibrated on the
    image both members held out, the ensemble calls pore there (known by construction)."""
    from micro_seg.inference import predict
    from micro_seg.registry import combine_models

    imgs, labs, sha = _split_pairs()
    split = {"val_indices": [1], "val_sha256": sha}
    folders = [_threshold_member(tmp_path / f"m{i}", t, k=400.0, training_data=dict(split))
               for i, t in enumerate((0.3, 0.7))]
    plain = load_model(combine_models(folders, tmp_path / "plain"))
    ens = load_model(combine_models(folders, tmp_path / "ens", calibrate_on=(imgs, labs)))
    test = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))  # x = column / 63 again, unseen image
    x = np.arange(64) / 63.0
    mid = (x > 0.32) & (x < 0.68)
    assert predict(test, plain, keep_uncertainty=False).labels[:, mid].max() == 0  # ties: background
    calibrated = predict(test, ens, keep_uncertainty=False).labels
    np.testing.assert_array_equal(calibrated[:, x > 0.31], 1)
    np.testing.assert_array_equal(calibrated[:, x < 0.29], 0)
    offsets = ens.card.extra["calibration"]["logit_offsets"]
    assert offsets[0] == 0 and 0 < offsets[1] <= 1.0  # a small push breaks the tie
    val = ens.card.metrics["validation"]
    assert val["iou"]["pore"] == 1.0 and val["before_offsets"]["iou"]["pore"] < 0.5 and "held out" in val["data"]
    assert np.allclose(ens.network.offsets.numpy(), offsets)  # saved with the (sha256-checked) weights


def test_offsets_of_a_flattened_ensemble_are_reported_not_silently_dropped(tmp_path, capsys):
    """A calibrated ensemble joined with another model: its offsets were chosen for its own average, so they are
    not carried over; the card lists them and ``models ensemble`` warns (exit 0) how to calibrate the new one."""
    from micro_seg.cli import main
    from micro_seg.registry import combine_models

    imgs, labs, sha = _split_pairs()
    split = {"val_indices": [1], "val_sha256": sha}
    folders = [_threshold_member(tmp_path / f"m{i}", t, k=400.0, training_data=dict(split))
               for i, t in enumerate((0.3, 0.7, 0.5))]
    ens = combine_models(folders[:2], tmp_path / "ens", calibrate_on=(imgs, labs))
    offsets = load_card(ens).extra["calibration"]["logit_offsets"]
    wider = load_card(combine_models([ens, folders[2]], tmp_path / "wider"))
    assert wider.extra["offsets_not_carried"] == [{"name": "ens", "logit_offsets": offsets}]
    assert load_model(tmp_path / "wider").network.offsets.tolist() == [0.0, 0.0]
    # the advice given: join the member models themselves, calibrated
    recal = load_card(combine_models(folders, tmp_path / "recal", calibrate_on=(imgs, labs)))
    assert "offsets_not_carried" not in recal.extra and "calibration" in recal.extra
    plain = combine_models(folders[:2], tmp_path / "plain")  # no offsets: nothing to report
    assert "offsets_not_carried" not in load_card(combine_models([plain, folders[2]], tmp_path / "p3")).extra
    capsys.readouterr()
    assert main(["models", "ensemble", str(ens), str(folders[2]), "--out", str(tmp_path / "cli"), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ens's decision offsets") and "member models" in err and len(err.splitlines()) == 1


def test_ensemble_calibration_refuses_other_images_or_splits(tmp_path):
    from micro_seg.registry import combine_models

    imgs, labs, sha = _split_pairs()
    a = _threshold_member(tmp_path / "a", 0.3, training_data={"val_indices": [1], "val_sha256": sha})
    b = _threshold_member(tmp_path / "b", 0.7, training_data={"val_indices": [1], "val_sha256": sha})
    other_split = _threshold_member(tmp_path / "c", 0.7, training_data={"val_indices": [0], "val_sha256": sha})
    unrecorded = _threshold_member(tmp_path / "d", 0.7)
    with pytest.raises(ModelError, match="same --split-seed"):
        combine_models([a, other_split], tmp_path / "x", calibrate_on=(imgs, labs))
    with pytest.raises(ModelError, match="records no validation images"):
        combine_models([a, unrecorded], tmp_path / "x", calibrate_on=(imgs, labs))
    changed = [l.copy() for l in labs]
    changed[1][0, 0] = 0  # one label of the held-out image differs from what the members held out
    with pytest.raises(ModelError, match="not the ones the members were trained on"):
        combine_models([a, b], tmp_path / "x", calibrate_on=(imgs, changed))
    with pytest.raises(ModelError, match="not the ones the members were trained on"):
        combine_models([a, b], tmp_path / "x", calibrate_on=(imgs[:1], labs[:1]))
    assert not (tmp_path / "x").exists()


def test_ensemble_without_offsets_in_its_weights_loads_with_zero_offsets(tmp_path):
    """Ensembles written before the decision offsets existed (no ``offsets`` tensor) load unchanged."""
    from safetensors.torch import load_file, save_file

    from micro_seg.registry import combine_models

    folder = combine_models([_threshold_member(tmp_path / "a", 0.5), _threshold_member(tmp_path / "b", 0.3)],
                            tmp_path / "ens")
    tensors = {k: v for k, v in load_file(str(folder / WEIGHTS_FILE)).items() if k != "offsets"}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card["weights_sha256"] = sha256_file(folder / WEIGHTS_FILE)
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))
    assert load_model(folder).network.offsets.tolist() == [0.0, 0.0]


def _edit_card(folder, **changes):
    card = yaml.safe_load((folder / CARD_FILE).read_text())
    card.update(changes)
    (folder / CARD_FILE).write_text(yaml.safe_dump(card))


@pytest.mark.parametrize("changes, says", [
    ({"classes": ["pore", "pore"]}, "classes: ['pore'] given more than once"),
    ({"task": "semantic", "classes": ["grain", "pore/void"], "defect_classes": ["pore/void"]},
     "['pore/void'] are not usable in file names"),
    ({"task": "semantic", "classes": ["grain", "../../escaped"], "defect_classes": ["../../escaped"]},
     "are not usable in file names"),
    ({"weights_file": "../model.safetensors"}, "weights_file must be a file name inside the model folder"),
    ({"weights_file": "/abs/model.safetensors"}, "weights_file must be a file name inside the model folder"),
    ({"pixel_size_um_range": [5, 1]}, "pixel_size_um_range must be [low, high] with 0 < low <= high"),
    ({"pixel_size_um_range": [-1, float("nan")]}, "pixel_size_um_range must be"),
    ({"postprocess": {"min_grain_px": float("inf")}}, "must be a finite number >= 0, got inf"),
])
def test_cards_with_unusable_values_are_refused_naming_the_card(saved, changes, says):
    """Duplicate class names wrote a class's instances from the wrong class; a '/' or '../' in a class name became
    part of an output path; weights outside the folder, a reversed pixel-size range and an infinite post-processing
    value were accepted (the last gave an internal OverflowError)."""
    folder, _ = saved
    _edit_card(folder, **changes)
    with pytest.raises(ModelError, match=r"card\.yaml: ") as err:
        load_model(folder)
    assert says in str(err.value)


def test_class_names_with_slashes_and_an_empty_weights_file_entry_still_load(saved):
    """Only defect classes name files: 'alpha/beta' as a phase name is fine, and weights_file: null means the
    default name, as it always did."""
    folder, _ = saved
    _edit_card(folder, task="semantic", classes=["grain", "alpha/beta"], weights_file=None)
    assert load_model(folder).card.classes == ["grain", "alpha/beta"]


def test_a_card_asking_for_a_network_far_larger_than_its_weights_is_refused_before_building_it(saved):
    """widths [.., 200000] tried to allocate 1.4 TB ('internal error') before the weights' shapes were compared."""
    import resource

    folder, _ = saved
    _edit_card(folder, arch_kwargs={"widths": [4, 8, 200000]})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelError, match=r"size mismatch for .*in the weights"):
        load_model(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: nothing huge was allocated


def test_a_folder_named_like_a_model_does_not_hide_it(saved, tmp_path, monkeypatch):
    """An output folder named after the model (``--out tiny``) in the working directory: the bare name still means
    the model; a cardless folder whose name no model has is refused as before."""
    folder, _ = saved
    monkeypatch.setenv("MICRO_SEG_MODELS", str(folder.parent))
    work = tmp_path / "work"
    (work / "tiny").mkdir(parents=True)
    (work / "notes").mkdir()
    monkeypatch.chdir(work)
    assert resolve_model("tiny") == folder
    with pytest.raises(ModelError, match="notes: folder has no model card.*no model has that name; available: .*tiny"):
        resolve_model("notes")  # a typo of a model name: the names say which was meant
    with pytest.raises(ModelError, match="not a model folder"):
        resolve_model("./tiny")  # a path is taken as one


def test_a_cardless_folder_holding_weights_is_not_replaced_by_the_registered_model(saved, tmp_path, monkeypatch):
    """``train ... --out tiny`` still running (or stopped) leaves ./tiny with checkpoints and no card yet: ``--model
    tiny`` must not quietly use the registered model 'tiny' in place of the user's own."""
    folder, _ = saved
    monkeypatch.setenv("MICRO_SEG_MODELS", str(folder.parent))
    work = tmp_path / "work"
    (work / "tiny" / "checkpoint").mkdir(parents=True)
    (work / "tiny" / "checkpoint" / "last-3.safetensors").write_bytes(b"x")
    monkeypatch.chdir(work)
    with pytest.raises(ModelError, match="tiny: folder holds model weights but no model card"):
        resolve_model("tiny")
    (work / "tiny" / "checkpoint" / "last-3.safetensors").unlink()
    (work / "tiny" / "model.safetensors").write_bytes(b"x")  # a card renamed or lost
    with pytest.raises(ModelError, match="holds model weights but no model card"):
        resolve_model("tiny")
    (work / "tiny" / "model.safetensors").unlink()
    assert resolve_model("tiny") == folder  # an output folder of that name: the registered model

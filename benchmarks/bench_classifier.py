"""Image classification, QC flagging and out-of-distribution benchmarks (issue 7).

    python benchmarks/bench_classifier.py [--sections neu,tiles,ood,segood] [--threads 1] [--write]

Sections
--------
* **neu** -- NEU surface defects (``../shared/datasets/neu_det``, 6 classes,
  the images present: numbers <= 250 per class).  ``micro-seg
  train-classifier`` on a class-folder view, stratified split *by image*
  (20% of each class held out, seed 0).  Target: >= 99% accuracy within 15
  minutes on 2 CPU cores.  Baseline in the same run: rotation-invariant
  uniform LBP histograms (P=8/16, R=1/2/3; the texture features of the NEU
  authors' CLBP line of work) + logistic regression, same split.
* **tiles** -- magnetic tiles (``../shared/datasets/magnetic_tile``):
  defective (Blowhole, Break, Crack, Fray, Uneven) vs good (Free).  20% of
  each class is a test set the classifier never sees; ``train-classifier``
  (balanced sampling, avg+max pooling, mirror symmetry only: the tiles have
  a direction) holds out its own validation split of the rest, on which the
  p(defective) threshold for ``--target-recall`` is chosen.  Target: recall on
  defective >= 95% on the test set.  Baseline: the same LBP + logistic
  regression.
* **ood** -- the NEU classifier's OOD score (Mahalanobis, card threshold) on
  its held-out NEU images vs images of another kind: NASA superalloy SEM,
  TBM optical grain micrographs, MetalDAM SEM, magnetic tiles.  AUROC and
  the flagged fraction at the card threshold; baselines in the same run:
  maximum softmax probability (Hendrycks & Gimpel 2017) and energy score
  (Liu et al. 2020) of the same network.
* **segood** -- the same Mahalanobis feature score for *segmentation* models
  (pooled deepest-encoder features, one Gaussian): the grain-boundary model
  (``models/grain-boundaries``, if trained) fitted on TBM crops of
  micrographs 10-23, scored on held-out TBM micrographs 24-25 vs NASA
  superalloy and MetalDAM images; the Ni-superalloy model fitted on NASA
  Super1 train, scored on Super1 val vs TBM, MetalDAM and NEU images.

The data sets used here carry no licence (NEU, magnetic tiles): models
trained here stay in ``benchmarks/_work/`` (git-ignored) and are never shipped.
``--write`` replaces this script's section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
WORK = ROOT / "benchmarks" / "_work" / "classifier"
from _results import earlier_tables, markers, write_section  # noqa: E402  (benchmarks/ is the script folder)

BEGIN, END = markers("bench_classifier")
SHARED = Path(os.environ.get("MICRO_SEG_SHARED", ROOT.parent / "shared")) / "datasets"


# ------------------------------------------------------------------ data views


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src, dst)


def neu_view() -> Path:
    """Class-folder view of NEU (symlinks): ``neu/<class>/<file>.jpg``."""
    out = WORK / "data" / "neu"
    for folder in ("IMAGES", "Validation_Images"):
        for f in sorted((SHARED / "neu_det" / folder).glob("*.jpg")):
            cls = f.stem.rsplit("_", 1)[0]
            _link(f, out / cls / f.name)
    return out


def tiles_view() -> Path:
    """``tiles/{defective,good}/<class>_<file>.jpg`` (images only, not the masks)."""
    out = WORK / "data" / "tiles"
    for d in sorted((SHARED / "magnetic_tile").glob("MT_*")):
        target = "good" if d.name == "MT_Free" else "defective"
        for f in sorted((d / "Imgs").glob("*.jpg")):
            _link(f, out / target / f"{d.name[3:]}_{f.name}")
    return out


def tiles_split_views() -> tuple[Path, Path]:
    """A test set the classifier never sees: 20% of each class (seed 1) -> ``tiles_test``; the rest -> ``tiles_trainval``.

    ``train-classifier`` then holds out its own validation split of
    ``tiles_trainval`` (temperature, OOD and recall threshold are chosen on
    it), so the recall on ``tiles_test`` is an unbiased estimate.
    """
    from micro_seg.classifier import load_class_folders, stratified_split

    paths, labels, classes = load_class_folders(tiles_view())
    trval, test = stratified_split(labels, 0.2, seed=1)
    for name, idx in (("tiles_trainval", trval), ("tiles_test", test)):
        for i in idx:
            _link(paths[i].resolve(), WORK / "data" / name / classes[labels[i]] / paths[i].name)
    return WORK / "data" / "tiles_trainval", WORK / "data" / "tiles_test"


# ------------------------------------------------------------------ baseline


def lbp_features(img: np.ndarray, size: int = 200) -> np.ndarray:
    """Concatenated rotation-invariant uniform LBP histograms at 3 radii."""
    from skimage.feature import local_binary_pattern
    from skimage.transform import resize

    from micro_seg.quality import to_gray

    g = to_gray(img)
    g = resize(g, (size, size), anti_aliasing=True, preserve_range=True)
    g = ((g - g.min()) / max(1e-9, np.ptp(g)) * 255).astype(np.uint8)
    feats = []
    for p, r in ((8, 1), (16, 2), (16, 3)):
        codes = local_binary_pattern(g, p, r, method="uniform")
        h, _ = np.histogram(codes, bins=p + 2, range=(0, p + 2), density=True)
        feats.append(h)
    return np.concatenate(feats)


def lbp_baseline(paths, labels, train_idx, val_idx) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from micro_seg.io import read_micrograph

    t0 = time.perf_counter()
    x = np.stack([lbp_features(read_micrograph(p).analysis_data) for p in paths])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced"))
    clf.fit(x[train_idx], labels[train_idx])
    return clf.predict(x[val_idx]), time.perf_counter() - t0


# ------------------------------------------------------------------ sections


def _train(view: Path, name: str, threads: int, **cfg) -> dict:
    from micro_seg.classifier import ClassifierConfig, train_classifier

    config = ClassifierConfig(threads=threads, **cfg)
    log = []

    def progress(u):
        if u.get("stage") == "epoch":
            line = f"[{name}] epoch {u['epoch']}/{u['epochs']} loss {u['train_loss']:.4f} val_acc {u['val_accuracy']:.4f} {u['seconds']:.0f}s"
            print(line, flush=True)
            log.append(line)

    t0 = time.perf_counter()
    result = train_classifier(view, WORK / "models" / name, config=config, progress=progress)
    return {"result": result, "seconds": time.perf_counter() - t0, "config": config}


def section_neu(threads: int, epochs: int, arch: str, input_size: int) -> dict:
    from micro_seg.classifier import classification_metrics, load_class_folders, stratified_split

    view = neu_view()
    run = _train(view, "neu", threads, arch=arch, input_size=input_size, epochs=epochs, max_minutes=14.0)
    card = run["result"].card
    paths, labels, classes = load_class_folders(view)
    train_idx, val_idx = stratified_split(labels, 0.2, seed=0)
    pred, base_s = lbp_baseline(paths, labels, train_idx, val_idx)
    base = classification_metrics(pred, labels[val_idx], classes)
    return {
        "classes": classes, "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
        "accuracy": card.metrics["accuracy"], "per_class": card.metrics["per_class"],
        "confusion_matrix": card.metrics["confusion_matrix"], "train_seconds": run["seconds"],
        "epochs_run": card.metrics["epochs_run"], "arch": arch, "input_size": input_size, "threads": threads,
        "temperature": card.extra["temperature"], "ece_before": card.metrics["ece_before_calibration"],
        "ece_after": card.metrics["ece_after_calibration"],
        "baseline_accuracy": base["accuracy"], "baseline_seconds": base_s,
    }


def section_tiles(threads: int, epochs: int, arch: str, input_size: int, target_recall: float) -> dict:
    from micro_seg.classifier import classification_metrics, classify_batch, load_class_folders, load_classifier
    from micro_seg.io import read_micrograph

    trainval, test = tiles_split_views()
    run = _train(trainval, "tiles", threads, arch=arch, input_size=input_size, epochs=epochs, balanced=True,
                 arch_kwargs={"pool": "avgmax"}, symmetry="flips", scale_range=(0.85, 1.0), batch_size=16, lr=2e-3,
                 positive_class="defective", target_recall=target_recall, max_minutes=14.0)
    card = run["result"].card
    model = load_classifier(WORK / "models" / "tiles")
    t_paths, t_labels, classes = load_class_folders(test)
    preds = classify_batch([read_micrograph(p) for p in t_paths], model)
    pred = np.array([classes.index(r["class"]) for r in preds])
    argmax = np.array([int(np.argmax([r["probabilities"][c] for c in classes])) for r in preds])
    m = classification_metrics(pred, t_labels, classes)
    m_argmax = classification_metrics(argmax, t_labels, classes)
    v_paths, v_labels, _ = load_class_folders(trainval)
    all_paths = list(v_paths) + list(t_paths)
    all_labels = np.concatenate([v_labels, t_labels])
    base_pred, base_s = lbp_baseline(all_paths, all_labels, np.arange(len(v_paths)),
                                     np.arange(len(v_paths), len(all_paths)))
    base = classification_metrics(base_pred, t_labels, classes)
    return {
        "classes": classes, "n_trainval": int(len(v_paths)), "n_test": int(len(t_paths)),
        "accuracy": m["accuracy"], "recall_defective": m["per_class"]["defective"]["recall"],
        "precision_defective": m["per_class"]["defective"]["precision"],
        "recall_good": m["per_class"]["good"]["recall"], "confusion_matrix": m["confusion_matrix"],
        "argmax_recall_defective": m_argmax["per_class"]["defective"]["recall"],
        "argmax_accuracy": m_argmax["accuracy"],
        "decision": {k: v for k, v in (card.extra.get("decision") or {}).items() if k != "argmax_metrics"},
        "val_accuracy_argmax_card": card.metrics["accuracy"],
        "train_seconds": run["seconds"], "epochs_run": card.metrics["epochs_run"], "arch": arch, "input_size": input_size,
        "baseline_accuracy": base["accuracy"], "baseline_recall_defective": base["per_class"]["defective"]["recall"],
        "baseline_seconds": base_s,
    }


def _ood_sets() -> dict[str, list[Path]]:
    nasa = sorted(p for sub in ("train", "val") for p in (SHARED / "nasa_superalloy/benchmark_segmentation_data/Super1" / sub).glob("*.tif"))
    tbm = sorted((SHARED / "tbm_mlographypp/Datasets/without_impurities with corresponding GT crops").glob("*.png"))
    metaldam = sorted((SHARED / "metaldam/datasets/MetalDAM/images").glob("*.jpg"))
    tiles = sorted((SHARED / "magnetic_tile/MT_Free/Imgs").glob("*.jpg"))[:40]
    return {"NASA superalloy SEM": nasa, "TBM optical grains": tbm, "MetalDAM SEM": metaldam, "magnetic tiles": tiles}


def _scores(model, images) -> dict[str, np.ndarray]:
    import torch

    from micro_seg.classifier import _predict, prepare_image

    card = model.card
    x = np.stack([prepare_image(im, input_size=model.input_size, in_channels=card.in_channels,
                                normalisation=card.normalisation) for im in images])
    logits, feats = _predict(model.network, x, tta=model.tta, symmetry=str(card.extra.get('symmetry', 'd8')))
    t = float(model.network.temperature)
    z = torch.from_numpy(logits) / t
    with torch.inference_mode():
        maha = model.network.ood_scores(torch.from_numpy(feats)).numpy()
    return {
        "mahalanobis": maha,
        "msp": -torch.softmax(z, 1).max(1).values.numpy(),      # higher = more OOD
        "energy": -(t * torch.logsumexp(z, 1)).numpy(),           # negative free energy, higher = more OOD
    }


def section_ood(threads: int) -> dict:
    import torch

    from micro_seg.classifier import auroc, load_class_folders, load_classifier, stratified_split
    from micro_seg.io import read_micrograph

    torch.set_num_threads(threads)
    model = load_classifier(WORK / "models" / "neu")
    paths, labels, _ = load_class_folders(neu_view())
    _, val_idx = stratified_split(labels, 0.2, seed=0)
    ind = _scores(model, [read_micrograph(paths[i]).analysis_data for i in val_idx])
    thr = model.ood_threshold
    out = {"n_in": int(len(val_idx)), "threshold": thr,
           "in_flagged": float(np.mean(ind["mahalanobis"] > thr)), "sets": {}}
    all_ood = {k: [] for k in ind}
    for name, files in _ood_sets().items():
        if not files:
            continue
        s = _scores(model, [read_micrograph(f).analysis_data for f in files])
        for k in s:
            all_ood[k].append(s[k])
        out["sets"][name] = {"n": len(files), "flagged": float(np.mean(s["mahalanobis"] > thr)),
                             **{f"auroc_{k}": auroc(ind[k], s[k]) for k in s}}
    out["all"] = {f"auroc_{k}": auroc(ind[k], np.concatenate(v)) for k, v in all_ood.items() if v}
    return out


def _seg_features(model, image: np.ndarray, tile: int = 256) -> np.ndarray:
    """Mean over 256^2 tiles of the pooled deepest-encoder features of a segmentation net."""
    import torch

    from micro_seg.classifier import encoder_features
    from micro_seg.preprocess import to_network_input

    x = to_network_input(image, in_channels=model.card.in_channels, normalisation=model.card.normalisation)
    _, rows, cols = x.shape
    tiles = [x[:, r:r + tile, c:c + tile] for r in range(0, rows - tile + 1, tile) for c in range(0, cols - tile + 1, tile)]
    if not tiles:
        tiles = [x[:, :tile, :tile]]
    with torch.inference_mode():
        f = encoder_features(model.network, torch.from_numpy(np.stack(tiles)))
    return f.mean(0).numpy()


def _gaussian_ood(model, fit, held, others) -> dict:
    from micro_seg.classifier import auroc, fit_feature_gaussian, gaussian_scores
    from micro_seg.io import read_micrograph

    def feats(paths):
        return np.stack([_seg_features(model, read_micrograph(p).analysis_data) for p in paths])

    f_fit = feats(fit)
    mean, prec = fit_feature_gaussian(f_fit)
    # the threshold: the 95th percentile of out-of-fold scores (5 folds), since images the Gaussian was fitted on
    # score lower than any unseen image, in distribution or not (their own 95th percentile flagged every held-out
    # image of the training kind)
    folds = np.arange(len(f_fit)) % 5
    oof = np.empty(len(f_fit))
    for k in range(5):
        m_k, p_k = fit_feature_gaussian(f_fit[folds != k])
        oof[folds == k] = gaussian_scores(f_fit[folds == k], m_k, p_k)
    thr = float(np.percentile(oof, 95))
    s_in = gaussian_scores(feats(held), mean, prec)
    out = {"model": model.card.name, "n_fit": len(fit), "n_in": len(held), "threshold_oof95": thr,
           "in_flagged": float(np.mean(s_in > thr)), "sets": {}}
    all_out = []
    for name, paths in others.items():
        s_out = gaussian_scores(feats(paths), mean, prec)
        all_out.append(s_out)
        out["sets"][name] = {"n": len(paths), "auroc": auroc(s_in, s_out), "flagged": float(np.mean(s_out > thr))}
    out["auroc_all"] = auroc(s_in, np.concatenate(all_out))
    return out


def section_segood(threads: int) -> dict:
    """Feature-Gaussian OOD for the shipped segmentation models that are trained."""
    import torch

    from micro_seg.errors import ModelError
    from micro_seg.registry import load_model

    torch.set_num_threads(threads)
    nasa_train = sorted((SHARED / "nasa_superalloy/benchmark_segmentation_data/Super1/train").glob("*.tif"))
    nasa_val = sorted((SHARED / "nasa_superalloy/benchmark_segmentation_data/Super1/val").glob("*.tif"))
    crops = sorted((SHARED / "tbm_mlographypp/AutoSAM/TBM_dataset").glob("*/images/*.png"))
    tbm_fit = [p for p in crops if int(p.name.split("-")[0]) <= 23]
    tbm_held = [p for p in crops if int(p.name.split("-")[0]) in (24, 25)]
    metaldam = sorted((SHARED / "metaldam/datasets/MetalDAM/images").glob("*.jpg"))[:12]
    neu = sorted((SHARED / "neu_det/IMAGES").glob("*.jpg"))[::60]
    out: dict = {}
    try:
        gb = load_model(ROOT / "models" / "grain-boundaries")
        out["grain-boundaries"] = _gaussian_ood(gb, tbm_fit, tbm_held, {"NASA superalloy SEM": nasa_train + nasa_val,
                                                                        "MetalDAM SEM": metaldam})
    except ModelError as exc:
        out["grain-boundaries"] = {"error": str(exc)}
    try:
        ni = load_model(ROOT / "models" / "ni-superalloy")
        out["ni-superalloy"] = _gaussian_ood(ni, nasa_train, nasa_val, {"TBM optical grains": tbm_held + tbm_fit[::4],
                                                                        "MetalDAM SEM": metaldam,
                                                                        "NEU steel surface": neu})
    except ModelError as exc:
        out["ni-superalloy"] = {"error": str(exc)}
    return out


# ------------------------------------------------------------------ report


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


#: ``### `` heading of each section's table, to keep the tables of sections not run (:func:`earlier_parts`).
HEADINGS = {"neu": "### NEU surface defects", "tiles": "### Magnetic tiles", "ood": "### Out-of-distribution score",
            "segood": "### OOD score for segmentation models"}


def earlier_parts(results_text: str) -> dict[str, str]:
    """The tables (by section key) and the ``Note:`` paragraphs (key ``"notes"``) of this script's section in
    ``results_text``, so that ``--sections X --write`` keeps what it did not run (a fresh clone has no JSON)."""
    if BEGIN not in results_text or END not in results_text:
        return {}
    section = results_text[results_text.index(BEGIN):results_text.index(END)]
    out = earlier_tables(section, HEADINGS, stop=("Note:",))
    notes = [ln for ln in section.splitlines() if ln.startswith("Note: ")]
    if notes:
        out["notes"] = "\n\n".join(notes) + "\n"
    return out


def render(res: dict, earlier: dict[str, str] | None = None) -> str:
    """This script's RESULTS.md section; ``earlier`` (:func:`earlier_parts`): tables and notes kept for the
    sections ``res`` lacks."""
    earlier = {k: v for k, v in (earlier or {}).items() if k not in res}
    lines = [BEGIN, "## Image classification, QC flagging and OOD (bench_classifier.py)", ""]
    lines.append(f"Run {res['date']} on {res['machine']}; `python benchmarks/bench_classifier.py --write`. "
                 "Models trained here are not shipped (NEU and magnetic tiles carry no licence).")
    lines.append("")
    for note in res.get("notes", []):
        lines += [f"Note: {note}", ""]
    if "notes" in earlier:
        lines.append(earlier["notes"])
    if "neu" in res:
        n = res["neu"]
        lines += [
            "### NEU surface defects, 6 classes (held-out 20% of each class, split by image)", "",
            "| method | accuracy | train time | notes |", "|---|---|---|---|",
            f"| micro-seg train-classifier ({n['arch']}, {n['input_size']} px, {n['epochs_run']} epochs, {n['threads']} thread(s)) "
            f"| **{_pct(n['accuracy'])}** | {n['train_seconds'] / 60:.1f} min | {n['n_train']} train / {n['n_val']} val images; "
            f"load average {n.get('load_average_1min', 'n/a')} (start, end) on 2 cores |",
            f"| LBP (riu2, 3 radii) + logistic regression (baseline, same split) | {_pct(n['baseline_accuracy'])} "
            f"| {n['baseline_seconds'] / 60:.1f} min | error ratio CNN / baseline: "
            f"{(1 - n['accuracy']) / max(1e-9, 1 - n['baseline_accuracy']):.2f} |",
            "", f"Target >= 99% within 15 min on 2 cores: **{'met' if n['accuracy'] >= 0.99 and n['train_seconds'] <= 900 else 'NOT met'}**. "
            f"Temperature {n['temperature']:.3f}; ECE {n['ece_before']:.4f} -> {n['ece_after']:.4f} (in-sample on the validation split).",
            "", "Per-class recall: " + ", ".join(f"{k} {_pct(v['recall'])}" for k, v in n["per_class"].items()),
            "", f"Confusion matrix (rows = truth, order {', '.join(n['classes'])}): `{n['confusion_matrix']}`", "",
        ]
    if "neu" not in res and "neu" in earlier:
        lines.append(earlier["neu"])
    if "tiles" in res:
        t = res["tiles"]
        d = t.get("decision") or {}
        lines += [
            "### Magnetic tiles, defective vs good (held-out test set: 20% of each class, never seen in training)", "",
            "| method | recall on defective | precision on defective | recall on good | accuracy | train time |",
            "|---|---|---|---|---|---|",
            f"| micro-seg train-classifier ({t['arch']}, {t['input_size']} px, avg+max pool, flips, --balanced, "
            f"--positive-class defective --target-recall {d.get('target_recall', 'n/a')}, {t['epochs_run']} epochs) "
            f"| **{_pct(t['recall_defective'])}** | {_pct(t['precision_defective'])} | {_pct(t['recall_good'])} "
            f"| {_pct(t['accuracy'])} | {t['train_seconds'] / 60:.1f} min |",
            f"| same network, plain argmax (no recall threshold) | {_pct(t['argmax_recall_defective'])} | | | "
            f"{_pct(t['argmax_accuracy'])} | |",
            f"| LBP + logistic regression (baseline, same split) | {_pct(t['baseline_recall_defective'])} | | | "
            f"{_pct(t['baseline_accuracy'])} | {t['baseline_seconds'] / 60:.1f} min |",
            "", f"Target recall on defective >= 95%: **{'met' if t['recall_defective'] >= 0.95 else 'NOT met'}** "
            f"({t['n_trainval']} train+validation / {t['n_test']} test images; threshold "
            f"{d.get('threshold', float('nan')):.3f} on p(defective) chosen on the validation split; "
            f"test confusion `{t['confusion_matrix']}`, order {', '.join(t['classes'])}).", "",
        ]
    if "tiles" not in res and "tiles" in earlier:
        lines.append(earlier["tiles"])
    if "ood" in res:
        o = res["ood"]
        lines += [
            "### Out-of-distribution score of the NEU classifier", "",
            f"In distribution: {o['n_in']} held-out NEU images ({_pct(o['in_flagged'])} flagged at the card threshold "
            f"{o['threshold']:.1f}, the 95th percentile of validation scores).", "",
            "| images of another kind | n | flagged at threshold | AUROC Mahalanobis (micro-seg) | AUROC max-softmax | AUROC energy |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in o["sets"].items():
            lines.append(f"| {name} | {s['n']} | {_pct(s['flagged'])} | **{s['auroc_mahalanobis']:.3f}** | "
                         f"{s['auroc_msp']:.3f} | {s['auroc_energy']:.3f} |")
        a = o["all"]
        lines += [f"| all of the above | | | **{a['auroc_mahalanobis']:.3f}** | {a['auroc_msp']:.3f} | {a['auroc_energy']:.3f} |", ""]
    if "ood" not in res and "ood" in earlier:
        lines.append(earlier["ood"])
    if "segood" in res:
        lines += ["### OOD score for segmentation models (Gaussian on pooled deepest-encoder features)", ""]
        for name, s in res["segood"].items():
            if not isinstance(s, dict):
                continue
            if "error" in s:
                lines += [f"`{name}`: not measured ({s['error']}).", ""]
                continue
            lines += [f"`{name}`: Gaussian fitted on {s['n_fit']} training images; in distribution: {s['n_in']} held-out "
                      f"images ({_pct(s['in_flagged'])} flagged at the 95th percentile of the fitting images' "
                      "out-of-fold scores, 5 folds).", "",
                      "| images of another kind | n | AUROC | flagged |", "|---|---|---|---|"]
            for other, v in s["sets"].items():
                lines.append(f"| {other} | {v['n']} | **{v['auroc']:.3f}** | {_pct(v['flagged'])} |")
            lines += [f"| all | | **{s['auroc_all']:.3f}** | |", ""]
    if "segood" not in res and "segood" in earlier:
        lines.append(earlier["segood"])
    lines.append(END)
    return "\n".join(lines)


def write_results(text: str) -> None:
    write_section("bench_classifier", text, path=RESULTS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="neu,tiles,ood,segood")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--tile-epochs", type=int, default=150)
    ap.add_argument("--arch", default="mscls-s")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--tile-input-size", type=int, default=224)
    ap.add_argument("--tile-arch", default="mscls-s")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} not found: this benchmark needs ../shared/datasets", file=sys.stderr)
        return 2
    import platform

    import torch

    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    store = WORK / "results.json"
    res = json.loads(store.read_text()) if store.exists() else {}
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        t0 = time.perf_counter()
        load_before = os.getloadavg()[0]
        if s == "neu":
            res["neu"] = section_neu(args.threads, args.epochs, args.arch, args.input_size)
        elif s == "tiles":
            res["tiles"] = section_tiles(args.threads, args.tile_epochs, args.tile_arch, args.tile_input_size,
                                         args.target_recall)
        elif s == "ood":
            res["ood"] = section_ood(args.threads)
        elif s == "segood":
            res["segood"] = section_segood(args.threads)
        else:
            print(f"unknown section {s!r}", file=sys.stderr)
            return 2
        if isinstance(res.get(s), dict):
            res[s]["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f"section {s} done in {time.perf_counter() - t0:.0f} s", flush=True)
        store.write_text(json.dumps(res, indent=1, default=float))
    text = render(res, earlier_parts(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else None)
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

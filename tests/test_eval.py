"""Robustness evaluation on tiny generated trees with a model whose predictions are known.

``ColourModel`` classifies an image by its mean colour (nearest of a palette, one colour per
class), so a tree of solid-colour JPEGs has an error we choose: an image painted in another
class's colour is a known mistake. Every expected number below is computed by hand from those
choices and the published constants.
"""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali")

from ipmix_dali.eval.cifar import pgd_error  # noqa: E402
from ipmix_dali.eval.class_subsets import IMAGENET_A, IMAGENET_O, IMAGENET_R  # noqa: E402
from ipmix_dali.eval.config import EvalConfig  # noqa: E402
from ipmix_dali.eval.evaluate import evaluate  # noqa: E402
from ipmix_dali.eval.imagenet_c import find_imagenet_c  # noqa: E402
from ipmix_dali.eval.metrics import (  # noqa: E402
    ALEXNET_CLEAN_ERR,
    ALEXNET_ERR,
    CORRUPTIONS,
    calib_err,
    corruption_errors,
    flip_probability,
    fpr_at_recall,
    ood_measures,
    top5_distance,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def palette(n):
    """n well separated RGB colours (a 3-D grid, spacing >= 24 grey levels)."""
    side = math.ceil(n ** (1 / 3))
    step = 200 // max(1, side - 1) if side > 1 else 0
    cols = [(20 + r * step, 20 + g * step, 20 + b * step) for r in range(side)
            for g in range(side) for b in range(side)]
    return np.array(cols[:n], dtype=np.float32)


class ColourModel(torch.nn.Module):
    """logits_k = 15 exp(-d_k^2 / 100), d_k = distance of the mean colour to palette colour k in
    grey levels: the nearest colour wins; far from every colour the softmax is flat."""

    def __init__(self, colours, mean=MEAN, std=STD):
        super().__init__()
        self.register_buffer("colours", torch.as_tensor(colours) / 255)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        rgb = (x * self.std + self.mean).mean(dim=(2, 3))
        d2 = ((rgb[:, None, :] - self.colours[None]) ** 2).sum(-1) * 255 ** 2
        return 15 * torch.exp(-d2 / 100)


def write_tree(root, colour_of_file, classes, per_class, size=32):
    """root/<class>/img_i.JPEG, painted colour_of_file(class_index, i)."""
    for k, name in enumerate(classes):
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            col = tuple(int(v) for v in colour_of_file(k, i))
            Image.new("RGB", (size, size), col).save(root / name / f"img_{i}.JPEG", quality=100)


# ---------------------------------------------------------------------------------------------
# metrics


def test_calib_err_hand_example_drops_the_last_bin():
    # 250 examples -> bins [0,100), [100,250); only the first is visited.
    conf = np.r_[np.full(100, 0.6), np.full(150, 0.9)]
    correct = np.r_[np.r_[np.ones(30), np.zeros(70)], np.zeros(150)]
    rng = np.random.default_rng(0)
    perm = rng.permutation(250)
    got = calib_err(conf[perm], correct[perm])
    assert got == pytest.approx(math.sqrt(100 / 250 * (0.6 - 0.3) ** 2), abs=1e-15)
    # including the last bin would add 150/250 * 0.9^2
    assert got < math.sqrt(100 / 250 * 0.09 + 150 / 250 * 0.81)
    with pytest.raises(ValueError, match="at least 100"):
        calib_err(conf[:99], correct[:99])


def test_alexnet_errors_give_mce_100():
    errors = {c: {s: ALEXNET_ERR[c] for s in range(1, 6)} for c in CORRUPTIONS}
    errors["spatter"] = {s: ALEXNET_ERR["spatter"] for s in range(1, 6)}
    out = corruption_errors(errors, ALEXNET_CLEAN_ERR)
    assert out["mce"] == pytest.approx(100.0, abs=1e-9)
    assert out["relative_mce"] == pytest.approx(100.0, abs=1e-9)
    assert out["extra_mean_ce"] == pytest.approx(100.0)  # reported apart, not in mCE
    assert out["unnormalized_mce"] == pytest.approx(78.899, abs=1e-3)
    with pytest.raises(ValueError, match="severities \\[1, 2, 3, 5\\]"):
        corruption_errors({"fog": {1: .5, 2: .5, 3: .5, 5: .5}})


def test_ood_measures_match_sklearn_and_fpr95_by_hand():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    out_s, in_s = rng.normal(1, 1, 200), rng.normal(0, 1, 1000)
    m = ood_measures(out_s, in_s)
    y = np.r_[np.ones(200), np.zeros(1000)]
    s = np.r_[out_s, in_s]
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s))
    assert m["aupr"] == pytest.approx(100 * average_precision_score(y, s))
    # by hand: 4 positives (10, 9, 7, 6), 4 negatives (8, 5, 4, 3): recall 0.75 at threshold 7
    # (1 negative above) and 1.0 at 6 (1 negative); closest to 0.95 is 1.0 -> FPR 1/4
    assert fpr_at_recall([10, 9, 8, 7, 6, 5, 4, 3], [1, 1, 0, 1, 1, 0, 0, 0]) == 0.25


def test_top5_distance_and_flip_probability():
    base = np.arange(10, 0, -1, dtype=float)  # class 0 first
    assert top5_distance(base, base) == 0
    swap = base.copy()
    swap[[0, 1]] = swap[[1, 0]]
    assert top5_distance(base, swap) == 2
    drop = base.copy()
    drop[0] = -1  # rank 1 -> rank 10: min(10, 6) - 1 = 5, the others each move up one: 4
    assert top5_distance(base, drop) == 5 + 4
    assert flip_probability([1, 1, 2, 2, 1], noise=False) == 0.5
    assert flip_probability([1, 1, 2, 2, 1], noise=True) == 0.5
    assert flip_probability([1, 2, 1, 2], noise=True) == pytest.approx(2 / 3)


def test_masks_are_the_published_200_class_lists():
    for m in (IMAGENET_R, IMAGENET_A, IMAGENET_O):
        assert len(m) == 200 and list(m) == sorted(set(m)) and 0 <= m[0] and m[-1] < 1000
    assert (len(set(IMAGENET_A) & set(IMAGENET_R)), len(set(IMAGENET_A) & set(IMAGENET_O)),
            len(set(IMAGENET_R) & set(IMAGENET_O))) == (86, 59, 36)


# ---------------------------------------------------------------------------------------------
# ImageNet-C end to end


K, PER = 4, 5  # classes, images per class (20 per cell)


def wrong_in_cell(ci, s):
    """How many of the 20 images of cell (corruption ci, severity s) are painted wrong."""
    return (3 * ci + 2 * s) % 11


@pytest.fixture(scope="module")
def imagenet_c_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("inc")
    cols = palette(K)
    classes = [f"n{k:08d}" for k in range(K)]
    write_tree(root / "val", lambda k, i: cols[(k + 1) % K] if k * PER + i < 3 else cols[k],
               classes, PER, size=40)  # 3 clean mistakes of 20
    for ci, c in enumerate(CORRUPTIONS + ("spatter",)):
        group = "noise" if c.endswith("noise") else None  # mixed layout: some grouped
        for s in range(1, 6):
            n_wrong = wrong_in_cell(ci, s)
            base = root / "c" / group / c / str(s) if group else root / "c" / c / str(s)
            write_tree(base, lambda k, i, n=n_wrong: cols[(k + 1) % K] if k * PER + i < n
                       else cols[k], classes, PER, size=224)
    return root, cols


def test_imagenet_c_errors_ce_and_relative_mce_are_exact(imagenet_c_tree, tmp_path):
    root, cols = imagenet_c_tree
    cells = find_imagenet_c(root / "c")
    assert set(cells) == set(CORRUPTIONS) | {"spatter"} and sorted(cells["shot_noise"]) == [1, 2,
                                                                                             3, 4, 5]
    res = evaluate(EvalConfig("colour-model", tmp_path / "ev", arch="colour", num_classes=K,
                   imagenet_val=root / "val", imagenet_c=root / "c",
                   batch_size=8, threads=1), model=ColourModel(cols))
    assert res["clean"]["error"] == pytest.approx(15.0)  # 3 / 20
    ic = res["imagenet_c"]
    names = CORRUPTIONS + ("spatter",)
    for ci, c in enumerate(names):
        errs = [wrong_in_cell(ci, s) / 20 for s in range(1, 6)]
        for s in range(1, 6):
            assert ic["cells"][c][str(s)]["error"] == pytest.approx(100 * errs[s - 1])
        mean = np.mean(errs)
        row = ic["per_corruption"][c]
        assert row["mean_error"] == pytest.approx(100 * mean)
        assert row["ce"] == pytest.approx(100 * mean / ALEXNET_ERR[c])
        assert row["relative_ce"] == pytest.approx(100 * (mean - 0.15)
                                                   / (ALEXNET_ERR[c] - ALEXNET_CLEAN_ERR))
    ce = [ic["per_corruption"][c]["ce"] for c in CORRUPTIONS]
    assert ic["mce"] == pytest.approx(np.mean(ce))  # the 15 only: spatter stays out
    assert ic["extra_mean_ce"] == pytest.approx(ic["per_corruption"]["spatter"]["ce"])
    report = (tmp_path / "ev" / "report.md").read_text()
    assert f"**mCE {ic['mce']:.2f} %**" in report and "canonical" in report
    assert (tmp_path / "ev" / "imagenet_c.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["imagenet_c"]["mce"] == pytest.approx(ic["mce"])
    assert saved["versions"]["torch"]

    # a second run reads every cell from the cache (an interrupted run resumes) ...
    logs = []
    again = evaluate(EvalConfig("colour-model", tmp_path / "ev", arch="colour", num_classes=K,
                     imagenet_c=root / "c", batch_size=8, threads=1), model=ColourModel(cols), log=logs.append)
    assert sum("cached" in line for line in logs) == 80
    for c, row in again["imagenet_c"]["per_corruption"].items():  # same numbers (no clean
        assert (row["mean_error"], row["ce"]) == (ic["per_corruption"][c]["mean_error"],
                                                  ic["per_corruption"][c]["ce"])  # set: no rel.)
    # ... and --pixmix-compat is another protocol: its own cache entries, same errors here
    compat = evaluate(EvalConfig("colour-model", tmp_path / "ev2", arch="colour", num_classes=K,
                      imagenet_c=root / "c", batch_size=8, threads=1,
                      pixmix_compat=True, corruptions=["fog"]), model=ColourModel(cols), log=lambda m: None)
    assert "pixmix-compat" in compat["protocol"]["imagenet_c"]
    assert compat["imagenet_c"]["missing"] and "mce" not in compat["imagenet_c"]


def test_missing_severity_and_wrong_class_count_fail_clearly(imagenet_c_tree, tmp_path):
    root, cols = imagenet_c_tree
    partial = tmp_path / "partial"
    write_tree(partial / "fog" / "1", lambda k, i: cols[k], [f"n{k:08d}" for k in range(K)], 1)
    with pytest.raises(ValueError, match="fog has severities \\[1\\], expected 1-5"):
        evaluate(EvalConfig("m", tmp_path / "o", num_classes=K, imagenet_c=partial), model=ColourModel(cols))
    with pytest.raises(ValueError, match="4 class folders, the model 1000 outputs"):
        evaluate(EvalConfig("m", tmp_path / "o", num_classes=1000, imagenet_c=root / "c",
                 corruptions=["fog"]), model=ColourModel(palette(1000)))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(EvalConfig("m", tmp_path / "o"), model=ColourModel(cols))
    bad = tmp_path / "bad"
    write_tree(bad / "fog" / "1", lambda k, i: cols[k], ["n0"], 1)
    (bad / "fog" / "1" / "n0" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    for s in range(2, 6):
        write_tree(bad / "fog" / str(s), lambda k, i: cols[k], ["n0"], 1)
    with pytest.raises(ValueError, match="broken.JPEG"):
        evaluate(EvalConfig("m", tmp_path / "o", num_classes=1, imagenet_c=bad), model=ColourModel(cols[:1]))


# ---------------------------------------------------------------------------------------------
# ImageNet-R / -A / -O masks


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    """A 1000-class val tree (one image per class) and colours per 1000-class index."""
    root = tmp_path_factory.mktemp("k1000")
    cols = palette(1000)
    names = [f"n{j:08d}" for j in range(1000)]
    write_tree(root / "val", lambda k, i: cols[k], names, 1, size=16)
    return root, cols, names


def test_subset_masks_route_folder_labels_to_the_right_logits(thousand, tmp_path):
    root, cols, names = thousand
    for key, idx in (("imagenet_r", IMAGENET_R), ("imagenet_a", IMAGENET_A)):
        # folder k of the 200 holds a picture of 1000-class index idx[k]; 5 are painted as the
        # next folder's class (known mistakes)
        write_tree(tmp_path / key, lambda k, i: cols[idx[(k + 1) % 200]] if k < 5 else
                   cols[idx[k]], [names[j] for j in idx], 1, size=16)
    res = evaluate(EvalConfig("m", tmp_path / "ev", num_classes=1000, imagenet_r=tmp_path / "imagenet_r",
                   imagenet_a=tmp_path / "imagenet_a", batch_size=50,
                   threads=1), model=ColourModel(cols))
    assert res["imagenet_r"]["error"] == pytest.approx(2.5)  # 5 / 200
    assert res["imagenet_a"]["error"] == pytest.approx(2.5)
    assert res["imagenet_r"]["n"] == 200


def test_imagenet_o_scores_against_val_of_its_classes(thousand, tmp_path):
    root, cols, names = thousand
    # anomalies: colours at the centres of the palette's grid cells, 11 grey levels from every
    # class colour on each axis -> a flat softmax (max-softmax ~ 1/200) over the 200 O classes
    write_tree(tmp_path / "o", lambda k, i: (31 + 22 * (k % 9), 31 + 22 * (k // 9 % 9),
                                             31 + 22 * (k // 81 % 9)),
               [names[j] for j in IMAGENET_O], 1, size=16)
    res = evaluate(EvalConfig("m", tmp_path / "ev", num_classes=1000, imagenet_val=root / "val",
                   imagenet_o=tmp_path / "o", batch_size=100, threads=1), model=ColourModel(cols))
    o = res["imagenet_o"]
    assert (o["n_out"], o["n_in"]) == (200, 200)  # the val images of the 200 O classes
    assert res["clean"]["error"] == 0.0
    assert o["auroc"] == pytest.approx(100) and o["aupr"] == pytest.approx(100)  # every anomaly
    assert o["fpr95"] == 0.0  # scores above every val image of the 200 classes


# ---------------------------------------------------------------------------------------------
# CIFAR-C and PGD


def test_cifar_c_mean_error(tmp_path):
    cols = palette(10)
    labels = np.tile(np.arange(10), 2 * 5).astype(np.uint8)  # 5 severities x 20 images
    np.save(tmp_path / "labels.npy", labels)
    expected = {}
    for ci, c in enumerate(CORRUPTIONS):
        imgs = np.empty((len(labels), 32, 32, 3), np.uint8)
        n_wrong = ci % 7
        for r, y in enumerate(labels):
            imgs[r] = cols[(y + 1) % 10] if r < n_wrong else cols[y]
        np.save(tmp_path / f"{c}.npy", imgs)
        expected[c] = 100 * n_wrong / len(labels)
    res = evaluate(EvalConfig("m", tmp_path / "ev", num_classes=10, cifar_c=tmp_path), model=ColourModel(cols, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert res["cifar_c"]["per_corruption"] == pytest.approx(expected)
    assert res["cifar_c"]["mean_error"] == pytest.approx(np.mean(list(expected.values())))


def test_pgd_breaks_a_linear_model_and_keeps_the_reference_start_quirk():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    images = np.zeros((30, 8, 8, 3), np.uint8)  # black: the random start leaves [0, 1]
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(float(i[0].detach().min())))
    labels = model(torch.zeros(30, 3, 8, 8) * 2 - 1).argmax(1).numpy()  # clean: all correct
    seen.clear()
    err = pgd_error(model, images, labels, steps=5)
    assert seen[0] < -1.0            # the first forward saw 2x - 1 with x < 0 (reference)
    seen.clear()
    pgd_error(model, images, labels, steps=5, clamp_start=True)
    assert seen[0] >= -1.0           # fixed: clamped start
    assert pgd_error(model, images, labels, eps=0.0, steps=3) == 0.0  # no budget, no error
    strong = pgd_error(model, images, labels, eps=0.5, steps=20, step_size=0.05)
    assert strong > 50 and 0 <= err <= 100


# ---------------------------------------------------------------------------------------------
# checkpoints and the command line


def test_checkpoint_formats_and_cli(tmp_path, capsys):
    import torchvision

    from ipmix_dali.cli import main
    from ipmix_dali.eval.load_model import load_model

    net = torchvision.models.resnet18(num_classes=3)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}},
               tmp_path / "released.pth")
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    torch.save({"model": net.state_dict(), "step": 3}, tmp_path / "ours.pt")
    for name in ("released.pth", "plain.pth", "ours.pt"):
        m = load_model(str(tmp_path / name), "resnet18", 3)
        assert torch.equal(m.fc.weight, net.fc.weight) and not m.training
    with pytest.raises(ValueError, match="missing keys .*unexpected keys .*wrong shapes"):
        load_model(str(tmp_path / "plain.pth"), "resnet34", 3)
    with pytest.raises(ValueError, match="does not fit resnet18 with 10 classes"):
        load_model(str(tmp_path / "plain.pth"), "resnet18", 10)
    from fractions import Fraction

    torch.save({"model": net.state_dict(), "extra": Fraction(1, 3)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="--unsafe-pickle"):
        load_model(str(tmp_path / "pickled.pt"), "resnet18", 3)

    cols = palette(3)
    write_tree(tmp_path / "val", lambda k, i: cols[k], ["a", "b", "c"], 2, size=32)
    rc = main(["eval", "--checkpoint", str(tmp_path / "ours.pt"), "--arch", "resnet18",
               "--num-classes", "3", "--imagenet-val", str(tmp_path / "val"), "--out",
               str(tmp_path / "cli"), "--batch-size", "4"])
    assert rc == 0
    res = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert res["clean"]["n"] == 6 and 0 <= res["clean"]["error"] <= 100
    rc = main(["eval-compare", str(tmp_path / "cli"), str(tmp_path / "cli")])
    assert rc == 0 and "| clean err |" in capsys.readouterr().out
    rc = main(["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--imagenet-val",
               str(tmp_path / "val"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# ImageNet-P


def _write_video(path, colours, size=32):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 1, (size, size))
    for c in colours:
        w.write(np.full((size, size, 3), c[::-1], np.uint8))  # OpenCV writes BGR
    w.release()


def test_imagenet_p_flip_probability_t5d_and_mfr(tmp_path):
    pytest.importorskip("cv2")
    from ipmix_dali.eval.imagenet_p import P_PERTURBATIONS, evaluate_imagenet_p, read_video

    cols = palette(8)
    model = ColourModel(cols)
    # class sequences per video: flips between consecutive frames, or against frame 0 (noise)
    seqs = [[0, 0, 1, 1, 0], [2, 2, 2, 2, 2]]
    for p in P_PERTURBATIONS:
        for v, seq in enumerate(seqs):
            _write_video(tmp_path / p / f"n{v:08d}" / f"vid{v}.mp4", [cols[k] for k in seq])
    assert read_video(tmp_path / "rotate" / "n00000000" / "vid0.mp4").shape == (5, 32, 32, 3)
    alex = {"fp": {p: 50.0 for p in P_PERTURBATIONS}, "t5d": {p: 2.0 for p in P_PERTURBATIONS}}
    res = evaluate_imagenet_p(model, tmp_path, alexnet=alex, log=lambda m: None)
    per = res["per_perturbation"]
    # consecutive: 2 flips of 4 comparisons, and 0 -> (0.5 + 0) / 2 = 25 %
    assert per["rotate"]["flip_probability"] == pytest.approx(25.0)
    # noise, against frame 0: frames 2 and 3 differ from it -> 2 / 4, and 0 -> 25 % again;
    # a sequence where they differ: [0, 1, 1, 1, 1] gives 100 % for noise, 25 % otherwise
    assert per["gaussian_noise"]["flip_probability"] == pytest.approx(25.0)
    assert per["rotate"]["fr"] == pytest.approx(50.0)
    assert res["mfr"] == pytest.approx(50.0)
    # T5D against a direct computation on the same frames
    from ipmix_dali.eval.metrics import top5_distance

    def t5d(seq, noise):
        frames = torch.tensor(np.stack([np.full((32, 32, 3), cols[k]) for k in seq]),
                              dtype=torch.float32).permute(0, 3, 1, 2) / 255
        m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        lg = model((frames - m) / s).detach().numpy()
        pairs = [(0 if noise else j - 1, j) for j in range(1, len(seq))]
        return np.mean([top5_distance(lg[a], lg[b]) for a, b in pairs])

    want = np.mean([t5d(q, False) for q in seqs])
    assert per["rotate"]["top5_distance"] == pytest.approx(want, abs=0.3)  # mp4v shifts colours
    assert res["mt5d"] == pytest.approx(np.mean([per[p]["t5d_ratio"] for p in P_PERTURBATIONS]))
    _write_video(tmp_path / "bad" / "scale" / "n0" / "one.mp4", [cols[0]])
    with pytest.raises(ValueError, match="1 frame\\(s\\) decoded"):
        evaluate_imagenet_p(model, tmp_path / "bad", log=lambda m: None)


def test_measure_alexnet_normalises_mfr_to_100_for_alexnet_itself(tmp_path):
    pytest.importorskip("cv2")
    import torchvision

    from ipmix_dali.eval.imagenet_p import P_PERTURBATIONS

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    torch.save(alex.state_dict(), tmp_path / "alexnet.pth")
    rng = np.random.default_rng(0)
    for p in P_PERTURBATIONS:
        frames = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(4)]
        _write_video(tmp_path / "p" / p / "n0" / "v.mp4", frames, size=64)
    res = evaluate(EvalConfig("alexnet.pth", tmp_path / "ev", imagenet_p=tmp_path / "p",
                   measure_alexnet=str(tmp_path / "alexnet.pth")), model=alex, log=lambda m: None)
    norm = json.loads((tmp_path / "ev" / "alexnet_p.json").read_text())
    assert set(norm["fp"]) == set(P_PERTURBATIONS)
    ip = res["imagenet_p"]
    defined = [p for p in P_PERTURBATIONS if norm["fp"][p] > 0]
    assert all(ip["per_perturbation"][p]["fr"] == pytest.approx(100.0) for p in defined)


def test_corrupt_on_the_fly_equals_the_written_set(imagenet_c_tree, tmp_path):
    """In-memory ImageNet-C-style cells give the errors of the same cells written to disk."""
    from ipmix_dali.corruptions.make import make_corrupted

    root, cols = imagenet_c_tree
    names = ["contrast", "gaussian_noise"]
    fly = evaluate(EvalConfig("m", tmp_path / "fly", num_classes=K, imagenet_val=root / "val",
                   corrupt_on_the_fly=True, corruptions=names,
                   batch_size=10, threads=1), model=ColourModel(cols), log=lambda m: None)
    make_corrupted(root / "val", tmp_path / "written", names, progress=False)
    disk = evaluate(EvalConfig("m", tmp_path / "disk", num_classes=K, imagenet_c=tmp_path / "written", batch_size=10, threads=1), model=ColourModel(cols), log=lambda m: None)
    assert "in memory" in fly["protocol"]["imagenet_c"] and fly["imagenet_c"]["generated"]
    for c in names:
        for s in "12345":
            assert fly["imagenet_c"]["cells"][c][s]["error"] == pytest.approx(
                disk["imagenet_c"]["cells"][c][s]["error"]), (c, s)
    assert fly["imagenet_c"]["cells"]["gaussian_noise"]["5"]["error"] > 15.0  # noise hurts
    with pytest.raises(ValueError, match="--corrupt-on-the-fly corrupts --imagenet-val"):
        evaluate(EvalConfig("m", tmp_path / "x", num_classes=K, corrupt_on_the_fly=True,
                 imagenet_c=root / "c"), model=ColourModel(cols))


def test_input_protocol_options_reach_every_set(imagenet_c_tree, tmp_path):
    """--resize/--crop/--mean/--std: a 32 px model normalised with 0.5 sees what it expects."""
    root, cols = imagenet_c_tree
    model = ColourModel(cols, mean=(0.5,) * 3, std=(0.5,) * 3)
    res = evaluate(EvalConfig("m", tmp_path / "ev", num_classes=K, imagenet_val=root / "val",
                   imagenet_c=root / "c", corruptions=["fog"], resize=36, crop=32,
                   mean=(0.5,) * 3, std=(0.5,) * 3, batch_size=8, threads=1), model=model, log=lambda m: None)
    assert res["clean"]["error"] == pytest.approx(15.0)
    fog = CORRUPTIONS.index("fog")
    for s in range(1, 6):
        assert res["imagenet_c"]["cells"]["fog"][str(s)]["error"] == pytest.approx(
            100 * wrong_in_cell(fog, s) / 20)
    assert res["protocol"]["clean"] == "Resize(36) + CenterCrop(32)"
    assert "0.5" in res["protocol"]["normalisation"]
    # the ImageNet normalisation on this model would shift every colour: errors change
    other = evaluate(EvalConfig("m", tmp_path / "ev2", num_classes=K, imagenet_val=root / "val", resize=36, crop=32, batch_size=8, threads=1), model=model, log=lambda m: None)
    assert other["clean"]["error"] != pytest.approx(15.0)


def test_severity_chart_of_several_runs(tmp_path):
    """eval-compare --chart: the per-corruption x severity errors of each run, as a PNG."""
    from PIL import Image

    from ipmix_dali.eval.report import compare, severity_table

    runs = []
    for name, scale in (("baseline", 1.0), ("ipmix", 0.5)):
        cells = {c: {str(s): {"error": scale * 10 * s} for s in range(1, 6)}
                 for c in ("gaussian_noise", "fog", "pixelate")}
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(
            {"imagenet_c": {"cells": cells, "per_corruption": {}, "mce": None}}))
        runs.append(str(folder))
        assert severity_table(json.loads((folder / "results.json").read_text()))["fog"] == {
            s: scale * 10 * s for s in range(1, 6)}
    compare(runs, log=lambda m: None, chart=str(tmp_path / "compare.png"))
    img = Image.open(tmp_path / "compare.png")
    assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 200


# ---------------------------------------------------------------------------------------------
# --mean/--std and --amp reach every protocol


class TieModel(torch.nn.Module):
    """ColourModel's nearest colour as a one-hot (straight-through, so PGD has a gradient), then
    a linear layer: each colour votes 1.0 for its class, and one extra "tie" colour votes 1.0 for
    class ``pair[0]`` and 1.001 for ``pair[1]``. In float32 ``pair[1]`` wins; under bfloat16
    autocast (steps of 2^-7 near 1) the two logits are equal and argmax takes ``pair[0]``. An
    image in class ``pair[1]``'s folder painted the tie colour is therefore right in float32 and
    wrong with --amp; with the wrong normalisation the colours, and the answers, move."""

    def __init__(self, colours, tie, pair, mean, std):
        super().__init__()
        n = len(colours)
        self.colour = ColourModel(np.vstack([colours, [tie]]).astype(np.float32), mean, std)
        self.fc = torch.nn.Linear(n + 1, n)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, :n] = torch.eye(n)
            self.fc.weight[list(pair), n] = 1.0
            self.fc.bias.zero_()
            self.fc.bias[pair[1]] = 0.001

    def forward(self, x):
        scores = self.colour(x)
        hard = torch.nn.functional.one_hot(scores.argmax(1), scores.shape[1]).float()
        return self.fc(hard + scores - scores.detach())


# The model's own normalisation: read with ImageNet's instead, every colour lands near grey 115.
FLAG_MEAN, FLAG_STD = (0.45, 0.4, 0.5), (0.02, 0.03, 0.025)


def reference_predictions(model, colours, mean, std, amp=False, mask=None):
    """(argmax, max-softmax) of solid images of ``colours``, normalised here by hand."""
    x = torch.as_tensor(np.asarray(colours, np.float32)).view(-1, 3, 1, 1).expand(-1, 3, 8, 8)
    x = (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    logits = logits.float() if mask is None else logits.float()[:, list(mask)]
    return logits.argmax(1).numpy(), logits.softmax(1).max(1).values.numpy()


def test_mean_std_and_amp_reach_every_protocol(tmp_path):
    """Every protocol with --mean/--std that are not ImageNet's, without and with --amp (bfloat16
    autocast, on the CPU too): each number equals the one computed from the model's outputs on
    inputs normalised by hand with those flags, and differs from the default normalisation's or
    float32's."""
    pytest.importorskip("cv2")
    from ipmix_dali.eval.imagenet_p import P_PERTURBATIONS

    # 4 classes: val, ImageNet-C (fog), in-memory contrast, ImageNet-P, CIFAR-C, PGD
    cols, tie = palette(K), (220, 20, 20)
    model = TieModel(cols, tie, (0, 1), FLAG_MEAN, FLAG_STD)
    classes = [f"n{k:08d}" for k in range(K)]

    def paint(k, i=0):  # class 1's folder holds the tie colour
        return tie if k == 1 else cols[k]

    write_tree(tmp_path / "val", paint, classes, PER)
    for s in range(1, 6):
        write_tree(tmp_path / "c" / "fog" / str(s), paint, classes, PER)
    labels = np.tile(np.arange(K), 3)
    images = np.stack([np.full((32, 32, 3), paint(y), np.uint8) for y in labels])
    (tmp_path / "cifar").mkdir()
    np.save(tmp_path / "cifar" / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    np.save(tmp_path / "cifar" / "fog.npy", np.tile(images, (5, 1, 1, 1)))
    np.savez(tmp_path / "test.npz", images=images, labels=labels)
    sequence = [tie, cols[1], cols[0], cols[0]]  # float32 1 1 0 0, bfloat16 0 1 0 0
    for p in ("rotate", "gaussian_noise"):
        _write_video(tmp_path / "p" / p / "n0" / "v.mp4", sequence)
    # 1000 classes: ImageNet-R, -A, -O (class 90's folders hold the tie colour)
    cols1k, tie1k = palette(1000), (31, 31, 31)
    model1k = TieModel(cols1k, tie1k, (79, 90), FLAG_MEAN, FLAG_STD)
    names = [f"n{j:08d}" for j in range(1000)]

    def paint1k(k, i=0, idx=range(1000)):
        return tie1k if idx[k] == 90 else cols1k[idx[k]]

    write_tree(tmp_path / "val1k", paint1k, names, 1, size=16)
    for key, idx in (("r", IMAGENET_R), ("a", IMAGENET_A)):
        write_tree(tmp_path / key, lambda k, i, idx=idx: paint1k(k, idx=idx),
                   [names[j] for j in idx], 1, size=16)
    not_o = [j for j in range(1000) if j not in set(IMAGENET_O)]
    write_tree(tmp_path / "o", lambda k, i: cols1k[not_o[k]], [names[j] for j in IMAGENET_O], 1,
               size=16)  # anomalies: pictures of classes outside the 200

    def expected(amp, mean=FLAG_MEAN, std=FLAG_STD):
        """Every protocol's number, from reference_predictions."""
        def error(m, colours, y, mask=None):
            pred, _ = reference_predictions(m, colours, mean, std, amp, mask)
            return 100 * float(np.mean(pred != np.asarray(y)))

        four = error(model, [paint(y) for y in labels], labels)
        seq, _ = reference_predictions(model, sequence, mean, std, amp)
        _, conf_in = reference_predictions(model1k, [paint1k(j) for j in IMAGENET_O], mean, std,
                                           amp, IMAGENET_O)
        _, conf_out = reference_predictions(model1k, [cols1k[j] for j in not_o[:200]], mean, std,
                                            amp, IMAGENET_O)
        return {"clean": four, "fog": four, "contrast": four, "cifar_c": four, "pgd": four,
                "rotate": 100 * flip_probability(seq, noise=False),
                "gaussian_noise": 100 * flip_probability(seq, noise=True),
                "clean1k": error(model1k, [paint1k(j) for j in range(1000)], range(1000)),
                **{f"imagenet_{k}": error(model1k, [paint1k(j) for j in idx], range(200), idx)
                   for k, idx in (("r", IMAGENET_R), ("a", IMAGENET_A))},
                "aupr": ood_measures(-conf_out, -conf_in)["aupr"]}

    def measured(amp):
        common = dict(mean=FLAG_MEAN, std=FLAG_STD, amp=amp, crop=32, batch_size=8, threads=1)
        run = f"amp{int(amp)}"
        res = evaluate(EvalConfig("m", tmp_path / run, num_classes=K, imagenet_val=tmp_path / "val",
                                  imagenet_c=tmp_path / "c", imagenet_p=tmp_path / "p",
                                  cifar_c=tmp_path / "cifar", pgd=True,
                                  cifar_test=tmp_path / "test.npz", **common),
                       model=model, log=lambda m: None)
        fly = evaluate(EvalConfig("m", tmp_path / f"{run}-fly", num_classes=K,
                                  imagenet_val=tmp_path / "val", corrupt_on_the_fly=True,
                                  corruptions=["contrast"], **common),
                       model=model, log=lambda m: None)
        big = evaluate(EvalConfig("m1k", tmp_path / f"{run}-1k", num_classes=1000,
                                  imagenet_val=tmp_path / "val1k", imagenet_r=tmp_path / "r",
                                  imagenet_a=tmp_path / "a", imagenet_o=tmp_path / "o",
                                  **dict(common, crop=16, batch_size=100)),
                       model=model1k, log=lambda m: None)
        pp = res["imagenet_p"]["per_perturbation"]
        return {"clean": res["clean"]["error"],
                **{k: max(cell["error"] for cell in table.values()) for k, table in
                   (("fog", res["imagenet_c"]["cells"]["fog"]),
                    ("contrast", fly["imagenet_c"]["cells"]["contrast"]))},
                "cifar_c": res["cifar_c"]["per_corruption"]["fog"], "pgd": res["pgd"]["error"],
                "rotate": pp["rotate"]["flip_probability"],
                "gaussian_noise": pp["gaussian_noise"]["flip_probability"],
                "clean1k": big["clean"]["error"], "imagenet_r": big["imagenet_r"]["error"],
                "imagenet_a": big["imagenet_a"]["error"], "aupr": big["imagenet_o"]["aupr"]}

    assert "rotate" in P_PERTURBATIONS
    want32, want16 = expected(amp=False), expected(amp=True)
    default = expected(amp=False, mean=MEAN, std=STD)
    # the test can tell: every number moves with the normalisation, and all but ImageNet-O's
    # (an anomaly score of flat softmaxes) move with bfloat16
    assert all(default[k] != pytest.approx(want32[k]) for k in want32), (default, want32)
    assert all(want16[k] != pytest.approx(want32[k]) for k in want32 if k != "aupr")
    assert (want32["clean"], want16["clean"], want32["rotate"], want16["rotate"]) == (
        0.0, 25.0, pytest.approx(100 / 3), pytest.approx(200 / 3))
    got32 = measured(amp=False)
    assert got32 == pytest.approx(want32), {k: (got32[k], want32[k]) for k in want32}
    got16 = measured(amp=True)
    assert got16 == pytest.approx(want16), {k: (got16[k], want16[k]) for k in want16}

"""Distribution tests of every sampler (>= 10^4 draws) and plan determinism.

Frequencies are checked with z-scores: with n draws a category of probability p has standard error
sqrt(p (1 - p) / n); every category must sit within 5 standard errors (seeds are fixed, so the
tests are deterministic; the bound is what a correct sampler meets with overwhelming probability).
"""
import numpy as np
import pytest

from ipmix_dali import make_config, make_rng, sample_plan
from ipmix_dali.ops.levels import get_ab
from ipmix_dali.ops.table import (
    AUGMIX_OPS,
    AUGMIX_OPS_ALL,
    IPMIX_OPS,
    IPMIX_OPS_ALL,
    LAYERMIX_OP_ID,
    LAYERMIX_OPS,
    MIX_OP_ID,
    PIL_OP_ID,
)

N = 8000  # samples per plan; with views/chains/steps every check sees >= 10^4 draws


def assert_freq(values, probs, label=""):
    """values: 1-d array of categories; probs: {category: probability} (must cover values)."""
    values = np.asarray(values).ravel()
    n = len(values)
    assert n >= 10_000, f"{label}: only {n} draws"
    assert set(np.unique(values)) <= set(probs), f"{label}: unexpected {set(np.unique(values))}"
    for cat, p in probs.items():
        observed = np.count_nonzero(values == cat) / n
        se = np.sqrt(p * (1 - p) / n)
        assert abs(observed - p) <= 5 * se + 1e-12, f"{label} {cat}: {observed:.4f} vs {p:.4f}"


def assert_moment(values, mean, var, label=""):
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    assert n >= 10_000
    assert abs(values.mean() - mean) <= 5 * np.sqrt(var / n), f"{label} mean {values.mean()}"
    # variance estimate: allow 5% relative (n >= 10^4 gives a few % standard error)
    assert abs(values.var() - var) <= 0.05 * var, f"{label} var {values.var()} vs {var}"


def uniform(cats):
    cats = list(cats)
    return {c: 1 / len(cats) for c in cats}


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ipmix_plan():
    cfg = make_config("ipmix", "imagenet", jsd=True, all_ops=True)
    return sample_plan(cfg, 2 * N, make_rng(7), bank_size=50, bank_side=256)


def test_ipmix_branch_and_length(ipmix_plan):
    p = ipmix_plan
    assert_freq(p.branch, {0: 0.5, 1: 0.5}, "IMG/P")
    assert_freq(p.length, uniform(range(4)), "chain length")
    # a step is used iff it is below the chain length, for exactly one branch
    steps = np.arange(3)[None, None, None]
    active = steps < p.length[..., None]
    img = active & (p.branch[..., None] == 0)
    assert np.array_equal(p.op >= 0, img)
    assert np.array_equal(p.mix_op >= 0, active & ~img)


def test_ipmix_patches(ipmix_plan):
    p = ipmix_plan
    used = p.mix_op >= 0
    sizes = p.patch[used]
    assert_freq(sizes, uniform((4, 8, 16, 32, 64, 224)), "patch size")
    w, h, left, top = p.width[used], p.height[used], p.left[used], p.top[used]
    square = p.square[used] == 1
    assert_freq(square, {True: 0.5, False: 0.5}, "square vs rectangle")
    assert np.all(w[square] == sizes[square]) and np.all(h[square] == sizes[square])
    rect = ~square
    for s in (8, 16, 64):
        sel = rect & (sizes == s)
        sides = np.concatenate([w[sel], h[sel]])
        assert sides.min() == 2 and sides.max() == s
        counts = np.bincount(sides, minlength=s + 1)[2:]
        expected = len(sides) / (s - 1)
        # chi-square statistic against uniform {2..s}; df = s - 2; bound ~ df + 5 sqrt(2 df)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < (s - 2) + 5 * np.sqrt(2 * (s - 2)), (s, chi2)
    # reference anchoring: corner uniform over [0, W - p] for the drawn p, whatever the box
    assert np.all(left <= 224 - sizes) and np.all(top <= 224 - sizes)
    assert np.all(left[sizes == 224] == 0) and np.all(top[sizes == 224] == 0)
    small = sample_plan(make_config("ipmix", patch_sizes=(4,)), 8000, make_rng(3), 5, 256)
    corner = small.left[small.mix_op >= 0]
    assert_freq(corner // 55, {0: 55 / 221, 1: 55 / 221, 2: 55 / 221, 3: 55 / 221, 4: 1 / 221},
                "anchor")


def test_ipmix_exact_anchor_flag():
    cfg = make_config("ipmix", "imagenet", patch_anchor="exact")
    p = sample_plan(cfg, N, make_rng(8), bank_size=5, bank_side=256)
    used = p.mix_op >= 0
    full = used & (p.patch == 224) & (p.width < 224)
    assert full.sum() > 100
    # the fixed behaviour places a smaller rectangle anywhere it fits
    assert p.left[full].max() > 0 and np.all(p.left[used] + p.width[used] <= 224)
    assert np.all(p.top[used] + p.height[used] <= 224)


def test_ipmix_mixing_ops_coefficients_partner(ipmix_plan):
    p = ipmix_plan
    used = p.mix_op >= 0
    assert_freq(p.mix_op[used], uniform(range(4)), "mixing op")
    assert_freq(p.partner[used], {0: 0.5, 1: 0.5}, "partner")
    masked = used & (p.mix_op >= 2)
    assert_moment(p.mask_p[masked], 0.5, 1 / 12, "mask p")
    assert np.all(p.a[masked] == 0) and np.all(p.mask_p[used & (p.mix_op < 2)] == 0)
    ab = used & (p.mix_op < 2)
    interp = p.a[ab] < 1
    assert_freq(interp, {True: 0.5, False: 0.5}, "get_ab branch")
    # beta = 4: interpolation a ~ Beta(4,1), b ~ Beta(1,4); extrapolation a = 1 + Beta(1,4)
    assert_moment(p.a[ab][interp], 4 / 5, 4 / (25 * 6), "a interp")
    assert_moment(p.b[ab][interp], 1 / 5, 4 / (25 * 6), "b interp")
    assert_moment(p.a[ab][~interp], 1 + 1 / 5, 4 / (25 * 6), "a extrap")
    assert_moment(p.b[ab][~interp], -1 / 5, 4 / (25 * 6), "b extrap")
    aug = used & (p.partner == 1)
    assert np.array_equal(p.partner_op >= 0, aug)
    assert_freq(p.partner_op[aug], uniform(s.op_id for s in IPMIX_OPS_ALL), "partner op")


def test_ipmix_weights_and_ops(ipmix_plan):
    p = ipmix_plan
    assert p.weights.dtype == np.float32 and p.m.dtype == np.float32
    assert np.allclose(p.weights.sum(-1), 1, atol=1e-6)
    assert_moment(p.weights, 1 / 3, 1 / 18, "Dirichlet(1,1,1)")
    assert_moment(p.m, 0.5, 1 / 12, "Beta(1,1)")
    assert_freq(p.op[p.op >= 0], uniform(s.op_id for s in IPMIX_OPS_ALL), "op")
    # JSD views share the mixing picture (one index per sample) but not their decisions
    assert p.mix_index.shape == p.m.shape[:1]
    assert not np.array_equal(p.weights[:, 0], p.weights[:, 1])


def test_ipmix_cifar_preset_and_params():
    cfg = make_config("ipmix", "cifar")
    assert (cfg.image_size, cfg.beta, cfg.severity, cfg.patch_sizes) == (32, 3.0, 3.0, (4, 8, 16, 32))
    p = sample_plan(cfg, 8 * N, make_rng(9), bank_size=3, bank_side=36)
    assert np.all(p.partner[p.mix_op >= 0] == 0)  # cifar: always the mixing picture
    ops = p.op[p.op >= 0]
    assert_freq(ops, uniform(s.op_id for s in IPMIX_OPS), "cifar op")
    params = p.param[p.op >= 0]
    # severity 3: posterize bits 4 - int(L*4/10) is 3 iff L >= 2.5, probability 0.5 / 2.9
    bits = params[ops == PIL_OP_ID["posterize"]]
    assert_freq(bits, {4: 1 - 0.5 / 2.9, 3: 0.5 / 2.9}, "posterize bits")
    # rotate: int(L * 3) with L ~ U(0.1, 3), signed, so |deg| in 0..8
    deg = params[ops == PIL_OP_ID["rotate"]]
    probs = {d: (min(d + 1, 9) / 3 - max(d / 3, 0.1)) / 2.9 for d in range(9)}
    assert_freq(np.abs(deg), probs, "rotate |deg|")
    assert_freq(deg[deg != 0] > 0, {True: 0.5, False: 0.5}, "rotate sign")
    # translate at 32 px: int(L * (32/3) / 10) in 0..3
    tr = np.abs(params[(ops == PIL_OP_ID["translate_x"]) | (ops == PIL_OP_ID["translate_y"])])
    assert tr.max() == 3 and tr.min() == 0
    thr = params[ops == PIL_OP_ID["solarize"]]
    assert thr.min() >= 256 - 76 and thr.max() <= 254
    sh = params[(ops == PIL_OP_ID["shear_x"]) | (ops == PIL_OP_ID["shear_y"])]
    assert 0.09 >= np.abs(sh).max() > 0.085 and np.abs(sh).min() >= 0.003


# ---------------------------------------------------------------------------------------------
def test_pixmix_sampler():
    cfg = make_config("pixmix", "imagenet", all_ops=True)
    p = sample_plan(cfg, 4 * N, make_rng(10), bank_size=10, bank_side=256)
    assert_freq(p.rounds, uniform(range(5)), "PixMix rounds")
    assert_freq(p.start_aug, {0: 0.5, 1: 0.5}, "start from augment(x)")
    used = p.mix_op >= 0
    assert np.array_equal(used, np.arange(4)[None, None] < p.rounds[..., None])
    assert_freq(p.mix_op[used], {0: 0.5, 1: 0.5}, "add/multiply")
    assert_freq(p.partner_aug[used], {0: 0.5, 1: 0.5}, "partner")
    ops = np.concatenate([p.start_op[p.start_aug == 1], p.partner_op[p.partner_op >= 0]])
    assert_freq(ops, uniform(s.op_id for s in AUGMIX_OPS_ALL), "op")
    assert np.all(p.start_param[(p.start_op == PIL_OP_ID["autocontrast"])] == 0)
    assert p.mix_index.min() == 0 and p.mix_index.max() == 9
    assert_freq(p.mix_index, uniform(range(10)), "mixing picture index")
    assert p.mix_top.max() == 32 and p.mix_left.min() == 0


def test_augmix_sampler():
    cfg = make_config("augmix", "cifar", jsd=True)
    p = sample_plan(cfg, N, make_rng(11))
    assert_freq(p.depth, uniform((1, 2, 3)), "depth")
    assert_freq(p.op[p.op >= 0], uniform(s.op_id for s in AUGMIX_OPS), "op")
    assert_moment(p.weights, 1 / 3, 1 / 18, "Dirichlet")
    assert_moment(p.m, 0.5, 1 / 12, "Beta")
    fixed = sample_plan(make_config("augmix", depth=2), 10, make_rng(1))
    assert np.all(fixed.depth == 2) and fixed.op.shape[-1] == 2 and np.all(fixed.op >= 0)


def test_layermix_sampler():
    cfg = make_config("layermix", "imagenet")
    p = sample_plan(cfg, 4 * N, make_rng(12), bank_size=4, bank_side=256)
    assert_freq(p.steps, uniform(range(3)), "steps")
    assert_freq(p.op, uniform(range(len(LAYERMIX_OPS))), "op")
    used = p.blend_op >= 0
    assert np.array_equal(used, np.arange(2)[None, None] < p.steps[..., None])
    assert_freq(p.blend_op[used], {MIX_OP_ID["add"]: 1 / 3, MIX_OP_ID["multiply"]: 1 / 3,
                                   MIX_OP_ID["random_pixels"]: 1 / 6,
                                   MIX_OP_ID["random_elems"]: 1 / 6}, "blend")
    first = p.param[..., 0]
    rot = first[p.op == LAYERMIX_OP_ID["rotate"]]
    assert 8.9 < np.abs(rot).max() <= 9 and np.abs(rot).min() >= 0.1
    assert_freq(rot > 0, {True: 0.5, False: 0.5}, "rotate sign") if rot.size >= 10_000 else None
    bits = first[p.op == LAYERMIX_OP_ID["posterize"]]
    assert set(np.unique(bits)) == {0, 1}
    assert abs(np.mean(bits == 0) - (0.9 / 1.1)) < 0.04  # int(U(0.1, 1.2)) == 0 w.p. 0.9/1.1
    thr = first[p.op == LAYERMIX_OP_ID["solarize_increasing"]]
    assert thr.min() >= -0.2 and thr.max() <= 0.1
    tr = first[p.op == LAYERMIX_OP_ID["translate_x"]]
    assert 21.5 < np.abs(tr).max() <= int(224 * 0.33) * 0.3 + 1e-9
    sh = first[p.op == LAYERMIX_OP_ID["shear_x"]]
    assert np.all((np.abs(sh) >= np.degrees(np.arctan(0.09)) - 1e-9)
                  & (np.abs(sh) <= np.degrees(np.arctan(0.1)) + 1e-9))
    # unused calls of f carry no parameter
    assert np.all(p.param[..., 2][p.steps < 2] == 0) and np.all(p.param[..., 1][p.steps < 1] == 0)


def test_get_ab_moments():
    a, b, interp = get_ab(make_rng(13), 3.0, (40_000,))
    assert a.dtype == np.float32 and b.dtype == np.float32
    assert_freq(interp, {0: 0.5, 1: 0.5}, "branch")
    i = interp == 1
    assert_moment(a[i], 3 / 4, 3 / (16 * 5), "Beta(3,1)")
    assert_moment(b[i], 1 / 4, 3 / (16 * 5), "Beta(1,3)")
    assert_moment(a[~i], 1.25, 3 / (16 * 5), "1 + Beta(1,3)")
    assert np.all(a[~i] >= 1) and np.all(b[~i] <= 0)


@pytest.mark.parametrize("method", ["none", "augmix", "pixmix", "ipmix", "layermix"])
def test_same_seed_same_plan(method):
    cfg = make_config(method, jsd=True)
    p1 = sample_plan(cfg, 16, make_rng(5, 1, 2, 3), 7, 256)
    p2 = sample_plan(cfg, 16, make_rng(5, 1, 2, 3), 7, 256)
    assert p1 == p2
    if method != "none":
        assert p1 != sample_plan(cfg, 16, make_rng(5, 1, 2, 4), 7, 256)
        assert p1 != sample_plan(cfg, 16, make_rng(5, 0, 2, 3), 7, 256)


def test_config_errors():
    with pytest.raises(ValueError, match="patch size 224 exceeds image_size 32"):
        make_config("ipmix", "imagenet", image_size=32, patch_sizes=(4, 224))
    # without explicit patch sizes, a smaller crop keeps the reference's sizes that fit it
    assert make_config("ipmix", "imagenet", image_size=32).patch_sizes == (4, 8, 16, 32)
    with pytest.raises(ValueError, match="no option"):
        make_config("ipmix", bogus=1)
    with pytest.raises(ValueError, match="needs a mixing set"):
        sample_plan(make_config("pixmix"), 4, make_rng(0), bank_size=0, bank_side=256)
    with pytest.raises(ValueError, match="overflow"):
        make_config("ipmix", overflow="saturate")

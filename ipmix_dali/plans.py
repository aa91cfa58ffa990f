"""Plans: every random decision of a batch, drawn up front into small NumPy arrays.

A plan is what makes the executors interchangeable: the reference (PIL, per sample), NumPy (batch,
CPU) and CuPy (batch, GPU) executors all turn (images, mixing pictures, plan) into the same
pixels, and a plan drawn from ``make_rng(seed, shard, epoch, iteration)`` is the same on every
machine, which makes resume exact.

Array shapes use N = samples, V = views (2 with JSD: two independent augmentations sharing one
mixing picture), K = chains, T = steps per chain, R = rounds. Unused slots hold -1 (ids, boxes) or
0 (parameters). Field lists are in each sampler's docstring.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from .config import METHODS, AugMixConfig, IPMixConfig, LayerMixConfig, NoneConfig, PixMixConfig
from .ops.levels import get_ab
from .ops.table import LAYERMIX_OP_ID, LAYERMIX_OPS, MIX_OP_ID, layermix_param, op_list, sample_ops

IMG, PATCH = 0, 1  # IPMix chain branches ('IMG' / 'Img' and 'P' in the reference)
PARTNER_MIXING_PICTURE, PARTNER_AUGMENTED = 0, 1

# LayerMix's blend_fns list: add and multiply twice, so they are drawn with p = 1/3 each.
LAYERMIX_BLENDS = np.array([MIX_OP_ID["add"], MIX_OP_ID["multiply"], MIX_OP_ID["add"],
                            MIX_OP_ID["multiply"], MIX_OP_ID["random_pixels"],
                            MIX_OP_ID["random_elems"]], dtype=np.int8)


class Plan:
    """The random decisions of one batch: a method, its config and named arrays.

    Arrays are attributes (``plan.weights``); ``plan.arrays`` is the dict. Plans compare equal when
    method, config and every array are equal.
    """

    def __init__(self, method: str, config, arrays: Dict[str, np.ndarray]):
        self.method = method
        self.config = config
        self.arrays = dict(arrays)

    def __getattr__(self, name):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{self.method} plan has no field {name!r}")

    @property
    def n(self) -> int:
        return int(self.arrays["views_of"].shape[0])

    @property
    def views(self) -> int:
        return int(self.arrays["views_of"].shape[1])

    def __eq__(self, other):
        return (isinstance(other, Plan) and self.method == other.method
                and self.config == other.config and self.arrays.keys() == other.arrays.keys()
                and all(np.array_equal(v, other.arrays[k]) for k, v in self.arrays.items()))

    def __repr__(self):
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        return f"Plan({self.method}, n={self.n}, views={self.views}: {shapes})"


def sample_plan(config, n: int, rng: np.random.Generator, bank_size: int = 0,
                bank_side: int = 0) -> Plan:
    """Draw the plan of a batch of ``n`` samples for ``config``'s method.

    Args:
        config: a config from :func:`ipmix_dali.config.make_config`.
        n: batch size.
        rng: from :func:`ipmix_dali.rng.make_rng` (seed, shard, epoch, iteration).
        bank_size: number of mixing pictures (PixMix, IPMix, LayerMix need >= 1).
        bank_side: side S of the square pictures of the bank (>= config.image_size); the plan
            draws one uniform crop of image_size per sample, like RandomCrop(image_size).
    """
    return SAMPLERS[config.method](config, n, rng, bank_size, bank_side)


def _views_of(n, v):
    # Index of the sample each (sample, view) slot belongs to; also fixes N and V of every plan.
    return np.repeat(np.arange(n, dtype=np.int32)[:, None], v, axis=1)


def _mixing_choice(rng, n, size, bank_size, bank_side, method):
    if bank_size < 1:
        raise ValueError(f"{method} needs a mixing set: got an empty bank. Pass --mixing-set DIR "
                         f"(a folder of images) or build one with `ipmix-dali make-mixing-set`.")
    if bank_side < size:
        raise ValueError(f"mixing pictures of side {bank_side} are smaller than the crop {size}: "
                         f"rebuild the bank with side >= {size}")
    index = rng.integers(0, bank_size, size=n).astype(np.int64)
    top = rng.integers(0, bank_side - size + 1, size=n).astype(np.int32)
    left = rng.integers(0, bank_side - size + 1, size=n).astype(np.int32)
    return {"mix_index": index, "mix_top": top, "mix_left": left}


def sample_none_plan(cfg: NoneConfig, n, rng, bank_size=0, bank_side=0) -> Plan:
    """No decisions: the views are the normalised input."""
    return Plan("none", cfg, {"views_of": _views_of(n, cfg.views)})


def sample_augmix_plan(cfg: AugMixConfig, n, rng, bank_size=0, bank_side=0) -> Plan:
    """AugMix (docs/augmentations.md §2.1).

    Fields: weights (N,V,K) float32 ~ Dirichlet(alpha); m (N,V) float32 ~ Beta(alpha, alpha);
    depth (N,V,K) in {1,2,3} (or cfg.depth); op (N,V,K,D) PIL op id; param (N,V,K,D).
    """
    v, k, d = cfg.views, cfg.width, cfg.max_depth
    weights = rng.dirichlet([cfg.alpha] * k, size=(n, v)).astype(np.float32)
    m = rng.beta(cfg.alpha, cfg.alpha, size=(n, v)).astype(np.float32)
    if cfg.depth > 0:
        depth = np.full((n, v, k), cfg.depth, dtype=np.int8)
    else:
        depth = rng.integers(1, 4, size=(n, v, k)).astype(np.int8)
    op, param = sample_ops(rng, op_list("augmix", cfg.all_ops), cfg.severity, cfg.image_size,
                           (n, v, k, d))
    unused = np.arange(d)[None, None, None, :] >= depth[..., None]
    op[unused] = -1
    param[unused] = 0
    return Plan("augmix", cfg, {"views_of": _views_of(n, v), "weights": weights, "m": m,
                                "depth": depth, "op": op, "param": param})


def sample_pixmix_plan(cfg: PixMixConfig, n, rng, bank_size=0, bank_side=0) -> Plan:
    """PixMix (docs/augmentations.md §4.1).

    Fields: mix_index/mix_top/mix_left (N,); start_aug (N,V) int8 (1: start from augment(x));
    start_op, start_param (N,V); rounds (N,V) in {0..k}; partner_aug (N,V,R) int8 (1: the round
    mixes with a fresh augment(x), 0: with the mixing picture); partner_op, partner_param (N,V,R);
    mix_op (N,V,R) (add or multiply); a, b (N,V,R) float32.
    """
    v, r = cfg.views, max(cfg.k, 1)
    ops = op_list("pixmix", cfg.all_ops)
    arrays = {"views_of": _views_of(n, v)}
    arrays.update(_mixing_choice(rng, n, cfg.image_size, bank_size, bank_side, "pixmix"))
    start_aug = (rng.random((n, v)) < cfg.start_aug_prob).astype(np.int8)
    start_op, start_param = sample_ops(rng, ops, cfg.severity, cfg.image_size, (n, v))
    rounds = rng.integers(0, cfg.k + 1, size=(n, v)).astype(np.int8)
    partner_aug = (rng.random((n, v, r)) < 1 - cfg.mix_prob).astype(np.int8)
    partner_op, partner_param = sample_ops(rng, ops, cfg.severity, cfg.image_size, (n, v, r))
    mix_op = rng.integers(0, 2, size=(n, v, r)).astype(np.int8)  # mixings = [add, multiply]
    a, b, _ = get_ab(rng, cfg.beta, (n, v, r))

    start_op[start_aug == 0] = -1
    start_param[start_aug == 0] = 0
    unused = np.arange(r)[None, None, :] >= rounds[..., None]
    no_aug = unused | (partner_aug == 0)
    partner_aug[unused] = -1
    partner_op[no_aug] = -1
    partner_param[no_aug] = 0
    mix_op[unused] = -1
    a[unused] = 0
    b[unused] = 0
    arrays.update(start_aug=start_aug, start_op=start_op, start_param=start_param, rounds=rounds,
                  partner_aug=partner_aug, partner_op=partner_op, partner_param=partner_param,
                  mix_op=mix_op, a=a, b=b)
    return Plan("pixmix", cfg, arrays)


def sample_ipmix_plan(cfg: IPMixConfig, n, rng, bank_size=0, bank_side=0) -> Plan:
    """IPMix (docs/augmentations.md §3.1, 3.2).

    Fields: mix_index/mix_top/mix_left (N,); weights (N,V,K) float32 ~ Dirichlet(1);
    m (N,V) float32 ~ Beta(1,1); branch (N,V,K) (0 IMG, 1 P); length (N,V,K) in {0..t};
    IMG steps: op, param (N,V,K,T); P steps: patch (N,V,K,T) the drawn size p, square (1: p x p,
    0: a rectangle with sides uniform on {2..p}), left, top, width, height (the box), mix_op (add, multiply, random_pixels, random_elems), a, b float32, mask_p
    float32, mask_seed uint32, partner (0 mixing picture, 1 augmented input) with partner_op,
    partner_param (one op on the clean input, ImageNet variant).
    """
    v, k, t, size = cfg.views, cfg.k, max(cfg.t, 1), cfg.image_size
    shape = (n, v, k, t)
    ops = op_list("ipmix", cfg.all_ops)
    arrays = {"views_of": _views_of(n, v)}
    arrays.update(_mixing_choice(rng, n, size, bank_size, bank_side, "ipmix"))
    weights = rng.dirichlet([1.0] * k, size=(n, v)).astype(np.float32)
    m = rng.beta(1.0, 1.0, size=(n, v)).astype(np.float32)
    branch = (rng.random((n, v, k)) < 0.5).astype(np.int8)
    length = rng.integers(0, cfg.t + 1, size=(n, v, k)).astype(np.int8)
    op, param = sample_ops(rng, ops, cfg.severity, size, shape)

    patch = np.asarray(cfg.patch_sizes, dtype=np.int16)[rng.integers(0, len(cfg.patch_sizes),
                                                                      size=shape)]
    square = rng.random(shape) > 0.5
    width = np.where(square, patch, rng.integers(2, patch.astype(np.int64) + 1)).astype(np.int16)
    height = np.where(square, patch, rng.integers(2, patch.astype(np.int64) + 1)).astype(np.int16)
    if cfg.patch_anchor == "reference":
        # The reference draws the corner for a p x p patch even when the rectangle is smaller.
        left = rng.integers(0, size - patch.astype(np.int64) + 1).astype(np.int16)
        top = rng.integers(0, size - patch.astype(np.int64) + 1).astype(np.int16)
    else:
        left = rng.integers(0, size - width.astype(np.int64) + 1).astype(np.int16)
        top = rng.integers(0, size - height.astype(np.int64) + 1).astype(np.int16)
    mix_op = rng.integers(0, 4, size=shape).astype(np.int8)
    a, b, _ = get_ab(rng, cfg.beta, shape)
    mask_p = rng.random(shape).astype(np.float32)
    mask_seed = rng.integers(0, 2 ** 32, size=shape, dtype=np.uint32)
    if cfg.augmented_partner:
        # `random.random() > 0.5` picks the mixing picture, otherwise an augmented copy of x.
        partner = (rng.random(shape) <= 0.5).astype(np.int8)
    else:
        partner = np.zeros(shape, dtype=np.int8)
    partner_op, partner_param = sample_ops(rng, ops, cfg.severity, size, shape)

    active = np.arange(t)[None, None, None, :] < length[..., None]
    img_step = active & (branch[..., None] == IMG)
    p_step = active & (branch[..., None] == PATCH)
    op[~img_step] = -1
    param[~img_step] = 0
    square = square.astype(np.int8)
    for arr in (patch, square, width, height, left, top, mix_op, partner):
        arr[~p_step] = -1
    for arr in (a, b, mask_p, mask_seed):
        arr[~p_step] = 0
    is_mask_op = mix_op >= 2
    a[is_mask_op] = 0
    b[is_mask_op] = 0
    mask_p[p_step & ~is_mask_op] = 0
    mask_seed[p_step & ~is_mask_op] = 0
    aug_partner = p_step & (partner == PARTNER_AUGMENTED)
    partner_op[~aug_partner] = -1
    partner_param[~aug_partner] = 0
    arrays.update(weights=weights, m=m, branch=branch, length=length, op=op, param=param,
                  patch=patch, square=square, left=left, top=top, width=width, height=height, mix_op=mix_op,
                  a=a, b=b, mask_p=mask_p, mask_seed=mask_seed, partner=partner,
                  partner_op=partner_op, partner_param=partner_param)
    return Plan("ipmix", cfg, arrays)


def sample_layermix_plan(cfg: LayerMixConfig, n, rng, bank_size=0, bank_side=0) -> Plan:
    """LayerMix (``laddermix``, docs/augmentations.md §5.1).

    Fields: mix_index/mix_top/mix_left (N,); steps (N,V) in {0,1,2}; op (N,V) LayerMix op id (one
    op f for the sample); param (N,V,3) f's parameter at each of its up to three calls (f(x),
    f(copy of x), the final f), each with its own random magnitude and sign; blend_op (N,V,2)
    mixing op ids of blend A (with f(copy)) and blend B (with the mixing picture); a, b, mask_p,
    mask_seed (N,V,2).
    """
    v, size = cfg.views, cfg.image_size
    arrays = {"views_of": _views_of(n, v)}
    arrays.update(_mixing_choice(rng, n, size, bank_size, bank_side, "layermix"))
    steps = rng.integers(0, 3, size=(n, v)).astype(np.int8)
    op = rng.integers(0, len(LAYERMIX_OPS), size=(n, v)).astype(np.int8)
    u = rng.random((n, v, 3))
    negate = rng.random((n, v, 3)) < 0.5
    param = np.zeros((n, v, 3), dtype=np.float64)
    for name, op_id in LAYERMIX_OP_ID.items():
        sel = op == op_id
        param[sel] = layermix_param(name, u[sel], negate[sel], cfg.magnitude, size)
    blend_op = LAYERMIX_BLENDS[rng.integers(0, len(LAYERMIX_BLENDS), size=(n, v, 2))]
    a, b, _ = get_ab(rng, cfg.beta, (n, v, 2))
    mask_p = rng.random((n, v, 2)).astype(np.float32)
    mask_seed = rng.integers(0, 2 ** 32, size=(n, v, 2), dtype=np.uint32)

    calls = np.array([1, 2, 3])[None, None, :] > np.where(steps == 0, 1, np.where(
        steps == 1, 2, 3))[..., None]
    param[calls] = 0
    blends_used = np.arange(2)[None, None, :] < steps[..., None]
    blend_op = np.where(blends_used, blend_op, -1).astype(np.int8)
    is_mask = blend_op >= 2
    keep_ab = blends_used & ~is_mask
    a = np.where(keep_ab, a, 0).astype(np.float32)
    b = np.where(keep_ab, b, 0).astype(np.float32)
    mask_p = np.where(blends_used & is_mask, mask_p, 0).astype(np.float32)
    mask_seed = np.where(blends_used & is_mask, mask_seed, 0).astype(np.uint32)
    arrays.update(steps=steps, op=op, param=param, blend_op=blend_op, a=a, b=b, mask_p=mask_p,
                  mask_seed=mask_seed)
    return Plan("layermix", cfg, arrays)


# One sampler per method of config.METHOD_TABLE.
SAMPLERS = {"none": sample_none_plan, "augmix": sample_augmix_plan,
            "pixmix": sample_pixmix_plan, "ipmix": sample_ipmix_plan,
            "layermix": sample_layermix_plan}
assert tuple(SAMPLERS) == METHODS, "plans.SAMPLERS and config.METHOD_TABLE list other methods"

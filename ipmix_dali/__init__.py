"""ipmix-dali: IPMix, PixMix, LayerMix and AugMix as seeded plans run by interchangeable executors.

    from ipmix_dali import make_config, make_rng, sample_plan
    cfg = make_config("ipmix", "imagenet", jsd=True)
    plan = sample_plan(cfg, n=len(images), rng=make_rng(seed, shard, epoch, iteration),
                       bank_size=len(bank), bank_side=bank.side)
"""
from .api import augment  # noqa: F401
from .config import make_config  # noqa: F401
from .plans import Plan, sample_plan  # noqa: F401
from .rng import make_rng  # noqa: F401

__version__ = "0.1.0"

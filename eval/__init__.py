"""Robustness evaluation: ``ipmix-dali eval`` / ``python -m ipmix_dali.eval``.

``config.py`` holds ``EvalConfig`` and its flags; ``evaluate.py`` runs the table of protocols, one
module each (``imagenet.py``: clean val, ImageNet-R/-A/-O; ``imagenet_c.py``; ``imagenet_p.py``;
``cifar.py``: CIFAR-C and PGD), all through ``runner.py``'s ``Evaluator`` (forward pass, amp,
per-set cache) and ``Scores`` (top-1/top-5/loss); ``report.py`` writes results.json, report.md and
the charts; ``metrics.py`` has the formulas (RMS calibration, CE/mCE, OOD measures);
``load_model.py`` loads our, torchvision and IPMix/PixMix checkpoints; ``class_subsets.py`` the
200-class subsets of ImageNet-R/A/O.
"""

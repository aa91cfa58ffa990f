"""Robustness evaluation: ``ipmix-dali eval`` / ``python -m ipmix_dali.eval``.

``evaluate.py`` runs the protocols and writes the report; ``metrics.py`` has the formulas
(RMS calibration, CE/mCE, OOD measures); ``runner.py`` streams sets through one model with a
per-set cache; ``load_model.py`` loads our, torchvision and IPMix/PixMix checkpoints;
``class_subsets.py`` the 200-class subsets of ImageNet-R/A/O.
"""

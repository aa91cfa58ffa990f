"""Robustness evaluation (ImageNet-C mCE and friends). Not built yet: see the evaluation issue."""

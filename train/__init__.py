"""The trainer on the DALI pipeline: ``ipmix-dali train`` / ``python -m ipmix_dali.train``.

``engine.py`` is the loop (read it top to bottom); ``losses.py`` the JSD loss; ``schedule.py``
the per-step warmup + cosine; ``checkpoint.py`` atomic checkpoints and resume.
"""

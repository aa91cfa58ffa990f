"""The trainer on the DALI pipeline: ``ipmix-dali train`` / ``python -m ipmix_dali.train``.

* ``config.py``: :class:`TrainConfig` (every flag, with its help text), the recipes, the checks
  that run before any work, the command line;
* ``loop.py``: the run, read top to bottom (data, model, optimizer, resume, epochs,
  checkpoints), ``train_one_epoch`` and ``evaluate``;
* ``metrics.py``: what is recorded per step and epoch (metrics.jsonl, TensorBoard, progress);
* ``checkpoint.py``: atomic checkpoints and resume; ``distributed.py``: torchrun / DDP;
  ``losses.py``: the JSD loss; ``schedule.py``: warmup + cosine; ``synthetic.py``: ``--data
  synthetic``; ``runlock.py``: one training per run folder; ``faults.py``: a test hook
  (``IPMIX_DALI_FAULT``) that kills a rank at a named point, for the torchrun restart tests.
"""

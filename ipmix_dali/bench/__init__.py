"""Benchmarks (not tests): each writes a JSON result with the machine it ran on
(:mod:`ipmix_dali.provenance`).

* :mod:`.executors`: ms per image of the reference and NumPy executors on one core
  (``ipmix-dali bench-executors``);
* :mod:`.input_pipeline`: the whole input pipeline, the reference DataLoader against DALI,
  optionally pinned to several core counts side by side (``ipmix-dali bench``);
* :mod:`.stage`: the CPU stage's mechanism, one thread vs threads vs worker processes, the
  executor alone (``python -m ipmix_dali.bench.stage``);
* :mod:`.phases`: where a dali-cpu batch's time goes, the stage's call against DALI's work
  between calls, CPU per thread group (``python -m ipmix_dali.bench.phases``);
* :mod:`.gpu`: the GPU stage, the CuPy executor and GPU fractals; its host half without a GPU
  (``ipmix-dali bench-gpu [--host-only]``);
* :mod:`.train`: training steps/s on the pipeline against synthetic batches
  (``ipmix-dali bench-train``);
* :mod:`.transforms`: ms per image of the torch transforms (``ipmix-dali bench-transforms``).

``ipmix-dali bench-corruptions`` lives with the corruptions (:mod:`ipmix_dali.corruptions.fidelity`).
"""

"""Benchmarks (not tests): each writes a JSON result with the machine it ran on.

* :mod:`.executors`: ms per image of the reference and NumPy executors on one core
  (``ipmix-dali bench-executors``);
* :mod:`.pipeline`: the whole input pipeline, the reference DataLoader against DALI
  (``ipmix-dali bench``);
* :mod:`.gpu`: the GPU stage, the CuPy executor and GPU fractals; its host half without a GPU
  (``ipmix-dali bench-gpu [--host-only]``);
* :mod:`.train`: training steps/s on the pipeline against synthetic batches
  (``ipmix-dali bench-train``);
* :mod:`.machine`: the machine, library versions and GPU facts every result records.

``ipmix-dali bench-corruptions`` lives with the corruptions (:mod:`ipmix_dali.corruptions.fidelity`).
"""

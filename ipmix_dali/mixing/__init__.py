"""Mixing pictures: banks of pre-resized pictures from a folder, and the built-in fractals.

* :mod:`.bank`: :class:`MixingBank`, :func:`load_mixing_bank` (a folder, pre-resized once and
  cached as a memory-mapped ``.npy``), :func:`bank_from_array`.
* :mod:`.fractals`: the IFS fractal renderer (NumPy); :mod:`.fractals_gpu`: the same pixels
  from ``kernels/fractal.cu``.
* :mod:`.builtin`: :func:`builtin_mixing_bank`, :func:`as_mixing_bank` (what the entry points
  take: None, a bank, a folder or an array) and :func:`write_fractal_set`
  (``ipmix-dali make-mixing-set``).
"""
from .bank import MixingBank, bank_from_array, load_mixing_bank
from .builtin import as_mixing_bank, builtin_mixing_bank, write_fractal_set
from .fractals import render_fractals

__all__ = ["MixingBank", "bank_from_array", "load_mixing_bank", "builtin_mixing_bank",
           "as_mixing_bank", "write_fractal_set", "render_fractals"]

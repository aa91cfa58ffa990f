"""Run CUDA kernels on the CPU, for CI without a GPU: :class:`EmulatedModule` is
:class:`ipmix_dali.kernels.host.HostModule` with the emulator's flags only (``-O2``, no
contraction), so a test sees the kernel's arithmetic as NVRTC's flags define it. See
kernels/host.py for what the emulation can and cannot show.

    mod = EmulatedModule("smoke.cu")
    mod.launch("smoke_mul", grid=(g, 1, 1), block=(256, 1, 1), args=(x, y, out, np.int32(n)))
"""
from __future__ import annotations

from ..kernels.host import HEADER, HostModule

__all__ = ["EmulatedModule", "HEADER"]


class EmulatedModule(HostModule):
    """A kernels/*.cu file compiled for the CPU with the emulator's flags."""

    def __init__(self, filename: str):
        super().__init__(filename)

"""Tools that let CI check the GPU code without a GPU: ``cupy_standin`` (NumPy under CuPy's
name, every device operation counted) and ``emulator`` (the CUDA kernels compiled with g++ and
run thread by thread). ``bench-gpu --host-only`` uses the stand-in to count a batch's device
operations."""

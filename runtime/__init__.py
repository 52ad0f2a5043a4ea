"""Runtimes: load and run generated kernels (CuPy, gcc + ctypes, and the CPU CUDA emulation)."""

"""Random CNN graphs against the numpy reference (issue 12 point 6): target c at opt 0 and at opt 2
with the blocked layout (channel block 2, fuzz_graphs.CONFIGS), and the CUDA source through cuda-emu.

Each hypothesis example is a batch of ``GRAPHS_PER_MODULE`` random graphs compiled as ONE module
per configuration (a gcc call per graph would not fit CI). The default profile runs
``CI_BATCHES`` batches (200 graphs, fixed seed); ``--hypothesis-profile=long`` (tests/conftest.py)
runs its ``max_examples`` graphs (5,000) with fresh randomness. A failing batch is re-checked one
graph per module, so the error names the single offending spec with its code; shrunk failures
become the explicit regression tests below."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_graphs import Spec, check_specs, specs

pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

GRAPHS_PER_MODULE = 8    # more overruns hypothesis' 8 KiB choice buffer
CI_BATCHES = 25
LONG = settings.default.max_examples > 100          # a profile asking for more than the default
BATCHES = max(CI_BATCHES, settings.default.max_examples // GRAPHS_PER_MODULE) if LONG else CI_BATCHES


@settings(max_examples=BATCHES, deadline=None, derandomize=not LONG,        # CI: the same 200 graphs every run
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(st.lists(specs(hostile_names=True), min_size=GRAPHS_PER_MODULE, max_size=GRAPHS_PER_MODULE))
def test_random_graphs_match_the_reference(spec_list):
    check_specs(spec_list)
    if os.environ.get("CNNCC_FUZZ_LOG"):          # long runs: count the graphs checked so far
        with open(os.environ["CNNCC_FUZZ_LOG"], "a") as f:
            f.write(f"{len(spec_list)}\n")


# -- shrunk failures, as explicit graphs ------------------------------------------------------------
def test_tensor_named_like_the_profiler_clock_local():
    """Shrunk from a fuzz failure: a tensor named 't0' collided with the profiled forward's local
    `double t0` (gcc: conflicting types); graph tensors are spelled t_<name> now (cnncc/names.py)."""
    check_specs([Spec(input_shape=(1, 1, 1), input_name="x",
                      layers=(("relu", (0,), {}, "t0"), ("relu", (0,), {}, None)),
                      outputs=(2,))], configs=(("c", 0),))


def test_brace_in_a_tensor_name_does_not_fool_the_emulator():
    """Shrunk from the long profile (graph 2,113): a dense layer named '}' put a brace in the
    kernel's comment, the emulator's textual barrier scan matched it as the kernel's end and ran a
    synchronising kernel in direct mode; the scans now ignore comments and literals."""
    check_specs([Spec(input_shape=(1, 1, 1), input_name="x",
                      layers=(("flatten", (0,), {}, None), ("dense", (1,), {"units": 1}, "}")),
                      outputs=(2,))], configs=(("cuda-emu", 2),))


def test_two_outputs_that_are_one_tensor_after_optimisation():
    """Shrunk from the long profile (graph ~2,340): outputs (identity(fc), fc). Opt 2 removes the
    identity, both outputs become the dense layer's tensor and the kernels wrote only the first
    output's buffer: the second came back as uninitialised memory on target c and NaN on cuda-emu.
    The module now copies such a twin output from the one the kernels wrote."""
    check_specs([Spec(input_shape=(2, 7, 4), input_name="x",
                      layers=(("flatten", (0,), {}, "features"), ("dense", (1,), {"units": 5}, None),
                              ("identity", (2,), {}, "\U000f46cb")),
                      outputs=(3, 2))], configs=(("c", 2), ("cuda-emu", 2)))


def test_one_by_one_max_pool_on_cuda_emu():
    """Shrunk from the CI profile after the generated-text merge: a pool window of one row and one
    column took a branch of the CUDA pool macro whose Jinja expression added a list to a string
    (``a + b | join`` filters ``b`` alone), so rendering failed with a TypeError."""
    check_specs([Spec(input_shape=(1, 1, 1), input_name="x",
                      layers=(("max_pool2d", (0,), {"kernel_size": 1, "stride": None, "padding": 0, "dilation": 1,
                                                    "ceil_mode": False}, None),),
                      outputs=(1,))], configs=(("cuda-emu", 2),))


def test_the_harness_catches_a_wrong_kernel(monkeypatch):
    """check_specs is not a test that cannot fail: with the reference of relu made wrong, the same
    spec that passes is reported, with its code."""
    from cnncc import ops

    spec = Spec(input_shape=(2, 3, 3), input_name="x", layers=(("relu", (0,), {}, "act"),), outputs=(1,))
    check_specs([spec], configs=(("c", 2),))
    monkeypatch.setattr(ops.get("relu"), "ref", lambda node, xs: xs[0] + 1.0)
    monkeypatch.setattr("fuzz_graphs._SEEN", {})
    with pytest.raises(AssertionError, match=r"(?s)c opt 2: output 'act' differs.*Spec\(input_shape=\(2, 3, 3\)"):
        check_specs([spec], configs=(("c", 2),))


def test_max_unpool_of_an_odd_sized_pool_input():
    """Shrunk from a fuzz failure of the harness itself: unpooling a floor-mode pool of an odd-sized
    input needs output_size (the indices count in the input's plane, as in PyTorch)."""
    check_specs([Spec(input_shape=(2, 5, 7), input_name="x",
                      layers=(("pad", (0,), {"pads": 1, "mode": "edge", "value": 0.0}, None),
                              ("max_pool_unpool", (1,), {"kernel_size": 2}, "y")),
                      outputs=(2,))])


HOSTILE_FOUND = {"locals_libc_cuda_unicode": ("src", "tile", "px", "xpad", "t1", "malloc", "free", "size_t",
                                             "__global__", "ü"),
                 "h": ("h",)}
CONV = {"out_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1, "groups": 1}


@pytest.mark.parametrize("case", sorted(HOSTILE_FOUND))
def test_hostile_tensor_names(case):
    """Each name as the graph input and as a conv, all in one module per configuration, run in a
    child process: before the identifier rule (cnncc/names.py) 'src', 'tile', 'px' gave wrong numbers
    (up to 1e37 off), 'h' crashed, 'xpad', 'malloc', 'free', '__global__', 'size_t' did not build."""
    import subprocess
    import sys
    from pathlib import Path

    specs_code = ", ".join(
        f"Spec(input_shape=(2, 5, 5), input_name={n!r}, layers=(('conv2d', (0,), {CONV!r}, {n + '_conv'!r}), "
        f"('relu', (1,), {{}}, None)), outputs=(2,)), "
        f"Spec(input_shape=(2, 5, 5), input_name='image', layers=(('conv2d', (0,), {CONV!r}, {n!r}), "
        f"('relu', (1,), {{}}, None)), outputs=(2,))" for n in HOSTILE_FOUND[case])
    code = f"from fuzz_graphs import Spec, check_specs\ncheck_specs([{specs_code}])\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr[-3000:]

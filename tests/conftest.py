from pathlib import Path

import pytest

try:        # hypothesis profiles: the default one for CI, `--hypothesis-profile=long` for fuzzing runs
    from hypothesis import settings

    settings.register_profile("long", max_examples=5000, deadline=None)
except ImportError:
    pass

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def examples_dir() -> Path:
    return ROOT / "examples"


def use_shape_only_weights(monkeypatch) -> None:
    """Build models without drawing random weights: every weight is a read-only zero-stride view
    of the right shape. Counting parameters needs only shapes, and tests that load weights
    afterwards replace them all -- this keeps VGG's 138 M draws out of the test time, and the
    batch-norm calibration pass (a forward pass at full size) is skipped: zeros scale nothing."""
    import numpy as np

    from cnncc.frontends import dsl

    def zeros(name, param, shape, *args, **kwargs):
        return np.broadcast_to(np.float32(0), tuple(shape))

    monkeypatch.setattr(dsl, "he_normal", zeros)
    monkeypatch.setattr(dsl, "small_uniform", zeros)
    monkeypatch.setattr(dsl, "calibrate_batch_norm", lambda g, batch=2: g)


@pytest.fixture
def shape_only_weights(monkeypatch):
    use_shape_only_weights(monkeypatch)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never write to the user's cache (~/.cache/cnncc): the whole session, subprocesses
    included, shares one kernel cache in pytest's temporary folder -- unless CNNCC_CACHE_DIR
    already names one (a CI job that keeps its cache between runs). Tests that need an empty
    cache of their own still monkeypatch CNNCC_CACHE_DIR."""
    import os

    old = os.environ.get("CNNCC_CACHE_DIR")
    os.environ.setdefault("CNNCC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cnncc-cache"))
    yield
    if old is None:
        os.environ.pop("CNNCC_CACHE_DIR", None)


@pytest.fixture(scope="module")
def shared_kernel_cache(private_cache):
    """A kernel cache private to the test session, shared by the modules that use it, so each
    model compiles once: the session's `private_cache` (kept as the name the tests ask for)."""


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real NVIDIA GPU; skip them cleanly without one. Tests marked
    `slow` (minutes of compiling on a small machine) run only with CNNCC_SLOW=1 or `-m slow`."""
    import os

    if not os.environ.get("CNNCC_SLOW") and "slow" not in (config.getoption("-m") or ""):
        skip_slow = pytest.mark.skip(reason="slow: set CNNCC_SLOW=1 (or select -m slow) to run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip_slow)
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """Print the ONNX conformance table that tests/test_onnx_conformance.py records (once per run)."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == "onnx_conformance":
                    terminalreporter.write_sep("=", "ONNX conformance per operator")
                    terminalreporter.write_line(value)
                    return

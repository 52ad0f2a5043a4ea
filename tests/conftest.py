from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def examples_dir() -> Path:
    return ROOT / "examples"


@pytest.fixture(scope="module")
def shared_kernel_cache(tmp_path_factory):
    """A kernel cache private to the test session (unless CNNCC_CACHE_DIR is set), shared by the
    modules that use it, so each model compiles once and the user's cache stays untouched."""
    import os

    old = os.environ.get("CNNCC_CACHE_DIR")
    os.environ.setdefault("CNNCC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cnncc-cache"))
    yield
    if old is None:
        os.environ.pop("CNNCC_CACHE_DIR", None)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real NVIDIA GPU; skip them cleanly without one."""
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

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

"""CompiledModule.profile: per-kernel times measured inside the generated C, one entry per kernel."""
import numpy as np
import pytest

import cnncc


def test_profile_names_every_kernel_and_keeps_outputs_right(examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    mod = cnncc.compile(g, target="c")
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    prof = mod.profile([x], repeat=4)
    assert [name for name, _ in prof] == [k[0] for k in mod.kernels]
    assert all(t > 0 for _, t in prof)
    np.testing.assert_allclose(mod(x), cnncc.reference(g, x), rtol=1e-4, atol=1e-4)


def test_profile_refused_where_the_runtime_cannot_time_kernels(examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    mod = cnncc.compile(g, target="cuda-emu")
    with pytest.raises(cnncc.CompileError, match="profiling is not available"):
        mod.profile([np.zeros((1, 1, 32, 32), np.float32)])

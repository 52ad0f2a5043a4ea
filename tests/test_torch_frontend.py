"""from_torch: every nn.Module mirror of the examples, traced with torch.fx, compiled to C, against PyTorch."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cnncc  # noqa: E402
from cnncc.errors import ModelError, UnsupportedError  # noqa: E402

import torch_zoo  # noqa: E402
import torch_zoo_literature  # noqa: E402
from helpers import rel_err  # noqa: E402

RTOL = 1e-4


def check_against_torch(module: nn.Module, x: torch.Tensor, target: str = "c") -> cnncc.Graph:
    g = cnncc.from_torch(module, x)
    with torch.no_grad():
        want = module(x).numpy()
    got = cnncc.compile(g, target=target)(x.numpy())
    assert got.shape == want.shape
    assert rel_err(got, want) <= RTOL
    return g


@pytest.mark.parametrize("name", [n for n in torch_zoo.zoo() if n not in torch_zoo_literature.MIRRORS])
def test_zoo_module_traced_and_compiled_matches_pytorch(name):
    """(The literature networks are traced and checked in test_zoo_literature.py.)"""
    factory, shape = torch_zoo.zoo()[name]
    torch.manual_seed(0)
    module = factory()
    inputs = torch_zoo.example_inputs(name, 2, shape[-1], seed=0)   # batch 2 on a graph traced with batch N
    if len(inputs) == 1:
        g = check_against_torch(module, inputs[0])
    else:                                     # Fast R-CNN: (image, boxes (K, 5)), two outputs
        torch_zoo.register_with_cnncc()       # its RoIPool is a custom module -> roi_pool
        g = cnncc.from_torch(module, inputs, fixed_inputs=("boxes",))
        with torch.no_grad():
            want = module(*inputs)
        got = cnncc.compile(g, target="c")([t.numpy() for t in inputs])
        for (k, y), w in zip(got.items(), want):
            assert y.shape == tuple(w.shape) and rel_err(y, w) <= RTOL, k
        assert g["boxes"].type.shape == (torch_zoo.FAST_RCNN_BOXES, 5)
    assert g[g.inputs[0]].type.shape[0] == cnncc.N
    assert g.param_count() > 0


class Functional(nn.Module):
    """The functional and tensor-method spellings a tracer meets in real forward() code."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.shuffle = nn.PixelShuffle(2)
        self.fc = nn.Linear(4 + 8, 5)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = y * torch.sigmoid(y) + y
        p, idx = F.max_pool2d(y, 2, return_indices=True)
        u = F.max_unpool2d(p, idx, 2)
        z = self.up(F.avg_pool2d(u, 2))
        z = F.interpolate(z, scale_factor=2, mode="nearest")
        z = self.shuffle(torch.cat([z, z, z, z], dim=1))          # (N, 4, 2H, 2W) -> pixel shuffle
        a = F.adaptive_avg_pool2d(z, 1).flatten(1)
        b = y.mean((2, 3))
        h = torch.cat([a, b], 1).view(x.size(0), -1)
        return F.log_softmax(self.fc(h), dim=1)


def test_functional_and_method_forms():
    torch.manual_seed(1)
    module = Functional().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
    g = check_against_torch(module, torch.randn(3, 3, 8, 8))
    used = {n.op for n in g}
    assert {"max_pool2d_indices", "max_unpool2d", "conv_transpose2d", "depth_to_space", "resize2d",
            "global_avg_pool", "log_softmax"} <= used


def test_conv1d_batchnorm1d_and_leaky_relu():
    module = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.LeakyReLU(0.2),
                           nn.MaxPool1d(2), nn.Flatten(), nn.Dropout(), nn.Linear(4 * 5, 3)).eval()
    check_against_torch(module, torch.randn(2, 2, 10))


class Unsupported(nn.Module):
    def forward(self, x):
        y = torch.cumsum(x, 1)
        return torch.logsumexp(y, 1)


def test_unsupported_construct_names_fx_node_and_source_line():
    with pytest.raises(UnsupportedError) as info:
        cnncc.from_torch(Unsupported().eval(), torch.randn(1, 3, 4, 4))
    text = str(info.value)
    assert "cumsum" in text and "logsumexp" in text
    assert "test_torch_frontend.py" in text and "torch.cumsum(x, 1)" in text


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_module_fails_with_location():
    with pytest.raises(UnsupportedError, match="could not trace.*test_torch_frontend.py"):
        cnncc.from_torch(DataDependent().eval(), torch.randn(1, 3))


def test_training_mode_is_rejected():
    with pytest.raises(ModelError, match="eval"):
        cnncc.from_torch(nn.Sequential(nn.BatchNorm2d(3)), torch.randn(1, 3, 4, 4))


def test_example_from_torch_runs(examples_dir, capsys):
    import runpy

    runpy.run_path(str(examples_dir / "from_torch.py"), run_name="__main__")
    assert "identical outputs" in capsys.readouterr().out

"""The literature networks of issue 16 (deep ResNets, ResNeXt-101, Inception-v3/v4, DeepLab-v3,
tiny YOLOv2/v3, OpenPose) against their PyTorch mirrors (tests/torch_zoo_literature.py).

Deep networks compile many kernels, so each one is built and compiled once, at its smallest
input size and batch 1, in a module fixture, and every check reuses those compiles: the DSL
example at opt 0 and at opt 2 (target c) against both the numpy reference and PyTorch, the
mirror traced with ``from_torch`` against PyTorch, and (for the cheaper ones) target cuda-emu.
test_codegen_c.py and test_torch_frontend.py leave these networks to this file. Parameter
totals and ``cnncc summary`` use full-size shapes only (no weights drawn, no calibration pass).

ResNet-101, ResNet-152 and ResNeXt-101 32x8d compile for minutes on a busy 2-core machine;
their compile checks are marked ``slow`` (run them with CNNCC_SLOW=1 or ``-m slow``). They are
ResNet-50's and ResNeXt-50's blocks repeated, which test_codegen_c.py compiles.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.cli import main
from cnncc.frontends import dsl

torch = pytest.importorskip("torch")
from conftest import use_shape_only_weights  # noqa: E402
from torch_zoo import dsl_weights  # noqa: E402
from torch_zoo_literature import MIRRORS, VARIANTS  # noqa: E402
from helpers import rel_err  # noqa: E402

pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RTOL = 1e-4

#: published totals (torchvision's; timm's for Inception-v4), variants included
PUBLISHED = {"resnet34": 21_797_672, "resnet101": 44_549_160, "resnet152": 60_192_808,
             "resnext101_32x8d": 88_791_336, "inception_v3": 23_834_568, "inception_v3_aux": 27_161_264,
             "inception_v4": 42_679_816}
#: the mirrors' exact counts, for the networks without a single published figure
MIRROR_COUNT = {"deeplabv3_resnet50": 39_638_869, "deeplabv3_resnet50_os16": 39_638_869,
                "yolov2_tiny": 11_232_057, "yolov3_tiny": 8_852_366, "openpose": 52_311_446}
#: ResNet-50's bottleneck repeated (ResNet-50 and ResNeXt-50 compile in test_codegen_c.py): their
#: compiles take minutes on a small machine, so they run only when asked for (CNNCC_SLOW=1)
SLOW = {"resnet101", "resnet152", "resnext101_32x8d"}
#: cuda-emu runs every thread of every block as a fiber on the CPU: only where that stays cheap
#: (DeepLab-v3 passes too -- ~15 s on a quiet 2-core machine, over the budget; its dilated convs
#: and size-given bilinear upsampling are template families test_cuda_emu.py runs)
EMU = {"yolov2_tiny", "yolov3_tiny"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _mirror(name):
    """(nn.Module factory, example file, model() kwargs, input size) of a network or variant."""
    if name in VARIANTS:
        make, example, kwargs, size = VARIANTS[name]
        return make, example, kwargs, size
    make, size = MIRRORS[name]
    return (lambda: make(size)), name, {}, size


def test_every_literature_network_is_checked():
    from test_codegen_c import COMPILED_ELSEWHERE

    assert set(MIRRORS) == set(PUBLISHED) - {"inception_v3_aux"} | set(MIRROR_COUNT) - set(VARIANTS)
    assert COMPILED_ELSEWHERE == set(MIRRORS)


@pytest.mark.parametrize("name", sorted(PUBLISHED.keys() | MIRROR_COUNT.keys()))
def test_parameter_total(name, shape_only_weights):
    make, example, kwargs, _ = _mirror(name)
    with torch.device("meta"):                         # shapes only: no 88 M random draws
        mirror = sum(p.numel() for p in make().parameters())
    g = dsl.load_model(EXAMPLES / f"{example}.py", **kwargs)    # full size
    want = PUBLISHED.get(name) or MIRROR_COUNT[name]
    assert g.param_count() == mirror == want


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_summary_prints_the_total_at_full_size(name, shape_only_weights, capsys):
    assert main(["summary", str(EXAMPLES / f"{name}.py")]) == 0
    out = capsys.readouterr().out
    total = PUBLISHED.get(name) or MIRROR_COUNT[name]
    assert f"Total params: {total:,}" in out


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_inspect_why_not_explains_every_unfused_edge(name, shape_only_weights, capsys):
    assert main(["inspect", str(EXAMPLES / f"{name}.py"), "--size", str(MIRRORS[name][1]), "--why-not"]) == 0
    out = capsys.readouterr().out
    reasons = [line for line in out.splitlines() if line.startswith("  ") and " -> " in line and ": " in line]
    assert reasons and all(line.split(": ", 1)[1].strip() for line in reasons)


# ---------------------------------------------------------------------------------------------
# one build per network: mirror, DSL graph with the mirror's weights, compiles at opt 0 and 2
class Built:
    def __init__(self, name: str):
        make, example, kwargs, size = _mirror(name)
        self.name = name
        torch.manual_seed(0)
        self.module = make().eval()
        with torch.no_grad():      # non-trivial BN statistics, so a wrong eps or a dropped term shows
            for m in self.module.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        self.x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = self.module(self.x)
        self.want = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
        with pytest.MonkeyPatch.context() as mp:         # every weight comes from the mirror
            use_shape_only_weights(mp)
            self.graph = dsl.load_model(EXAMPLES / f"{example}.py", size=size, **kwargs)
        weights = dsl_weights(self.module)
        dsl.apply_weights(self.graph, weights)
        assert len(weights) == sum(len(n.params) for n in self.graph)
        self.modules: dict = {}

    def compiled(self, target: str, opt: int):
        key = (target, opt)
        if key not in self.modules:
            self.modules[key] = cnncc.compile(self.graph, target=target, opt_level=opt)
        return self.modules[key]


def outputs(y) -> list:
    return list(y.values()) if isinstance(y, dict) else [y]


@pytest.fixture(scope="module", params=_params(sorted(MIRRORS)))
def built(request):
    """One network at a time (pytest groups the tests by this parameter): its compiled modules
    are large, so each is dropped before the next network is built."""
    b = Built(request.param)
    yield b
    b.modules.clear()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    return Built(request.param)


def _check_reference_and_from_torch(b: Built):
    x = b.x.numpy()
    for got, want in zip(outputs(cnncc.reference(b.graph, x)), b.want, strict=True):
        assert rel_err(got, want) <= RTOL
    traced = cnncc.from_torch(b.module, b.x)
    assert traced[traced.inputs[0]].type.shape[0] == cnncc.N
    assert traced.param_count() == b.graph.param_count()
    for got, want in zip(outputs(cnncc.reference(traced, x)), b.want, strict=True):
        assert rel_err(got, want) <= RTOL


def test_dsl_reference_and_from_torch_match_pytorch(built):
    _check_reference_and_from_torch(built)


def test_variant_reference_and_from_torch_match_pytorch(variant):
    """Inception-v3 with its auxiliary head (two outputs, 299x299), DeepLab-v3 at output stride 16."""
    _check_reference_and_from_torch(variant)


@pytest.mark.parametrize("opt", [0, 2])
def test_target_c_matches_reference_and_pytorch(built, opt):
    feeds = built.x.numpy()
    got = outputs(built.compiled("c", opt)(feeds))
    ref = outputs(cnncc.reference(built.graph, feeds))
    for y, r, w in zip(got, ref, built.want, strict=True):
        assert rel_err(y, r) <= RTOL and rel_err(y, w) <= RTOL


@pytest.mark.parametrize("built", sorted(EMU), indirect=True)
def test_cuda_emu_matches_reference(built):
    feeds = built.x.numpy()
    got = outputs(built.compiled("cuda-emu", 2)(feeds))
    for y, r in zip(got, outputs(cnncc.reference(built.graph, feeds)), strict=True):
        assert np.isfinite(y).all() and rel_err(y, r) <= RTOL

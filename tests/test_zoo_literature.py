"""The literature networks of issue 16 (deep ResNets, ResNeXt-101, Inception-v3/v4, DeepLab-v3,
tiny YOLOv2/v3, OpenPose) against their PyTorch mirrors (tests/torch_zoo_literature.py).

Deep networks compile many kernels, so each network (and each variant: Inception-v3 with its
auxiliary head, DeepLab-v3 at output stride 16) is built once, at its smallest input size and
batch 1, in a module fixture, and every check reuses that build: the DSL example's numpy
reference and the mirror traced with ``from_torch`` against PyTorch; target c at opt 0 and at
opt 2 (one test, one compile each) against the reference and PyTorch; target cuda-emu at opt 2
against the reference. test_codegen_c.py and test_torch_frontend.py leave these networks to this
file; SegNet and Fast R-CNN are checked with the classic examples (test_codegen_c.py,
test_cuda_emu.py, test_torch_frontend.py). Parameter totals and ``cnncc summary`` use full-size
shapes only (no weights drawn, no calibration pass).

The emulator runs every thread of a block as a fiber, so its cost grows with the channel counts,
not the spatial size: the deep and wide networks' checks (``C_SLOW``, ``EMU_SLOW``) are marked
``slow`` and run with CNNCC_SLOW=1 (or ``-m slow``).
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
#: checks that run only with CNNCC_SLOW=1 (or ``-m slow``; together ~260 CPU-seconds, measured
#: 2026-12-03). Target c: gcc spends 10-16 CPU-seconds per opt level on ResNet-101's,
#: ResNet-152's and ResNeXt-101's hundreds of kernels, which are
#: ResNet-50's and ResNeXt-50's blocks repeated (test_codegen_c.py compiles those in CI); the
#: variants are Inception-v3's kernels at 299x299 plus its aux head, and DeepLab-v3's at output
#: stride 16. cuda-emu: every thread of a block is a fiber, and a 512-channel 3x3 convolution
#: costs ~0.1 CPU-second per block whatever the spatial size (17-43 CPU-seconds per network here),
#: so the same deep and wide networks stay out of CI; it emulates ResNet-34, Inception-v3/v4,
#: DeepLab-v3, OpenPose and the YOLOs (~100 CPU-seconds).
C_SLOW = {"resnet101", "resnet152", "resnext101_32x8d", "inception_v3_aux", "deeplabv3_resnet50_os16"}
EMU_SLOW = C_SLOW
#: every network and variant this file builds
NETWORKS = sorted(MIRRORS) + sorted(VARIANTS)


def _params(names, slow=frozenset()):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


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
    assert C_SLOW | EMU_SLOW <= set(NETWORKS)
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


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_summary_of_a_variant_takes_its_model_arguments(name, shape_only_weights, capsys):
    _, example, kwargs, _ = VARIANTS[name]
    flags = [f"--arg={key}={value}" for key, value in kwargs.items()]
    assert main(["summary", str(EXAMPLES / f"{example}.py"), *flags]) == 0
    out = capsys.readouterr().out
    assert f"Total params: {PUBLISHED.get(name) or MIRROR_COUNT[name]:,}" in out
    if name == "deeplabv3_resnet50_os16":        # 512 / 16: layer4 keeps layer3's 32x32
        assert "(N, 2048, 32, 32)" in out and "(N, 2048, 64, 64)" not in out
    assert main(["summary", str(EXAMPLES / f"{example}.py"), "--arg", "aux logits"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_inspect_why_not_explains_every_unfused_edge(name, shape_only_weights, capsys):
    assert main(["inspect", str(EXAMPLES / f"{name}.py"), "--size", str(MIRRORS[name][1]), "--why-not"]) == 0
    out = capsys.readouterr().out
    reasons = [line for line in out.splitlines() if line.startswith("  ") and " -> " in line and ": " in line]
    assert reasons and all(line.split(": ", 1)[1].strip() for line in reasons)
    if name.startswith("inception"):     # every concat is eliminated: no copy is left to explain
        assert "concat has no fused form" not in out and "_concat is eliminated: " in out


# ---------------------------------------------------------------------------------------------
# one build per network: mirror, DSL graph with the mirror's weights, its reference outputs
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
        self._ref = None

    @property
    def ref(self) -> list:
        """The numpy reference's outputs on ``x`` (computed once, shared by every check)."""
        if self._ref is None:
            self._ref = outputs(cnncc.reference(self.graph, self.x.numpy()))
        return self._ref

    def compiled(self, target: str, opt: int):
        """A fresh compile: each (target, opt) is used by one test, so none is kept (a deep
        network's module holds its packed weights; dropping it keeps the run's memory flat)."""
        return cnncc.compile(self.graph, target=target, opt_level=opt)


def outputs(y) -> list:
    return list(y.values()) if isinstance(y, dict) else [y]


@pytest.fixture(scope="module")
def built(request):
    """One network at a time (pytest groups the tests by this parameter, which every test passes
    indirectly with its own slow marks), built once and shared by its checks."""
    return Built(request.param)


@pytest.mark.parametrize("built", NETWORKS, indirect=True)
def test_dsl_reference_and_from_torch_match_pytorch(built):
    """The DSL example's reference and the mirror traced by from_torch, both against PyTorch
    (with the variants: Inception-v3's auxiliary head at 299x299, DeepLab-v3 at output stride 16)."""
    for got, want in zip(built.ref, built.want, strict=True):
        assert rel_err(got, want) <= RTOL
    traced = cnncc.from_torch(built.module, built.x)
    assert traced[traced.inputs[0]].type.shape[0] == cnncc.N
    assert traced.param_count() == built.graph.param_count()
    for got, want in zip(outputs(cnncc.reference(traced, built.x.numpy())), built.want, strict=True):
        assert rel_err(got, want) <= RTOL


@pytest.mark.parametrize("built", _params(NETWORKS, C_SLOW), indirect=True)
def test_target_c_opt0_and_opt2_match_reference_and_pytorch(built):
    feeds = built.x.numpy()
    for opt in (0, 2):
        got = outputs(built.compiled("c", opt)(feeds))
        for y, r, w in zip(got, built.ref, built.want, strict=True):
            assert rel_err(y, r) <= RTOL, f"opt {opt}: {rel_err(y, r):.2e} from the reference"
            assert rel_err(y, w) <= RTOL, f"opt {opt}: {rel_err(y, w):.2e} from PyTorch"


@pytest.mark.parametrize("built", _params(NETWORKS, EMU_SLOW), indirect=True)
def test_cuda_emu_matches_reference(built):
    got = outputs(built.compiled("cuda-emu", 2)(built.x.numpy()))
    for y, r in zip(got, built.ref, strict=True):
        assert np.isfinite(y).all() and rel_err(y, r) <= RTOL

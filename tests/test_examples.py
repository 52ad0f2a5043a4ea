"""The example zoo: published parameter totals, the summary table, every example running small,
and the nn.Module mirrors (tests/torch_zoo.py) agreeing with the DSL models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.cli import main
from cnncc.frontends import dsl

from helpers import rel_err
from test_codegen_c import COMPILED_ELSEWHERE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: published totals (torchvision's counts unless noted in the example's docstring)
PUBLISHED = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnext50_32x4d": 25_028_904,
    "googlenet": 6_624_904,
    "densenet121": 7_978_856,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v2": 3_504_872,
    "se_resnet50": 28_088_024,        # timm seresnet50 / Cadene pretrainedmodels se_resnet50
    "shufflenet_v2": 2_278_604,
}   # the literature networks' totals (ResNet-34 ... OpenPose) are checked in test_zoo_literature.py

#: example -> (smallest convenient input size, output shape at batch 1)
SMALL = {
    "lenet5": (16, (1, 10)),
    "alexnet": (63, (1, 1000)),
    "zfnet": (63, (1, 1000)),
    "vgg16": (32, (1, 1000)),
    "vgg19": (32, (1, 1000)),
    "googlenet": (32, (1, 1000)),
    "resnet18": (32, (1, 1000)),
    "resnet50": (32, (1, 1000)),
    "resnext50_32x4d": (32, (1, 1000)),
    "se_resnet50": (32, (1, 1000)),
    "densenet121": (32, (1, 1000)),
    "squeezenet1_1": (32, (1, 1000)),
    "mobilenet_v2": (32, (1, 1000)),
    "unet": (16, (1, 2, 16, 16)),
    "shufflenet_v2": (32, (1, 1000)),
    "segnet": (32, (1, 12, 32, 32)),
    "fast_rcnn": (32, {"cls_score": (8, 21), "bbox_pred": (8, 84)}),
    "resnet34": (32, (1, 1000)),
    "resnet101": (32, (1, 1000)),
    "resnet152": (32, (1, 1000)),
    "resnext101_32x8d": (32, (1, 1000)),
    "inception_v3": (75, (1, 1000)),
    "inception_v4": (75, (1, 1000)),
    "deeplabv3_resnet50": (16, (1, 21, 16, 16)),
    "yolov2_tiny": (32, (1, 425, 1, 1)),
    "yolov3_tiny": (32, ((1, 255, 1, 1), (1, 255, 2, 2))),
    "openpose": (16, ((1, 38, 2, 2), (1, 19, 2, 2))),
}


def _path(name: str) -> Path:
    return EXAMPLES / f"{name}.py"


def _dsl_examples() -> set[str]:
    """Example files that are DSL models (define model()), not the frontend walk-throughs."""
    return {p.stem for p in EXAMPLES.glob("*.py") if "\ndef model(" in p.read_text()}


def test_every_dsl_example_is_covered():
    assert _dsl_examples() == set(SMALL), "add new examples to SMALL (and PUBLISHED when there is a total)"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_total(name, shape_only_weights):
    g = cnncc.load_model(_path(name))
    assert g.param_count() == PUBLISHED[name]


def test_batch_norm_statistics_are_not_parameters():
    x = dsl.input("x", (dsl.N, 3, 8, 8))
    g = dsl.graph(dsl.batch_norm(dsl.conv2d(x, 4, 3, bias=False)))
    assert g.param_count() == 4 * 3 * 9 + 2 * 4     # conv weight + BN weight and bias


def test_batch_norm_statistics_are_calibrated_so_deep_activations_stay_small():
    """Made-up BN statistics normalize nothing: ResNet-50's residual sums reach ~6e3 at 32x32 and
    SE gates then amplify float32 rounding past 1e-4. Calibrated they stay O(1)."""
    g = dsl.load_model(_path("resnet50"), size=32)
    env = cnncc.reference(g, np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32),
                          keep_all=True)
    assert max(float(np.abs(v).max()) for k, v in env.items() if k.endswith("_add")) < 50


def test_batch_norm_calibration_scales_to_the_input_and_keeps_the_jitter():
    x = dsl.input("x", (dsl.N, 3, 8, 8))
    y = dsl.conv2d(x, 4, 3, bias=False, name="conv")
    raw = dsl.small_uniform("bn", "var", (4,), 0.5, 1.5)
    out = dsl.batch_norm(y, name="bn")
    g = dsl.graph(out)
    ms = float(np.mean(np.square(cnncc.reference(g, np.random.default_rng([dsl.SEED, 0]).standard_normal(
        (2, 3, 8, 8)).astype(np.float32), keep_all=True)["conv"], dtype=np.float64)))
    np.testing.assert_allclose(g["bn"].params["var"], raw * ms, rtol=1e-5)
    assert np.ptp(g["bn"].params["var"]) > 0 and np.abs(g["bn"].params["mean"]).max() > 0
    again = dsl.graph(out)                                      # finalizing twice scales once
    np.testing.assert_allclose(again["bn"].params["var"], raw * ms, rtol=1e-5)


def test_batch_norm_calibration_yields_to_loaded_weights_and_symbolic_sizes(tmp_path):
    x = dsl.input("x", (dsl.N, 3, dsl.sym("H"), dsl.sym("W")))
    g = dsl.graph(dsl.batch_norm(dsl.conv2d(x, 4, 3), name="bn"))
    np.testing.assert_array_equal(g["bn"].params["var"], dsl.small_uniform("bn", "var", (4,), 0.5, 1.5))
    np.savez(tmp_path / "w.npz", **{"bn.var": np.full(4, 7.0, np.float32)})
    x = dsl.input("x", (dsl.N, 3, 8, 8))
    g = dsl.graph(dsl.batch_norm(dsl.conv2d(x, 4, 3), name="bn"), weights=tmp_path / "w.npz")
    np.testing.assert_array_equal(g["bn"].params["var"], np.full(4, 7.0, np.float32))


def test_a_model_file_may_import_its_siblings(tmp_path):
    """As under `python file.py`, the file's folder is on sys.path while it runs (and only then)."""
    import sys

    (tmp_path / "_blocks_for_sibling_test.py").write_text(
        "from cnncc.frontends import dsl\n\ndef head(x):\n    return dsl.dense(dsl.flatten(x), 3, name='fc')\n")
    (tmp_path / "tiny.py").write_text(
        "from cnncc.frontends import dsl\nfrom _blocks_for_sibling_test import head\n\n"
        "def model(batch=dsl.N, size=4):\n    return head(dsl.input('x', (batch, 2, size, size)))\n")
    g = dsl.load_model(tmp_path / "tiny.py")
    assert g.param_count() == 2 * 4 * 4 * 3 + 3
    assert str(tmp_path) not in sys.path
    sys.modules.pop("_blocks_for_sibling_test", None)


def test_verify_cli_checks_a_dsl_example_against_the_reference(capsys):
    assert main(["verify", str(_path("lenet5")), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "numpy reference" in out and "PASS" in out


def test_summary_cli_resnet50(capsys):
    assert main(["summary", str(_path("resnet50"))]) == 0
    out = capsys.readouterr().out
    for shape in ("(N, 3, 224, 224)", "(N, 64, 112, 112)", "(N, 256, 56, 56)", "(N, 2048, 7, 7)", "(N, 1000)"):
        assert shape in out
    assert "layer1_0_conv1" in out and "layer4_2_add" in out
    assert "Total params: 25,557,032" in out
    flops_line = next(line for line in out.splitlines() if line.startswith("Total FLOPs"))
    assert "N" in flops_line


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_runs_small(name):
    from cnncc.reference import random_inputs
    from test_codegen_c import SMALL_KWARGS

    size, out_shape = SMALL[name]
    g = dsl.load_model(_path(name), size=size, **SMALL_KWARGS.get(name, {}))
    assert g[g.inputs[0]].type.shape[0] == dsl.N                  # batch stays symbolic
    feeds = random_inputs(g, 1, np.random.default_rng(0))          # valid boxes for Fast R-CNN's second input
    y = cnncc.reference(g, feeds)
    if isinstance(out_shape, dict):                                 # named outputs (Fast R-CNN)
        pairs = [(y[k], v) for k, v in out_shape.items()]
    elif isinstance(y, dict):                                       # several outputs in order (YOLOv3-tiny, OpenPose)
        pairs = list(zip(y.values(), out_shape))
        assert len(pairs) == len(out_shape) == len(y)
    else:
        pairs = [(y, out_shape)]
    for got, want in pairs:
        assert got.shape == want and np.isfinite(got).all() and np.abs(got).max() > 0


def test_example_batch_is_a_runtime_size():
    g = dsl.load_model(_path("mobilenet_v2"), size=32)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    both = cnncc.reference(g, x)
    one = cnncc.reference(g, x[1:])
    np.testing.assert_allclose(both[1:], one, rtol=0, atol=1e-5 * np.abs(one).max())   # summation order only


# ---------------------------------------------------------------------------------------------
# the nn.Module mirrors
@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("torch")
    from torch_zoo import zoo as make_zoo

    return make_zoo()


def test_zoo_mirrors_every_example(zoo):
    assert set(zoo) == _dsl_examples()


@pytest.mark.parametrize("name", sorted(set(SMALL) - COMPILED_ELSEWHERE))     # those: test_zoo_literature.py
def test_mirror_matches_dsl_model(zoo, name, shape_only_weights):
    """Same parameter count, and with the mirror's weights loaded into the DSL graph (names map
    one to one) the numpy reference reproduces PyTorch's output."""
    import torch
    from torch_zoo import dsl_weights

    from torch_zoo import dsl_kwargs, example_inputs

    factory, shape = zoo[name]
    module = factory()
    g = dsl.load_model(_path(name), size=shape[-1], **dsl_kwargs(name))
    assert sum(p.numel() for p in module.parameters()) == g.param_count()

    torch.manual_seed(0)
    with torch.no_grad():        # non-trivial BN statistics, so a wrong eps or a dropped term shows
        for m in module.modules() if not getattr(module, "calibrated", False) else ():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    weights = dsl_weights(module)
    dsl.apply_weights(g, weights)
    assert len(weights) == sum(len(n.params) for n in g)         # every DSL weight came from torch

    inputs = example_inputs(name, 1, shape[-1])
    with torch.no_grad():
        want = module(*inputs)
    got = cnncc.reference(g, [t.numpy() for t in inputs])
    for got, want in zip(got.values() if isinstance(got, dict) else [got],
                         want if isinstance(want, tuple) else [want]):
        want = want.numpy()
        err = rel_err(got, want)
        assert err <= 1e-4, f"{name}: max relative error {err:.2e}"


#: full-size totals of the examples without a published figure: the mirror's exact count
MIRROR_TOTALS = {"segnet": ("SegNet", "29,441,996"), "fast_rcnn": ("FastRCNN", "134,690,729")}


@pytest.mark.parametrize("name", sorted(MIRROR_TOTALS))
def test_summary_prints_the_mirrors_parameter_total(name, capsys, shape_only_weights, monkeypatch):
    """At full size (224), shapes only: no weights drawn (torch's meta device, zero-stride DSL
    weights) and no BN calibration pass (a 224x224 forward through SegNet's 26 convolutions)."""
    torch = pytest.importorskip("torch")
    import torch_zoo

    monkeypatch.setattr(dsl, "calibrate_batch_norm", lambda g, batch=2: g)
    cls, total = MIRROR_TOTALS[name]
    with torch.device("meta"):
        module = getattr(torch_zoo, cls)()
    assert f"{sum(p.numel() for p in module.parameters()):,}" == total
    assert main(["summary", str(_path(name))]) == 0
    out = capsys.readouterr().out
    assert f"Total params: {total}" in out
    if name == "fast_rcnn":
        assert "(8, 512, 7, 7)" in out and "(8, 84)" in out and "boxes (8, 5)" in out

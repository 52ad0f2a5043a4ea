"""The example zoo: published parameter totals, the summary table, every example running small,
and the nn.Module mirrors (tests/torch_zoo.py) agreeing with the DSL models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.cli import main
from cnncc.frontends import dsl

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
    size, out_shape = SMALL[name]
    g = dsl.load_model(_path(name), size=size)
    assert g[g.inputs[0]].type.shape[0] == dsl.N                  # batch stays symbolic
    channels = int(g[g.inputs[0]].type.shape[1])
    x = np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)
    y = cnncc.reference(g, x)
    ys, shapes = (list(y.values()), out_shape) if isinstance(y, dict) else ([y], (out_shape,))
    assert [a.shape for a in ys] == list(shapes)
    assert all(np.isfinite(a).all() and np.abs(a).max() > 0 for a in ys)


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

    factory, shape = zoo[name]
    module = factory()
    g = dsl.load_model(_path(name), size=shape[-1])
    assert sum(p.numel() for p in module.parameters()) == g.param_count()

    torch.manual_seed(0)
    with torch.no_grad():        # non-trivial BN statistics, so a wrong eps or a dropped term shows
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    weights = dsl_weights(module)
    dsl.apply_weights(g, weights)
    assert len(weights) == sum(len(n.params) for n in g)         # every DSL weight came from torch

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = module(x)
    want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]    # YOLOv3-tiny, OpenPose: two
    got = cnncc.reference(g, x.numpy())
    got = list(got.values()) if isinstance(got, dict) else [got]
    assert [a.shape for a in got] == [b.shape for b in want]
    for a, b in zip(got, want):
        err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
        assert err <= 1e-4, f"{name}: max relative error {err:.2e}"

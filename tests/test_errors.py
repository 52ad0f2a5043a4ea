"""Bad models (issue 2, item 9): each raises cnncc.ModelError naming the layer, the operator,
the attribute or what was computed, and the fix; the CLI turns each into exit code 2 without a
traceback (and shows the traceback with --debug)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnncc
from cnncc import ModelError
from cnncc.frontends import dsl

# Each case: a DSL model body (inside `def model():`) and the words its message must contain.
BAD_MODELS = {
    "kernel_larger_than_padded_input": (
        """
        x = dsl.input("image", (dsl.N, 3, 4, 4))
        return dsl.conv2d(x, 8, 7, padding=1, name="conv_big")
        """,
        ["layer 'conv_big'", "(conv2d)", "attribute 'kernel_size'", "spans 7", "only 6 wide", "fix:"]),
    "same_padding_not_symmetric": (
        """
        x = dsl.input("image", (dsl.N, 3, 8, 8))
        return dsl.conv2d(x, 8, 4, padding="same", name="conv_same")
        """,
        ["layer 'conv_same'", "(conv2d)", "attribute 'padding'", "cannot be symmetric", "3 padding in total",
         "fix:"]),
    "channel_mismatch": (
        """
        import numpy as np
        x = dsl.input("image", (dsl.N, 3, 8, 8))
        w = np.zeros((8, 5, 3, 3), np.float32)        # expects 5 input channels, gets 3
        return dsl.layer("conv2d", [x], {}, {"weight": w}, name="conv_mismatch")
        """,
        ["layer 'conv_mismatch'", "(conv2d)", "attribute 'in_channels'", "input has 3 channels",
         "weight expects 5", "fix:"]),
    "unknown_attribute": (
        """
        x = dsl.input("image", (dsl.N, 3, 8, 8))
        return dsl.relu(x, slope=0.1, name="act")
        """,
        ["layer 'act'", "(relu)", "attribute 'slope'", "unknown attribute", "fix:"]),
    "cycle": (
        """
        x = dsl.input("image", (dsl.N, 3, 8, 8))
        a = dsl.relu(x, name="a")
        b = dsl.sigmoid(a, name="b")
        g = dsl.graph(b)
        g.set_inputs("a", ["b"])                        # a reads b, b reads a
        return g
        """,
        ["cycle", "-> b ->", "-> a", "fix:"]),
}


def build(body: str):
    """Run a bad model body in-process, the way load_model would."""
    namespace = {"dsl": dsl, "np": np}
    exec("def model():\n" + textwrap.indent(textwrap.dedent(body), "    "), namespace)
    out = namespace["model"]()
    g = out if isinstance(out, cnncc.Graph) else dsl.graph(out)
    return g.verify()


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_raises_model_error_with_layer_op_attribute_and_fix(case):
    body, words = BAD_MODELS[case]
    with pytest.raises(ModelError) as info:
        build(body)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert info.value.fix, "every bad-model error says how to fix it"
    assert isinstance(info.value, cnncc.CnnccError)


def write_model(tmp_path, body: str):
    path = tmp_path / "bad_model.py"
    path.write_text("from cnncc.frontends import dsl\n\n\ndef model():\n"
                    + textwrap.indent(textwrap.dedent(body), "    "))
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cnncc.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_cli_summary_exits_2_without_traceback(tmp_path, case):
    body, words = BAD_MODELS[case]
    result = cli("summary", str(write_model(tmp_path, body)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for word in words:
        assert word in result.stderr, f"{word!r} missing from: {result.stderr}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_debug_shows_the_traceback(tmp_path, where):
    path = str(write_model(tmp_path, BAD_MODELS["same_padding_not_symmetric"][0]))
    args = ["--debug", "summary", path] if where == "before" else ["summary", path, "--debug"]
    result = cli(*args)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelError" in result.stderr
    assert "cannot be symmetric" in result.stderr


# ---------------------------------------------------------------------------------------------
# more malformed attributes and weights are caught at the layer that has them
def image(c=3, h=8, w=8):
    return dsl.input("image", (dsl.N, c, h, w))


def _matmul_of_mismatched():
    x = image()
    return dsl.matmul(x, dsl.max_pool2d(x, 2), name="mm0")        # (.., 8, 8) @ (.., 4, 4)


def _unpool_with_float_indices():
    x = image()
    return dsl.max_unpool2d(x, x, 2, name="unpool0")


@pytest.mark.parametrize("make,words", [
    (lambda: dsl.conv2d(image(), 4, 3, stride=0, name="c0"), ["layer 'c0'", "attribute 'stride'", "got 0"]),
    (lambda: dsl.max_pool2d(image(h=2, w=2), 3, name="p0"), ["layer 'p0'", "(max_pool2d)", "window 3"]),
    (lambda: dsl.max_pool2d(image(), 2, padding=2, name="p1"), ["layer 'p1'", "attribute 'padding'", "half"]),
    (lambda: dsl.layer("dense", [dsl.flatten(image())], {}, {"weight": np.zeros((10, 7), np.float32)}, name="fc0"),
     ["layer 'fc0'", "(dense)", "input has 192 features", "fix:"]),
    (lambda: dsl.add(image(), dsl.input("b", (dsl.N, 4, 8, 8), like=None), name="sum0"), None),
    (lambda: dsl.pad(image(h=2), 2, mode="reflect", name="pad0"), ["layer 'pad0'", "(pad)", "reflect"]),
    (lambda: dsl.upsample2d(image(), 2, align_corners=True, name="up0"),
     ["layer 'up0'", "attribute 'align_corners'", "fix:"]),
    (lambda: dsl.depth_to_space(image(c=6), 2, name="d2s0"), ["layer 'd2s0'", "channel count 6", "fix:"]),
    (lambda: dsl.conv_transpose2d(image(), 4, 3, stride=2, output_padding=2, name="up1"),
     ["layer 'up1'", "attribute 'output_padding'", "fix:"]),
    (lambda: dsl.transpose(image(), (0, 1, 1, 2), name="t0"), ["layer 't0'", "attribute 'perm'"]),
    (lambda: _matmul_of_mismatched(), ["layer 'mm0'", "inner dimensions", "(8 vs 4)"]),
    (lambda: _unpool_with_float_indices(), ["layer 'unpool0'", "(max_unpool2d)", "indices must be integers"]),
    (lambda: dsl.leaky_relu(image(), 0.1), ["dsl.leaky_relu", "name must be a string", "alpha="]),
], ids=["stride0", "pool_window", "pool_padding", "dense_features", "two_models", "reflect", "align_corners",
        "depth_to_space", "output_padding", "perm", "matmul", "unpool_indices", "attribute_as_name"])
def test_malformed_layers(make, words):
    if words is None:        # tensors from two different models cannot be combined
        with pytest.raises(cnncc.CnnccError, match="another model"):
            make()
        return
    with pytest.raises(ModelError) as info:
        make()
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_concat_channel_mismatch_names_the_layer():
    x = image()
    with pytest.raises(ModelError, match=r"layer 'cat0' \(concat\)"):
        dsl.concat([x, dsl.max_pool2d(x, 2)], name="cat0")

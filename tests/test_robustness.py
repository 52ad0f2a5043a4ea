"""Bad models and bad inputs (issue 12 point 4): each is a CnnccError subclass naming the node or
input, what was expected and the fix, or the right answer. docs/robustness.md lists every case
with the message a user sees; each row names the test here that checks it."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cnncc
from cnncc import CnnccError, InputError, ModelError, UnsupportedError
from cnncc.frontends import dsl

pytestmark = pytest.mark.usefixtures("shared_kernel_cache")


def small_model():
    x = dsl.input("image", (dsl.N, 3, 8, 8))
    return dsl.graph(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 4, 3, padding=1, name="conv")), 2, name="pool"))


@pytest.fixture(scope="module", params=["c", "cuda-emu"])
def compiled(request, shared_kernel_cache):
    g = small_model()
    return g, cnncc.compile(g, target=request.param)


X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)


class GpuTensorLike:
    """Stands for a CUDA torch tensor: it has __array__, which refuses."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


def words_in(message: str, words):
    for w in words:
        assert w in message, f"{w!r} missing from: {message}"


# -- what a call can be fed ---------------------------------------------------------------------------
@pytest.mark.parametrize("value,words", [
    (np.zeros((1, 4, 8, 8), np.float32), ["input 'image' axis 1 (channels): expected 3, got 4", "fix:"]),
    (np.zeros((1, 3, 9, 8), np.float32), ["input 'image' axis 2 (height): expected 8, got 9", "recompile"]),
    (np.zeros((1, 3, 8, 7), np.float32), ["input 'image' axis 3 (width): expected 8, got 7"]),
    (np.zeros((3, 8, 8), np.float32), ["input 'image' expects rank 4 (N, C, H, W)", "got rank 3", "x[None]"]),
    (np.zeros((1, 1, 3, 8, 8), np.float32), ["expects rank 4", "got rank 5", "x[0]"]),
    (np.ones((1, 3, 8, 8), np.uint8), ["input 'image' is uint8", "float32", "x.astype(np.float32)"]),
    (np.ones((1, 3, 8, 8), np.int64), ["input 'image' is int64"]),
    (np.ones((1, 3, 8, 8), bool), ["input 'image' is bool"]),
    (np.ones((1, 3, 8, 8), np.complex64), ["input 'image' has dtype complex64", "real-valued"]),
    (np.full((1, 3, 8, 8), 1e300), ["input 'image' holds 1e+300, beyond float32's range", "inf"]),
    ("an image", ["input 'image' has dtype str"]),
    (object(), ["input 'image' must be a numpy array, got object"]),
    ([[1.0, 2.0], [3.0]], ["input 'image' is a nested list that is not rectangular"]),
    (GpuTensorLike(), ["input 'image' (GpuTensorLike) cannot be converted to a numpy array", "x.cpu().numpy()"]),
], ids=["channels", "height", "width", "rank3", "rank5", "uint8", "int64", "bool", "complex", "f64_range", "str",
        "object", "ragged_list", "gpu_tensor"])
def test_bad_call_inputs_name_the_input_and_axis(compiled, value, words):
    g, mod = compiled
    for call in (lambda: mod(value), lambda: cnncc.reference(g, value)):
        with pytest.raises(InputError) as info:
            call()
        words_in(str(info.value), words)
        assert isinstance(info.value, CnnccError) and info.value.input == "image"


@pytest.mark.parametrize("call,words", [
    (lambda mod: mod(X, X), ["got 2 positional argument(s); the model takes 1 input(s): image"]),
    (lambda mod: mod(img=X), ["unknown input name(s): 'img'; the model takes 1 input(s): image"]),
    (lambda mod: mod(), ["got 0 positional argument(s)"]),
    (lambda mod: mod({"image": X, "extra": X}), ["unknown input name(s): 'extra'"]),
], ids=["surplus", "unknown_keyword", "none", "unknown_in_dict"])
def test_wrong_input_names_and_counts(compiled, call, words):
    with pytest.raises(InputError) as info:
        call(compiled[1])
    words_in(str(info.value), words)


def test_layouts_dtypes_and_containers_give_the_right_answer(compiled):
    g, mod = compiled
    want = mod(X)
    np.testing.assert_allclose(want, cnncc.reference(g, X), rtol=1e-5, atol=1e-5)
    wide = np.zeros((2, 3, 8, 16), np.float32)
    wide[..., ::2] = X
    readonly = X.copy()
    readonly.flags.writeable = False
    same = {"non_contiguous": wide[..., ::2], "fortran": np.asfortranarray(X), "read_only": readonly,
            "float64": X.astype(np.float64), "float16_exact": X.astype(np.float16).astype(np.float32),
            "list": X.tolist(), "dict": {"image": X}, "keyword": None}
    for label, value in same.items():
        got = mod(image=X) if label == "keyword" else mod(value)
        ref = want if label != "float16_exact" else mod(X.astype(np.float16))
        np.testing.assert_array_equal(got, ref, err_msg=label)
    assert readonly.flags.writeable is False and wide[..., 1::2].max() == 0      # inputs never written


def test_batch_zero_gives_empty_outputs(compiled):
    g, mod = compiled
    out = mod(np.zeros((0, 3, 8, 8), np.float32))
    assert out.shape == (0, 4, 4, 4) and out.dtype == np.float32
    assert cnncc.reference(g, np.zeros((0, 3, 8, 8), np.float32)).shape == (0, 4, 4, 4)


def test_buffers_beyond_memory_are_refused_before_allocation(compiled, monkeypatch):
    from cnncc.runtime import memory

    g, mod = compiled
    with pytest.raises(memory.OutOfMemoryError) as info:
        memory.check(mod.program, 10**8, available=2**30)
    words_in(str(info.value), ["at batch 100000000 needs 23.8 GiB", "but only 1.0 GiB of memory is available",
                               "'conv", "(100000000, 4, 4, 4) = 23.8 GiB", "fix: use a smaller batch"])
    # a call checks before the arena and the outputs exist (MemAvailable pretended small here)
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 << 20)
    with pytest.raises(memory.OutOfMemoryError, match="at batch 100000 needs"):
        mod(np.broadcast_to(X[:1], (10**5, 3, 8, 8)))
    assert mod(X).shape == (2, 4, 4, 4)


def test_a_model_too_large_for_memory_is_refused_at_compile():
    from cnncc.runtime.memory import OutOfMemoryError

    x = dsl.input("image", (dsl.N, 3, 30000, 30000))
    g = dsl.graph(dsl.relu(dsl.conv2d(x, 64, 3, padding=1, name="conv_big")))
    with pytest.raises(OutOfMemoryError) as info:
        cnncc.compile(g, target="c")
    words_in(str(info.value), ["at batch 1 needs", "'conv_big", "(1, 64, 30000, 30000) = 214.6 GiB"])


# -- what the DSL can be fed --------------------------------------------------------------------------
@pytest.mark.parametrize("make,words", [
    (lambda: dsl.input("image", (dsl.N, 0, 8, 8)), ["layer 'image' (input) attribute 'shape'", "axis 1", "is 0",
                                                     "positive int"]),
    (lambda: dsl.input("image", (dsl.N, 3, -8, 8)), ["axis 2", "is -8"]),
    (lambda: dsl.input("image", (dsl.N, 3, 8.5, 8)), ["axis 2", "is 8.5"]),
    (lambda: dsl.conv2d(dsl.input("image", (dsl.N, 3, 8, 8)), 4, 3, groups=2, name="c"),
     ["layer 'c' (conv2d) attribute 'groups'", "input channels 3 are not divisible by groups 2", "fix:"]),
    (lambda: dsl.conv2d(dsl.input("image", (dsl.N, 4, 8, 8)), 3, 3, groups=2, name="c"),
     ["layer 'c' (conv2d) attribute 'groups'", "out_channels 3 is not divisible by groups 2", "fix:"]),
    (lambda: dsl.conv2d(dsl.input("image", (dsl.N, 3, 4, 4)), 3, 7, padding=1, name="c"),
     ["layer 'c' (conv2d) attribute 'kernel_size'", "spans 7", "only 6 wide", "fix:"]),
    (lambda: dsl.relu(dsl.relu(dsl.input("image", (dsl.N, 3, 4, 4)), name="a"), name="a"),
     ["layer 'a'", "already exists", "fix: give every layer a unique name"]),
], ids=["zero_dim", "negative_dim", "float_dim", "groups_in", "groups_out", "kernel_too_big", "duplicate_name"])
def test_bad_dsl_models(make, words):
    with pytest.raises(ModelError) as info:
        make()
    words_in(str(info.value), words)


def test_dangling_input_in_a_graph():
    g = small_model()
    with pytest.raises(ModelError) as info:
        g.set_inputs("pool", ["nowhere"])
    words_in(str(info.value), ["layer 'pool'", "input 'nowhere' does not exist", "fix:"])


# -- what the ONNX importer can be fed -----------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def onnx_model(nodes, inits=(), x_shape=("N", 3, 8, 8), out="y"):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def relu(i, o, name):
    return helper.make_node("Relu", [i], [o], name=name)


def good_onnx_bytes() -> bytes:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    return onnx_model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
                       relu("c", "y", "act")], [("w", w)]).SerializeToString()


@pytest.mark.parametrize("data,words", [
    (lambda: good_onnx_bytes()[:-7], ["is not a valid ONNX model", "protobuf cannot parse it", "not truncated"]),
    (lambda: good_onnx_bytes()[:len(good_onnx_bytes()) // 2], ["is not a valid ONNX model"]),
    (lambda: np.random.default_rng(1).bytes(300), ["is not a valid ONNX model"]),
    (lambda: b"", ["holds no ONNX graph"]),
    (lambda: b"PK\x03\x04 a zip file, not a model", ["is not a valid ONNX model"]),
], ids=["truncated_tail", "truncated_half", "random", "empty", "zip"])
def test_unreadable_onnx_files_name_the_file(tmp_path, data, words):
    path = tmp_path / "model.onnx"
    path.write_bytes(data())
    with pytest.raises(ModelError) as info:
        cnncc.from_onnx(path)
    words_in(str(info.value), [f"'{path}'", *words])
    with pytest.raises(ModelError):
        cnncc.from_onnx(path.read_bytes())
    assert cnncc.from_onnx(good_onnx_bytes()).outputs            # the intact bytes import


def test_onnx_path_that_is_a_folder_or_missing(tmp_path):
    with pytest.raises(ModelError, match=r"no such ONNX file: .* \(it is a folder\)"):
        cnncc.from_onnx(tmp_path)
    with pytest.raises(ModelError, match="no such ONNX file"):
        cnncc.from_onnx(tmp_path / "missing.onnx")




@pytest.mark.parametrize("model,error,words", [
    (lambda: onnx_model([relu("b", "a", "r1"), relu("a", "b", "r2"), helper.make_node("Add", ["x", "b"], ["y"])]),
     ModelError, ["layer 'r1' (Relu)", "the graph has a cycle: r2 -> r1 -> r2", "fix:"]),
    (lambda: onnx_model([relu("a", "y", "r2"), relu("x", "a", "r1")]),
     ModelError, ["layer 'r2' (Relu)", "input 'a' is produced by 'r1', which comes later", "topological order"]),
    (lambda: onnx_model([relu("nowhere", "y", "r1")]),
     ModelError, ["layer 'r1' (Relu)", "input 'nowhere' is not produced by any node", "fix:"]),
    (lambda: onnx_model([relu("x", "y", "r1"), helper.make_node("Sigmoid", ["x"], ["y"], name="r2")]),
     ModelError, ["layer 'r2' (Sigmoid)", "tensor 'y' is produced twice: by 'r1' and by 'r2'", "fix:"]),
    (lambda: onnx_model([relu("x", "a", "r1")]), ModelError, ["graph output 'y' is never computed"]),
    (lambda: onnx_model([helper.make_node("Foo", ["x"], ["a"], name="f1"),
                         helper.make_node("NonMaxSuppression", ["a"], ["b"], name="nms"),
                         helper.make_node("Einsum", ["x"], ["y"], name="e", equation="ij->ji")]),
     UnsupportedError, ["3 node(s) cnncc cannot import", "- f1 (Foo)", "- nms (NonMaxSuppression)", "- e (Einsum)",
                        "supported: Add"]),
    (lambda: onnx_model([relu("x", "y", "r1")], x_shape=(1, 0, 8, 8)),
     ModelError, ["graph input 'x' axis 1 has size 0", "fix:"]),
    (lambda: onnx_model([relu("x", "y", "r1")], x_shape=(1, 3, -8, 8)), ModelError, ["axis 2 has size -8"]),
    (lambda: onnx_model([helper.make_node("Conv", ["x", "w"], ["y"], group=2, kernel_shape=[3, 3], name="c1")],
                        [("w", np.zeros((4, 2, 3, 3), np.float32))]),
     ModelError, ["(conv2d) attribute 'in_channels'", "input has 3 channels, weight expects 2 x 2 groups = 4"]),
    (lambda: onnx_model([helper.make_node("Conv", ["x", "w"], ["y"], group=3, kernel_shape=[3, 3], name="c1")],
                        [("w", np.zeros((4, 1, 3, 3), np.float32))]),
     ModelError, ["(conv2d) attribute 'groups'", "out_channels 4 is not divisible by groups 3"]),
    (lambda: onnx_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[9, 9], name="c1")],
                        [("w", np.zeros((4, 3, 9, 9), np.float32))]),
     ModelError, ["attribute 'kernel_size'", "spans 9 but the padded input is only 8 wide"]),
], ids=["cycle", "out_of_order", "dangling", "produced_twice", "output_never_computed", "unsupported_all_at_once",
        "zero_dim", "negative_dim", "groups_in", "groups_out", "kernel_too_big"])
def test_bad_onnx_models(model, error, words):
    with pytest.raises(error) as info:
        cnncc.from_onnx(model())
    words_in(str(info.value), words)


# -- what from_torch can be fed ------------------------------------------------------------------------
def test_torch_unsupported_constructs_are_listed_at_once_and_bad_shapes_named():
    torch = pytest.importorskip("torch")

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.unfold = torch.nn.Unfold(2)

        def forward(self, x):
            y = self.conv(x)
            return self.unfold(y), torch.cumsum(y, 1)

    with pytest.raises(UnsupportedError) as info:
        cnncc.from_torch(Odd().eval(), torch.zeros(1, 3, 8, 8))
    words_in(str(info.value), ["2 construct(s)", "unfold (nn.Unfold", "cumsum (torch.cumsum)"])
    with pytest.raises(ModelError) as info:
        cnncc.from_torch(torch.nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 5, 8, 8))
    assert str(info.value).count("layer 'conv2d'") == 1
    words_in(str(info.value), ["input has 5 channels, weight expects 3"])
    with pytest.raises(ModelError, match="training mode"):
        cnncc.from_torch(torch.nn.BatchNorm2d(3), torch.zeros(1, 3, 8, 8))


# -- the CLI: exit code 2, one line of error, no traceback ---------------------------------------------
def cli(*args, cwd=None):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "cnncc.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_cli_exits_2_without_traceback_for_bad_files_and_inputs(tmp_path):
    (tmp_path / "truncated.onnx").write_bytes(good_onnx_bytes()[:-7])
    (tmp_path / "syntax.py").write_text("def model(:\n    pass\n")
    (tmp_path / "raises.py").write_text("def model():\n    return 1 / 0\n")
    (tmp_path / "lenet.py").write_text("from cnncc.frontends import dsl\n\ndef model():\n"
                                       "    x = dsl.input('image', (dsl.N, 1, 8, 8))\n"
                                       "    return dsl.relu(dsl.conv2d(x, 2, 3))\n")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 8, 8), np.float32))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        (["summary", "truncated.onnx"], ["truncated.onnx' is not a valid ONNX model"]),
        (["summary", "syntax.py"], ["syntax.py:1: syntax error"]),
        (["summary", "raises.py"], ["model() raised ZeroDivisionError: division by zero", "--debug"]),
        (["run", "lenet.py", "--input", "wrong.npy"], ["input 'image' axis 1 (channels): expected 1, got 3"]),
        (["run", "lenet.py", "--input", "broken.npy"], ["cannot read --input 'broken.npy'"]),
        (["run", "lenet.py", "--input", "missing.npy"], ["cannot read --input 'missing.npy'"]),
        (["run", "lenet.py", "--batch", "0"], ["--batch must be at least 1"]),
    ]
    for args, words in cases:
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "\nerror: " in "\n" + result.stderr, (args, result.stderr)
        words_in(result.stderr, words)

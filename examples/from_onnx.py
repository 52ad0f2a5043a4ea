"""ONNX -> cnncc end to end: export a small CNN to ONNX, import it, compile it to C, run it, and
compare with onnxruntime (what `cnncc verify model.onnx` does from the command line).

    python examples/from_onnx.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cnncc


def small_cnn() -> nn.Module:
    """A residual-free classifier with BN, pooling and a dense head: what exporters typically emit."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10), nn.Softmax(dim=1),
    ).eval()


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small_cnn.onnx"
        torch.onnx.export(small_cnn(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          input_names=["image"], output_names=["prob"],
                          dynamic_axes={"image": {0: "batch"}, "prob": {0: "batch"}})

        graph = cnncc.from_onnx(path)                 # the dynamic batch becomes the symbol N
        print(graph.summary())
        module = cnncc.compile(graph, target="c")     # one compiled module runs any batch size

        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        ours = module(x)

        import onnxruntime as ort

        theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        err = float(np.max(np.abs(ours - theirs)))
        print(f"{len(module.kernels)} kernels; max abs difference to onnxruntime: {err:.2e}")
        assert err < 1e-4 * max(1.0, float(np.abs(theirs).max()))


if __name__ == "__main__":
    main()

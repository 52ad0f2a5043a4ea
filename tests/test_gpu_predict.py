"""The H200 prediction (cnncc/gpu_predict.py): occupancy rules, the per-kernel model, and
`cnncc bench --target cuda` printing the predicted table without a GPU."""
from __future__ import annotations

import pytest

pytest.importorskip("cupy")
import cnncc  # noqa: E402
from cnncc import gpu_predict as gp  # noqa: E402


@pytest.mark.parametrize("regs, smem, threads, blocks, fraction, limiter", [
    (32, 0, 256, 8, 1.0, "registers"),          # 8 x 256 threads = 2048 = 64K / 32 registers: all limits meet
    (128, 0, 256, 2, 0.25, "registers"),        # 4096 registers per warp -> 16 warps
    (40, 100 * 1024, 128, 2, 0.125, "shared memory"),
    (16, 0, 32, 32, 0.5, "blocks"),             # 32 blocks of one warp
    (33, 0, 1024, 1, 0.5, "registers"),         # 33 -> 40 registers per thread (256-register warp units)
])
def test_occupancy_follows_the_sm90_rules(regs, smem, threads, blocks, fraction, limiter):
    occ = gp.occupancy(regs, smem, threads)
    assert (occ.blocks_per_sm, occ.fraction) == (blocks, fraction)
    if limiter != "registers" or fraction < 1.0:
        assert occ.limiter == limiter


def test_prediction_per_kernel_and_model(shared_kernel_cache, examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    p32 = gp.predict_model(g, 64, "fp32")
    p16 = gp.predict_model(g, 64, "fp16")
    assert len(p32["kernels"]) == len(p16["kernels"]) == 5
    for pred in (p32, p16):
        assert pred["seconds"] == pytest.approx(sum(k["seconds"] for k in pred["kernels"]))
        for k in pred["kernels"]:
            assert k["flops"] > 0 and k["bytes"] > 0 and 0 < k["occupancy"] <= 1 and k["spills"] == 0
            assert k["seconds"] >= max(k["compute_s"], k["memory_s"]) >= 0
    units = {k["name"]: k["unit"] for k in p16["kernels"]}
    assert units["conv2_relu2_pool2"] == "tensor cores fp16" and units["conv1_relu1_pool1"] == "fp32"
    conv2 = {k["name"]: k for k in p32["kernels"]}["conv2_relu2_pool2"]
    conv2_tc = {k["name"]: k for k in p16["kernels"]}["conv2_relu2_pool2"]
    assert conv2_tc["compute_s"] < conv2["compute_s"]          # the tensor-core peak is 15x the FP32 one
    text = gp.format_prediction(p16)
    assert "PREDICTED" in text and "conv2_relu2_pool2" in text and "tensor cores fp16" in text


def test_bench_prints_the_predicted_table_without_a_gpu(shared_kernel_cache, examples_dir, capsys):
    import cupy

    try:
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        has_gpu = False
    from cnncc.cli import main

    rc = main(["bench", str(examples_dir / "lenet5.py"), "--target", "cuda", "--precision", "tf32", "--batch", "8",
               "--compare", "opt2", "--repeat", "1", "--warmup", "0", "--no-kernels"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "PREDICTED for NVIDIA H200" in out and "precision tf32" in out and "tensor cores tf32" in out
    if not has_gpu:
        assert "needs an NVIDIA GPU" in out


def test_inspect_lists_cuda_resources(shared_kernel_cache, examples_dir, capsys):
    """`cnncc inspect --cuda`: registers, shared memory, spills and occupancy per kernel (the ptxas
    report of lenet5 at fp16 is cached by the prediction test above when it ran first)."""
    from cnncc.cli import main

    assert main(["inspect", str(examples_dir / "lenet5.py"), "--cuda", "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    assert "CUDA kernels for sm_90 at precision fp16" in out and "occupancy" in out
    row = next(line for line in out.splitlines() if line.startswith("conv2_relu2_pool2"))
    assert "tensor cores fp16" in row and "%" in row

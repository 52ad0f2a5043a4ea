"""What the CUDA target's kernels would do on an H200, known without one.

Two things, both from the compiler alone:

* **resources**: NVRTC's ptxas report per kernel (registers, static shared memory, spills) and
  the theoretical occupancy those imply with the sm_90 limits (registers allocated per warp in
  units of 256, 1 KB of shared memory reserved per block, at most 32 blocks, 64 warps and
  2048 threads per SM);
* **a predicted time** per kernel and per model: the kernel's FLOPs against the peak of the
  units it uses (tensor cores at the module's precision for the WMMA convolutions, FP32 FMAs
  for everything else) and its bytes against HBM bandwidth, each derated by how full the SMs
  are (occupancy below ``SATURATING_OCCUPANCY`` hides less latency) and by the last partial wave
  of blocks, plus a launch cost. ``max(compute, memory)`` is the roofline; the derating makes
  it a prediction rather than a bound. docs/gpu.md explains the model and its limits.

FLOPs and bytes come from the same cost model as the CPU roofline (cnncc.ops.node_cost via
cnncc.cost.node_work), so predicted and measured tables line up kernel by kernel.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: H200 SXM (sm_90) figures the prediction uses (dense, no sparsity)
H200 = {
    "name": "NVIDIA H200 (sm_90, 132 SMs, HBM3e)",
    "sms": 132,
    "hbm_bytes_per_s": 4.8e12,
    "peak_flops": {"fp32": 67e12, "tf32": 495e12, "fp16": 990e12, "bf16": 990e12},
    "regs_per_sm": 65536,
    "smem_per_sm": 228 * 1024,
    "smem_reserved_per_block": 1024,
    "max_threads_per_sm": 2048,
    "max_warps_per_sm": 64,
    "max_blocks_per_sm": 32,
    "reg_alloc_unit": 256,      # registers are allocated per warp in units of 256
}
#: occupancy (active warps / 64) from which the SM is assumed to hide memory and pipeline latency
SATURATING_OCCUPANCY = 0.5
#: one kernel launch (stream launch; a replayed CUDA Graph costs less)
LAUNCH_S = 2.0e-6


@dataclass
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float          # active warps / max warps
    limiter: str             # registers | shared memory | threads | blocks


def occupancy(registers: int, smem_bytes: int, threads: int, device: dict = H200) -> Occupancy:
    """Theoretical occupancy of a kernel (the CUDA occupancy calculator's rules for sm_90)."""
    warps = max(1, math.ceil(threads / 32))
    unit = device["reg_alloc_unit"]
    regs_per_warp = max(unit, math.ceil(max(registers, 1) * 32 / unit) * unit)
    limits = {
        "registers": (device["regs_per_sm"] // regs_per_warp) // warps,
        "shared memory": device["smem_per_sm"] // (smem_bytes + device["smem_reserved_per_block"]),
        "threads": device["max_threads_per_sm"] // (warps * 32),
        "blocks": device["max_blocks_per_sm"],
    }
    limiter = min(limits, key=lambda k: limits[k])
    blocks = max(0, limits[limiter])
    return Occupancy(blocks, blocks * warps, blocks * warps / device["max_warps_per_sm"], limiter)


@dataclass
class KernelPrediction:
    name: str
    unit: str                # "tensor cores tf32" | "fp32"
    flops: float
    bytes: float
    registers: int
    smem_bytes: int
    spills: int
    threads: int
    blocks: int              # grid size at the batch
    occupancy: float
    limiter: str
    compute_s: float
    memory_s: float
    seconds: float
    bound: str               # compute | memory | launch
    members: list[str] = field(default_factory=list)


def predict(program, opt_graph, rendered, batch: int, resources: dict | None = None, device: dict = H200) -> dict:
    """Per-kernel and total predicted seconds of ``program`` (a lowered Program whose kernels
    ``rendered`` holds) at ``batch``; ``resources`` is kernel_resources(rendered.source) (compiled
    here when omitted)."""
    from cnncc.cost import node_work
    from cnncc.runtime.cuda import kernel_calls
    from cnncc.runtime.nvrtc import kernel_resources

    resources = kernel_resources(rendered.source) if resources is None else resources
    calls = {c.name: c for c in kernel_calls(program, rendered)}
    rows = []
    for spec, k in zip(program.kernels, rendered.kernels):
        call = calls[spec.cname]          # launches and ptxas name the CUDA function, not the layer
        tc = "wmma::mma_sync" in k.source
        unit = f"tensor cores {program.precision}" if tc else "fp32"
        peak = device["peak_flops"][program.precision if tc else "fp32"]
        node = opt_graph[spec.name] if spec.name in opt_graph else None
        if node is not None:
            flops, nbytes = node_work(opt_graph, node, batch)
        else:   # a kernel the graph does not name (should not happen): bytes of its tensors only
            flops = 0.0
            nbytes = float(sum(t.item_numel * (batch if t.batched else 1) * 4 for t in spec.tensors()))
        r = resources.get(spec.cname)
        regs, smem, spills = (r.registers, r.smem_bytes, r.spills) if r else (32, 0, 0)
        threads = call.block[0] * call.block[1] * call.block[2]
        occ = occupancy(regs, smem, threads, device)
        grid = call.grid_for(batch)
        blocks = grid[0] * grid[1] * grid[2]
        per_wave = max(1, occ.blocks_per_sm * device["sms"])
        waves = math.ceil(blocks / per_wave)
        wave_eff = blocks / (waves * per_wave)          # the last wave's idle SMs
        busy = min(1.0, occ.fraction / SATURATING_OCCUPANCY) * wave_eff
        busy = max(busy, 1e-3)
        compute_s = flops / (peak * busy)
        memory_s = nbytes / (device["hbm_bytes_per_s"] * busy)
        seconds = max(compute_s, memory_s) + LAUNCH_S
        bound = "launch" if max(compute_s, memory_s) < LAUNCH_S else ("compute" if compute_s >= memory_s else "memory")
        rows.append(KernelPrediction(k.name, unit, flops, nbytes, regs, smem, spills, threads, blocks, occ.fraction,
                                     occ.limiter, compute_s, memory_s, seconds, bound,
                                     [n for n, _ in spec.nodes]))
    total = sum(r.seconds for r in rows)
    return {"device": device["name"], "precision": program.precision, "batch": batch, "seconds": total,
            "throughput_per_s": batch / total if total else 0.0,
            "kernels": [asdict(r) for r in rows]}


def predict_model(graph, batch: int, precision: str = "fp32", opt_level: int = 2, resources: dict | None = None) -> dict:
    """Lower + render ``graph`` for the CUDA target at ``precision`` and predict it (NVRTC, no GPU)."""
    import cnncc
    from cnncc.codegen.lower import lower_program
    from cnncc.runtime.cuda import render

    opt = cnncc.optimize(graph, opt_level=opt_level)
    program = lower_program(opt)
    program.precision = precision
    rendered = render(program)
    return predict(program, opt, rendered, batch, resources)


def resource_rows(program, rendered, resources: dict, device: dict = H200) -> list[dict]:
    """Per kernel: unit, registers, shared memory, spills, threads, theoretical occupancy."""
    from cnncc.runtime.cuda import kernel_calls

    out = []
    for call, k in zip(kernel_calls(program, rendered), rendered.kernels):
        r = resources.get(call.name)          # the CUDA function's name
        threads = call.block[0] * call.block[1] * call.block[2]
        occ = occupancy(r.registers if r else 0, r.smem_bytes if r else 0, threads, device)
        out.append({"name": k.name, "unit": f"tensor cores {program.precision}" if "wmma::mma_sync" in k.source
                    else "fp32", "registers": r.registers if r else None, "smem_bytes": r.smem_bytes if r else None,
                    "spills": r.spills if r else None, "threads": threads, "blocks_per_sm": occ.blocks_per_sm,
                    "occupancy": occ.fraction, "limiter": occ.limiter})
    return out


def format_resources(rows: list[dict], title: str = "") -> str:
    from cnncc.summary import text_table as _table

    head = [title] if title else []
    return "\n".join(head + [_table(
        ["kernel", "unit", "regs", "smem B", "spills", "threads", "blocks/SM", "occupancy", "limited by"],
        [[r["name"][:40], r["unit"], str(r["registers"]), str(r["smem_bytes"]), str(r["spills"]), str(r["threads"]),
          str(r["blocks_per_sm"]), f"{r['occupancy'] * 100:.0f}%", r["limiter"]] for r in rows])])


def format_prediction(pred: dict, measured: dict | None = None, max_kernels: int = 25) -> str:
    """The *predicted* table (with a measured column when ``measured`` maps kernel -> seconds)."""
    from cnncc.summary import text_table as _table

    out = [f"-- batch {pred['batch']}: PREDICTED for {pred['device']}, precision {pred['precision']} "
           f"(a model, not a measurement: see docs/gpu.md) --",
           f"predicted total {pred['seconds'] * 1e3:.3f} ms = {pred['throughput_per_s']:.0f} items/s over "
           f"{len(pred['kernels'])} kernels"]
    rows = sorted(pred["kernels"], key=lambda r: -r["seconds"])
    headers = ["kernel", "unit", "GFLOP", "MB", "regs", "smem B", "occ.", "bound", "pred. us"]
    if measured:
        headers.append("measured us")
    table = []
    for r in rows[:max_kernels]:
        row = [r["name"][:40], r["unit"], f"{r['flops'] / 1e9:.3f}", f"{r['bytes'] / 1e6:.2f}", str(r["registers"]),
               str(r["smem_bytes"]), f"{r['occupancy'] * 100:.0f}%", r["bound"], f"{r['seconds'] * 1e6:.1f}"]
        if measured:
            m = measured.get(r["name"])
            row.append(f"{m * 1e6:.1f}" if m is not None else "")
        table.append(row)
    out.append(_table(headers, table))
    if len(rows) > max_kernels:
        out.append(f"... {len(rows) - max_kernels} more kernels (see --json)")
    return "\n".join(out)

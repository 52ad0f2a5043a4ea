"""cnncc compile MODEL -o OUT: optimize, generate and build a model into a saved module folder."""
from __future__ import annotations

import sys
import time

from cnncc.commands import add_conv_algorithm, add_layout, add_dynamic_batch, add_precision, add_target


def add(sub):
    p = sub.add_parser("compile", help="compile a model into a self-contained module folder (C or CUDA)")
    p.add_argument("model", help="DSL .py file or .onnx file")
    add_dynamic_batch(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to write the module into")
    add_target(p,
                   help="c: gcc + OpenMP (default); cuda: NVRTC sm_90 cubin (no GPU needed to compile)")
    p.add_argument("--batch", type=int, default=None,
                   help="the only batch size the saved module accepts (default: any; N is a runtime argument)")
    p.add_argument("--opt", type=int, default=2, choices=[0, 1, 2], help="optimization level (default 2)")
    add_precision(p,
                   help="CUDA targets: convolution arithmetic on tensor cores (default fp32; see docs/gpu.md)")
    add_conv_algorithm(p)
    add_layout(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def progress_printer(quiet: bool):
    """One line per compile stage with the elapsed time (building ResNet-sized C takes a while)."""
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)
    return say


def check_batch(batch: int | None) -> None:
    from cnncc.errors import CnnccError

    if batch is not None and batch < 1:
        raise CnnccError(f"--batch must be positive, got {batch}")


def run(args) -> int:
    import cnncc

    say = progress_printer(args.quiet)
    say(f"loading {args.model}")
    check_batch(args.batch)
    from cnncc.commands import batch_of

    g = cnncc.load_model(args.model, batch=batch_of(args))
    mod = cnncc.compile(g, target=args.target, opt_level=args.opt, precision=args.precision, progress=say,
                        conv_algorithm=args.conv_algorithm, layout=args.layout)
    # kernels keep N as a runtime argument (one code path for every batch); --batch pins what
    # the saved module accepts
    mod.program.fixed_batch = args.batch
    out = mod.save(args.output)
    print(f"{out}: {len(mod.kernels)} kernels, target {args.target}, opt {args.opt} "
          f"({mod.backend.source_name}, {mod.backend.artifact_name}, weights.npz, manifest.json)")
    return 0

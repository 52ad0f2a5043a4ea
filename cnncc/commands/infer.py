"""cnncc infer MODEL --input PATH --output DIR: run a module over a dataset on Ray (cnncc/ray.py)."""
from __future__ import annotations

import sys

from cnncc.commands import add_target


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def add(sub):
    p = sub.add_parser("infer", help="run a model or saved module over a whole dataset on Ray Data (local or cluster)")
    p.add_argument("model", help="DSL .py file or .onnx file (compiled once, on the driver), or a saved module folder")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="a folder or glob of .npy/.npz files or images, or a .parquet file with an array column")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the shards and summary.json")
    p.add_argument("--format", default="npy", choices=["npy", "parquet"], help="shard files (default npy)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="inputs (files or Parquet rows) per shard and module call (default 32)")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, each holding the module once (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs each worker reserves (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs each worker reserves (target cuda)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray in the process")
    add_target(p, help="for a model file (default c)")
    p.add_argument("--opt", type=int, default=2, choices=[0, 1, 2], help="for a model file (default 2)")
    p.add_argument("--limit", type=int, default=None, help="only the first N inputs (files or rows)")
    p.add_argument("--on-error", default="stop", choices=["stop", "skip"],
                   help="a bad input stops the run (default) or is skipped and listed in summary.json")
    p.add_argument("--column", default=None, help="Parquet column holding the arrays (default: the model's input name)")
    g = p.add_argument_group("image preprocessing (Pillow): RGB or L, resize, scale to [0,1], (x - mean) / std")
    g.add_argument("--size", type=int, default=None,
                   help="resize the shorter side to SIZE, then centre-crop to the model's H x W "
                        "(default: resize straight to H x W)")
    g.add_argument("--mean", type=_floats, default=(0.0,), metavar="M[,M,M]", help="per channel (default 0)")
    g.add_argument("--std", type=_floats, default=(1.0,), metavar="S[,S,S]",
                   help="per channel (default 1); ImageNet: --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225")
    p.add_argument("--quiet", action="store_true", help="no progress output (nor Ray Data's progress bars)")
    return p


def run(args) -> int:
    from cnncc.commands.compile import progress_printer
    from cnncc.errors import CnnccError
    from cnncc.ray import Preprocess, infer, require_ray

    if args.limit is not None and args.limit < 1:
        raise CnnccError(f"--limit must be positive, got {args.limit}")
    if args.quiet:
        require_ray().data.DataContext.get_current().enable_progress_bars = False
    summary = infer(args.model, args.input, output_dir=args.output, format=args.format, batch_size=args.batch_size,
                    workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                    address=args.address, target=args.target, opt_level=args.opt, limit=args.limit,
                    on_error=args.on_error, preprocess=Preprocess(args.size, args.mean, args.std),
                    column=args.column, progress=progress_printer(args.quiet))
    skipped = summary["skipped"]
    print(f"{args.output}: {summary['items']} predictions in {summary['shards']} shards ({args.format}), "
          f"{summary['items_per_s']} items/s on {args.workers} worker(s); summary.json"
          + (f"; {len(skipped)} input(s) skipped" if skipped else ""))
    for s in skipped[:10]:
        print(f"  skipped {s['error']}", file=sys.stderr)
    return 0

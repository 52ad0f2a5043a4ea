"""cnncc run MODEL|OUT: compile (or load a saved module) and run it on an input, optionally checked."""
from __future__ import annotations

import time
from pathlib import Path

from cnncc.commands import add_conv_algorithm, add_layout, add_dynamic_batch, add_precision, add_target


def add(sub):
    p = sub.add_parser("run", help="run a model or a saved module on an input (--check compares with the reference)")
    p.add_argument("model", help="DSL .py file, .onnx file, or a folder written by `cnncc compile`")
    add_dynamic_batch(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="X.npy", help="input array (.npy; loaded without pickles)")
    src.add_argument("--random", action="store_true", help="a random input (the default)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    add_target(p, help="for a model file (default c)")
    p.add_argument("--opt", type=int, default=2, choices=[0, 1, 2], help="for a model file (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads of the C target (default: OMP_NUM_THREADS, else all cores)")
    add_precision(p,
                   help="for a model file, CUDA targets: convolution arithmetic (default fp32)")
    add_conv_algorithm(p)
    add_layout(p)
    p.add_argument("--check", action="store_true", help="also run the numpy reference and print the max error")
    p.add_argument("--save", metavar="OUT.npy", help="write the (first) output to a .npy file")
    return p


def run(args) -> int:
    import numpy as np

    import cnncc
    from cnncc.commands.compile import progress_printer
    from cnncc.errors import CnnccError

    say = progress_printer(False)
    path = Path(args.model)
    graph = None
    if path.is_dir():
        mod = cnncc.load(path)
        if args.check:
            graph = cnncc.load_model(path)      # the graph it was compiled from (graph.json)
    else:
        from cnncc.commands import batch_of

        graph = cnncc.load_model(path, batch=batch_of(args))
        mod = cnncc.compile(graph, target=args.target, opt_level=args.opt, precision=args.precision, progress=say,
                            conv_algorithm=args.conv_algorithm, layout=args.layout)
    mod.threads = args.threads
    program = mod.program
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CnnccError(f"cannot read --input '{args.input}': {e}\n  fix: give a .npy file written by "
                             f"np.save (without pickled objects)") from None
        if not isinstance(x, np.ndarray):
            raise CnnccError(f"--input '{args.input}' holds several arrays (.npz); give one .npy array")
        feeds = {program.inputs[0].name: x}
        batch = x.shape[0] if x.ndim else 1
    else:
        rng = np.random.default_rng(0)
        batch = args.batch
        if batch < 1:
            raise CnnccError(f"--batch must be at least 1, got {batch}")
        feeds = {t.name: rng.standard_normal(((batch,) + tuple(t.shape[1:])) if t.batched else t.shape)
                 .astype(t.dtype) for t in program.inputs}
    mod(feeds)  # warm up (loads the library)
    t0 = time.perf_counter()
    y = mod(feeds)
    ms = (time.perf_counter() - t0) * 1e3
    outs = y if isinstance(y, dict) else {mod.output_names[0]: y}
    print(f"{program.name}: {len(mod.kernels)} kernels on target {mod.target}, batch {batch}, {ms:.2f} ms")
    for name, arr in outs.items():
        flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr[None]
        if flat.shape[0] == 0:
            print(f"  {name} {tuple(arr.shape)} {arr.dtype}: (empty batch)")
            continue
        head = np.array2string(flat[0][:10], precision=4, suppress_small=True)
        print(f"  {name} {tuple(arr.shape)} {arr.dtype}: {head}{' ...' if flat.shape[1] > 10 else ''}")
        if arr.ndim == 2 and arr.shape[1] > 1:
            print(f"    argmax per item: {arr.argmax(axis=1)[:16].tolist()}")
    if args.save:
        np.save(args.save, next(iter(outs.values())), allow_pickle=False)
    if args.check:
        ref = cnncc.reference(graph, feeds)
        refs = ref if isinstance(ref, dict) else {mod.output_names[0]: ref}
        worst = 0.0
        for name, r in refs.items():
            err = float(np.abs(outs[name].astype(np.float64) - r).max())
            rel = err / max(float(np.abs(r).max()), 1e-12)
            worst = max(worst, rel)
            print(f"  check {name}: max abs error {err:.3e}, relative {rel:.3e} (vs cnncc.reference)")
        from cnncc.compiler import TOLERANCE

        tol = TOLERANCE[program.precision]   # fp32: 1e-4; the reduced precisions' documented tolerances
        if worst > tol and program.precision != "fp32":
            # the model may amplify the rounding itself (max unpooling): the precision-aware reference decides
            from cnncc.bench.harness import check_outputs, describe_check

            verdict = check_outputs(graph, feeds, outs, mod, want=ref)
            print(f"  check: {describe_check(verdict)}")
            if verdict["passed"]:
                print("  check passed (against the precision-aware reference, docs/gpu.md)")
                return 0
        if worst > tol:
            print(f"  CHECK FAILED: relative error above {tol:g} (precision {program.precision})")
            return 1
        print("  check passed")
    return 0

"""cnncc verify MODEL: run cnncc and the model's own runtime on the same seeded inputs and compare.

MODEL is an .onnx file (checked against onnxruntime), or a .py file whose ``model()`` returns
either an ``nn.Module`` (traced with from_torch, checked against PyTorch; the file also defines
``input_shape = (1, C, H, W)`` or ``example_input(batch)``) or a DSL graph (checked against the
numpy reference). Per output it prints the max absolute and relative error and pass/fail.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnncc.commands import add_dynamic_batch, add_target
from cnncc.reference import random_inputs


def add(sub):
    p = sub.add_parser("verify", help="compare cnncc against the model's own runtime (onnxruntime, PyTorch)")
    p.add_argument("model", help=".onnx file, or a .py file whose model() returns an nn.Module or a DSL graph")
    add_dynamic_batch(p)
    add_target(p, help="cnncc target (default c)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the random inputs (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--opt", type=int, default=2, choices=[0, 1, 2], help="optimization level (default 2)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    return p


def run(args) -> int:
    import cnncc
    from cnncc.errors import CnnccError

    path = Path(args.model)
    if not path.exists():
        raise CnnccError(f"no such file: {path}")
    rng = np.random.default_rng(args.seed)
    if path.suffix == ".onnx":
        graph = cnncc.from_onnx(path, batch="N" if args.dynamic_batch else None)
        feeds = random_inputs(graph, args.batch, rng)
        expected = onnxruntime_outputs(path, graph, feeds)
        runtime = "onnxruntime"
    elif path.suffix == ".py":
        graph, feeds, expected, runtime = _from_python(path, args.batch, rng)
    else:
        raise CnnccError(f"cnncc verify takes an .onnx or .py model, got '{path}'")
    mod = cnncc.compile(graph, target=args.target, opt_level=args.opt)
    got = mod(feeds)
    got = got if isinstance(got, dict) else {graph.outputs[0]: got}
    print(f"{path.name}: cnncc ({args.target}, opt {args.opt}) vs {runtime}, batch {args.batch}, seed {args.seed}")
    ok = report(got, expected, args.rtol, args.atol)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def onnxruntime_outputs(path: Path, graph, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime's outputs keyed by the cnncc output names."""
    try:
        import onnxruntime as ort
    except ImportError:
        from cnncc.errors import CnnccError

        raise CnnccError("cnncc verify of an .onnx file needs onnxruntime (pip install cnncc[onnx])") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    by_cnncc = {v: k for k, v in graph.origin.onnx_inputs.items()}
    ort_feeds = {by_cnncc[k]: v for k, v in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    step = graph.origin.exported_batch      # --dynamic-batch: onnxruntime runs the export's own batch
    batch = next(iter(ort_feeds.values())).shape[0]
    if step and batch != step:
        if batch % step:
            from cnncc.errors import CnnccError

            raise CnnccError(f"--batch {batch} is not a multiple of the model's exported batch {step}, "
                             "which onnxruntime needs")
        runs = [session.run(None, {k: v[i:i + step] for k, v in ort_feeds.items()}) for i in range(0, batch, step)]
        outs = {n: np.concatenate([r[j] for r in runs]) for j, n in enumerate(names)}
    else:
        outs = dict(zip(names, session.run(None, ort_feeds)))
    named = graph.origin.onnx_outputs
    return {named[k]: v for k, v in outs.items() if k in named}


def _from_python(path: Path, batch: int, rng):
    import cnncc
    from cnncc.errors import CnnccError
    from cnncc.frontends import dsl

    module = dsl.run_model_file(path, path.stem)
    if not hasattr(module, "model"):
        raise CnnccError(f"{path} defines no model() function")
    built = module.model()
    first = built[0] if isinstance(built, (list, tuple)) and built else built
    if isinstance(first, (cnncc.Graph, dsl.Tensor)):
        graph = dsl.graph_of(built, path.stem).infer_shapes()
        feeds = random_inputs(graph, batch, rng)
        ref = cnncc.reference(graph, feeds)
        expected = ref if isinstance(ref, dict) else {graph.outputs[0]: ref}
        return graph, feeds, expected, "the numpy reference"
    if not hasattr(built, "eval"):
        raise CnnccError(f"{path}: model() returned a {type(built).__name__}; expected a DSL tensor or graph, "
                         "or a torch nn.Module")
    import torch

    built = built.eval()
    if hasattr(module, "example_input"):
        x = module.example_input(batch)
    elif hasattr(module, "input_shape"):
        x = torch.from_numpy(rng.standard_normal((batch, *module.input_shape[1:])).astype(np.float32))
    else:
        raise CnnccError(f"{path}: model() returns an nn.Module; also define input_shape or example_input(batch)")
    graph = cnncc.from_torch(built, x)
    with torch.no_grad():
        y = built(x)
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    expected = {name: t.numpy() for name, t in zip(graph.outputs, ys)}
    return graph, {graph.inputs[0]: x.numpy()}, expected, "PyTorch"


def report(got: dict, expected: dict, rtol: float, atol: float) -> bool:
    """Print one line per output; an output passes when max|a-b| <= atol + rtol * max|b|."""
    ok = True
    print(f"  {'output':<28}{'shape':<20}{'max abs err':>14}{'max rel err':>14}  result")
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape:
            print(f"  {name:<28}{str(have.shape):<20}{'shape differs from ' + str(want.shape):>28}  FAIL")
            ok = False
            continue
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        abs_err = float(diff.max(initial=0.0))
        scale = float(np.abs(want).max(initial=0.0))
        rel_err = abs_err / scale if scale > 0 else abs_err
        passed = bool(np.isfinite(have).all()) and abs_err <= atol + rtol * scale
        ok &= passed
        print(f"  {name:<28}{str(have.shape):<20}{abs_err:>14.3g}{rel_err:>14.3g}  {'pass' if passed else 'FAIL'}")
    return ok

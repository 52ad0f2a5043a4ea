"""CompiledModule and the backend protocol every target (C, CUDA, CUDA emulation) implements.

The protocol keeps the targets interchangeable: codegen/lower.py turns a graph into a
``Program`` (codegen/spec.py: KernelSpecs + where each tensor lives, all ints); a ``Backend`` then

    rendered = backend.render(program)              # -> Rendered: one source text + per-kernel pieces
    program = rendered.program or program           # (the C target's carries packed weights)
    backend.build(rendered.source, artifact_path)   # compile it (gcc .so, NVRTC cubin, g++ emulation .so)
    runner = backend.load(artifact_path, program, rendered)
    outputs = runner(inputs, batch)                 # list of numpy inputs -> list of numpy outputs
                                                    # (the C runner also takes out=[arrays] to fill)

``build`` is called through runtime/cache.py, keyed by ``backend.toolchain()`` (compiler
identity + flags) and the source text. ``load`` may be slow (it is called once, lazily, on the
first forward call, so ``cnncc compile --target cuda`` works on a machine without a GPU).
``machine()`` fingerprints where an artifact is valid; a saved module whose fingerprint differs
is rebuilt from its source instead of trusting the binary. The C target also records the SIMD
extensions its -march=native library may use (``isa``): a CPU lacking one rebuilds instead of
dying of SIGILL, and every rebuild is logged with its reason (logger ``cnncc.runtime``).

A saved module folder holds manifest.json (format version, sha256 of every file and of the
manifest itself, the Program without its weights), the source (kernels.c / kernels.cu), the
artifact (.so / .cubin) and weights.npz (one array per "layer.param", loaded with
allow_pickle=False), plus graph.json + graph.npz: the graph compile() was given (cnncc.graph_io),
so ``cnncc summary`` and ``cnncc inspect`` take the folder too (``load_source_graph``). Loading
never unpickles and refuses any file whose hash differs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from cnncc import inputs
from cnncc.runtime import memory
from cnncc.errors import CnnccError, CompileError, IntegrityError
from cnncc.codegen.spec import EpilogueOp, KernelSpec, Operand, PoolSpec, Program, TensorRef, Workspace
from cnncc.version import __version__

FORMAT = "cnncc-module"
FORMAT_VERSION = 1

log = logging.getLogger("cnncc.runtime")

#: a runner executes the whole model: (inputs in graph order, batch size) -> outputs in graph order
Runner = Callable[[Sequence[np.ndarray], int], list]


@dataclass
class KernelSource:
    """One kernel as the user sees it in ``mod.kernels``: name, its source text, how it launches."""

    name: str
    source: str
    launch: str


@dataclass
class Rendered:
    """A target's rendering of a Program: the complete source and the per-kernel excerpts."""

    source: str
    kernels: list[KernelSource] = field(default_factory=list)
    #: the Program the source reads when rendering derived one (the C target packs convolution
    #: weights for its tiles into a new blob); None: the Program given
    program: Program | None = None


class Backend(Protocol):
    target: str            # "c" | "cuda" | "cuda-emu"
    source_name: str       # file name of the source in a saved module ("kernels.c")
    artifact_name: str     # file name of the built artifact ("kernels.so", "kernels.cubin")

    def render(self, program: Program) -> Rendered: ...

    def toolchain(self) -> str: ...

    def machine(self) -> str: ...

    def build(self, source: str, artifact: Path) -> None: ...

    def load(self, artifact: Path, program: Program, rendered: Rendered) -> Runner: ...


BACKENDS = {"c": "cnncc.runtime.cpu:CBackend", "cuda": "cnncc.runtime.cuda:CudaBackend",
            "cuda-emu": "cnncc.runtime.emu_backend:EmuBackend"}


def get_backend(target: str) -> Backend:
    if target not in BACKENDS:
        raise CnnccError(f"unknown target '{target}' (known: {', '.join(BACKENDS)})")
    mod_name, cls = BACKENDS[target].split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise CnnccError(f"target '{target}' is not available: {e}") from None
    return getattr(module, cls)()


# ---------------------------------------------------------------------------------------------
class CompiledModule:
    """A compiled model: call it with numpy arrays; any batch size runs on the same module."""

    def __init__(self, program: Program, rendered: Rendered, backend: Backend, artifact: Path,
                 report: Any = None):
        self.program = program
        self.rendered = rendered
        self.backend = backend
        self.artifact = Path(artifact)
        self.report = report
        self._runner: Runner | None = None
        #: the graph compile() was given (saved as graph.json + graph.npz); a loaded module keeps
        #: the folder it came from instead, so saving it again carries the graph along
        self.source_graph = None
        self.saved_graph_dir: Path | None = None
        self._fits: set[int] = set()       # batch sizes whose buffers passed the memory check
        #: input checks once per shape: (shape of each positional input) -> batch, for calls whose
        #: arrays were exactly the inputs' dtypes and C-contiguous and passed every check (``_bind``)
        self._checked: dict[tuple, int] = {}
        self._dtypes = [np.dtype(t.dtype) for t in program.inputs]
        self._out_dtypes = [np.dtype(t.dtype) for t in program.outputs]
        #: (output, the output whose buffer the kernels write it into): two graph outputs can be one
        #: tensor once optimisation removed an identity between them; the second is filled by a copy
        self._out_twins = [(i, t.slot) for i, t in enumerate(program.outputs)
                           if t.storage == "output" and t.slot != i]
        self._out_is_input = "out" in self.input_names   # then out= feeds that input

    @property
    def target(self) -> str:
        return self.backend.target

    @property
    def source(self) -> str:
        return self.rendered.source

    @property
    def kernels(self) -> list[tuple[str, str, str]]:
        return [(k.name, k.source, k.launch) for k in self.rendered.kernels]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.program.inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.program.output_names or [t.name for t in self.program.outputs])

    def _bind(self, args, kwargs) -> tuple[list[np.ndarray], int]:
        """Check and convert the call's inputs (rules: cnncc.inputs); -> arrays and the batch size."""
        feeds = inputs.bind(self.input_names, args, kwargs)
        arrays, batch = [], None
        for ref in self.program.inputs:
            x = inputs.coerce(ref.name, feeds[ref.name], ref.dtype, ref.shape, ref.batched)
            if ref.batched:
                if batch is not None and x.shape[0] != batch:
                    raise inputs.InputError(f"axis 0 (batch): {x.shape[0]}, but the other inputs have batch "
                                            f"{batch}", input=ref.name, fix="give every input the same batch size")
                batch = x.shape[0]
            arrays.append(x)
        fixed = self.program.fixed_batch
        if fixed is not None and batch is not None and batch != fixed:
            raise inputs.InputError(f"axis 0 (batch): this module was compiled for batch {fixed} "
                                    f"(cnncc compile --batch), got {batch}", input=self.program.inputs[0].name,
                                    fix=f"call it with batch {fixed}, or compile without --batch")
        return arrays, (1 if batch is None else batch)

    @property
    def threads(self) -> int | None:
        """Threads of the C target's parallel regions for this module's calls; None (default)
        leaves OpenMP's choice: ``OMP_NUM_THREADS``, else all cores. Other targets ignore it."""
        return getattr(self, "_threads", None)

    @threads.setter
    def threads(self, n: int | None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise CnnccError(f"threads must be a positive int or None, got {n!r}")
        self._threads = n
        if self._runner is not None and hasattr(self._runner, "threads"):
            self._runner.threads = n

    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = self.backend.load(self.artifact, self.program, self.rendered)
            if hasattr(self._runner, "threads"):
                self._runner.threads = self.threads
        return self._runner

    def _signature(self, args) -> tuple | None:
        """The shapes of ``args`` when they are exactly what the C entry reads (numpy arrays of the
        inputs' dtypes, C-contiguous, one per input, positional), else None (then every check runs)."""
        if len(args) != len(self._dtypes):
            return None
        if len(args) == 1:                  # the common case, without a loop
            x = args[0]
            ok = type(x) is np.ndarray and x.dtype is self._dtypes[0] and x.flags.c_contiguous
            return x.shape if ok else None
        shapes = []
        for x, want in zip(args, self._dtypes):
            if type(x) is not np.ndarray or x.dtype is not want or not x.flags.c_contiguous:
                return None
            shapes.append(x.shape)
        return tuple(shapes)

    def __call__(self, *args, out=None, **kwargs):
        """Run the model. Inputs: positional arrays in ``input_names`` order, one dict or list of
        them, or keywords (rules: cnncc.inputs). Returns the output array (one output) or a dict
        {name: array}: fresh arrays the caller keeps, or with ``out=`` (an array, or a list/dict
        of them for several outputs) the caller's own arrays, filled in place and returned (see
        docs/robustness.md, "What a call keeps"). In a model with an input named "out", ``out=``
        feeds that input."""
        if out is not None and self._out_is_input:
            kwargs["out"], out = out, None
        pos = args
        if kwargs or (len(args) == 1 and type(args[0]) is dict):   # by name: in input order, when exactly the inputs
            feeds = kwargs if not args else args[0]
            pos = None if kwargs and args or len(feeds) != len(self._dtypes) else \
                tuple(feeds.get(n) for n in self.input_names)
        key = self._signature(pos) if pos is not None else None
        batch = self._checked.get(key) if key is not None else None
        if batch is not None:               # these shapes and dtypes passed every check before
            arrays = pos
        else:
            arrays, batch = self._bind(args, kwargs)
        if batch == 0:
            outs = self._empty_batch(arrays)
            if out is not None:
                outs = self._fill(out, outs, arrays, 0)
        else:
            if batch not in self._fits and self.target != "cuda":   # host buffers, checked before allocating
                memory.check(self.program, batch, weights=self._runner is None, threads=self.threads)
                self._fits.add(batch)
            if key is not None and key not in self._checked:
                if len(self._checked) >= 64:   # a caller cycling through many shapes: start over
                    self._checked.clear()
                self._checked[key] = batch
            runner = self._runner or self.runner()
            if out is None:
                outs = runner(arrays, batch)
            elif self.target == "c":
                outs = runner(arrays, batch, out=self._out_arrays(out, arrays, batch))
            else:
                outs = self._fill(out, runner(arrays, batch), arrays, batch)
        for i, twin in self._out_twins:    # every path, batch 0's static outputs included
            np.copyto(outs[i], outs[twin])
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self.output_names, outs))

    def _out_arrays(self, out, arrays, batch: int) -> list[np.ndarray]:
        """Check a call's ``out=``: one writable C-contiguous array per output, of its dtype and
        of its shape at this batch, sharing no memory with an input or another output."""
        def bad(message: str, fix: str | None = None):
            return inputs.InputError("out= " + message, fix=fix)

        outs, names = self.program.outputs, self.output_names
        if isinstance(out, np.ndarray):
            given = [out]
        elif isinstance(out, dict):
            unknown = [repr(k) for k in out if k not in names]
            missing = [n for n in names if n not in out]
            if unknown or missing:
                raise bad(f"names {', '.join(unknown) or 'no unknown output'}, misses "
                          f"{', '.join(missing) or 'none'}; the model's outputs are {', '.join(names)}")
            given = [out[n] for n in names]
        elif isinstance(out, (list, tuple)):
            given = list(out)
        else:
            raise bad(f"must be a numpy array (or a list/dict of them), got {type(out).__name__}")
        if len(given) != len(outs):
            raise bad(f"got {len(given)} array(s) for {len(outs)} output(s) ({', '.join(names)})",
                      "give one array per output, in order, or a dict {name: array}")
        for i, (t, o, name, dtype) in enumerate(zip(outs, given, names, self._out_dtypes)):
            shape = ((batch,) + tuple(t.shape[1:])) if t.batched else tuple(t.shape)
            if type(o) is not np.ndarray:
                raise bad(f"for output '{name}' must be a numpy array, got {type(o).__name__}",
                          f"pass np.empty({shape}, np.{t.dtype})")
            if o.shape != shape or o.dtype != dtype:
                raise bad(f"for output '{name}' is {o.dtype.name} {o.shape}; this call writes {t.dtype} {shape}",
                          f"pass np.empty({shape}, np.{t.dtype})")
            if not (o.flags.c_contiguous and o.flags.writeable):
                raise bad(f"for output '{name}' must be C-contiguous and writable",
                          f"pass np.empty({shape}, np.{t.dtype})")
            if any(np.may_share_memory(o, x) for x in [*arrays, *given[:i]]):
                raise bad(f"for output '{name}' overlaps an input or another output; the kernels would read "
                          f"what they have already overwritten", "give each output a buffer of its own")
        return given

    def _fill(self, out, results: list[np.ndarray], arrays, batch: int) -> list[np.ndarray]:
        """``out=`` on targets whose runner allocates its own outputs: check, then copy into it."""
        given = self._out_arrays(out, arrays, batch)
        for o, r in zip(given, results):
            np.copyto(o, r)
        return given

    def _empty_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Batch 0: batched outputs are empty (0, ...); outputs that do not depend on the batch are
        computed at batch 1 (their value is the same for every batch)."""
        outs: list = [np.empty((0, *t.shape[1:]), t.dtype) if t.batched else None for t in self.program.outputs]
        if any(o is None for o in outs):
            ones = [np.zeros((1, *x.shape[1:]), x.dtype) if ref.batched else x
                    for ref, x in zip(self.program.inputs, arrays)]
            full = self.runner()(ones, 1)
            outs = [o if o is not None else f for o, f in zip(outs, full)]
        return outs

    def profile(self, inputs, repeat: int = 10) -> list[tuple[str, float]]:
        """[(kernel name, mean seconds)] measured inside the generated code (target c only)."""
        runner = self.runner()
        if not hasattr(runner, "profile"):
            raise CompileError(f"per-kernel profiling is not available on target '{self.target}'")
        arrays, batch = self._bind(tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,), {})
        return runner.profile(arrays, batch, repeat)

    def __repr__(self) -> str:
        return (f"CompiledModule({self.program.name!r}, target={self.target!r}, "
                f"{len(self.rendered.kernels)} kernels)")

    # -- saving --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write a self-contained folder: manifest.json, source, artifact, weights.npz.

        weights.npz holds the arrays as the kernels read them: on the C target a blocked
        convolution's weight appears only packed for its tiles, as ``<layer>.weight.c_<kind><COB>``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        b = self.backend
        (d / b.source_name).write_text(self.rendered.source)
        shutil.copyfile(self.artifact, d / b.artifact_name)
        weights = {key: self.program.blob[off: off + int(np.prod(shape, dtype=np.int64))].reshape(shape)
                   for key, (off, shape) in self.program.blob_layout.items()}
        with open(d / "weights.npz", "wb") as f:
            np.savez(f, **weights)
        names = [b.source_name, b.artifact_name, "weights.npz"]
        if self._save_graph(d):
            names += GRAPH_FILES
        files = {name: _sha256(d / name) for name in names}
        spans, pos = [], 0
        for k in self.rendered.kernels:
            start = self.rendered.source.find(k.source, pos)
            spans.append({"name": k.name, "launch": k.launch, "start": start,
                          "end": start + len(k.source) if start >= 0 else -1})
            if start >= 0:
                pos = start + len(k.source)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "cnncc": __version__, "target": b.target, "name": self.program.name,
                    "machine": b.machine(), "toolchain": b.toolchain(),
                    "isa": b.isa() if hasattr(b, "isa") else [],
                    "source": b.source_name, "artifact": b.artifact_name, "files": files,
                    "kernels": spans, "program": program_to_dict(self.program)}
        manifest["manifest_sha256"] = _manifest_hash(manifest)
        (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return d


    def _save_graph(self, d: Path) -> bool:
        """Write graph.json + graph.npz when the source graph is known; False when it is not."""
        from cnncc.graph_io import graph_to_json

        if self.source_graph is not None and not any(n.members for n in self.source_graph):
            doc, arrays = graph_to_json(self.source_graph)   # a hand-fused graph is saved without it
            (d / GRAPH_FILES[0]).write_text(json.dumps(doc))
            with open(d / GRAPH_FILES[1], "wb") as f:
                np.savez(f, **arrays)
            return True
        src = self.saved_graph_dir
        if src is not None and all((src / n).is_file() for n in GRAPH_FILES):
            for n in GRAPH_FILES:
                if (src / n).resolve() != (d / n).resolve():
                    shutil.copyfile(src / n, d / n)
            return True
        return False


GRAPH_FILES = ["graph.json", "graph.npz"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_source_graph(directory: str | Path):
    """The graph a saved module was compiled from (hash-checked like the module; never unpickles)."""
    from cnncc.graph_io import graph_from_json

    d = Path(directory)
    manifest = read_manifest(d)
    if not all(n in manifest["files"] for n in GRAPH_FILES):
        raise CnnccError(f"'{d}' was saved without its graph (by an older cnncc, or from a module loaded "
                         f"from such a folder); recompile it with `cnncc compile MODEL -o {d}`")
    try:
        doc = json.loads((d / GRAPH_FILES[0]).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{d / GRAPH_FILES[0]}: not valid JSON ({e})") from None
    with np.load(d / GRAPH_FILES[1], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return graph_from_json(doc, arrays)


def read_manifest(directory: str | Path) -> dict:
    """A saved module's manifest, after checking it and the sha256 of every file it lists; a
    damaged or edited file is refused by name (IntegrityError). Reads no weights, builds nothing."""
    d = Path(directory)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise CnnccError(f"'{d}' is not a saved cnncc module (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{mpath}: not valid JSON ({e}); the file was damaged or edited") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(f"{mpath}: not a cnncc module manifest")
    if manifest.get("manifest_sha256") != _manifest_hash(manifest):
        raise IntegrityError(f"{mpath}: its contents do not match its recorded hash; the manifest was edited "
                             f"after saving (re-save the module with cnncc compile)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CnnccError(f"{mpath}: format version {manifest.get('format_version')} is not supported "
                         f"(this cnncc reads version {FORMAT_VERSION}); recompile the model")
    for name, digest in manifest["files"].items():
        if Path(name).name != name:
            raise IntegrityError(f"{mpath}: file name '{name}' leaves the module folder")
        path = d / name
        if not path.is_file():
            if name == manifest["artifact"]:
                continue  # the artifact can be rebuilt from the source
            raise IntegrityError(f"{path}: missing from the saved module")
        if _sha256(path) != digest:
            raise IntegrityError(f"{path}: sha256 does not match manifest.json; the file was modified after saving")
    return manifest


def rebuild_reason(manifest: dict, backend: Backend, artifact: Path) -> str | None:
    """Why the saved artifact cannot be used here (then it is rebuilt from the saved source), or None."""
    missing = backend.missing_isa(manifest.get("isa", [])) if hasattr(backend, "missing_isa") else []
    if missing:
        return f"this CPU lacks {', '.join(missing)}, which the saved library was built for"
    if not artifact.is_file():
        return "the folder holds no artifact"
    if manifest.get("machine") != backend.machine():
        return f"it was built on another machine ({manifest.get('machine')})"
    if manifest.get("toolchain") != backend.toolchain():
        return f"it was built with another toolchain ({manifest.get('toolchain')})"
    return None


def load_module(directory: str | Path) -> CompiledModule:
    """Load a saved module: verify every hash, reuse the artifact on a matching machine, else
    rebuild it from the saved source (and log why). Never unpickles."""
    from cnncc.runtime import cache

    d = Path(directory)
    manifest = read_manifest(d)
    with np.load(d / "weights.npz", allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    program = program_from_dict(manifest["program"], weights)
    backend = get_backend(manifest["target"])
    source = (d / manifest["source"]).read_text()
    kernels = [KernelSource(k["name"], source[k["start"]:k["end"]] if k["start"] >= 0 else "", k["launch"])
               for k in manifest["kernels"]]
    rendered = Rendered(source, kernels)
    artifact = d / manifest["artifact"]
    reason = rebuild_reason(manifest, backend, artifact)
    if reason:
        log.warning("%s: rebuilding %s from the saved %s: %s", d, manifest["artifact"], manifest["source"], reason)
        artifact = cache.build_cached(backend, source)
    mod = CompiledModule(program, rendered, backend, artifact, report=None)
    mod.saved_graph_dir = d if all(n in manifest["files"] for n in GRAPH_FILES) else None
    return mod


# ---------------------------------------------------------------------------------------------
# Program <-> JSON (the weights travel separately in weights.npz)
def program_to_dict(p: Program) -> dict:
    return {"name": p.name, "kernels": [dataclasses.asdict(k) for k in p.kernels],
            "inputs": [dataclasses.asdict(t) for t in p.inputs], "outputs": [dataclasses.asdict(t) for t in p.outputs],
            "blob_size": int(p.blob.size), "blob_layout": {k: [o, list(s)] for k, (o, s) in p.blob_layout.items()},
            "arena_a": p.arena_a, "arena_b": p.arena_b, "arena_source": p.arena_source,
            "output_names": p.output_names, "fixed_batch": p.fixed_batch, "precision": p.precision,
            "conv_algorithm": p.conv_algorithm, "workspace": [dataclasses.asdict(w) for w in p.workspace]}


def _tensor(d: dict) -> TensorRef:
    d = dict(d)
    d["shape"] = tuple(d["shape"])
    return TensorRef(**d)


def _operand(d: dict | None) -> Operand | None:
    if d is None:
        return None
    d = dict(d)
    d["tensor"] = _tensor(d["tensor"])
    for k in ("general", "inner_dims"):
        d[k] = tuple(d[k]) if d.get(k) is not None else None
    return Operand(**d)


def _epilogue(d: dict) -> EpilogueOp:
    d = dict(d)
    d["params"] = {k: _tensor(v) for k, v in d["params"].items()}
    d["operand"] = _operand(d["operand"])
    return EpilogueOp(**d)


def _kernel(d: dict) -> KernelSpec:
    d = dict(d)
    d.setdefault("cname", d["name"])   # saved before cnncc/names.py: the function was named like the kernel
    d["nodes"] = [tuple(x) for x in d["nodes"]]
    d["output"] = _tensor(d["output"])
    d["inputs"] = [_tensor(t) for t in d["inputs"]]
    d["operands"] = [_operand(o) for o in d["operands"]]
    d["weights"] = {k: _tensor(v) for k, v in d["weights"].items()}
    d["epilogue"] = [_epilogue(e) for e in d["epilogue"]]
    d["pool"] = PoolSpec(**d["pool"]) if d["pool"] else None
    d["shapes"] = {k: tuple(v) for k, v in d["shapes"].items()}
    if "anchor_shape" in d["geometry"]:
        d["geometry"]["anchor_shape"] = tuple(d["geometry"]["anchor_shape"])
    return KernelSpec(**d)


def program_from_dict(d: dict, weights: dict[str, np.ndarray]) -> Program:
    blob = np.zeros(int(d["blob_size"]), np.float32)
    layout = {}
    for key, (off, shape) in d["blob_layout"].items():
        if key not in weights:
            raise IntegrityError(f"weights.npz: missing array '{key}'")
        arr = np.asarray(weights[key], np.float32)
        if tuple(arr.shape) != tuple(shape):
            raise IntegrityError(f"weights.npz: array '{key}' has shape {arr.shape}, manifest says {tuple(shape)}")
        blob[off: off + arr.size] = arr.ravel()
        layout[key] = (int(off), tuple(shape))
    return Program(d["name"], [_kernel(k) for k in d["kernels"]], [_tensor(t) for t in d["inputs"]],
                   [_tensor(t) for t in d["outputs"]], blob, layout, int(d["arena_a"]), int(d["arena_b"]),
                   d.get("arena_source", "cnncc"), d.get("output_names"), d.get("fixed_batch"),
                   d.get("precision", "fp32"), d.get("conv_algorithm", "auto"),
                   [Workspace(w["kernel"], tuple(map(tuple, w["shared"])), tuple(map(tuple, w["per_thread"])))
                    for w in d.get("workspace", [])])   # saved before the workspace: kernels allocate their own


def check_artifact(path: Path) -> Path:
    if not Path(path).is_file():
        raise CompileError(f"compiled artifact '{path}' does not exist")
    return Path(path)

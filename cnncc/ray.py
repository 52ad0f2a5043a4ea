"""Run a compiled module over a whole dataset with Ray Data: ``cnncc infer`` and ``cnncc.infer``.

We do not schedule anything ourselves: a cnncc module becomes a Ray Data worker (an actor that
holds the loaded module, fed by ``map_batches``), and Ray brings backpressure, retries and
progress bars; without ``--address`` a local Ray starts in the process, so the same command
runs on a laptop and on a cluster.

    import ray
    from cnncc.ray import ModuleWorker, pack_module
    ds = ray.data.read_parquet("items.parquet")      # columns "id" and "x" (one (C, H, W) array per row)
    ds = ds.map_batches(ModuleWorker, fn_constructor_kwargs={"module": ray.put(pack_module("out/"))},
                        concurrency=2, batch_size=64)  # -> columns "id" and one per model output

Shipping: the module folder travels as bytes through Ray's object store (``pack_module``), so a
worker needs nothing from the driver's filesystem; each worker writes it to a private temporary
folder, verifies every sha256 of the manifest and loads it once. A C library is built
``-march=native`` for the driver's CPU; a worker whose CPU lacks one of the recorded
instruction-set extensions rebuilds it from the shipped source and logs that (runtime/module.py).

Exactly once: ``cnncc infer ... --output DIR`` cuts the inputs into shards on the driver (shard
``k`` = input files or Parquet rows ``[k*B, (k+1)*B)`` of the sorted list, B = --batch-size).
One Ray Data row is one shard; a worker reads it, runs it and writes ``DIR/shard-0000k.*`` through
a temporary name and an atomic rename. A worker killed mid-shard is restarted by Ray and the
shard retried: it rewrites the same files, so nothing is lost and nothing appears twice.

Ray is imported lazily: ``import cnncc.ray`` works without it, and using it says how to install it.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CnnccError

log = logging.getLogger("cnncc.ray")

INSTALL = 'pip install -e ".[distributed]"'
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ARRAY_SUFFIXES = (".npy", ".npz")
FORMATS = ("npy", "parquet")


class InputError(CnnccError):
    """An input file or row cannot be used (unreadable, wrong shape); the message starts with its path."""


def require_ray():
    """``ray`` with Ray Data, or a CnnccError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise CnnccError(f"running a module over a dataset needs Ray Data, which is not installed ({e}); "
                         f"install it with: {INSTALL}   (or: pip install 'ray[data]>=2.9' pillow)") from None
    return ray


# -- the module travels as bytes ----------------------------------------------------------------
def pack_module(directory: str | Path) -> dict[str, bytes]:
    """The files of a saved module folder as ``{name: bytes}``, after verifying every hash on the
    caller's side (a tampered file is refused here, naming it, before any worker starts)."""
    from cnncc.runtime.module import read_manifest

    d = Path(directory)
    manifest = read_manifest(d)
    names = ["manifest.json"] + [n for n in manifest["files"] if (d / n).is_file()]
    return {name: (d / name).read_bytes() for name in names}


def unpack_module(files: dict[str, bytes]) -> Path:
    """Write shipped module files into a fresh private folder; returns it (hashes not yet checked:
    ``load_module`` checks them)."""
    d = Path(tempfile.mkdtemp(prefix="cnncc-module-"))
    for name, data in files.items():
        if Path(name).name != name:
            raise CnnccError(f"shipped module file name '{name}' leaves the module folder")
        (d / name).write_bytes(data)
    return d


def _as_packed(module: Any, target: str, opt_level: int, say=lambda m: None) -> dict[str, bytes]:
    """A CompiledModule, saved folder, DSL .py or .onnx file -> packed folder bytes (compiling a
    model file once, here on the driver)."""
    from cnncc.runtime.module import CompiledModule

    if isinstance(module, dict):
        return module
    with tempfile.TemporaryDirectory(prefix="cnncc-pack-") as tmp:
        if isinstance(module, CompiledModule):
            return pack_module(module.save(tmp))
        path = Path(module)
        if path.is_dir():
            return pack_module(path)
        if not path.is_file():
            raise CnnccError(f"'{path}' is neither a saved module folder nor a model file")
        from cnncc import compiler

        say(f"compiling {path} for target {target} (once, on the driver)")
        mod = compiler.compile(compiler.load_model(path), target=target, opt_level=opt_level, progress=say)
        return pack_module(mod.save(tmp))


def _is_object_ref(x) -> bool:
    return type(x).__name__ == "ObjectRef" and type(x).__module__.startswith("ray")


# -- the worker: one loaded module per actor ----------------------------------------------------
class ModuleWorker:
    """A Ray Data callable class: ``ds.map_batches(ModuleWorker, fn_constructor_kwargs=...)``.

    ``module`` is what ``pack_module`` returns (best passed as ``ray.put(...)``: it then travels
    once through the object store), or a path to a saved module folder every worker can read.
    The module is loaded once per actor, its hashes verified. Each batch's ``input_column``
    (default: the model's input name, else ``"x"``) runs through it; the result holds ``id_column``
    (when the batch has one) and one column per model output. ``batch_size`` splits large
    batches into module calls of at most that many items."""

    def __init__(self, module: Any, *, input_column: str | None = None, id_column: str = "id",
                 batch_size: int | None = None):
        from cnncc.runtime.module import load_module

        if _is_object_ref(module):
            module = require_ray().get(module)
        self._folder = None
        if isinstance(module, dict):
            self._folder = unpack_module(module)
            directory = self._folder
        else:
            directory = Path(module)
        try:
            self.module = load_module(directory)   # every sha256 checked; a missing ISA rebuilds (logged)
            self.module.runner()                   # load the library now: a broken worker fails at start
        finally:
            if self._folder is not None:           # the library is loaded (or rebuilt in the cache)
                shutil.rmtree(self._folder, ignore_errors=True)
        program = self.module.program
        if len(program.inputs) != 1:
            raise CnnccError(f"ModuleWorker runs single-input models; '{program.name}' takes "
                             f"{', '.join(self.module.input_names)}")
        self.input = program.inputs[0]
        self.input_column = input_column or self.input.name
        self.id_column = id_column
        self.batch_size = batch_size
        clash = {id_column, "error"} & set(self.module.output_names)
        if clash:
            raise CnnccError(f"model output name(s) {sorted(clash)} clash with the result columns; rename the output")

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.input.shape[1:])

    def empty(self) -> dict[str, np.ndarray]:
        """The outputs of zero items (right dtype and per-item shape)."""
        return {name: np.zeros((0, *t.shape[1:]), t.dtype)
                for name, t in zip(self.module.output_names, self.module.program.outputs)}

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for a stack of items, in module calls of at most ``batch_size`` (a module saved
        with a fixed batch gets zero-padded chunks of exactly that size)."""
        x = np.ascontiguousarray(x, dtype=self.input.dtype)
        fixed = self.module.program.fixed_batch
        step = fixed or self.batch_size or max(1, len(x))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.module.output_names}
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if fixed and n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n,) + chunk.shape[1:], chunk.dtype)])
            y = self.module(chunk)
            outs = y if isinstance(y, dict) else {self.module.output_names[0]: y}
            for name, arr in outs.items():
                parts[name].append(arr[:n])
        return {name: np.concatenate(p) for name, p in parts.items()} if len(x) else self.empty()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.input_column not in batch:
            if "x" in batch and self.input_column == self.input.name:
                self.input_column = "x"
            else:
                raise CnnccError(f"the batch has no column '{self.input_column}' (columns: {', '.join(batch)}); "
                                 f"pass input_column=... in fn_constructor_kwargs")
        x = batch[self.input_column]
        if x.dtype == object:   # variable-shaped tensor column: a list of arrays
            x = np.stack([np.asarray(v) for v in x])
        keep = np.ones(len(x), bool)
        if "error" in batch:    # rows a reader could not decode (on_error="skip"): left out
            keep = np.asarray([not e for e in batch["error"]], bool)
            for i in np.flatnonzero(~keep):
                ident = batch[self.id_column][i] if self.id_column in batch else i
                log.warning("skipped %s: %s", ident, batch["error"][i])
        out = self.predict(x[keep])
        if self.id_column in batch:
            out = {self.id_column: np.asarray(batch[self.id_column])[keep], **out}
        return out


# -- inputs: files or Parquet rows, cut into shards on the driver ------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: decoded with Pillow, converted to RGB (L when the model
    takes 1 channel), resized (``size``: shorter side to ``size`` then centre crop; default: straight
    to the model's H x W, bilinear), scaled to [0, 1], then ``(x - mean) / std`` per channel, HWC -> CHW."""

    size: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


def list_inputs(spec: str | Path, limit: int | None = None) -> tuple[str, list]:
    """The inputs named by ``spec`` as (kind, items): kind "files" with sorted paths (a folder,
    searched recursively, or a glob) or kind "parquet" with [(path, row count)]."""
    spec = str(spec)
    p = Path(spec)
    if p.is_file() and p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(p).metadata.num_rows
        return "parquet", [(str(p), min(rows, limit) if limit is not None else rows)]
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in ARRAY_SUFFIXES + IMAGE_SUFFIXES)
    elif p.is_file():
        files = [str(p)]
    elif any(c in spec for c in "*?["):
        files = sorted(f for f in glob.glob(spec, recursive=True) if Path(f).is_file())
    else:
        raise InputError(f"{spec}: no such file or folder")
    if not files:
        raise InputError(f"{spec}: holds no inputs (expected {', '.join(ARRAY_SUFFIXES + IMAGE_SUFFIXES)} "
                         f"files, or a .parquet file)")
    return "files", files[:limit] if limit is not None else files


def make_shards(kind: str, items: list, batch_size: int) -> list[dict]:
    """One row per shard, numbered in input order: ``{"shard": k, "items": json}``."""
    shards = []
    if kind == "files":
        for k, start in enumerate(range(0, len(items), batch_size)):
            shards.append({"shard": k, "items": json.dumps(items[start:start + batch_size])})
    else:
        (path, rows), = items
        for k, start in enumerate(range(0, rows, batch_size)):
            shards.append({"shard": k, "items": json.dumps([path, start, min(rows, start + batch_size)])})
    return shards


def _read_image(path: str, item_shape: tuple[int, ...], pre: Preprocess) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise CnnccError(f"reading images needs Pillow: {INSTALL}") from None
    if len(item_shape) != 3 or item_shape[0] not in (1, 3):
        raise InputError(f"{path}: images feed models whose input is (N, 1 or 3, H, W); this one takes "
                         f"(N, {', '.join(map(str, item_shape))})")
    c, h, w = item_shape
    with Image.open(path) as im:
        im = im.convert("L" if c == 1 else "RGB")
        if pre.size:
            scale = pre.size / min(im.size)
            im = im.resize((max(w, round(im.size[0] * scale)), max(h, round(im.size[1] * scale))),
                           Image.Resampling.BILINEAR)
            left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
            im = im.crop((left, top, left + w, top + h))
        else:
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(im, np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    mean = np.asarray(pre.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(-1, 1, 1)
    if mean.shape[0] not in (1, c) or std.shape[0] not in (1, c):
        raise CnnccError(f"--mean/--std need 1 or {c} values (the model takes {c} channels)")
    return (a - mean) / std


def _read_array(path: str, item_shape: tuple[int, ...], input_name: str) -> np.ndarray:
    """(n, *item_shape) from an .npy/.npz holding one item or a stack of them."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            names = z.files
            if input_name in names:
                a = z[input_name]
            elif len(names) == 1:
                a = z[names[0]]
            else:
                raise InputError(f"{path}: holds arrays {names}; name one '{input_name}' (the model's input)")
    else:
        a = np.load(path, allow_pickle=False)
    if tuple(a.shape) == item_shape:
        a = a[None]
    elif tuple(a.shape[1:]) != item_shape:
        want = ", ".join(map(str, item_shape))
        raise InputError(f"{path}: array of shape {tuple(a.shape)}; the model takes one item ({want}) "
                         f"or a stack (n, {want})")
    return a


def _read_file(path: str, item_shape, input_name: str, pre: Preprocess) -> tuple[list[str], np.ndarray]:
    try:
        if path.lower().endswith(ARRAY_SUFFIXES):
            a = _read_array(path, item_shape, input_name)
            return ([path] if len(a) == 1 else [f"{path}[{i}]" for i in range(len(a))]), a
        return [path], _read_image(path, item_shape, pre)[None]
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's fault: name it
        raise InputError(f"{path}: cannot read it as {'an array' if path.endswith(ARRAY_SUFFIXES) else 'an image'} "
                         f"({type(e).__name__}: {e})") from None


def _read_parquet_rows(path: str, start: int, stop: int, column: str, item_shape) -> tuple[list[str], list]:
    """[(id, array or InputError)] for rows [start, stop) of one column."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if column not in f.schema_arrow.names:
        raise InputError(f"{path}: no column '{column}' (columns: {', '.join(f.schema_arrow.names)}); "
                         f"choose one with --column")
    groups, first, seen = [], None, 0
    for g in range(f.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if seen + n > start and seen < stop:
            groups.append(g)
            first = seen if first is None else first
        seen += n
    values = f.read_row_groups(groups, columns=[column]).column(column).slice(start - first, stop - start)
    want = int(np.prod(item_shape))
    ids, arrays = [], []
    for i, v in enumerate(values.to_pylist()):
        ident = f"{path}[{start + i}]"
        ids.append(ident)
        a = np.asarray(v, np.float32) if v is not None else None
        if a is None or a.size != want:
            got = "null" if a is None else f"{a.size} values"
            arrays.append(InputError(f"{ident}: column '{column}' holds {got}; the model takes "
                                     f"{want} = {' x '.join(map(str, item_shape))}"))
        else:
            arrays.append(a.reshape(item_shape))
    return ids, arrays


class ShardWorker(ModuleWorker):
    """The worker behind ``cnncc infer --output``: each row names one shard of inputs; the worker
    reads and preprocesses it, runs the module and writes the shard's files atomically, returning
    one summary row per shard (items written, files, skipped inputs with their reasons)."""

    def __init__(self, module: Any, *, kind: str, output_dir: str, format: str = "npy",  # noqa: A002
                 on_error: str = "stop", preprocess: dict | None = None, column: str | None = None,
                 batch_size: int | None = None):
        super().__init__(module, batch_size=batch_size)
        self.kind, self.output_dir, self.format, self.on_error = kind, Path(output_dir), format, on_error
        self.pre = Preprocess(**(preprocess or {}))
        self.column = column or self.input.name
        if format == "npy" and "ids" in self.module.output_names:
            raise CnnccError("a model output named 'ids' would overwrite the shard's ids file: use --format parquet")
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def read(self, items: list) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
        ids, arrays, bad = [], [], []

        def failed(ident: str, err: InputError):
            if self.on_error == "stop":
                raise err
            log.warning("skipping %s", err)
            bad.append((ident, str(err)))

        if self.kind == "parquet":
            path, start, stop = items
            for ident, a in zip(*_read_parquet_rows(path, start, stop, self.column, self.item_shape)):
                if isinstance(a, InputError):
                    failed(ident, a)
                else:
                    ids.append(ident)
                    arrays.append(a[None])
        else:
            for path in items:
                try:
                    got_ids, a = _read_file(path, self.item_shape, self.input.name, self.pre)
                except InputError as e:
                    failed(path, e)
                    continue
                ids += got_ids
                arrays.append(a)
        return ids, arrays, bad

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = {"shard": [], "items": [], "files": [], "skipped": [], "error": []}
        for shard, items in zip(batch["shard"], batch["items"]):
            try:
                ids, arrays, bad = self.read(json.loads(items))
            except InputError as e:   # on_error="stop": the driver stops the run on this row
                for k, v in (("shard", int(shard)), ("items", 0), ("files", "[]"), ("skipped", "[]"), ("error", str(e))):
                    rows[k].append(v)
                continue
            outs = self.predict(np.concatenate(arrays)) if arrays else self.empty()
            files = write_shard(self.output_dir, int(shard), np.asarray(ids, dtype=str), outs, self.format)
            rows["shard"].append(int(shard))
            rows["items"].append(len(ids))
            rows["files"].append(json.dumps(files))
            rows["skipped"].append(json.dumps(bad))
            rows["error"].append("")
        return {k: np.asarray(v) for k, v in rows.items()}


# -- the output writer: idempotent per shard ---------------------------------------------------
def _atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a reader (or a retried worker) sees the old file
    or the whole new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(out: Path, shard: int, ids: np.ndarray, outputs: dict[str, np.ndarray], fmt: str) -> list[str]:
    """Write shard ``shard``'s predictions next to the ids of its inputs; returns the file names.

    npy: ``shard-00000k.<output>.npy`` per model output (characters other than letters, digits,
    ``_`` and ``-`` in its name become ``_``), then ``shard-00000k.ids.npy`` (written
    last: a shard is complete when its ids file exists). parquet: ``shard-00000k.parquet`` with
    an ``id`` column and one list column per output (its per-item shape in the field metadata).
    Writing the same shard again replaces the same files."""
    stem = f"shard-{shard:06d}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields, cols = [pa.field("id", pa.string())], [pa.array(ids.tolist(), pa.string())]
        for name, arr in outputs.items():
            per = int(np.prod(arr.shape[1:], dtype=np.int64)) if arr.ndim > 1 else 1
            flat = pa.array(np.ascontiguousarray(arr, np.float32).reshape(-1))
            cols.append(pa.FixedSizeListArray.from_arrays(flat, per))
            fields.append(pa.field(name, cols[-1].type, metadata={"shape": json.dumps(list(arr.shape[1:]))}))
        table = pa.Table.from_arrays(cols, schema=pa.schema(fields))
        _atomic(out / f"{stem}.parquet", lambda tmp: pq.write_table(table, tmp))
        return [f"{stem}.parquet"]
    if fmt != "npy":
        raise CnnccError(f"unknown output format '{fmt}' (known: {', '.join(FORMATS)})")
    files = []
    for name, arr in [*outputs.items(), ("ids", ids)]:
        path = out / f"{stem}.{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.npy"   # ONNX names may hold / or :

        def save(tmp, arr=arr):
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        _atomic(path, save)
        files.append(path.name)
    return files


def read_outputs(directory: str | Path) -> dict[str, np.ndarray]:
    """Every shard in an output folder, concatenated in shard order: ``{"id": ..., <output>: ...}``."""
    import pyarrow.parquet as pq

    d = Path(directory)
    parts: dict[str, list] = {}
    for ids_file in sorted(d.glob("shard-*.ids.npy")):
        stem = ids_file.name[: -len(".ids.npy")]
        parts.setdefault("id", []).append(np.load(ids_file, allow_pickle=False))
        for f in sorted(d.glob(f"{stem}.*.npy")):
            if f != ids_file:
                parts.setdefault(f.name[len(stem) + 1: -4], []).append(np.load(f, allow_pickle=False))
    for f in sorted(d.glob("shard-*.parquet")):
        table = pq.read_table(f)
        for field in table.schema:
            col = table.column(field.name)
            if field.name == "id":
                parts.setdefault("id", []).append(np.asarray(col.to_pylist(), dtype=str))
            else:
                shape = json.loads(field.metadata[b"shape"])
                flat = np.asarray(col.combine_chunks().flatten(), np.float32)
                parts.setdefault(field.name, []).append(flat.reshape((len(table), *shape)))
    return {k: np.concatenate(v) for k, v in parts.items()}


# -- the driver --------------------------------------------------------------------------------
def _init_ray(address: str | None):
    """Connect to ``address`` or start a local Ray; returns (ray, whether we started it)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             logging_level=logging.WARNING, configure_logging=True)
    return ray, True


def infer(module: Any, data: Any, *, output_dir: str | Path | None = None, format: str = "npy",  # noqa: A002
          batch_size: int = 32, workers: int = 1, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
          address: str | None = None, target: str = "c", opt_level: int = 2, limit: int | None = None,
          on_error: str = "stop", preprocess: Preprocess | None = None, column: str | None = None,
          worker: type | None = None, progress=None):
    """Run ``module`` over ``data`` on Ray.

    ``module``: a CompiledModule, a saved module folder (hash-checked here, before any worker
    starts), or a DSL ``.py`` / ``.onnx`` file (compiled once, here, for ``target``). ``data``: a
    Ray Dataset with the input column, or a path (folder or glob of .npy/.npz/images, or a
    .parquet file with an array column ``column``).

    Without ``output_dir`` it returns a lazy Ray Dataset of ``{"id", <outputs>}`` rows (a local Ray
    started for it stays up until the process ends or ``ray.shutdown()``). With it,
    it runs now, writes one shard of files per ``batch_size`` inputs (see ``write_shard``) and
    ``summary.json`` (items, skipped inputs with their reasons, time), and returns that summary."""
    say = progress or (lambda msg: None)
    if on_error not in ("stop", "skip"):
        raise CnnccError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if format not in FORMATS:
        raise CnnccError(f"unknown output format '{format}' (known: {', '.join(FORMATS)})")
    for name, v in (("batch_size", batch_size), ("workers", workers)):
        if not isinstance(v, int) or v < 1:
            raise CnnccError(f"{name} must be a positive integer, got {v!r}")
    ray = require_ray()
    packed = _as_packed(module, target, opt_level, say)   # refuses a tampered folder, naming the file
    manifest = json.loads(packed["manifest.json"])
    kind, items = (None, None) if not isinstance(data, (str, Path)) else list_inputs(data, limit)
    pre = preprocess or Preprocess()
    if output_dir is not None and kind is None:
        raise CnnccError("output_dir needs a path as data; for a Ray Dataset, write the returned dataset "
                         "with its own writers (ds.write_parquet(...))")
    ray, started = _init_ray(address)
    try:
        ref = ray.put(packed)
        # Ray Data's actor pools restart a dead actor and retry its tasks by default
        # (max_restarts=-1, max_task_retries=-1): what makes a killed worker lose nothing
        remote = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker or None,
                  "compute": ray.data.ActorPoolStrategy(size=workers)}
        if output_dir is None:
            ds = data if kind is None else _dataset_from(ray, kind, items, batch_size, manifest, pre, column, on_error)
            return ds.map_batches(worker or ModuleWorker, fn_constructor_kwargs={"module": ref, "batch_size": batch_size},
                                  batch_size=batch_size, batch_format="numpy", **remote)
        return _run_to_files(ray, ref, manifest, kind, items, Path(output_dir), fmt=format, batch_size=batch_size,
                             workers=workers, remote=remote, data=str(data), on_error=on_error, pre=pre, column=column,
                             worker=worker or ShardWorker, say=say)
    finally:
        if started and output_dir is not None:
            ray.shutdown()


def _dataset_from(ray, kind, items, batch_size, manifest, pre, column, on_error):
    """A lazy dataset of {"id", "x", "error"} rows read by Ray tasks (for the lazy form of infer)."""
    (inp,) = manifest["program"]["inputs"][:1]
    item_shape = tuple(int(s) for s in inp["shape"][1:])
    column = column or inp["name"]

    def read(batch):
        ids, xs, errs = [], [], []
        for items_json in batch["items"]:
            shard_items = json.loads(items_json)
            if kind == "parquet":
                got = zip(*_read_parquet_rows(*shard_items, column, item_shape))
            else:
                got = []
                for path in shard_items:
                    try:
                        i, a = _read_file(path, item_shape, inp["name"], pre)
                        got += list(zip(i, a))
                    except InputError as e:
                        got.append((path, e))
            for ident, a in got:
                if isinstance(a, InputError):
                    if on_error == "stop":
                        raise a
                    a, err = np.zeros(item_shape, np.float32), str(a)
                else:
                    err = ""
                ids.append(ident)
                xs.append(a)
                errs.append(err)
        return {"id": np.asarray(ids, dtype=str), "x": np.stack(xs).astype(np.float32) if xs
                else np.zeros((0, *item_shape), np.float32), "error": np.asarray(errs, dtype=str)}

    shards = make_shards(kind, items, batch_size)
    return ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(read, batch_format="numpy")


def _prepare_output_dir(out: Path) -> None:
    """Create ``out``; a folder from an earlier ``cnncc infer`` is reused (its shards replaced),
    any other non-empty folder is refused rather than mixed into."""
    if out.exists() and any(out.iterdir()):
        if not (out / "summary.json").is_file() and not any(out.glob("shard-*")):
            raise CnnccError(f"output folder '{out}' is not empty and holds no earlier cnncc infer results; "
                             f"choose a new or empty folder")
        for f in list(out.glob("shard-*")) + list(out.glob(".shard-*")):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _run_to_files(ray, ref, manifest, kind, items, out: Path, *, fmt, batch_size, workers, remote, data, on_error,
                  pre, column, worker, say) -> dict:
    shards = make_shards(kind, items, batch_size)
    _prepare_output_dir(out)
    say(f"{len(items) if kind == 'files' else items[0][1]} inputs in {len(shards)} shards of up to "
        f"{batch_size} on {workers} worker(s)")
    ds = ray.data.from_items(shards, override_num_blocks=len(shards))
    ds = ds.map_batches(worker, batch_size=1, batch_format="numpy",
                        fn_constructor_kwargs={"module": ref, "kind": kind, "output_dir": str(out.resolve()),
                                               "format": fmt, "on_error": on_error, "preprocess": asdict(pre),
                                               "column": column, "batch_size": batch_size}, **remote)
    t0 = time.perf_counter()
    done: dict[int, dict] = {}
    first = None   # seconds to the first finished shard: actor start-up, shipping and loading the module
    # a bad input travels back as data, not as an exception (Ray would wrap it in its own)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, n, files, skipped, error in zip(batch["shard"], batch["items"], batch["files"], batch["skipped"],
                                               batch["error"]):
            if error:
                raise InputError(f"{error}\n  (stopped; --on-error skip would leave such inputs out and list "
                                 f"them in {out / 'summary.json'})")
            done[int(k)] = {"items": int(n), "files": json.loads(files), "skipped": json.loads(skipped)}
            first = first if first is not None else time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    missing = sorted(set(range(len(shards))) - set(done))
    if missing:
        raise CnnccError(f"shards {missing[:10]} were never reported by a worker; rerun the same command "
                         f"(shards are rewritten in place)")
    for leftover in out.glob(".shard-*.tmp-*"):   # from a worker killed mid-write
        leftover.unlink()
    n = sum(s["items"] for s in done.values())
    summary = {"module": manifest.get("name"), "target": manifest.get("target"), "format": fmt,
               "input": data, "items": n,
               "shards": len(shards), "workers": workers, "seconds": round(seconds, 3),
               "items_per_s": round(n / seconds, 2) if seconds > 0 else None,
               "first_shard_s": round(first, 3) if first is not None else None,
               "skipped": [{"input": ident, "error": err} for k in sorted(done) for ident, err in done[k]["skipped"]],
               "files": [f for k in sorted(done) for f in done[k]["files"]]}
    _atomic(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return summary

"""The per-kernel view (the runtime's profiler, or one module per kernel) and the fusion summary:
predicted bytes saved vs measured speedup."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import sympy

from .. import ops
from ..contracts import OWN_BUFFER, is_kernel
from ..cost import node_work
from ..errors import CnnccError
from ..ir import N, Graph, Node
from ..reference import random_inputs
from .handoff import SPLIT_RATIO
from .timing import calibrate, sample


@dataclass
class KernelRow:
    name: str
    ops: str
    seconds: float
    flops: float
    bytes: float
    gflops: float = 0.0
    gbs: float = 0.0
    share: float = 0.0
    intensity: float = 0.0
    bound: str = ""
    roof_fraction: float = 0.0
    members: list[str] = field(default_factory=list)
    algorithm: str = ""          # C target convolutions: "direct" or "winograd F(mxm,3x3)"
    executed_gflops: float = 0.0  # the rate of the multiply-adds it really does, where fewer than credited:
                                  # Winograd's GEMMs, a direct kernel's taps inside the input


def kernel_nodes(opt_graph: Graph) -> list[Node]:
    """The nodes of an optimized graph that run as kernels (contracts.is_kernel) and move bytes in
    the cost model: a view or identity lowered to a copy at opt 0 costs nothing there, so it is
    left out of the per-kernel table."""
    return [node for node in opt_graph if is_kernel(node, opt_graph) and
            (node.op == "fused" or not (ops.get(node.op).has(ops.VIEW) or ops.get(node.op).has(ops.IDENTITY)))]


def single_kernel_graph(opt_graph: Graph, node: Node) -> Graph:
    """A graph holding just ``node``: its tensor inputs become graph inputs, constants stay."""
    import copy

    g = Graph(f"{opt_graph.name}_{node.name}")
    for src in node.inputs:
        prod = opt_graph[src]
        if prod.op == "constant":
            g.add(copy.deepcopy(prod))
        else:
            inp = Node(src, "input", [], {"shape": tuple(prod.type.shape), "dtype": prod.type.dtype})
            inp.type = prod.type
            g.add(inp)
    clone = copy.deepcopy(node)
    clone.placement = OWN_BUFFER          # its own graph: a kernel with its own output buffer
    g.add(clone)
    g.outputs = [node.name]
    return g


QUIET_WITHIN = 1.10     # a profiling round is quiet when every module's forward is within 10% of its fastest
QUIET_LEAST = 3         # ... and at least this many rounds are kept (the quietest) when fewer are
#: how long one profile waits in all, before its rounds, for the cores to share a cache again
#: (bench/handoff.py); past it the rounds are timed as they come and the method says how many
#: were timed split. The split phases of our VM lasted 10-20 s.
SPLIT_WAIT_S = 30.0
SPLIT_POLL_S = 0.5


@dataclass
class ProfiledTimes:
    """Per-kernel seconds of several modules (module -> kernel -> seconds) and how they were reduced."""
    times: dict[str, dict[str, float]]
    rounds: int = 0          # forwards of each module timed
    kept: int = 0            # the quiet rounds among them that the medians are taken over
    split: int = 0           # kept rounds timed while the cores did not share a cache (none other there)
    waited_s: float = 0.0    # seconds spent waiting for them to share one again
    per_round: list = field(default_factory=list, repr=False)   # each round: module -> kernel -> seconds
    ratios: list = field(default_factory=list, repr=False)      # the handoff ratio before each round
    paired: list = field(default_factory=list, repr=False)  # indices into per_round: rounds for paired ratios

    def rounds_of(self, module: str) -> list[dict[str, float]]:
        """``module``'s kernel -> seconds in each round timed with the cores sharing cache as they
        usually do (all rounds where too few were), in order: round i of one module ran beside
        round i of the others, so a ratio within one round is not moved by a slow phase that
        slowed the whole round -- the quiet-round filter is not needed for those and would leave
        too few of them."""
        return [self.per_round[i][module] for i in self.paired if module in self.per_round[i]]

    @property
    def probed(self) -> bool:
        """The cross-core handoff was probed before the rounds (bench/handoff.py)."""
        return bool(self.ratios)

    @property
    def method(self) -> str:
        text = (f"runtime profiler, engines interleaved, median of the {self.kept} of {self.rounds} rounds "
                f"where every engine ran within {(QUIET_WITHIN - 1) * 100:.0f}% of its fastest")
        if self.probed:
            text += (f", each after a cross-core handoff probe: rounds timed while the cores shared no cache "
                     f"left out" + (f" ({self.split} kept: too few others)" if self.split else "")
                     + (f", {self.waited_s:.0f} s waited for a shared one" if self.waited_s >= 1 else ""))
        return text


def quiet_rounds(totals: list[dict[str, float]], within: float = QUIET_WITHIN, least: int = QUIET_LEAST) -> list[int]:
    """The rounds (indices into ``totals``: module -> the round's forward seconds) in which every
    module ran within ``within`` of its own fastest round; where fewer than ``least`` are, the
    ``least`` rounds whose slowest module is nearest its fastest. Why: the shared machines we
    measure on have phases of seconds in which a core is lent elsewhere (DenseNet-121 at batch 1:
    28 ms a forward, then 40 for seconds, with small kernels' parallel regions 10x slower), and
    the medians of three rounds put a fused kernel timed in such a phase against its members
    timed outside one: 0.21-0.30x 'slower' groups that were not."""
    if not totals:
        return []
    fastest = {m: min(t[m] for t in totals) for m in totals[0]}
    worst = [max(t[m] / fastest[m] if fastest[m] > 0 else 1.0 for m in t) for t in totals]
    kept = [i for i, w in enumerate(worst) if w <= within]
    if len(kept) < min(least, len(totals)):
        kept = sorted(sorted(range(len(totals)), key=worst.__getitem__)[:least])
    return kept


def reduce_rounds(per_round: list[dict[str, dict[str, float]]], ratios: list[float] | None = None,
                  waited_s: float = 0.0) -> ProfiledTimes:
    """Per-kernel medians over the quiet rounds (:func:`quiet_rounds`) among those timed while the
    cores shared a cache (``ratios``: the handoff probe's before each round, bench/handoff.py);
    all rounds where fewer than QUIET_LEAST were."""
    ratios = list(ratios or [])
    shared = [i for i in range(len(per_round)) if i >= len(ratios) or ratios[i] <= SPLIT_RATIO]
    pool = shared if len(shared) >= min(QUIET_LEAST, len(per_round)) else list(range(len(per_round)))
    sub = quiet_rounds([{m: sum(k.values()) for m, k in per_round[i].items()} for i in pool])
    kept = [pool[i] for i in sub]
    times = {name: {k: statistics.median(per_round[i][name][k] for i in kept) for k in per_round[kept[0]][name]}
             for name in per_round[kept[0]]} if kept else {}
    split = sum(1 for i in kept if i < len(ratios) and ratios[i] > SPLIT_RATIO)
    return ProfiledTimes(times, len(per_round), len(kept), split, waited_s, per_round, ratios, pool)


def interleaved_kernel_times(modules: dict, inputs: list, rounds: int, handoff=None,
                             previous: ProfiledTimes | None = None, wait_s: float = SPLIT_WAIT_S) -> ProfiledTimes:
    """Per-kernel seconds of several modules from their runtime profilers, one forward of each in
    turn per round (the order rotated), reduced by :func:`reduce_rounds`. Why interleaved:
    profiling opt 0's kernels and then opt 2's put minutes between them, and a shared machine's
    slow minute swung per-group speedups by 4x. Modules whose target has no profiler are left out
    (their kernels are timed one module per kernel).

    ``handoff``: a callable giving the cross-core handoff ratio now (bench/handoff.py
    ``relative_handoff``), probed before each round; while it says the cores share no cache the
    round waits (``wait_s`` in all for the call), and rounds timed so are left out where enough
    others are. ``previous``: rounds of the same modules measured before, pooled with these."""
    names = []
    for name, mod in modules.items():
        try:
            mod.profile(inputs, repeat=1)                 # warm-up, and: does the target profile?
        except CnnccError:
            continue
        names.append(name)
    per_round = list(previous.per_round) if previous else []
    ratios = list(previous.ratios) if previous else []
    waited = previous.waited_s if previous else 0.0
    start = len(per_round)
    for r in range(start, start + (rounds if names else 0)):
        if handoff is not None:
            ratio = handoff()
            while ratio > SPLIT_RATIO and waited < wait_s:
                time.sleep(SPLIT_POLL_S)
                waited += SPLIT_POLL_S
                ratio = handoff()
            ratios.append(ratio)
        order = names[r % len(names):] + names[:r % len(names)]
        per_round.append({name: dict(modules[name].profile(inputs, repeat=1)) for name in order})
    return reduce_rounds(per_round, ratios, waited)


def profile_kernels(module, opt_graph: Graph, feeds: dict, batch: int, target: str, opt_level: int,
                    repeat: int, min_sample_s: float = 0.001, times: dict[str, float] | None = None,
                    method: str = "runtime profiler, engines interleaved"
                    ) -> tuple[list[tuple[Node, float]], str]:
    """Seconds per kernel node and the method used (the runtime's profiler or one module per kernel).
    ``times`` are profiler figures already measured (see interleaved_kernel_times), ``method``
    says how."""
    nodes = kernel_nodes(opt_graph)
    profile = getattr(module, "profile", None)
    if times is None and callable(profile):
        method = "runtime profiler"
        try:
            times = dict(profile([feeds[i] for i in opt_graph.inputs], repeat=repeat))
        except CnnccError:
            times = None
    if times:
        by_name = {n.name: n for n in nodes}
        rows = [(by_name[k], t) for k, t in times.items() if k in by_name]
        if rows:
            return rows, method
    import cnncc

    rng = np.random.default_rng(1)
    overhead = call_overhead(target, min_sample_s)
    rows = []
    for node in nodes:
        sub = single_kernel_graph(opt_graph, node)
        mod = cnncc.compile(sub, target=target, opt_level=0)
        feeds = random_inputs(sub, batch, rng)          # valid boxes for a roi kernel
        args = [feeds[i] for i in sub.inputs]
        fn = (lambda m=mod, a=args: m(*a))
        for _ in range(2):
            fn()
        inner = calibrate(fn, min_sample_s)
        t = statistics.median(sample(fn, inner) for _ in range(max(3, repeat)))
        rows.append((node, max(t - overhead, 0.05 * t)))
    return rows, f"one module per kernel, minus {overhead * 1e6:.1f} us call overhead"


def call_overhead(target: str, min_sample_s: float = 0.001) -> float:
    """Seconds one module call costs beyond its kernels: a one-element relu module's time."""
    import cnncc

    g = Graph("call_overhead")
    g.add(Node("x", "input", [], {"shape": (N, 1)}))
    g.add(Node("y", "relu", ["x"]))
    g.outputs = ["y"]
    mod = cnncc.compile(g.infer_shapes(), target=target, opt_level=0)
    x = np.ones((1, 1), np.float32)
    fn = (lambda: mod(x))
    for _ in range(3):
        fn()
    inner = calibrate(fn, min_sample_s)
    return statistics.median(sample(fn, inner) for _ in range(5))


def _roof_text(r: dict) -> str:
    """The roofline column: a fraction of the roof that applies, never above 100%."""
    if not r["bound"]:
        return ""
    if r["bound"] == "cache":
        return "above DRAM roof (cache-resident)"
    if r["bound"] == "above probe":
        return "above the FMA probe: --refresh-roofline"
    if r.get("executed_gflops") and r.get("algorithm"):
        return f"{r['roof_fraction'] * 100:.0f}% of {r['bound']} roof ({r['algorithm']}: its GEMMs' FLOPs)"
    if r.get("executed_gflops"):
        return f"{r['roof_fraction'] * 100:.0f}% of {r['bound']} roof (by the taps inside the input)"
    return f"{r['roof_fraction'] * 100:.0f}% of {r['bound']} roof"


def executed_shares(opt_graph: Graph, conv_algorithm: str = "auto", batch: int = 1) -> dict[str, tuple[str, float]]:
    """C target: kernel name -> (algorithm, share of its credited multiply-adds it really does),
    for the convolutions that do fewer than they are credited at this batch size: Winograd
    (its GEMMs, :func:`winograd_fraction`; one whose Winograd form starts at a larger batch runs
    direct here) and direct kernels that leave out the taps on the zero border
    (``c_conv.executed_fraction``; algorithm "")."""
    from ..codegen import c_conv
    from ..codegen.lower import lower_program
    from ..runtime.cpu import host_target

    try:
        specs = lower_program(opt_graph).kernels
    except CnnccError:
        return {}
    target, out = host_target(), {}
    for s in specs:
        if s.family != "conv":
            continue
        b = c_conv.plan(s, target, conv_algorithm)
        if b is not None and b.kind == "winograd":
            if b.min_batch <= batch:
                out[s.name] = (f"winograd F({b.m}x{b.m},3x3)", winograd_fraction(b.m))
                continue
            b = b.direct
        share = c_conv.executed_fraction(s, b)
        if share < 1.0:
            out[s.name] = ("", share)
    return out


def winograd_fraction(m: int) -> float:
    """Multiply-adds of F(mxm,3x3) per direct one: (m+2)^2 per m x m tile against 9 m^2."""
    return (m + 2) ** 2 / (9 * m * m)


def kernel_table(rows: list[tuple[Node, float]], opt_graph: Graph, batch: int, roof,
                 target: str = "c", conv_algorithm: str = "auto") -> list[KernelRow]:
    """One row per kernel: its time, FLOPs (of the operators: a Winograd convolution is credited
    a direct one's) and where it sits on the roofline. A Winograd kernel, and a direct one that
    leaves out the zero border's taps, does fewer multiply-adds than it is credited, so its place
    on the roof is taken from those it really does (``executed_gflops``), never from the credited
    rate."""
    total = sum(t for _, t in rows) or 1.0
    shares = executed_shares(opt_graph, conv_algorithm, batch) if target == "c" else {}
    out = []
    for node, t in rows:
        flops, nbytes = node_work(opt_graph, node, batch)
        members = [m.name for m in node.members] if node.members else [node.name]
        op_text = "+".join(m.op for m in node.members) if node.members else node.op
        r = KernelRow(node.name, op_text, t, flops, nbytes, flops / t / 1e9, nbytes / t / 1e9, t / total,
                      members=members)
        rate = r.gflops
        if node.name in shares:
            r.algorithm, share = shares[node.name]
            r.executed_gflops = rate = r.gflops * share
        if roof is not None and r.gbs > 0:
            pos = roof.position(rate, r.gbs)
            r.intensity, r.bound, r.roof_fraction = pos["intensity"], pos["bound"], pos["fraction"]
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# fusion: predicted bytes saved vs measured speedup
#: the confidence of the interval around a fused group's per-round speedup (:func:`median_interval`)
INTERVAL_LEVEL = 0.95


def median_interval(values: list[float], level: float = INTERVAL_LEVEL) -> tuple[float, float] | None:
    """A distribution-free interval for the median of ``values`` (the sign test's): the k-th
    smallest and k-th largest, k the largest rank with P(Binomial(n, 1/2) < k) <= (1 - level) / 2.
    Its coverage is at least ``level`` whatever the distribution, so one slow round (a core lent
    elsewhere) cannot move it as it moves a mean. None below 6 values (no such k at 95%)."""
    xs = sorted(values)
    n, tail, k = len(xs), (1 - level) / 2, 0
    while k < n // 2 and sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= tail:
        k += 1
    return (xs[k - 1], xs[n - k]) if k else None


def _group_rounds(members: list[str], name: str, kernel_of: dict[str, str], rounds: dict) -> list[float]:
    """Per-round speedups of one fused group: its members' opt-0 kernels (``kernel_of``: member ->
    opt 0's kernel) summed over its opt-2 kernel, round by round -- each ratio from one round of
    both modules run in turn, so a round that was slow for both cancels out."""
    out = []
    for t0, t2 in zip(rounds.get("opt0", []), rounds.get("opt2", [])):
        fused = t2.get(name)
        unfused = sum(t0.get(kernel_of[m], 0.0) for m in members if m in kernel_of)
        if fused:
            out.append(unfused / fused)
    return out


def fusion_summary(opt_graph: Graph, batch: int, engines: dict, kernels: dict, rounds: dict | None = None) -> dict:
    """Predicted bytes saved vs measured speedup, model-wide and per fused group. ``rounds``
    (engine -> its profiling rounds, :meth:`ProfiledTimes.rounds_of`) adds to every group its
    per-round speedups' interval (:func:`median_interval`) and, where the group reads slower (its
    members' medians over its own under 1.0), a verdict: "slower" where the whole interval lies
    under 1.0, "within noise" where it reaches 1.0, "too few rounds" where there is none."""
    sub = {N: batch}
    traffic = opt_graph.traffic
    out: dict = {}
    if traffic:
        unf = float(sympy.sympify(traffic.bytes_unfused).subs(sub))
        fus = float(sympy.sympify(traffic.bytes_fused).subs(sub))
        out["model"] = {"bytes_unfused": unf, "bytes_fused": fus, "predicted_saving": 1 - fus / unf if unf else 0.0}
    e0, e2 = engines.get("opt0", {}), engines.get("opt2", {})
    if e0.get("status") == "ok" and e2.get("status") == "ok":
        out.setdefault("model", {})["speedup_opt2_vs_opt0"] = e0["median_s"] / e2["median_s"]
        out["model"]["measured_saving"] = 1 - e2["median_s"] / e0["median_s"]
    groups = []
    rows0 = kernels.get("opt0", {}).get("rows", [])
    t0 = {m: r["seconds"] for r in rows0 for m in r["members"]}
    kernel_of = {m: r["name"] for r in rows0 for m in r["members"]}
    t2 = {r["name"]: r["seconds"] for r in kernels.get("opt2", {}).get("rows", [])}
    for node in opt_graph:
        if node.op != "fused" or node.group is None or node.group.bytes_unfused is None:
            continue
        unf = float(sympy.sympify(node.group.bytes_unfused).subs(sub))
        fus = float(sympy.sympify(node.group.bytes_fused).subs(sub))
        g = {"name": node.name, "ops": "+".join(m.op for m in node.members), "bytes_unfused": unf,
             "bytes_fused": fus, "predicted_saving": 1 - fus / unf if unf else 0.0}
        members = [m.name for m in node.members]
        if node.name in t2 and all(m in t0 for m in members if not _is_free(m, node)):
            unfused_t = sum(t0.get(m, 0.0) for m in members)
            g.update(seconds_unfused=unfused_t, seconds_fused=t2[node.name],
                     speedup=unfused_t / t2[node.name] if t2[node.name] else 0.0,
                     measured_saving=1 - t2[node.name] / unfused_t if unfused_t else 0.0)
            per_round = _group_rounds(members, node.name, kernel_of, rounds) if rounds else []
            if per_round:
                interval = median_interval(per_round)
                g.update(rounds=len(per_round), slower_rounds=sum(r < 1.0 for r in per_round),
                         speedup_interval=list(interval) if interval else None)
                if g["speedup"] < 1.0:
                    g["verdict"] = ("too few rounds" if interval is None else
                                    "slower" if interval[1] < 1.0 else "within noise")
        groups.append(g)
    out["groups"] = groups
    return out


def _is_free(member: str, group: Node) -> bool:
    """Members that never run as their own kernel at opt 0 (views, identities)."""
    m = next(x for x in group.members if x.name == member)
    d = ops.get(m.op)
    return d.has(ops.VIEW) or d.has(ops.IDENTITY)

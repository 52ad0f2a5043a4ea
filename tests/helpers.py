"""What many test files need, written once: the relative error every comparison uses and the
compile-and-compare check (a compiled module against the numpy reference, the spec).

Test files import it as a sibling module (`from helpers import rel_err`): pytest puts tests/ on
sys.path, and the sanitizer subprocess does the same."""
from __future__ import annotations

import numpy as np

import cnncc
from cnncc.reference import random_inputs


def _array(x) -> np.ndarray:
    return np.asarray(x.detach().numpy() if hasattr(x, "detach") else x)     # a torch tensor too


def rel_err(got, want, *, floor: float = 1e-6) -> float:
    """max |got - want| / max |want|, in float64; max |want| is floored at ``floor`` so an all-zero
    output is compared absolutely. Dicts: the worst output (keys of ``want``). Integer and bool
    outputs: 0.0 when equal, 1.0 otherwise. The shapes must agree; empty arrays agree."""
    if isinstance(want, dict):
        return max((rel_err(got[k], want[k], floor=floor) for k in want), default=0.0)
    got, want = _array(got), _array(want)
    assert got.shape == want.shape, f"shape {got.shape} vs {want.shape}"
    if want.size == 0:
        return 0.0
    if want.dtype.kind in "iub":
        return float((got != want).any())
    return float(np.abs(got.astype(np.float64) - want).max() / max(float(np.abs(want).max()), floor))


def assert_matches_reference(g, mod, batches=(1, 3), *, against=None, rtol: float = 1e-4,
                             atol: float | None = None, seed: int = 0, what: str = "") -> float:
    """Run the compiled ``mod`` on random inputs of ``g`` at each batch size and compare every
    output with the numpy reference of each graph in ``against`` (default: ``g``; add
    ``mod.report["graph"]`` to check against the graph the passes produced too, whose renamed
    outputs are matched by position).

    Every output must have the reference's shape and dtype, float outputs must be finite (a NaN
    is an element no kernel wrote), and the error must be within tolerance: ``rel_err <= rtol``,
    or element by element ``|got - want| <= atol + rtol * |want|`` when ``atol`` is given.
    Returns the worst relative error seen."""
    rng = np.random.default_rng(seed)
    names = list(g.outputs)
    worst = 0.0
    for b in batches:
        feeds = random_inputs(g, b, rng)
        y = mod(feeds)
        got = y if isinstance(y, dict) else {names[0]: y}
        for oracle in against or (g,):
            r = cnncc.reference(oracle, feeds)
            rs = list(r.values()) if isinstance(r, dict) else [r]
            assert len(rs) == len(names), f"{oracle.name}: {len(rs)} outputs, {g.name} has {len(names)}"
            vs = "" if oracle is g else f" vs the reference of {oracle.name!r}"
            for k, want in zip(names, rs):
                where = f"{what}batch {b}, output {k}{vs}"
                out = got[k]
                assert out.shape == want.shape and out.dtype == want.dtype, \
                    f"{where}: {out.shape} {out.dtype}, reference {want.shape} {want.dtype}"
                if out.dtype.kind == "f":
                    assert np.isfinite(out).all(), f"{where}: {np.isnan(out).sum()} values never written"
                err = rel_err(out, want)
                if atol is None:
                    assert err <= rtol, f"{where}: relative error {err:.2e}"
                else:
                    np.testing.assert_allclose(out, want, rtol=rtol, atol=atol, err_msg=where)
                worst = max(worst, err)
    return worst

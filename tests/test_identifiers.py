"""Names can never collide with generated code (cnncc/names.py, issue 12).

The words are collected from the templates themselves (every identifier in their C/CUDA text,
so a local added tomorrow is covered) and from the emulator header, plus C/C++/CUDA keywords,
names differing only in case or in characters the sanitizer maps alike, and names that are not
identifiers at all. One graph carries them all: every one is a graph input feeding wide concats
(a kernel whose parameters are all these names), and a zoo of every kernel family is named after
them in turn, fed by an input called ``src`` (the case of the issue: conv -> relu -> pool). It is
built once per target: c at opt 0 and 2, cuda-emu, and NVRTC compiles its CUDA source.

The user sees the names as written: input names, kernel names, summary, saved-module manifest."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc import names
from cnncc.frontends import dsl
from cnncc.ir import N
from helpers import rel_err

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "codegen" / "templates").glob("*/*.j2"))
EMU_HEADER = ROOT / "runtime" / "cuda_emu.h"

C_KEYWORDS = """auto break case char const continue default do double else enum extern float for goto if inline
int long register restrict return short signed sizeof static struct switch typedef union unsigned void volatile
while _Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local""".split()
CXX_KEYWORDS = """alignas alignof and and_eq asm bitand bitor bool catch class compl concept consteval constexpr
constinit const_cast co_await co_return co_yield decltype delete dynamic_cast explicit export false friend
mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public
reinterpret_cast requires static_assert static_cast template this thread_local throw true try typeid typename
using virtual wchar_t xor xor_eq""".split()
LIBRARY = """main printf malloc free exit abort memcpy memset exp expf log logf sqrtf fmaxf fminf min max abs
NAN INFINITY NULL errno stdin stdout size_t int32_t uint64_t dim3 uint3 float4 warpSize threadIdx blockIdx
blockDim gridDim __syncthreads __shfl_xor_sync atomicAdd omp_get_thread_num""".split()
ALIKE = ["a-b", "a_b", "a.b", "a b", "a__b", "_a_b", "a_b_", "A_b", "a_B", "src", "Src", "SRC", "x", "X",
         "t_src", "w_src__weight", "k_src", "kernel_src", "t_a_b__00000000"]
NOT_IDENTIFIERS = ["1x", "名", "", " ", "x y", "-", "0", "a/b/c", "*/", "/*", "\\", '"', "??/", "a\nb",
                   "#define", "//x", "%s", "{", "é"]


def template_words(text: str) -> set[str]:
    """Every identifier in a template's C/CUDA text (jinja tags, comments and strings removed),
    plus the locals the scratch macros declare from jinja tuples: ``("xpad", floats, what)``."""
    pieces = {m for tag in re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, flags=re.S)
              for m in re.findall(r'\(\s*"([A-Za-z_]\w*)"\s*,', tag)}
    text = re.sub(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", " ", text, flags=re.S)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'"(\\.|[^"\\])*"', " ", text)
    return set(re.findall(r"\b[A-Za-z_]\w*\b", text)) | pieces


def all_template_words() -> set[str]:
    words = set()
    for path in TEMPLATES + [EMU_HEADER]:
        words |= template_words(path.read_text())
    return words


def hostile_names() -> list[str]:
    seen, out = set(), []
    for n in sorted(all_template_words()) + C_KEYWORDS + CXX_KEYWORDS + LIBRARY + ALIKE + NOT_IDENTIFIERS:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def test_the_templates_take_no_name_of_the_graph_namespace():
    """The proof of the rule: generated identifiers of graph names start with t_, w_ or k_ and
    no word of any template or of the emulator header does."""
    words = all_template_words()
    assert len(words) > 300 and {"src", "tile", "buf", "xpad", "px", "h", "f"} <= words   # the issue's locals
    assert not [w for w in words if re.match(r"[twk]_", w)]
    idents = {}
    for n in hostile_names():
        for ident in (names.ident(n), names.ident(n, "k"), names.weight_ident(n, "weight")):
            assert re.fullmatch(r"[twk]_[A-Za-z0-9_]*", ident) and ident not in words, (n, ident)
            assert idents.setdefault(ident, n) == n, f"{n!r} and {idents[ident]!r} both spell {ident}"


def test_templates_print_user_names_only_through_the_comment_filter():
    """A user's name in generated code is either an identifier (``.cname``) or comment text
    (``| comment``); printed raw, ``*/`` or a newline in a name would break the source."""
    raw = []
    for path in TEMPLATES:
        for expr in re.findall(r"\{\{(.*?)\}\}", path.read_text(), flags=re.S):
            expr_ = expr.replace("get(name", "")   # spec.shapes.get(name, ...): a shape, not the name
            if re.search(r"(?<!c)\bname\b|\bnode\b", expr_) and "comment" not in expr_:
                raw.append(f"{path.name}: {{{{{expr}}}}}")
    assert not raw, raw


def test_comment_text_cannot_end_a_comment_or_continue_a_line():
    for n in NOT_IDENTIFIERS:
        c = names.comment(n)
        assert "*/" not in c and "/*" not in c and "\\" not in c and "??" not in c and '"' not in c
        assert all(" " <= ch <= "~" for ch in c), c


def hostile_graph():
    """The zoo of every kernel family fed by ``src``, plus every hostile name as an input of wide
    concats (one kernel parameter per name)."""
    # the zoo's layers: odd names (their kernels' names), then keywords; every other name (the
    # alike and non-identifier ones included, so they meet in one kernel) is an input of the concats
    zoo = [n + "|" + k for n, k in zip(NOT_IDENTIFIERS, ("conv", "relu", "pool"))] + C_KEYWORDS + CXX_KEYWORDS
    used = ["src"]

    def nm() -> str:
        used.append(zoo[len(used) - 1])
        return used[-1]

    src = dsl.input("src", (N, 4, 6, 6))
    issue = dsl.max_pool2d(dsl.relu(dsl.conv2d(src, 8, 3, padding=1, name=nm()), name=nm()), 2, name=nm())
    outs = [issue]
    c1 = dsl.relu(dsl.conv2d(src, 8, 1, name=nm()), name=nm())                      # pointwise
    outs.append(dsl.relu6(dsl.conv2d(c1, 8, 3, padding=1, groups=4, name=nm()), name=nm()))   # grouped rows
    outs.append(dsl.avg_pool2d(dsl.conv_transpose2d(src, 4, 2, stride=2, name=nm()), 2, name=nm()))
    outs.append(dsl.softmax(dsl.dense(dsl.flatten(src, name=nm()), 10, name=nm()), axis=1, name=nm()))
    outs.append(dsl.global_avg_pool(dsl.add(c1, dsl.conv2d(src, 8, 1, name=nm()), name=nm()), name=nm()))
    outs.append(dsl.concat([dsl.lrn(src, 3, name=nm()), dsl.instance_norm(src, name=nm())], axis=1, name=nm()))
    outs.append(dsl.upsample2d(src, 2, mode="bilinear", name=nm()))
    outs.append(dsl.transpose(dsl.pad(src, (1, 1, 1, 1), name=nm()), (0, 1, 3, 2), name=nm()))
    outs.append(dsl.matmul(src, dsl.constant(src, np.ones((6, 5), np.float32), name=nm()), name=nm()))
    y, idx = dsl.max_pool2d_with_indices(src, 2, name=nm())
    outs.append(dsl.max_unpool2d(dsl.mul(y, 2.0, name=nm()), idx, 2, name=nm()))
    outs.append(dsl.softmax(src, axis=3, name=nm()))
    rest = [n for n in hostile_names() if n not in used and not n.startswith("wide")]
    ins = [dsl.input(n, (N, 1, 2, 2), like=src) for n in rest]
    parts = [dsl.concat(ins[i:i + 96], axis=1, name=nm_ok) for i, nm_ok in
             zip(range(0, len(ins), 96), (f"wide{j}" for j in range(100)))]
    outs.append(dsl.relu(dsl.concat(parts, axis=1, name="wide"), name="wide_relu"))
    return dsl.graph(*outs, name="hostile")


@pytest.fixture(scope="module")
def graph_and_feeds():
    g = hostile_graph()
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((2,) + tuple(int(d) for d in g[n].type.shape[1:])).astype(np.float32)
             for n in g.inputs}
    return g, feeds, cnncc.reference(g, feeds)


@pytest.mark.parametrize("target,opt", [("c", 0), ("c", 2), ("cuda-emu", 2)])
def test_hostile_names_compile_and_run(shared_kernel_cache, graph_and_feeds, tmp_path, target, opt):
    g, feeds, ref = graph_and_feeds
    mod = cnncc.compile(g, target=target, opt_level=opt)
    out = mod(feeds)
    assert set(out) == set(ref)
    for k in ref:
        err = rel_err(out[k], ref[k])
        assert err <= 1e-4, f"{target} opt {opt}, output {k!r}: relative error {err:.2e}"
    # the user's names, as written, wherever the user sees them
    assert mod.input_names == list(g.inputs)
    assert set(ALIKE + NOT_IDENTIFIERS) - {"src"} <= set(mod.input_names) and "src" in mod.input_names
    kernel_names = [k[0] for k in mod.kernels]
    assert len(set(kernel_names)) == len(kernel_names)
    if opt == 0:
        assert set(kernel_names) <= {n.name for n in g} and "名|relu" in kernel_names
    if target == "c" and opt == 2:
        again = cnncc.load(mod.save(tmp_path / "hostile"))
        assert again.input_names == mod.input_names and [k[0] for k in again.kernels] == kernel_names
        out2 = again(feeds)
        assert all(np.array_equal(out2[k], out[k]) for k in out)
        summary = g.summary()
        assert "名|relu" in summary and "a.b" in summary


def test_hostile_names_compile_with_nvrtc(graph_and_feeds):
    """The CUDA source of the same graph through NVRTC for sm_90 (no GPU needed)."""
    pytest.importorskip("cupy")
    from cnncc.codegen.lower import lower_program
    from cnncc.runtime import nvrtc
    from cnncc.runtime.cuda import build_cubin, render

    try:
        nvrtc.nvrtc_version()
    except Exception as e:   # noqa: BLE001 - the library is optional on CPU machines
        pytest.skip(f"NVRTC is not available: {e}")
    g, _, _ = graph_and_feeds
    program = lower_program(cnncc.optimize(g, 2))
    result = build_cubin(render(program).source, Path("/dev/null"))
    assert set(result.kernels) == {k.cname for k in program.kernels}

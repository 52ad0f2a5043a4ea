"""Generated code a person enjoys reading (issue 10 point 5): the rendered C and CUDA text of
every example holds no ``* 1``, ``+ 0``, ``- 0``, loop of one trip or unused local.

Render only, nothing is compiled (except LeNet-5's C file through gcc's unused-variable
warnings): each example at its small test size, weights drawn as zero-stride shapes.
Also checks ``codegen/simplify.ix``, which folds the index arithmetic, against C's integer
semantics.
"""
from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cnncc.codegen.simplify import ix

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# ---------------------------------------------------------------------------------------------
# what a person would not write
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
#: integer arithmetic that does nothing; word boundaries keep `* 16`, `+ 0.5f`, `x1 * 2` out
ARITH = {
    "* 1": re.compile(r"\*\s*1L?(?![\w.])"),
    "1 *": re.compile(r"(?<![\w.])1L?\s*\*(?![/=])"),
    "+ 0": re.compile(r"\+\s*0L?(?![\w.])"),
    "0 +": re.compile(r"(?<![\w.])0L?\s*\+(?![+=])"),
    "- 0": re.compile(r"(?<![-])-\s*0L?(?![\w.])"),
    "* 0": re.compile(r"\*\s*0L?(?![\w.])"),
    "0 *": re.compile(r"(?<![\w.])0L?\s*\*(?![/=])"),
    "/ 1": re.compile(r"/\s*1L?(?![\w.])"),
    "% 1": re.compile(r"%\s*1L?(?![\w.])"),
}
#: a counted loop with literal bounds: for (long i = 0; i < 1; ++i), for (int k0 = 0; k0 < 84; k0 += 96)
FOR = re.compile(r"for\s*\(\s*(?:const\s+)?(?:long long|long|int|unsigned|size_t)?\s*(\w+)\s*=\s*(-?\d+)L?\s*;"
                 r"\s*\1\s*<\s*(-?\d+)L?\s*;\s*(?:\+\+\1|\1\+\+|\1\s*\+=\s*(\d+)L?)\s*[,)]")
#: a declaration with initializers inside one line: the type, then the declarators up to ';'
DECL = re.compile(r"(?:^|[;{}])\s*(?:const\s+)?(?:unsigned\s+)?(?:long long|long|int|float|double|size_t|bool"
                  r"|cnncc_f\d+u?)\s*\**\s*(?:const\s+)?(?:__restrict__\s+|restrict\s+)?(\w+\s*(?:\[[^\]]*\])?\s*=[^;]*);")
#: the first line of a function definition (column 0)
FUNCTION = re.compile(r'^(?:static |extern "C" |__device__ |__global__ |int |void )[^;]*\(')


def code_only(text: str) -> str:
    """Comments and strings blanked, line numbers kept."""
    return _STRING.sub('""', _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text))


def _declarators(body: str) -> list[str]:
    """Names declared by 'a = ..., b = ...' (commas inside parentheses/brackets do not split)."""
    names, depth, start = [], 0, 0
    parts = []
    for i, ch in enumerate(body):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for part in parts:
        m = re.match(r"\s*\**\s*(\w+)\s*(?:\[[^\]]*\])?\s*=", part)
        if m:
            names.append(m.group(1))
    return names


def _functions(code: str) -> list[list[str]]:
    """The translation unit cut into top-level function definitions (lists of lines)."""
    out: list[list[str]] = []
    for line in code.splitlines():
        if FUNCTION.match(line):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def unused_locals(text: str) -> list[str]:
    """Locals declared with an initializer and never named again in their function."""
    out = []
    for lines in _functions(code_only(text)):
        words = {}
        for line in lines:
            for w in re.findall(r"\b\w+\b", line):
                words[w] = words.get(w, 0) + 1
        for line in lines:
            for m in DECL.finditer(line):
                out += [f"{name} in {lines[0][:90]}" for name in _declarators(m.group(1)) if words.get(name, 0) == 1]
    return out


def problems(text: str) -> list[str]:
    out = []
    for i, line in enumerate(code_only(text).splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("#") and not stripped.startswith("#pragma"):
            continue       # preprocessor lines (#define CNNCC_ESLOTS 3 ...)
        for what, rx in ARITH.items():
            if rx.search(line):
                out.append(f"line {i}: `{what}`: {stripped}")
        for m in FOR.finditer(line):
            a, b, step = int(m.group(2)), int(m.group(3)), int(m.group(4) or 1)
            trips = max(0, -(-(b - a) // step))
            if trips <= 1:
                out.append(f"line {i}: loop of {trips} trip{'s' if trips != 1 else ''}: {stripped}")
    return out + [f"unused local {u}" for u in unused_locals(text)]


def test_the_checks_catch_what_they_are_for():
    bad = """
static void kernel_k(long N, const float* W, float* t_y)
{
    const long q = 0;
    const long a = 3, b = a * 1;
    for (long cb = 0; cb < 1; ++cb) t_y[cb + 0] = W[a - 0];
    for (long k0 = 0; k0 < 84; k0 += 96) t_y[k0] = 1.0f * 2.5f;   /* x * 1 in a comment is fine */
}
"""
    found = "\n".join(problems(bad))
    for what in ("`* 1`", "`+ 0`", "`- 0`", "loop of 1 trip: for (long cb", "loop of 1 trip: for (long k0",
                 "unused local q", "unused local b"):
        assert what in found, (what, found)
    assert "unused local a" not in found and "`1 *`" not in found   # 1.0f * 2.5f is float arithmetic
    good = "static void f(long N, float* y)\n{\n    for (long c = 0; c < 16; ++c) y[c * 16 + 10] = y[c * 21 - 1];\n}\n"
    assert problems(good) == []


# ---------------------------------------------------------------------------------------------
# ix against C's integer arithmetic
def _c_eval(expr: str, env: dict) -> int:
    """Evaluate with C semantics: / and % truncate toward zero."""
    import ast

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.UnaryOp):
            return -ev(n.operand)
        a, b = ev(n.left), ev(n.right)
        if isinstance(n.op, ast.Add):
            return a + b
        if isinstance(n.op, ast.Sub):
            return a - b
        if isinstance(n.op, ast.Mult):
            return a * b
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return q if isinstance(n.op, ast.Div) else a - q * b
    return ev(ast.parse(re.sub(r"(\d+)L\b", r"\1", expr), mode="eval"))


def _random_expr(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["x", "y", "z", "A", "B", "0", "1", "2", "7L"])
    op = rng.choice(["+", "-", "*", "*", "/", "%"])
    a, b = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    if op in "/%":      # a divisor that is never zero: a positive literal or size
        b = rng.choice(["1", "3", "B", "A"])
    return f"({a} {op} {b})" if rng.random() < 0.5 else f"{a} {op} {b}"


def test_ix_folds_what_a_person_would_and_nothing_else():
    assert ix("oh * SH - PH + kh * DH", SH=1, PH=0, DH=1) == "oh + kh"
    assert ix("oh * SH - PH + kh * DH", SH=2, PH=1, DH=1) == "oh * 2 - 1 + kh"
    assert ix("(PW + w) * C + ch", PW=0, C=1) == "w + ch"
    assert ix("(ph1 - 1) * SH - PH + S", SH=2, PH=0, S=2) == "(ph1 - 1) * 2 + 2"
    assert ix("(cb * COB) / CO_G", cb=0, COB=16, CO_G=32) == "0"
    assert ix("x + (size_t)n * S + c * 1 + q", S=784) == "x + (size_t)n * 784 + c + q"
    assert ix("arena + A * N + B", A="0L", B="0L") == "arena"
    assert ix("n * 1024L + c * P", P=1) == "n * 1024L + c"
    assert ix("(r / OW) * SH", OW=5, SH=2) == "(r / 5) * 2"
    assert ix("a - (b - c)") == "a - b + c"
    assert ix("a / (b * c)") == "a / (b * c)" and ix("a * (b % c)") == "a * (b % c)"
    assert ix("-7 / 2") == "-7 / 2"          # C truncates, Python floors: not folded
    assert ix("sizeof(float) * R", R=1) == "sizeof(float)"


def test_ix_keeps_the_value_under_c_semantics():
    rng = random.Random(10)
    for _ in range(400):
        expr = _random_expr(rng, 4)
        env = {"x": rng.randint(-50, 50), "y": rng.randint(-50, 50), "z": rng.randint(0, 9),
               "A": rng.randint(1, 9), "B": rng.randint(1, 9)}
        sizes = {k: env[k] for k in ("A", "B") if rng.random() < 0.5}   # some sizes substituted as literals
        folded = ix(expr, **sizes)
        assert _c_eval(folded, env) == _c_eval(expr, env), (expr, sizes, folded)


# ---------------------------------------------------------------------------------------------
# every example, rendered for C and for CUDA (fp32)
def _examples() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.py") if "\ndef model(" in p.read_text())


#: the deepest literature networks spell nothing the others do not (same templates, more layers):
#: rendered with CNNCC_SLOW=1, keeping this file inside its CI time
SLOW = {"inception_v4", "resnext101_32x8d", "resnet152", "resnet101", "openpose"}


@pytest.fixture(scope="module")
def rendered_texts():
    """name -> (C source for AVX-512, CUDA source), rendered on demand and kept for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _render(name)
        return cache[name]
    return get


def _render(name: str) -> tuple[str, str]:
    from conftest import use_shape_only_weights
    from test_codegen_c import example_graph

    from cnncc import compiler
    from cnncc.codegen import c as c_render, cuda as cuda_render
    from cnncc.codegen.lower import lower_program
    from cnncc.codegen.target import CTarget

    mp = pytest.MonkeyPatch()
    try:
        use_shape_only_weights(mp)
        g = example_graph(EXAMPLES / f"{name}.py")
    finally:
        mp.undo()
    optimized = compiler._optimized(g, 2)
    c_src, _, _ = c_render.render(lower_program(optimized), CTarget("avx512", 16, 32))
    cu_src, _ = cuda_render.render(lower_program(optimized))
    return c_src, cu_src


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in _examples()])
def test_example_text_reads_like_a_person_wrote_it(name, rendered_texts):
    c_src, cu_src = rendered_texts(name)
    found = [f"C {p}" for p in problems(c_src)] + [f"CUDA {p}" for p in problems(cu_src)]
    assert not found, f"{name}: {len(found)} problems, e.g.\n" + "\n".join(found[:25])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_lenet5_c_has_no_unused_variables(rendered_texts, tmp_path):
    c_src, _ = rendered_texts("lenet5")
    src = tmp_path / "lenet5.c"
    src.write_text(c_src)
    r = subprocess.run(["gcc", "-std=gnu99", "-fopenmp", "-fsyntax-only", "-Wall", "-Wunused-variable",
                        "-Wunused-but-set-variable", "-Werror", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_vector_typedefs_once_per_file(rendered_texts):
    c_src, _ = rendered_texts("lenet5")
    assert c_src.count("typedef float cnncc_f16 ") == 1


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_lenet5_cuda_has_no_unused_variables(rendered_texts, tmp_path):
    """nvcc's front end reports every local declared and never read (warning #177)."""
    _, cu_src = rendered_texts("lenet5")
    src = tmp_path / "lenet5.cu"
    src.write_text(cu_src)
    r = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "lenet5.cubin"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr + r.stdout, r.stderr[-3000:] + r.stdout[-1000:]


def test_a_dense_layer_of_one_row_block_has_no_block_loop():
    """A dense layer too big for the gemv kind whose outputs fit one row block (<= MR): no
    `for (mb = 0; mb < 1; ...)`, its one block in an `omp single` (rendered only, no build)."""
    from cnncc import compiler
    from cnncc.codegen import c as c_render, c_conv
    from cnncc.codegen.lower import lower_program
    from cnncc.codegen.target import CTarget
    from cnncc.frontends import dsl

    x = dsl.input("x", (dsl.N, 400000))
    program = lower_program(compiler._optimized(dsl.graph(dsl.relu(dsl.dense(x, 5, name="fc")), name="rows5"), 2))
    target = CTarget("avx512", 16, 32)
    assert c_conv.plan(program.kernels[0], target).kind == "dense"
    src, _, _ = c_render.render(program, target)
    assert "the one block: all 5 rows" in src
    assert not problems(src), problems(src)[:5]

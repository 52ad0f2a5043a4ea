"""The worked examples of the CNN literature (issue 2, item 4), each as stated, plus the exactness
of the sympy formulas (floors and ceilings) on symbolic sizes."""
from __future__ import annotations

import pytest
import sympy

from cnncc import ModelError
from cnncc.frontends import dsl
from cnncc.ir import N, sym
from cnncc.shapes import (conv_out, conv_transpose_out, conv_transpose_out_literature, pool_out, resolve_padding,
                          same_padding)


def image(h, w, c, name="x"):
    """A literature H x W x C image as an NCHW DSL input with batch N."""
    return dsl.input(name, (N, c, h, w))


def hwc(t) -> tuple:
    _, c, h, w = t.shape
    return (int(h), int(w), int(c))


def test_three_layer_convnet_shapes_and_parameters():
    """39x39x3 -> conv 3x3/1, 10 -> 37x37x10 (280) -> conv 5x5/2, 20 -> 17x17x20 (5,020)
    -> conv 5x5/2, 40 -> 7x7x40 (20,040)."""
    x = image(39, 39, 3)
    a = dsl.conv2d(x, 10, 3, stride=1)
    b = dsl.conv2d(a, 20, 5, stride=2)
    c = dsl.conv2d(b, 40, 5, stride=2)
    assert [hwc(t) for t in (a, b, c)] == [(37, 37, 10), (17, 17, 20), (7, 7, 40)]
    assert [t.node.param_count() for t in (a, b, c)] == [280, 5_020, 20_040]
    assert dsl.graph(c).param_count() == 280 + 5_020 + 20_040
    assert a.shape[0] == N                       # the batch stays symbolic


def test_same_size_with_padding_two():
    """32x32x3 with ten 5x5 filters, stride 1, pad 2 -> 32x32x10."""
    assert hwc(dsl.conv2d(image(32, 32, 3), 10, 5, stride=1, padding=2)) == (32, 32, 10)


def test_nine_by_nine_pad_two_kernel_five_stride_two():
    """9x9 input, pad 2, 5x5 kernel, stride 2 -> 5x5."""
    assert conv_out(9, 5, 2, 2) == 5
    assert hwc(dsl.conv2d(image(9, 9, 1), 1, 5, stride=2, padding=2))[:2] == (5, 5)


def test_pooling_halves():
    """8x8x10 pooled 2x2/2 -> 4x4x10; 4x4 pooled 2x2/2 -> 2x2."""
    assert hwc(dsl.max_pool2d(image(8, 8, 10), 2, 2)) == (4, 4, 10)
    assert hwc(dsl.avg_pool2d(image(4, 4, 1), 2, 2))[:2] == (2, 2)
    assert pool_out(8, 2, 2) == 4 and pool_out(4, 2, 2) == 2


def test_same_padding_formula():
    """'same' padding p = (n(s-1)+f-s)/2; 5x5 input, 3x3/1 -> p = 1."""
    n, f, s = sympy.symbols("n f s", integer=True, positive=True)
    assert sympy.simplify(same_padding(n, f, s) / 2 - (n * (s - 1) + f - s) / 2) == 0
    assert same_padding(5, 3, 1) / 2 == 1
    assert resolve_padding("same", (5, 5), (3, 3), (1, 1), (1, 1)) == [(1, 1), (1, 1)]
    assert hwc(dsl.conv2d(image(5, 5, 1), 1, 3, padding="same"))[:2] == (5, 5)
    # with stride the literature's 'same' keeps the size too: 7x7, 3x3/2 -> p = (7 + 3 - 2)/2 = 4
    assert same_padding(7, 3, 2) / 2 == 4
    assert hwc(dsl.conv2d(image(7, 7, 1), 1, 3, stride=2, padding="same"))[:2] == (7, 7)


def test_valid_padding():
    """valid 4x4, 3x3/1 -> 2x2."""
    assert hwc(dsl.conv2d(image(4, 4, 1), 1, 3, padding="valid"))[:2] == (2, 2)
    assert conv_out(4, 3, 1, 0) == 2


def test_lenet5_first_layer_has_156_parameters():
    """6 filters of 5x5x1 plus 6 biases."""
    conv = dsl.conv2d(image(32, 32, 1), 6, 5)
    assert conv.node.param_count() == 156
    assert hwc(conv) == (28, 28, 6)


def test_global_average_pooling():
    """100x100x3 -> 1x1x3."""
    assert hwc(dsl.global_avg_pool(image(100, 100, 3))) == (1, 1, 3)


def test_fully_connected_from_32x32x3_to_4704_units():
    """~14.5 M weights: 3,072 inputs x 4,704 units."""
    fc = dsl.dense(dsl.flatten(image(32, 32, 3)), 4_704)
    weights = fc.node.params["weight"].size
    assert weights == 32 * 32 * 3 * 4_704 == 14_450_688
    assert round(weights / 1e6, 1) == 14.5
    assert fc.node.param_count() == weights + 4_704


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (4, 2, 1), (5, 2, 2), (3, 3, 0), (2, 2, 0), (5, 3, 1), (1, 2, 0)])
def test_transposed_conv_undoes_convolution_in_both_forms(k, s, p):
    """Literature form s(m-1) + ((n+2p-k) mod s) + k - 2p, and the output_padding form
    (m-1)s - 2p + (k-1) + output_padding + 1 with output_padding = (n+2p-k) mod s, both recover
    every input size n of the forward convolution (m = its output)."""
    for n in range(max(k - 2 * p, 1), 20):
        m = conv_out(n, k, s, p)
        a = (n + 2 * p - k) % s
        assert conv_transpose_out_literature(m, k, s, p, n) == n
        assert conv_transpose_out(m, k, s, p, output_padding=a) == n
        # the DSL layer computes the same size
        y = dsl.conv_transpose2d(image(int(m), int(m), 1), 1, k, stride=s, padding=p, output_padding=a)
        assert hwc(y)[:2] == (n, n)


def test_transposed_conv_symbolic_form():
    """Without output padding: (n-1)s - 2p + d(k-1) + 1, exactly, on a symbolic size."""
    n = sym("H")
    assert sympy.expand(conv_transpose_out(n, 4, 2, 1) - 2 * n) == 0        # the U-Net 'up-conv' doubles
    x = dsl.input("x", (N, 4, n, n))
    assert sympy.expand(dsl.conv_transpose2d(x, 2, 2, stride=2).shape[2] - 2 * n) == 0


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 2, 2, 1), (2, 2, 0, 1), (3, 3, 0, 2), (7, 2, 3, 1)])
def test_symbolic_conv_and_pool_sizes_are_exact(k, s, p, d):
    """A formula derived once on a symbol H gives, after substitution, exactly the concrete size,
    floor mode and ceil mode (where the last window must start inside the input or left padding)."""
    h = sym("H")
    conv = conv_out(h, k, s, p, p, d)
    pool_floor = pool_out(h, k, s, p, p, d, ceil_mode=False)
    pool_ceil = pool_out(h, k, s, p, p, d, ceil_mode=True)
    for n in range(d * (k - 1) + 1, 30):
        assert conv.subs(h, n) == (n + 2 * p - d * (k - 1) - 1) // s + 1
        assert pool_floor.subs(h, n) == conv.subs(h, n)
        ceil = -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1
        if (ceil - 1) * s >= n + p:
            ceil -= 1
        assert pool_ceil.subs(h, n) == ceil == pool_out(n, k, s, p, p, d, ceil_mode=True)


def test_symbolic_summary_shows_formulas():
    h, w = sym("H"), sym("W")
    y = dsl.max_pool2d(dsl.conv2d(dsl.input("x", (N, 3, h, w)), 8, 3, stride=2), 2)
    assert y.shape[2].free_symbols == {h} and y.shape[3].free_symbols == {w}
    assert all(y.shape[2].subs(h, n) == ((n - 3) // 2 + 1) // 2 for n in range(5, 60))
    assert y.shape[2].subs(h, 39) == 9


def test_same_padding_that_cannot_be_symmetric_is_an_error():
    with pytest.raises(ModelError, match="cannot be symmetric"):
        resolve_padding("same", (6, 6), (4, 4), (1, 1), (1, 1), node="c", op="conv2d")


@pytest.mark.parametrize("k,s,p", [(3, 2, 0), (3, 2, 1), (2, 2, 1), (3, 1, 1), (1, 2, 0), (2, 3, 1)])
def test_ceil_mode_pool_size_stays_exact_when_symbolic(k, s, p):
    """A symbolic ceil-mode size (cnncc summary --symbolic) must equal the concrete rule at every n."""
    import sympy

    from cnncc.ir import sym
    from cnncc.shapes import pool_out

    h = sym("H")
    expr = pool_out(h, k, s, p, p, 1, ceil_mode=True)
    for n in range(max(k - 2 * p, 1), 40):
        assert int(expr.subs(h, n)) == int(pool_out(n, k, s, p, p, 1, ceil_mode=True)), n
        torch_rule = -(-(n + 2 * p - k) // s) + 1
        if (torch_rule - 1) * s >= n + p:
            torch_rule -= 1
        assert int(pool_out(n, k, s, p, p, 1, ceil_mode=True)) == torch_rule

"""Tests of scratchnst.costs: values and hand-derived gradients vs PyTorch autograd and finite differences."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from scratchnst import costs, torch_ref
from scratchnst.gradcheck import eval_numerical_gradient_array, rel_error

SHAPES = [(1, 1, 1, 1), (1, 4, 5, 3), (1, 7, 3, 8), (1, 2, 9, 16)]
# (a_S shape, a_G shape): equal sizes (the course) and a style image of another size.
STYLE_SHAPES = [
    ((1, 4, 5, 3), (1, 4, 5, 3)),
    ((1, 7, 3, 8), (1, 7, 3, 8)),
    ((1, 6, 7, 4), (1, 3, 5, 4)),
    ((1, 2, 2, 6), (1, 5, 4, 6)),
]


def rand(rng, shape, positive=False):
    a = rng.standard_normal(shape)
    return np.abs(a) if positive else a  # activations after a ReLU are >= 0


def vector_rel_error(x, y):
    """|x - y| / (|x| + |y|) with Euclidean norms.

    For finite differences of a scalar cost: its round-off (about eps * J / h) is the same for
    every element, so the elementwise rel_error of elements near 0 says nothing; the whole
    vector's relative error does.
    """
    return float(np.linalg.norm(x - y) / max(1e-300, np.linalg.norm(x) + np.linalg.norm(y)))


def t(a, requires_grad=False):
    """A float64 torch tensor (torch_ref.to_torch keeps our dtype; these references need float64)."""
    return torch_ref.to_torch(np.asarray(a, dtype=np.float64), requires_grad)


# ------------------------------------------------------------- PyTorch references (autograd)
def torch_content_cost(a_C, a_G):
    _, n_H, n_W, n_C = a_G.shape
    return ((a_C - a_G) ** 2).sum() / (4 * n_H * n_W * n_C)


def torch_gram(a):
    """Gram matrix of (1, nH, nW, nC) activations, divided by the number of positions nH * nW."""
    _, n_H, n_W, n_C = a.shape
    A = a.reshape(n_H * n_W, n_C).T
    return A @ A.T / (n_H * n_W)


def torch_layer_style_cost(a_S, a_G):
    n_C = a_G.shape[3]
    return ((torch_gram(a_S) - torch_gram(a_G)) ** 2).sum() / (4 * n_C**2)


def torch_tv_cost(x):
    return (((x[:, 1:] - x[:, :-1]) ** 2).sum() + ((x[:, :, 1:] - x[:, :, :-1]) ** 2).sum()) / x.numel()


def torch_value_and_grad(fun, fixed, variable):
    """fun(fixed, variable) in float64 autograd -> (value, d value / d variable) as NumPy."""
    v = t(variable, requires_grad=True)
    out = fun(t(fixed), v) if fixed is not None else fun(v)
    out.backward()
    return out.item(), v.grad.numpy()


# ------------------------------------------------------------------------- course checks
def test_total_cost_course_checks():
    assert costs.total_cost(0.2, 0.8) == 34
    assert costs.total_cost(0.3, 0.5, alpha=3, beta=8) == pytest.approx(4.9)
    np.random.seed(3)  # the TF1 assignment's check uses NumPy's legacy global generator
    J_content = np.random.randn()
    J_style = np.random.randn()
    assert costs.total_cost(J_content, J_style) == pytest.approx(35.34667875478276, rel=1e-15)


def test_total_cost_gradients_are_alpha_and_beta(torch):
    J_content, J_style = t(0.7, True), t(1.3, True)
    costs.total_cost(J_content, J_style, alpha=2.5, beta=-4.0).backward()
    assert J_content.grad.item() == 2.5 and J_style.grad.item() == -4.0


# ------------------------------------------------------------------------------ content cost
@pytest.mark.parametrize("shape", SHAPES)
def test_content_cost_and_gradient_match_torch(shape, torch):
    rng = np.random.default_rng(sum(shape))
    a_C, a_G = rand(rng, shape, True), rand(rng, shape, True)
    value, grad = torch_value_and_grad(torch_content_cost, a_C, a_G)
    assert rel_error(costs.compute_content_cost(a_C, a_G), value) < 1e-14
    assert rel_error(costs.content_cost_backward(a_C, a_G), grad) < 1e-14


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_content_gradient_matches_finite_differences(shape):
    rng = np.random.default_rng(1)
    a_C, a_G = rand(rng, shape), rand(rng, shape)
    numeric = eval_numerical_gradient_array(lambda a: costs.compute_content_cost(a_C, a), a_G, 1.0)
    assert vector_rel_error(costs.content_cost_backward(a_C, a_G), numeric) < 1e-8


def test_content_cost_is_the_course_formula_and_zero_at_the_content():
    rng = np.random.default_rng(2)
    a_C = rand(rng, (1, 3, 4, 5))
    a_G = a_C + 0.5  # every term is (0.5)^2
    assert costs.compute_content_cost(a_C, a_G) == pytest.approx(0.25 * 60 / (4 * 60))
    assert costs.compute_content_cost(a_C, a_C) == 0.0
    assert not np.any(costs.content_cost_backward(a_C, a_C))


# ------------------------------------------------------------------------------ Gram matrix
@pytest.mark.parametrize("shape", SHAPES)
def test_unroll_keeps_one_channel_per_row(shape):
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    A = costs.unroll(a)
    _, n_H, n_W, n_C = shape
    assert A.shape == (n_C, n_H * n_W) and np.shares_memory(A, a)
    for c in range(n_C):
        np.testing.assert_array_equal(A[c], a[0, :, :, c].ravel())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_gram_matrix_sums_channel_products_over_positions(shape, dtype):
    rng = np.random.default_rng(3)
    a = rand(rng, shape).astype(dtype)
    G = costs.gram_matrix(costs.unroll(a))
    expected = np.einsum("hwc,hwd->cd", a[0].astype(np.float64), a[0].astype(np.float64))
    assert G.shape == (shape[3], shape[3]) and G.dtype == dtype
    np.testing.assert_allclose(G, expected, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)
    np.testing.assert_allclose(G, G.T)


# ------------------------------------------------------------------------- layer style cost
@pytest.mark.parametrize("shape_S, shape_G", STYLE_SHAPES)
def test_layer_style_cost_and_gradient_match_torch(shape_S, shape_G, torch):
    rng = np.random.default_rng(4)
    a_S, a_G = rand(rng, shape_S, True), rand(rng, shape_G, True)
    value, grad = torch_value_and_grad(torch_layer_style_cost, a_S, a_G)
    assert rel_error(costs.compute_layer_style_cost(a_S, a_G), value) < 1e-13
    assert rel_error(costs.layer_style_cost_backward(a_S, a_G), grad) < 1e-12


@pytest.mark.parametrize("shape_S, shape_G", STYLE_SHAPES)
def test_layer_style_gradient_matches_finite_differences(shape_S, shape_G):
    rng = np.random.default_rng(5)
    a_S, a_G = rand(rng, shape_S), rand(rng, shape_G)
    numeric = eval_numerical_gradient_array(lambda a: costs.compute_layer_style_cost(a_S, a), a_G, 1.0)
    assert vector_rel_error(costs.layer_style_cost_backward(a_S, a_G), numeric) < 1e-8


def test_layer_style_cost_is_the_course_formula_for_equal_sizes():
    rng = np.random.default_rng(6)
    a_S, a_G = rand(rng, (1, 4, 3, 5), True), rand(rng, (1, 4, 3, 5), True)
    n_C, M = 5, 12
    A_S, A_G = a_S[0].reshape(M, n_C).T, a_G[0].reshape(M, n_C).T
    G_S, G_G = A_S @ A_S.T, A_G @ A_G.T
    course = np.sum((G_S - G_G) ** 2) / (4 * n_C**2 * M**2)
    course_grad = ((G_G - G_S) @ A_G / (n_C**2 * M**2)).T.reshape(a_G.shape)
    assert costs.compute_layer_style_cost(a_S, a_G) == pytest.approx(course, rel=1e-13)
    np.testing.assert_allclose(costs.layer_style_cost_backward(a_S, a_G), course_grad, rtol=1e-12)
    # The classic mistake, (G_G - G_S) @ A_S, gives another answer: the check above can fail.
    wrong = ((G_G - G_S) @ A_S / (n_C**2 * M**2)).T.reshape(a_G.shape)
    assert rel_error(costs.layer_style_cost_backward(a_S, a_G), wrong) > 1e-3


def test_layer_style_cost_ignores_where_the_features_are():
    # The Gram matrix forgets positions: shuffling the positions of a_S leaves the cost at 0.
    rng = np.random.default_rng(7)
    a_S = rand(rng, (1, 4, 6, 3), True)
    a_G = a_S.reshape(1, 24, 1, 3)[:, rng.permutation(24)].reshape(1, 6, 4, 3)
    assert costs.compute_layer_style_cost(a_S, a_G) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(costs.layer_style_cost_backward(a_S, a_G), 0.0, atol=1e-15)


def test_the_gradient_from_a_target_that_is_not_symmetric_is_still_the_costs():
    """style_target's targets are symmetric; any (nC, nC) target a caller gives must still get the
    gradient of the cost returned with it (finite differences, float64)."""
    rng = np.random.default_rng(15)
    a_G = rng.standard_normal((1, 3, 4, 2))
    target = np.array([[1.0, 2.0], [0.0, 1.0]])
    J, da_G = costs.layer_style_cost_from_target(target, a_G)
    numeric = np.zeros_like(a_G)
    for i in np.ndindex(a_G.shape):
        step = np.zeros_like(a_G)
        step[i] = 1e-5
        numeric[i] = (costs.layer_style_cost_from_target(target, a_G + step)[0]
                      - costs.layer_style_cost_from_target(target, a_G - step)[0]) / 2e-5
    assert rel_error(da_G, numeric) < 1e-6   # the gradient without the symmetric part: 1.3
    # and with the symmetric part of the target, the same gradient (the cost differs by a constant)
    _, da_sym = costs.layer_style_cost_from_target((target + target.T) / 2, a_G)
    np.testing.assert_allclose(da_sym, da_G, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape_S, shape_G", STYLE_SHAPES)
def test_fast_layer_style_cost_from_a_target_equals_the_course_functions(shape_S, shape_G, dtype):
    rng = np.random.default_rng(14)
    a_S, a_G = rand(rng, shape_S, True).astype(dtype), rand(rng, shape_G, True).astype(dtype)
    target = costs.style_target(a_S)
    assert target.dtype == np.float64 and target.shape == (shape_G[3],) * 2
    J, da_G = costs.layer_style_cost_from_target(target, a_G)
    # float32 activations: the products over positions run in float32 (as the network that made
    # them), so J and the gradient keep float32's ~1e-7 relative rounding of the Gram entries,
    # amplified where G - target cancels (here, random activations, by a few times at most).
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert J == pytest.approx(costs.compute_layer_style_cost(a_S, a_G), rel=rtol)
    assert da_G.dtype == dtype and da_G.shape == a_G.shape
    expected = costs.layer_style_cost_backward(a_S, a_G)
    np.testing.assert_allclose(da_G, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    with pytest.raises(ValueError, match="target must be"):
        costs.layer_style_cost_from_target(np.zeros((2, 2)), a_G)


# ------------------------------------------------------------------------------- style cost
def test_style_cost_is_the_weighted_sum_over_layers_and_matches_torch(torch):
    rng = np.random.default_rng(8)
    layers = [("conv1", 0.5), ("conv2", 0.3), ("fire3", 0.2)]
    channels = {"conv1": 3, "conv2": 5, "fire3": 4}
    a_S = {n: rand(rng, (1, 6, 5, c), True) for n, c in channels.items()}
    a_G = {n: rand(rng, (1, 4, 4, c), True) for n, c in channels.items()}
    a_G_t = {n: t(a, True) for n, a in a_G.items()}
    J = sum(w * torch_layer_style_cost(t(a_S[n]), a_G_t[n]) for n, w in layers)
    J.backward()
    assert rel_error(costs.compute_style_cost(a_S, a_G, layers), J.item()) < 1e-13
    grads = costs.style_cost_backward(a_S, a_G, layers)
    assert set(grads) == set(channels)
    for name in channels:
        assert rel_error(grads[name], a_G_t[name].grad.numpy()) < 1e-12


def test_style_cost_counts_a_repeated_layer_twice():
    rng = np.random.default_rng(9)
    a_S, a_G = {"l": rand(rng, (1, 3, 3, 2))}, {"l": rand(rng, (1, 3, 3, 2))}
    once = costs.style_cost_backward(a_S, a_G, [("l", 1.0)])["l"]
    twice = costs.style_cost_backward(a_S, a_G, [("l", 0.25), ("l", 0.75)])["l"]
    np.testing.assert_allclose(twice, once, rtol=1e-14)
    assert costs.compute_style_cost(a_S, a_G, [("l", 0.25), ("l", 0.75)]) == pytest.approx(
        costs.compute_style_cost(a_S, a_G, [("l", 1.0)]), rel=1e-14
    )


def test_course_style_layers_are_five_vgg_layers_of_weight_one_fifth():
    assert [n for n, _ in costs.COURSE_STYLE_LAYERS] == [f"block{i}_conv1" for i in range(1, 6)]
    assert all(w == 0.2 for _, w in costs.COURSE_STYLE_LAYERS)


# ------------------------------------------------------------------- total variation cost
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 2, 3, 3), (1, 6, 5, 3), (2, 4, 7, 1)])
def test_total_variation_cost_and_gradient_match_torch(shape, torch):
    rng = np.random.default_rng(10)
    x = 100 * rand(rng, shape)
    value, grad = torch_value_and_grad(torch_tv_cost, None, x)
    assert rel_error(costs.compute_total_variation_cost(x), value) < 1e-13 or value == 0
    assert rel_error(costs.total_variation_cost_backward(x), grad) < 1e-13


def test_total_variation_gradient_matches_finite_differences():
    x = np.random.default_rng(11).standard_normal((1, 4, 5, 3))
    numeric = eval_numerical_gradient_array(costs.compute_total_variation_cost, x, 1.0)
    assert vector_rel_error(costs.total_variation_cost_backward(x), numeric) < 1e-8


def test_total_variation_cost_is_zero_on_a_flat_image():
    x = np.full((1, 5, 4, 3), 7.0)
    assert costs.compute_total_variation_cost(x) == 0.0
    assert not np.any(costs.total_variation_cost_backward(x))


# --------------------------------------------------------------------- precision and purity
def _float32_cases(rng):
    a, b = rand(rng, (1, 9, 11, 6), True), rand(rng, (1, 9, 11, 6), True)
    s = rand(rng, (1, 5, 7, 6), True)
    return [
        (costs.compute_content_cost, costs.content_cost_backward, (a, b)),
        (costs.compute_layer_style_cost, costs.layer_style_cost_backward, (s, b)),
        (costs.compute_total_variation_cost, costs.total_variation_cost_backward, (100 * b,)),
    ]


@pytest.mark.parametrize("case", range(3))
def test_float32_activations_are_summed_in_float64(case):
    cost, backward, args = _float32_cases(np.random.default_rng(12))[case]
    args32 = tuple(a.astype(np.float32) for a in args)
    # float64 sums of the float32 values: exactly the cost of the same values held as float64.
    assert cost(*args32) == cost(*(a.astype(np.float64) for a in args32))
    grad32 = backward(*args32)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(grad32, backward(*(a.astype(np.float64) for a in args32)), rtol=2e-6, atol=1e-9)


def test_no_cost_writes_into_its_inputs():
    rng = np.random.default_rng(13)
    a_C, a_G, a_S = rand(rng, (1, 3, 4, 2)), rand(rng, (1, 3, 4, 2)), rand(rng, (1, 5, 4, 2))
    copies = [a.copy() for a in (a_C, a_G, a_S)]
    costs.compute_content_cost(a_C, a_G)
    costs.content_cost_backward(a_C, a_G)
    costs.compute_layer_style_cost(a_S, a_G)
    costs.layer_style_cost_backward(a_S, a_G)
    costs.compute_total_variation_cost(a_G)
    costs.total_variation_cost_backward(a_G)
    for a, c in zip((a_C, a_G, a_S), copies):
        np.testing.assert_array_equal(a, c)


def test_costs_reject_mismatched_shapes():
    a = np.zeros((1, 3, 4, 2))
    with pytest.raises(ValueError, match="same shape"):
        costs.compute_content_cost(a, np.zeros((1, 3, 4, 3)))
    with pytest.raises(ValueError, match="1, nH, nW, nC"):
        costs.content_cost_backward(np.zeros((2, 3, 4, 2)), np.zeros((2, 3, 4, 2)))
    with pytest.raises(ValueError, match="channels"):
        costs.compute_layer_style_cost(a, np.zeros((1, 3, 4, 5)))
    with pytest.raises(ValueError, match="1, nH, nW, nC"):
        costs.layer_style_cost_backward(np.zeros((3, 4, 2)), a)
    # no values: every cost would be 0 / 0 (NaN and a RuntimeWarning)
    for empty in ((1, 0, 4, 2), (1, 3, 4, 0)):
        with pytest.raises(ValueError, match=r"a_G has no values \(shape"):
            costs.compute_content_cost(np.zeros(empty), np.zeros(empty))
        with pytest.raises(ValueError, match="has no values"):
            costs.compute_layer_style_cost(np.zeros(empty), np.zeros(empty))
        with pytest.raises(ValueError, match="has no values"):
            costs.layer_style_cost_from_target(np.zeros((empty[3],) * 2), np.zeros(empty))


@pytest.mark.parametrize("function", [costs.compute_style_cost, costs.style_cost_backward])
def test_style_cost_names_a_wrong_argument_in_one_line(function):
    """The course's TF2 code passes lists of model outputs; a missing layer or a list of names was a bare
    KeyError, TypeError or unpacking error from inside the loop."""
    a = np.ones((1, 4, 4, 3))
    layers_ = (("block1_conv1", 0.5), ("block2_conv1", 0.5))
    with pytest.raises(TypeError, match=f"^{function.__name__}: a_S is a list; give a dict"):
        function([a, a], {"block1_conv1": a, "block2_conv1": a}, layers_)
    with pytest.raises(ValueError, match=f"^{function.__name__}: a_G has no activations of 'block2_conv1' "
                                         r"\(it has 'block1_conv1'\)$"):
        function({"block1_conv1": a, "block2_conv1": a}, {"block1_conv1": a}, layers_)
    with pytest.raises(TypeError, match=f"^{function.__name__}: style_layers holds 'block1_conv1'; give "
                                        r"\(layer name, weight\) pairs"):
        function({"block1_conv1": a}, {"block1_conv1": a}, ["block1_conv1"])
    # any mapping will do, and the right arguments still give the course's numbers
    from types import MappingProxyType
    given = MappingProxyType({"block1_conv1": a, "block2_conv1": 2 * a})
    function(given, given, layers_)


# ------------------------------------------------------------------ the exercise markers
MARKED = {
    "costs.py": ["compute_content_cost", "content_cost_backward", "gram_matrix", "gram_matrix_backward",
                 "compute_layer_style_cost", "layer_style_cost_backward", "style_target",
                 "layer_style_cost_from_target", "total_cost", "compute_total_variation_cost",
                 "total_variation_cost_backward"],
    "optim.py": ["adam_update"],
}


def strip_solutions(source):
    """What the exercise tool makes of a module: each marked body becomes raise NotImplementedError(hint)."""
    pattern = re.compile(
        r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\n(?P=indent)# HINT: (?P<hint>[^\n]+)\n.*?^(?P=indent)# END SOLUTION\n",
        re.MULTILINE | re.DOTALL,
    )
    return pattern.subn(lambda m: f"{m['indent']}raise NotImplementedError({m['hint']!r})\n", source)


@pytest.mark.parametrize("filename", sorted(MARKED))
def test_solution_markers_leave_a_module_that_raises_the_hints(filename):
    source = (Path(costs.__file__).parent / filename).read_text()
    assert source.count("# BEGIN SOLUTION") == source.count("# END SOLUTION") == len(MARKED[filename])
    stripped, n = strip_solutions(source)
    assert n == len(MARKED[filename]), "every BEGIN SOLUTION needs a # HINT line right after it"
    namespace = {}
    exec(compile(ast.parse(stripped), filename, "exec"), namespace)  # still valid Python
    a = np.ones((1, 2, 2, 1))
    sample_args = {
        "gram_matrix": (np.ones((1, 4)),),
        "style_target": (a,),
        "layer_style_cost_from_target": (np.ones((1, 1)), a),
        "total_cost": (1.0, 2.0),
        "gram_matrix_backward": (np.ones((1, 4)), np.ones((1, 1))),
        "compute_total_variation_cost": (a,),
        "total_variation_cost_backward": (a,),
        "adam_update": (np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), 1),
    }
    for name in MARKED[filename]:
        with pytest.raises(NotImplementedError, match=r"\w"):
            namespace[name](*sample_args.get(name, (a, a)))

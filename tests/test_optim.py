"""Tests of scratchnst.optim: Adam and L-BFGS against PyTorch's and SciPy's, with and without bounds."""

import math

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der

from scratchnst import cli, optim


# ------------------------------------------------------------------------------- problems
def rosenbrock(x):
    """Rosenbrock's banana in n dimensions: f = sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, min at 1."""
    return rosen(x), rosen_der(x)


def rosenbrock_torch(x):
    """The same in PyTorch, for a tensor x."""
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def rosenbrock_start(n):
    return np.tile([-1.2, 1.0], n // 2)


def random_quadratic(n, condition, seed):
    """f = 1/2 x^T A x - b^T x with A symmetric positive definite of the given condition number."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, condition, n)) @ Q.T
    A = (A + A.T) / 2
    b = rng.standard_normal(n)

    def fun_and_grad(x):
        Ax = A @ x
        return 0.5 * x @ Ax - b @ x, Ax - b

    return A, b, fun_and_grad


def recording(fun):
    """fun wrapped so that every cost it returns is appended to the list returned beside it."""
    seen = []

    def wrapped(x):
        out = fun(x)
        seen.append(float(out[0]))
        return out

    return wrapped, seen


def evaluations_to_reach(costs, target):
    """How many evaluations an optimiser made up to the first whose cost is at or below target."""
    return next((i + 1 for i, f in enumerate(costs) if f <= target), float("inf"))


# Work compared with another L-BFGS: evaluations until the cost gap to the minimum has fallen by
# 1e-8 (a gap still eight orders above the round-off of f). Up to there the iterates are a smooth
# function of the inputs: a CPU's other kernel (or thread count) changes them in the last bits,
# and the counts by an evaluation or two at most (seen across OpenBLAS kernels Haswell, SkylakeX,
# Zen, Prescott: ours and SciPy's within 2 of each other, every seed). The total count to gtol is
# not compared: its last iterations are spent in the round-off of f, where the line searches stop on
# noise, and it moved by 30% between kernels. The margin, 25% plus 3, covers a different line search
# in another library; a broken L-BFGS (a wrong two-loop recursion, steepest descent) takes many times
# more on these problems.
WORK_MARGIN = 1.25
WORK_SLACK = 3


def box_kkt_residual(g, x, lo, hi):
    """Largest violation of the box KKT conditions: g = 0 inside, g >= 0 at lo, g <= 0 at hi."""
    at_lo = np.isclose(x, lo, rtol=0, atol=1e-9)
    at_hi = np.isclose(x, hi, rtol=0, atol=1e-9)
    r = np.where(at_lo, np.minimum(g, 0), np.where(at_hi, np.maximum(g, 0), g))
    return float(np.max(np.abs(r)))


# ------------------------------------------------------------------------------------ Adam
# Two Adam paths of 100+ steps that differ only in round-off: Adam divides m by sqrt(v), so a
# coordinate whose gradient passes through zero carries the last bits of its sum (which another
# CPU's BLAS kernel rounds differently: 2e-12 seen under OpenBLAS's Zen kernel) into the next
# step. 1e-9 is still seven orders below the smallest step (lr = 1e-3), so a slip in the update
# (bias correction, epsilon inside the root, beta swapped) is far outside it.
ADAM_PATH_ATOL = 1e-9

def torch_adam_path(torch, fun_torch, x0, iters, lr, bounds=None, **kwargs):
    """Iterates of torch.optim.Adam (clamping after each step when bounds are given)."""
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr, **kwargs)
    path = []
    for _ in range(iters):
        opt.zero_grad()
        fun_torch(x).backward()
        opt.step()
        if bounds is not None:
            with torch.no_grad():
                x.clamp_(*bounds)
        path.append(x.detach().numpy().copy())
    return np.array(path)


@pytest.mark.parametrize("lr", [1e-3, 0.01, 0.1])
@pytest.mark.parametrize("n", [2, 6])
def test_adam_follows_torch_adam_on_rosenbrock(n, lr, torch):
    x0 = rosenbrock_start(n)
    path = []
    optim.adam(rosenbrock, x0, 150, lr=lr, callback=lambda it: path.append(it.x.copy()) if it.iteration else None)
    expected = torch_adam_path(torch, rosenbrock_torch, x0, 150, lr)
    # Same formula, operations grouped a little differently: only round-off separates the paths.
    np.testing.assert_allclose(np.array(path), expected, rtol=1e-9, atol=ADAM_PATH_ATOL)


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_with_bounds_follows_torch_adam_with_clamp(betas, torch):
    A, b, fun_and_grad = random_quadratic(8, 50.0, seed=1)
    bounds = (-0.3, 0.4)
    x0 = np.random.default_rng(2).uniform(-0.3, 0.4, 8)
    path = []
    optim.adam(
        fun_and_grad, x0, 100, lr=0.05, beta1=betas[0], beta2=betas[1], bounds=bounds,
        callback=lambda it: path.append(it.x.copy()) if it.iteration else None,
    )
    At, bt = torch.tensor(A), torch.tensor(b)
    expected = torch_adam_path(torch, lambda x: 0.5 * x @ At @ x - bt @ x, x0, 100, 0.05, bounds, betas=betas)
    np.testing.assert_allclose(np.array(path), expected, rtol=1e-9, atol=ADAM_PATH_ATOL)
    assert np.all((np.array(path) >= -0.3) & (np.array(path) <= 0.4))
    assert np.any(np.isclose(np.array(path), 0.4)) or np.any(np.isclose(np.array(path), -0.3)), "bounds never active"


def test_adam_update_is_pure_and_matches_formula():
    rng = np.random.default_rng(0)
    x, dx, m, v = (rng.standard_normal(5) for _ in range(4))
    v = np.abs(v)
    before = [a.copy() for a in (x, dx, m, v)]
    x_new, m_new, v_new = optim.adam_update(x, dx, m, v, t=3, lr=0.1, beta1=0.8, beta2=0.99, epsilon=1e-6)
    for a, b in zip((x, dx, m, v), before):
        np.testing.assert_array_equal(a, b)
    m_expected = 0.8 * m + 0.2 * dx
    v_expected = 0.99 * v + 0.01 * dx**2
    x_expected = x - 0.1 * (m_expected / (1 - 0.8**3)) / (np.sqrt(v_expected / (1 - 0.99**3)) + 1e-6)
    np.testing.assert_allclose(m_new, m_expected, rtol=1e-15)
    np.testing.assert_allclose(v_new, v_expected, rtol=1e-15)
    np.testing.assert_allclose(x_new, x_expected, rtol=1e-14)


# ------------------------------------------------------------------------ L-BFGS pieces
def explicit_lbfgs_matrix(pairs, n):
    """H from H0 = gamma I and the BFGS inverse update, one pair at a time, as dense matrices."""
    s, y, _ = pairs[-1]
    H = (s @ y) / (y @ y) * np.eye(n)
    for s, y, rho in pairs:
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("m", [1, 3, 7])
def test_two_loop_recursion_equals_the_dense_bfgs_update(m):
    rng = np.random.default_rng(m)
    n = 9
    A, _, _ = random_quadratic(n, 20.0, seed=m)
    pairs = []
    for _ in range(m):
        s = rng.standard_normal(n)
        y = A @ s  # exact curvature pairs of a convex quadratic: s.y > 0
        pairs.append((s, y, 1.0 / (s @ y)))
    H = explicit_lbfgs_matrix(pairs, n)
    for _ in range(3):
        g = rng.standard_normal(n)
        g_before = g.copy()
        np.testing.assert_allclose(optim.lbfgs_direction(g, pairs), H @ g, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(g, g_before)
    # The secant equation holds for the newest pair: H y = s.
    s, y, _ = pairs[-1]
    np.testing.assert_allclose(optim.lbfgs_direction(y, pairs), s, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh((H + H.T) / 2) > 0)


def test_two_loop_without_pairs_is_the_identity():
    g = np.arange(4.0)
    np.testing.assert_array_equal(optim.lbfgs_direction(g, []), g)


# 1-D test functions of More & Thuente (1994), "Line search algorithms with guaranteed sufficient
# decrease", and a plain quadratic: phi(alpha) and phi'(alpha).
LINE_FUNCTIONS = {
    "quadratic": (lambda a: (a - 3.0) ** 2, lambda a: 2 * (a - 3.0)),
    "more_thuente_1": (lambda a: -a / (a * a + 2), lambda a: (a * a - 2) / (a * a + 2) ** 2),
    "more_thuente_2": (
        lambda a: (a + 0.004) ** 5 - 2 * (a + 0.004) ** 4,
        lambda a: 5 * (a + 0.004) ** 4 - 8 * (a + 0.004) ** 3,
    ),
    "more_thuente_3": (
        lambda a: _mt3_base(a)[0] + 2 * 0.99 / (39 * np.pi) * np.sin(39 * np.pi / 2 * a),
        lambda a: _mt3_base(a)[1] + 0.99 * np.cos(39 * np.pi / 2 * a),
    ),
}


def _mt3_base(a, beta=0.01):
    """More & Thuente's function 3 without its wiggles: a V with a rounded tip at 1; (value, slope)."""
    if a <= 1 - beta:
        return 1 - a, -1.0
    if a >= 1 + beta:
        return a - 1, 1.0
    return (a - 1) ** 2 / (2 * beta) + beta / 2, (a - 1) / beta


@pytest.mark.parametrize("alpha1", [1e-3, 0.1, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("c2", [0.1, 0.9])
@pytest.mark.parametrize("name", sorted(LINE_FUNCTIONS))
def test_line_search_satisfies_the_strong_wolfe_conditions(name, c2, alpha1):
    f, df = LINE_FUNCTIONS[name]
    calls = []

    def phi(alpha):
        calls.append(alpha)
        return f(alpha), df(alpha), ("payload", alpha)

    c1 = 1e-4
    f0, dphi0 = f(0.0), df(0.0)
    alpha, f_alpha, df_alpha, payload, ok = optim.strong_wolfe_line_search(phi, f0, dphi0, alpha1, c1, c2, max_evals=40)
    assert ok
    assert alpha > 0 and payload == ("payload", alpha)
    assert f_alpha == f(alpha) and df_alpha == df(alpha)
    assert f_alpha <= f0 + c1 * alpha * dphi0, "sufficient decrease"
    assert abs(df_alpha) <= c2 * abs(dphi0), "curvature"
    assert len(calls) <= 40


def test_line_search_rejects_an_ascent_direction():
    with pytest.raises(ValueError, match="descent"):
        optim.strong_wolfe_line_search(lambda a: (a, 1.0, None), 0.0, 1.0, 1.0)


def test_line_search_reports_failure_when_the_cost_never_drops():
    # phi rises at once although its slope at 0 claims it falls (an inconsistent gradient).
    result = optim.strong_wolfe_line_search(lambda a: (1.0 + a, 1.0, None), 1.0, -1.0, 1.0, max_evals=10)
    assert result[0] == 0.0 and result[3] is None and result[4] is False


# ------------------------------------------------------------------------------ L-BFGS runs
@pytest.mark.parametrize("n", [2, 6, 20])
def test_lbfgs_solves_rosenbrock_like_scipy_and_torch(n, torch):
    x0 = rosenbrock_start(n)
    ours_fun, ours_costs = recording(rosenbrock)
    ours = optim.lbfgs(ours_fun, x0, 500)
    theirs_fun, theirs_costs = recording(rosenbrock)
    theirs = scipy_minimize(
        theirs_fun, x0, jac=True, method="L-BFGS-B", options=dict(maxiter=500, maxcor=10, gtol=1e-10, ftol=0)
    )
    xt = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.LBFGS(
        [xt], lr=1, max_iter=500, max_eval=10_000, history_size=10,
        tolerance_grad=1e-10, tolerance_change=0, line_search_fn="strong_wolfe",
    )
    torch_costs = []

    def closure():
        opt.zero_grad()
        loss = rosenbrock_torch(xt)
        loss.backward()
        torch_costs.append(loss.item())
        return loss

    opt.step(closure)
    assert ours.message.startswith("converged")
    np.testing.assert_allclose(ours.x, np.ones(n), atol=1e-8)
    np.testing.assert_allclose(ours.x, theirs.x, atol=1e-8)
    np.testing.assert_allclose(ours.x, xt.detach().numpy(), atol=1e-8)
    # Same algorithm family (two-loop L-BFGS, m = 10, Wolfe line search): about the same work to
    # bring the cost from about 12 n down to 1e-10 (the minimum is 0; see WORK_MARGIN).
    target = 1e-10
    ours_work = evaluations_to_reach(ours_costs, target)
    best_other = min(evaluations_to_reach(theirs_costs, target), evaluations_to_reach(torch_costs, target))
    assert ours_work <= WORK_MARGIN * best_other + WORK_SLACK, (ours_work, best_other)
    assert all(b <= a for a, b in zip(ours.history, ours.history[1:])), "the cost must never rise"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lbfgs_solves_a_convex_quadratic(seed):
    A, b, fun_and_grad = random_quadratic(40, 1e3, seed)
    x0 = np.zeros(40)
    ours_fun, ours_costs = recording(fun_and_grad)
    ours = optim.lbfgs(ours_fun, x0, 300, gtol=1e-9)
    theirs_fun, theirs_costs = recording(fun_and_grad)
    theirs = scipy_minimize(
        theirs_fun, x0, jac=True, method="L-BFGS-B", options=dict(maxiter=300, maxcor=10, gtol=1e-9, ftol=0)
    )
    x_star = np.linalg.solve(A, b)
    f_star = fun_and_grad(x_star)[0]
    # Near the minimum f changes by less than its round-off (eps |f|) once |x - x*| is about
    # sqrt(eps |f| / lambda_min) ~ 1e-7: the accuracy any optimiser that watches f can reach.
    np.testing.assert_allclose(ours.x, x_star, atol=1e-6)
    np.testing.assert_allclose(ours.fun, theirs.fun, rtol=1e-12)
    assert all(b <= a for a, b in zip(ours.history, ours.history[1:])), "the cost must never rise"
    target = f_star + 1e-8 * (fun_and_grad(x0)[0] - f_star)
    ours_work, theirs_work = evaluations_to_reach(ours_costs, target), evaluations_to_reach(theirs_costs, target)
    assert ours_work <= WORK_MARGIN * theirs_work + WORK_SLACK, (ours_work, theirs_work)
    np.testing.assert_array_equal(x0, np.zeros(40))


def test_lbfgs_with_float32_memory_solves_the_quadratic_as_well():
    """Style transfer keeps the curvature pairs in float32 (points and costs in float64): the
    minimiser is the same, and the pairs are float32 in the saved state."""
    A, b, fun_and_grad = random_quadratic(40, 1e3, 3)
    seen = []
    ours = optim.lbfgs(fun_and_grad, np.zeros(40), 300, gtol=1e-9, memory_dtype=np.float32,
                       callback=lambda it: seen.append(it))
    np.testing.assert_allclose(ours.x, np.linalg.solve(A, b), atol=1e-5)
    assert ours.x.dtype == np.float64
    state = seen[-1].state()
    assert state["pair_s"].dtype == state["pair_y"].dtype == np.float32 and len(state["pair_s"]) == 10


def test_work_comparison_tells_lbfgs_from_steepest_descent():
    """The margin above is no formality: L-BFGS without its curvature pairs (steepest descent with
    the same line search) fails it by far on the quadratic."""
    A, b, fun_and_grad = random_quadratic(40, 1e3, 0)
    x0 = np.zeros(40)
    f_star = fun_and_grad(np.linalg.solve(A, b))[0]
    target = f_star + 1e-8 * (fun_and_grad(x0)[0] - f_star)
    lbfgs_fun, lbfgs_costs = recording(fun_and_grad)
    optim.lbfgs(lbfgs_fun, x0, 300, gtol=1e-9)
    sd_fun, sd_costs = recording(fun_and_grad)
    x = x0.copy()
    f, g = sd_fun(x)
    while len(sd_costs) < 10 * len(lbfgs_costs) and f > target:
        def phi(a, x=x, d=-g):
            f_a, g_a = sd_fun(x + a * d)
            return f_a, g_a @ d, g_a

        alpha, f, _, g_new, ok = optim.strong_wolfe_line_search(phi, f, -(g @ g), 1.0 / np.linalg.norm(g))
        assert ok
        x, g = x - alpha * g, g_new
    costs = sd_costs
    assert evaluations_to_reach(costs, target) > 3 * (WORK_MARGIN * evaluations_to_reach(lbfgs_costs, target) + WORK_SLACK)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lbfgs_with_bounds_matches_scipy_lbfgsb_on_a_convex_quadratic(seed):
    n = 30
    A, b, fun_and_grad = random_quadratic(n, 100.0, seed)
    b = 3 * b  # push the unconstrained minimum out of the box so that bounds matter
    fun_and_grad = lambda x, A=A, b=b: (0.5 * x @ A @ x - b @ x, A @ x - b)  # noqa: E731
    lo = np.full(n, -1.0)
    hi = np.linspace(0.5, 1.5, n)
    x0 = np.random.default_rng(seed).uniform(-3, 3, n)  # partly outside: projected first
    seen = []
    ours = optim.lbfgs(fun_and_grad, x0, 500, bounds=(lo, hi), gtol=1e-10, callback=lambda it: seen.append(it.x))
    theirs = scipy_minimize(
        fun_and_grad, np.clip(x0, lo, hi), jac=True, method="L-BFGS-B",
        bounds=list(zip(lo, hi)), options=dict(maxiter=500, gtol=1e-10, ftol=0),
    )
    active = np.isclose(theirs.x, lo) | np.isclose(theirs.x, hi)
    assert 0 < active.sum() < n, "the test needs some bounds active and some not"
    np.testing.assert_allclose(ours.x, theirs.x, atol=1e-7)
    assert box_kkt_residual(A @ ours.x - b, ours.x, lo, hi) < 1e-6
    assert all(np.all((x >= lo) & (x <= hi)) for x in seen)


def test_lbfgs_with_bounds_matches_scipy_lbfgsb_on_rosenbrock():
    x0 = rosenbrock_start(10)
    ours = optim.lbfgs(rosenbrock, x0, 500, bounds=(-2.0, 0.5))
    theirs = scipy_minimize(
        rosenbrock, x0, jac=True, method="L-BFGS-B", bounds=[(-2.0, 0.5)] * 10, options=dict(maxiter=500, gtol=1e-10)
    )
    assert ours.x[0] == 0.5, "the first coordinate ends on its upper bound"
    np.testing.assert_allclose(ours.fun, theirs.fun, rtol=1e-9)
    np.testing.assert_allclose(ours.x, theirs.x, atol=1e-6)
    assert box_kkt_residual(rosen_der(ours.x), ours.x, -2.0, 0.5) < 1e-6


@pytest.mark.parametrize(
    "fun, start, expected",
    [
        # Linear: the gradient never changes, y = 0, s.y = 0; the minimum is the upper corner.
        (lambda x: (-np.sum(x), -np.ones_like(x)), 0.5, 2.0),
        # Concave: s.y = -|s|^2 < 0 along every step; from -0.2 it slides down to the lower corner.
        (lambda x: (-0.5 * x @ x, -x), -0.2, -1.0),
    ],
    ids=["linear", "concave"],
)
def test_lbfgs_skips_pairs_without_positive_curvature(fun, start, expected):
    result = optim.lbfgs(fun, np.full(5, start), 20, bounds=(-1.0, np.full(5, 2.0)))
    np.testing.assert_array_equal(result.x, np.full(5, expected))
    assert result.skipped_pairs >= 1
    assert result.message.startswith("converged")


def test_lbfgs_callback_sees_every_accepted_point_with_its_aux():
    seen = []

    def fun(x):
        f, g = rosenbrock(x)
        return f, g, {"x0": float(x[0])}

    result = optim.lbfgs(fun, rosenbrock_start(4), 15, callback=seen.append)
    assert [it.iteration for it in seen] == list(range(16))
    assert [it.f for it in seen] == result.history
    assert seen[0].n_evals == 1 and np.array_equal(seen[0].x, rosenbrock_start(4))
    assert all(it.aux == {"x0": float(it.x[0])} for it in seen)
    assert result.aux == seen[-1].aux and result.iterations == 15
    assert seen[-1].n_evals == result.n_evals


@pytest.mark.parametrize("method", optim.METHODS)
def test_minimize_keeps_x0_and_its_dtype(method):
    x0 = rosenbrock_start(4)
    before = x0.copy()
    result = optim.minimize(rosenbrock, x0, method, 5)
    np.testing.assert_array_equal(x0, before)
    assert result.x.dtype == x0.dtype and result.x.shape == x0.shape
    assert len(result.history) == 6 and result.history[-1] < result.history[0]


def test_minimize_rejects_bad_arguments():
    x0 = rosenbrock_start(2)
    with pytest.raises(ValueError, match="learning rate"):
        optim.minimize(rosenbrock, x0, "lbfgs", 5, lr=0.1)
    with pytest.raises(ValueError, match="unknown method"):
        optim.minimize(rosenbrock, x0, "sgd", 5)
    with pytest.raises(ValueError, match="flat"):
        optim.minimize(rosenbrock, x0.reshape(1, 2), "adam", 5)
    with pytest.raises(ValueError, match="lower bound"):
        optim.minimize(rosenbrock, x0, "adam", 5, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="gradient"):
        optim.minimize(lambda x: (0.0, np.zeros(3)), x0, "lbfgs", 5)


# ------------------------------------------------------- huge costs: overflow is handled, never warned
# A cost weight of 1e20 (stylize --tv-weight 1e20) gives costs and gradients that are finite but
# whose products overflow: the float32 norm of the first direction crashed the line search with
# ZeroDivisionError, and NumPy's warnings reached the user's terminal. Every test here turns
# RuntimeWarning into an error.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(
    "a, fa, ga, b, fb, gb",
    [
        (1.0, 2.0, -1.0, 1.0, 2.0, -1.0),  # equal points: no interval (Python floats: 0/0 raised)
        (0.0, 0.0, -1.0, 0.0, -1.0, -2.0),  # equal points, values that disagree
        (0.0, 1.0, -2.0, 1.0, -1.0, -2.0),  # a straight line: zero curvature, the formula is 0/0
        (0.0, math.inf, -1.0, 1.0, 0.0, 1.0),  # an overflowed cost
        (0.0, 0.0, -1.0, 1.0, math.nan, math.nan),  # a NaN cost and slope
        (0.0, 0.0, -math.inf, 1.0, 0.0, 1.0),  # an overflowed slope
        (0.0, 0.0, -1.0, math.inf, 0.0, 1.0),  # a point at infinity
        (0.0, 1e300, -1e308, 1e-300, -1e300, 1e308),  # finite data whose formula overflows
    ],
)
def test_cubic_minimizer_returns_none_or_a_finite_step_for_degenerate_data(a, fa, ga, b, fb, gb):
    alpha = optim._cubic_minimizer(a, fa, ga, b, fb, gb)
    assert alpha is None or (isinstance(alpha, float) and math.isfinite(alpha))
    if a == b or not all(map(math.isfinite, (a, fa, ga, b, fb, gb))):
        assert alpha is None


def test_cubic_minimizer_is_exact_on_a_cubic_and_a_quadratic():
    # f = (x - 3)^2 through 0 and 5, f = x^3 - 3x (minimum at 1) through 0 and 2, either way round.
    assert optim._cubic_minimizer(0.0, 9.0, -6.0, 5.0, 4.0, 4.0) == pytest.approx(3.0, rel=1e-15)
    assert optim._cubic_minimizer(0.0, 0.0, -3.0, 2.0, 2.0, 9.0) == pytest.approx(1.0, rel=1e-15)
    assert optim._cubic_minimizer(2.0, 2.0, 9.0, 0.0, 0.0, -3.0) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_line_search_refuses_a_first_step_that_is_not_finite_and_positive(bad):
    # alpha1 = 0 is what 1 / ||d|| became when ||d||^2 overflowed: the search then stood still at 0
    # and divided by the zero width of its interval.
    with pytest.raises(ValueError, match="first trial step"):
        optim.strong_wolfe_line_search(lambda a: ((a - 1) ** 2, 2 * (a - 1), None), 1.0, -2.0, bad)
    with pytest.raises(ValueError, match="descent"):
        optim.strong_wolfe_line_search(lambda a: (0.0, 0.0, None), 1.0, -math.inf, 1.0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("scale", [1.0, 1e40, 1e150])
def test_line_search_on_huge_costs_and_slopes(scale):
    """phi = scale (a - 3)^2: the same steps at every scale (the conditions are homogeneous in phi)."""
    def phi(a):
        return scale * (a - 3.0) ** 2, scale * 2 * (a - 3.0), a

    alpha, f, df, payload, ok = optim.strong_wolfe_line_search(phi, scale * 9.0, scale * -6.0, 1e-3, c2=0.1)
    assert ok and payload == alpha and math.isfinite(alpha) and abs(df) <= 0.1 * 6.0 * scale
    assert alpha == pytest.approx(3.0, rel=0.05)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("what", ["cost", "slope", "both"])
def test_line_search_shrinks_the_step_where_phi_is_not_finite(what, bad):
    # (a - 3)^2 overflows (or is NaN) beyond a = 4: the first trial 10 must be pulled back, never
    # accepted or used in the interpolation.
    seen = []

    def phi(a):
        seen.append(a)
        f, df = (a - 3.0) ** 2, 2 * (a - 3.0)
        if a > 4:
            f = bad if what in ("cost", "both") else f
            df = bad if what in ("slope", "both") else df
        return f, df, a

    alpha, f, df, payload, ok = optim.strong_wolfe_line_search(phi, 9.0, -6.0, 10.0, max_evals=40)
    assert ok and 0 < alpha <= 4 and payload == alpha and math.isfinite(f) and math.isfinite(df)
    assert all(math.isfinite(a) for a in seen)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_line_search_stops_before_its_steps_overflow():
    # phi = -a falls for ever: the extrapolation grows the step fourfold per trial until the next
    # step would be inf; the search ends there with the best finite step, not with x + inf d.
    seen = []

    def phi(a):
        seen.append(a)
        return -a, -1.0, a

    alpha, f, _, payload, ok = optim.strong_wolfe_line_search(phi, 0.0, -1.0, 1e300, max_evals=25)
    assert not ok and payload == alpha == max(seen) and math.isfinite(alpha) and f == -alpha
    assert len(seen) < 25 and all(math.isfinite(a) for a in seen)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("value", [1e30, 1e-30])
def test_inverse_norm_of_float32_vectors_whose_squares_overflow_or_underflow(value):
    d = np.full(1000, value, dtype=np.float32)
    d[::3] *= -2
    expected = 1.0 / np.linalg.norm(d.astype(np.float64))
    assert optim._inverse_norm(d) == pytest.approx(expected, rel=1e-12)
    ordinary = np.linspace(-1, 1, 7, dtype=np.float32)
    assert optim._inverse_norm(ordinary) == 1.0 / float(np.linalg.norm(ordinary))  # bit for bit the plain formula


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_lbfgs_with_float32_memory_solves_a_hugely_scaled_quadratic(monkeypatch):
    """f = c (1/2 x^T A x - b^T x), c = 2^80: gradients of 1e24, float32 pair products of 1e48 (past
    3.4e38). The first step's norm and every direction overflow float32; the two-loop recursion then
    runs in float64, and the minimiser is the unscaled one's."""
    A, b, fun_and_grad = random_quadratic(40, 1e3, 3)
    c = 2.0**80
    wide = []
    real_direction = optim.lbfgs_direction
    monkeypatch.setattr(optim, "lbfgs_direction", lambda *args: wide.append(args[2]) or real_direction(*args))
    # ftol 1e-13 stops short of the cost's round-off floor (1e-16 of it), where a last pair's s.y may come out
    # non-positive on one CPU and not another (ftol 1e-15 skipped one on an AMD EPYC, none on a Xeon)
    result = optim.lbfgs(lambda x: tuple(c * v for v in fun_and_grad(x)), np.zeros(40), 300, gtol=0.0,
                         ftol=1e-13, memory_dtype=np.float32)
    np.testing.assert_allclose(result.x, np.linalg.solve(A, b), atol=1e-5)
    assert wide and set(wide) == {np.dtype(np.float64)}, "the float64 recursion was not needed: scale the test up"
    assert result.skipped_pairs == 0 and np.isfinite(result.fun)


@pytest.mark.parametrize("c", [1e-12, 1.0, 1e12])
def test_lbfgs_keeps_its_pairs_whatever_the_scale_of_the_cost(c):
    """The pair test is scale-free: a cost multiplied by c (style transfer's --beta 1e10) keeps every pair and
    takes as many iterations as the cost itself (the test s.y > 1e-10 y.y skipped them all at c = 1e12)."""
    A, b, fun_and_grad = random_quadratic(30, 1e2, 4)
    scaled = optim.lbfgs(lambda x: tuple(c * v for v in fun_and_grad(x)), np.zeros(30), 150, gtol=0.0)
    plain = optim.lbfgs(fun_and_grad, np.zeros(30), 150, gtol=0.0)
    assert scaled.skipped_pairs == 0 and plain.skipped_pairs == 0
    exact = np.linalg.solve(A, b)
    assert np.abs(scaled.x - exact).max() < 1e-6 * np.abs(exact).max()
    assert np.abs(scaled.x - plain.x).max() < 1e-6 * np.abs(exact).max()   # the same path, whatever c


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_lbfgs_stops_with_a_message_when_even_float64_slopes_overflow():
    # A gradient of 1e200: g.d = -|g|^2 is past float64's 1.8e308. Nothing to step with, no warning.
    result = optim.lbfgs(lambda x: (float(np.sum(x)), np.full_like(x, 1e200)), np.zeros(4), 5)
    assert result.message.startswith("stopped: the gradient is too large") and result.iterations == 0


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_lbfgs_skips_a_pair_its_float32_memory_cannot_hold():
    # y = g_new - g of about 1e39 per coordinate does not fit float32 (3.4e38): skipped, not stored as inf.
    def fun(x):
        return float(1e39 * np.sum(x**2)), 2e39 * x

    result = optim.lbfgs(fun, np.full(3, 1.0), 3, memory_dtype=np.float32, curvature_eps=0.0)
    assert result.skipped_pairs >= 1 and np.isfinite(result.x).all()


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_adam_update_with_a_gradient_whose_square_overflows_stays_quiet():
    # float32 gradients above 1.8e19 (train --alpha 1e30): v = mean of dx**2 overflows to inf and that
    # coordinate's step is 0; the caller watches the cost and the gradients, NumPy must not print.
    x, m, v = np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
    dx = np.array([1e30, -1.0, 3e38], np.float32)
    x_new, m_new, v_new = optim.adam_update(x, dx, m, v, 1)
    assert np.isfinite(x_new).all() and np.isfinite(m_new).all() and x_new[1] == pytest.approx(1.01, rel=1e-6)
    assert np.isinf(v_new[[0, 2]]).all()


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("flag, value, optimizer", [("--tv-weight", "1e20", "lbfgs"), ("--alpha", "1e20", "lbfgs"),
                                                    ("--beta", "1e30", "lbfgs"), ("--beta", "1e30", "adam")])
def test_stylize_with_a_huge_weight_ends_in_a_finite_image_or_one_clean_line(
        flag, value, optimizer, shared_image, squeezenet_weights_path, tmp_path, capsys):
    """The audit's command: L-BFGS (the default) with a weight of 1e20 crashed with "internal error
    (ZeroDivisionError)" after two NumPy warnings. Now: an image (the costs are finite, only their
    products overflowed) or the one line that names the flag, as --beta 1e39 gets; nothing else.
    And the image is the optimiser's work: it took its steps (float32 slopes that overflowed once
    stopped L-BFGS before its first, and exited 0 with the start image)."""
    out = tmp_path / "out.png"
    argv = ["stylize", str(shared_image("tubingen.jpg")), str(shared_image("starry_night.jpg")), "-o", str(out),
            "--weights", str(squeezenet_weights_path), "--size", "64", "--iters", "2", "--optimizer", optimizer,
            flag, value]
    status = cli.main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "internal error" not in err and "Warning" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("[") for line in lines[:-1]), err  # progress lines, then at most one message
    if status == 0:
        with Image.open(out) as img:
            assert img.size == (64, 48) and np.isfinite(np.asarray(img, dtype=np.float64)).all()
        assert ": 2 iterations" in captured.out and "stopped early" not in err, (captured.out, err)
    else:
        assert status == 1 and not out.exists()
        assert lines[-1].startswith("scratchnst: error: ") and "became" in lines[-1] and f"lower {flag}" in lines[-1]


# ---------------------------------------------------- L-BFGS's box helpers against their plain formulas
def test_edges_are_the_plain_masks_and_on_is_at_bounds_after_the_projection():
    rng = np.random.default_rng(6)
    n = 5000
    lo, hi = np.full(n, -1.0), np.full(n, 2.0)
    lo[::7] = hi[::7] = 0.5  # fixed coordinates: lo == hi
    x = rng.uniform(-3, 4, n)
    x[::5] = lo[::5]  # exactly on a bound
    x[1::9] = hi[1::9]
    x[3] = np.nan
    on, past = optim._edges(x, (lo, hi))
    np.testing.assert_array_equal(on, np.flatnonzero((x <= lo) | (x >= hi)))
    np.testing.assert_array_equal(past, np.flatnonzero((x < lo) | (x > hi)))
    projected = x.copy()
    projected[past] = np.clip(x[past], lo[past], hi[past])
    np.testing.assert_array_equal(optim._at_bounds(projected, (lo, hi)), on)
    empty = optim._edges(x, None)
    assert empty[0].size == 0 and empty[1].size == 0


@pytest.mark.parametrize("case", ["free largest", "held largest", "tie", "inf held", "nan held", "nan free",
                                  "all held", "none held", "empty"])
def test_free_size_is_the_largest_entry_of_the_projected_gradient(case):
    rng = np.random.default_rng(7)
    g = rng.standard_normal(300)
    held = np.array([3, 50, 299])
    if case == "held largest":
        g[50] = -40.0
    elif case == "tie":
        g[50], g[10] = 40.0, -40.0
    elif case == "inf held":
        g[3] = np.inf
    elif case == "nan held":
        g[299] = np.nan
    elif case == "nan free":
        g[7] = np.nan
    elif case == "all held":
        held = np.arange(300)
    elif case == "none held":
        held = np.empty(0, dtype=np.intp)
    elif case == "empty":
        g, held = np.empty(0), np.empty(0, dtype=np.intp)
    pg = g.copy()
    pg[held] = 0
    expected = float(np.max(np.abs(pg), initial=0.0))
    got = optim._free_size(g, held)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_fits_refuses_a_pair_whose_step_float32_cannot_hold():
    s, y = np.full(4, 1e30), np.ones(4)
    assert optim._fits(s, float(np.dot(s, s)), float(np.dot(y, y)), np.float64)  # the same dtype: always
    assert optim._fits(s, float(np.dot(s, s)), float(np.dot(y, y)), np.float32)
    big = np.full(4, 1e39)
    assert not optim._fits(big, float(np.dot(big, big)), 4.0, np.float32)
    assert not optim._fits(s, float(np.dot(s, s)), float(np.dot(big, big)), np.float32)
    assert optim._fits(s, math.inf, 4.0, np.float32)  # s.s overflowed float64, but every entry fits
    many = np.full(230400, 200.0)  # s.s is 9.2e9, above float16's 65504 squared: each entry fits
    assert optim._fits(many, float(np.dot(many, many)), 4.0, np.float16)


def test_an_infinite_gradient_at_a_clipped_coordinate_leaves_the_slope_finite():
    """sqrt(x) at x = 0: the gradient there is inf, and the coordinate is clipped, then held; its term is
    left out of the slopes (inf * 0 would make them NaN: the line search went on 50 useless evaluations,
    and a held one stopped the run as if the gradient overflowed)."""
    c = np.array([-3.0, -2.0, 0.5, 0.7, -1.0, 0.2])

    def fun(x):
        with np.errstate(divide="ignore"):
            return float(np.sum(np.sqrt(x)) + 0.5 * np.sum((x - c) ** 2)), 0.5 / np.sqrt(x) + (x - c)

    result = optim.lbfgs(fun, np.full(6, 0.5), 20, bounds=(0.0, 1.0))
    # the minimum in the box is x = 0 (the derivative of sqrt is +inf there), f = |c|^2 / 2
    assert result.message.startswith("converged") and result.n_evals <= 6
    np.testing.assert_array_equal(result.x, 0.0)
    assert result.fun == pytest.approx(0.5 * float(np.dot(c, c)))


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_float32_points_and_pairs_take_their_overflowing_dot_products_again_in_float64():
    """As style transfer runs L-BFGS with a weight of 1e20: float32 x, g and pairs, gradients of 2e19.
    g.d, s.y and y.y overflow float32 (3.4e38); in float64 they are numbers, and the run converges
    instead of stopping before its first step ("the gradient is too large")."""
    result = optim.lbfgs(lambda x: (1e19 * float(np.dot(x, x.astype(np.float64))), 2e19 * x),
                         np.ones(50, np.float32), 20, memory_dtype=np.float32, gtol=1e-3)
    assert result.x.dtype == np.float32
    assert result.message.startswith("converged") and result.fun < 1e19 and result.skipped_pairs == 0


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_dot_retries_in_float64_only_what_overflowed():
    big = np.full(4, 2e19, np.float32)
    assert optim._dot(big, big) == pytest.approx(4 * 4e38, rel=1e-6)  # float32 says inf
    assert optim._dot(np.ones(3, np.float32), np.full(3, 2.0, np.float32)) == 6.0
    assert math.isinf(optim._dot(np.array([np.inf], np.float32), np.ones(1, np.float32)))
    assert math.isnan(optim._dot(np.array([np.nan, 1.0]), np.ones(2)))
    assert math.isinf(optim._dot(np.full(2, 1e200), np.full(2, 1e200)))  # float64 overflows: no wider retry


def test_float32_points_with_float64_pairs_take_their_slopes_in_float64():
    """The slopes' dtype is the wider of g's and d's: float32 would overflow on g.d here (1e19 squared)."""
    result = optim.lbfgs(lambda x: (1e19 * float(np.dot(x, x)), 2e19 * x), np.ones(50, np.float32), 20,
                         memory_dtype=np.float64, gtol=1e-3)
    assert result.message.startswith("converged") and result.fun < 1e19


def test_float32_points_stay_float32_with_wider_pairs_and_resume():
    """Arithmetic in x0's dtype: float64 pairs (a wider direction) must not turn x into float64, whose
    states a float32 run would then refuse to resume from."""
    def fun(x):
        return float(np.sum((x.astype(np.float64) - 1) ** 2)), 2 * (x - 1)

    seen = []
    whole = optim.lbfgs(fun, np.zeros(5, np.float32), 3, memory_dtype=np.float64, callback=seen.append)
    assert whole.x.dtype == np.float32
    resumed = optim.lbfgs(fun, np.zeros(5, np.float32), 3, memory_dtype=np.float64, resume=seen[1].state())
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert resumed.history == whole.history


def test_an_infinite_gradient_held_at_a_bound_does_not_stop_the_run(recwarn):
    """+inf at the lower bound (pushing out) is held there, its direction 0: the slope leaves it out
    instead of making inf * 0 = NaN and stopping as if the gradient overflowed."""
    center = np.linspace(-3, 3, 20)

    def fun(x):
        g = 2 * (x - center)
        g[x <= -1] = np.inf
        g[x >= 1] = -np.inf
        return float(np.sum((x - center) ** 2)), g

    result = optim.lbfgs(fun, np.zeros(20), 60, bounds=(-1.0, 1.0))
    assert not result.message.startswith("stopped")
    np.testing.assert_allclose(result.x, np.clip(center, -1, 1), atol=1e-6)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]

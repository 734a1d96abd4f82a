"""Tests of scratchnst.optim: Adam and L-BFGS against PyTorch's and SciPy's, with and without bounds."""

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der

from scratchnst import optim


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

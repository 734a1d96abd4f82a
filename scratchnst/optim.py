"""Optimisers on a flat vector: Adam (the course's) and L-BFGS (Gatys et al.'s), with box bounds.

Both minimise a function given as `fun_and_grad(x) -> (f, g)` or `(f, g, aux)`:
    x    (n,) float vector, the point (for style transfer: the preprocessed image, flattened);
    f    the cost at x, a number;
    g    (n,) its gradient df/dx;
    aux  anything the caller wants to see again with the accepted point (style transfer passes
         the separate costs J_content, J_style, ...), handed to `callback` and kept in the result.

Box bounds lo <= x <= hi keep the pixels in range. Both optimisers project onto the box,
    P(x) = min(max(x, lo), hi),
after each step, the way the course clips the image after each Adam step. For L-BFGS the
projection must not spoil the curvature pairs (s, y) it learns the Hessian from: the pair is
built from the points actually evaluated, s = x_new - x (after projection) and y = g_new - g,
and a pair whose curvature s.y is not clearly positive is skipped, so the inverse-Hessian
estimate stays positive definite.

Resuming: every Iterate carries `state()`, the optimiser's complete state after that iteration.
Passed back as `resume=`, it continues the run to exactly the result, bit for bit, that the run
would have reached without the interruption (style transfer's `--resume`); `scratchnst.optim_state`
keeps that bookkeeping out of the algorithms' way.

Overflow: a huge cost weight (style transfer's --beta 1e20) makes huge but finite costs and gradients,
whose products may overflow where the values themselves do not: L-BFGS's float32 dot products
(3.4e38 is reached by gradients of 1.8e19), a norm, Adam's squared gradient. There inf or NaN is an
outcome the optimisers handle, never a NumPy warning for the user: the L-BFGS direction is then
recomputed in float64, as are its slopes and curvatures (`_dot`), a line search that meets a
non-finite value shrinks its step, and Adam's coordinate stalls (style transfer runs Adam in
float64). A non-finite cost or gradient itself is for fun_and_grad to refuse (style
transfer raises its one-line CostNotFinite); an optimiser given one treats the point as a step too far.

Conventions: every function returns fresh arrays and never writes into x0 or a gradient it was
handed; arithmetic is done in x0's dtype, but for the overflows above (style transfer passes
float32 to L-BFGS, as its network's, and float64 to Adam: see `transfer._optimizer_dtype`).
"""

import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from scratchnst import optim_state
from scratchnst.lbfgs_memory import PairMemory
from scratchnst.optim_state import ResumeError  # noqa: F401  (callers catch optim.ResumeError)


@dataclass
class Iterate:
    """What a callback sees: the starting point, then the point accepted by each iteration.

    Attributes:
        iteration: 0 for the starting point, then 1, 2, ...
        x: (n,) the accepted point; the caller must not modify it.
        f: the cost at x.
        g: (n,) the gradient at x.
        aux: the third value fun_and_grad returned at x, or None.
        n_evals: calls of fun_and_grad so far (L-BFGS's line search may use several per iteration).
        state: None, or a function () -> dict: the optimiser's complete state after this iteration,
            to save in a checkpoint and pass back as `resume=` (see `adam` and `lbfgs` for the keys).
            Its arrays may be the optimiser's own (never written into later): copy or save them.
    """

    iteration: int
    x: np.ndarray
    f: float
    g: np.ndarray
    aux: Any
    n_evals: int
    state: Optional[Callable[[], dict]] = field(default=None, repr=False, compare=False)


@dataclass
class OptimizeResult:
    """The outcome of `minimize`, `adam` or `lbfgs`.

    Attributes:
        x: (n,) the last accepted point.
        fun: the cost at x.
        aux: fun_and_grad's third value at x, or None.
        iterations: iterations done (<= iters; fewer if converged or the line search failed).
        n_evals: calls of fun_and_grad.
        history: [f(x0), f(x1), ...], one cost per iteration, starting point first.
        message: why the optimiser stopped.
        skipped_pairs: L-BFGS curvature pairs left out because s.y was not positive, or because they
            did not fit the memory's dtype (0 for Adam).
    """

    x: np.ndarray
    fun: float
    aux: Any
    iterations: int
    n_evals: int
    history: list = field(default_factory=list)
    message: str = ""
    skipped_pairs: int = 0


# ------------------------------------------------------------------------------------ Adam
def _overflow_is_handled(function):
    """function, run with NumPy's overflow and invalid-value warnings off (for `adam_update`).

    Adam's v averages dx**2, which overflows for gradients that are finite but huge (above 1.8e19 in
    float32: `scratchnst train --alpha 1e30`): v becomes inf, and that coordinate's step 0. The
    callers watch what matters, the cost and the gradients (train's "the loss became infinite",
    stylize's CostNotFinite); a NumPy warning between the progress lines would only be noise. A
    decorator, so that the exercise's body stays the formula alone.
    """

    @functools.wraps(function)
    def quiet(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return function(*args, **kwargs)

    return quiet


@_overflow_is_handled
def adam_update(x, dx, m, v, t, lr=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step (Kingma & Ba 2015; the course's update_parameters_with_adam).

    Args:
        x: (n,) current point.
        dx: (n,) gradient at x.
        m: (n,) running mean of the gradients (zeros before the first step).
        v: (n,) running mean of the squared gradients (zeros before the first step).
        t: step number, 1 for the first step (for the bias correction).
        lr, beta1, beta2, epsilon: the usual hyperparameters.

    Returns:
        (x_new, m_new, v_new), fresh (n,) arrays.

    Formula:
        m = beta1 * m + (1 - beta1) * dx            v = beta2 * v + (1 - beta2) * dx**2
        m_hat = m / (1 - beta1**t)                  v_hat = v / (1 - beta2**t)
        x_new = x - lr * m_hat / (sqrt(v_hat) + epsilon)
    The bias corrections undo the pull of the zero start towards 0 in the first steps.
    """
    # BEGIN SOLUTION
    # HINT: the docstring's three steps: update the running averages, correct their bias (it matters
    # HINT: while t is small), then step x; return the running averages themselves, not the corrected ones
    m_new = beta1 * m + (1 - beta1) * dx
    v_new = beta2 * v + (1 - beta2) * dx * dx
    m_hat = m_new / (1 - beta1**t)
    v_hat = v_new / (1 - beta2**t)
    x_new = x - lr * m_hat / (np.sqrt(v_hat) + epsilon)
    return x_new, m_new, v_new
    # END SOLUTION


def adam(
    fun_and_grad, x0, iters=100, *, lr=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8, bounds=None, callback=None,
    resume=None,
):
    """Minimise with Adam, projecting onto the box after every step (as the course clips the image).

    Args:
        fun_and_grad: x (n,) -> (f, g) or (f, g, aux), see the module docstring.
        x0: (n,) float starting point (projected onto the box first). Not modified.
        iters: number of Adam steps.
        lr, beta1, beta2, epsilon: see `adam_update`.
        bounds: None or (lo, hi), numbers or arrays broadcastable to (n,).
        callback: None or function(Iterate), called with the starting point (iteration 0),
            then after each step with the new point. Iterate.state() is `optim_state.adam_state`'s dict.
        resume: None, or the state of an earlier run's Iterate (after a save and load if need be;
            same lr, betas, epsilon, n and dtype, else ValueError): continue that run from the
            step after it, without evaluating x0 (still needed for its size and dtype) or
            calling the callback for the saved step, up to step iters.

    Returns:
        OptimizeResult; iters steps use iters + 1 evaluations (the starting point's gradient
        drives the first step, the last point is evaluated so that its cost is known). A resumed
        run returns exactly what the run without interruption returns (counts and history
        included); at once if the saved step is iters or later.
    """
    settings = {"lr": float(lr), "beta1": float(beta1), "beta2": float(beta2), "epsilon": float(epsilon)}
    start = _start(fun_and_grad, x0, bounds, "adam", resume, settings)
    box, evaluate, done, history = start.box, start.evaluate, start.iteration, start.history
    x, f, g, aux = start.x, start.f, start.g, start.aux
    if resume is None:
        m = np.zeros_like(x)
        v = np.zeros_like(x)
    else:
        m = optim_state.saved_array(resume, "m", x.shape, x.dtype)
        v = optim_state.saved_array(resume, "v", x.shape, x.dtype)

    def report(t):
        # Called after x, f, g, aux, m, v have been replaced (never modified in place, so the
        # state may hold them as they are).
        if callback is not None:
            now = dict(iteration=t, x=x, f=f, g=g, aux=aux, n_evals=evaluate.n_evals, history=history, m=m, v=v,
                       **settings)
            callback(Iterate(t, x, f, g, aux, evaluate.n_evals, lambda: optim_state.adam_state(**now)))

    if resume is None:
        report(0)
    for t in range(done + 1, iters + 1):
        x, m, v = adam_update(x, g, m, v, t, lr, beta1, beta2, epsilon)
        x = _project(x, box)
        f, g, aux = evaluate(x)
        history.append(f)
        done = t
        report(t)
    return OptimizeResult(x, f, aux, done, evaluate.n_evals, history, f"done {done} Adam steps")


# ----------------------------------------------------------------------------------- L-BFGS
def lbfgs_direction(g, pairs, dtype=None):
    """Product H g of the L-BFGS inverse-Hessian estimate H with a vector, by the two-loop recursion.

    Args:
        g: (n,) vector (the gradient, or the projected gradient).
        pairs: sequence of (s, y, rho) curvature pairs, oldest first: s = x_{k+1} - x_k,
            y = g_{k+1} - g_k, rho = 1 / (y . s) > 0.
        dtype: the dtype of the arithmetic; None for the pairs' (g's without pairs). `lbfgs` asks
            for float64 from float32 pairs when their own products overflow (huge gradients).

    Returns:
        r = H g, a fresh (n,) array of that dtype (the search direction is -r).

    H is what m BFGS updates make of H0 = gamma * I, gamma = s.y / y.y of the newest pair (an
    estimate of the inverse curvature along the last step, so the unit step is usually right):
        H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T    for each pair, oldest first.
    The two loops apply this product in O(m n) without forming H (Nocedal & Wright, Alg. 7.4):
        q = g;  for i newest..oldest: a_i = rho_i s_i.q;  q -= a_i y_i
        r = gamma q;  for i oldest..newest: b = rho_i y_i.r;  r += (a_i - b) s_i
    """
    # in the pairs' dtype: float32 pairs (style transfer's) halve the memory this reads
    if dtype is None:
        dtype = pairs[-1][0].dtype if pairs else g.dtype
    q = np.array(g, dtype=dtype, copy=True)  # each product below with q is then in dtype
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * np.dot(s, q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        y = y.astype(dtype, copy=False)  # the same array when dtype is the pairs'
        q *= np.dot(s, y) / np.dot(y, y)
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        b = rho * np.dot(y, q)
        q += (a - b) * s
    return q


def _cubic_minimizer(a, fa, ga, b, fb, gb):
    """Minimiser of the cubic through (a, fa) and (b, fb) with slopes ga, gb; None if it has none.

    Nocedal & Wright eq. (3.59):
        d1 = ga + gb - 3 (fa - fb) / (a - b),  d2 = sign(b - a) sqrt(d1^2 - ga gb)
        alpha = b - (b - a) (gb + d2 - d1) / (gb - ga + 2 d2)
    None too when the data define no cubic: a == b, or a value or slope that is not finite (an
    overflowed cost); and when the formula itself overflows or divides by zero (zero curvature,
    costs of 1e300). The callers then bisect or take their safe step, as More & Thuente do.
    """
    if a == b or not all(math.isfinite(v) for v in (a, fa, ga, b, fb, gb)):
        return None
    # NumPy scalars: their overflow and 0/0 give inf and NaN under errstate, where Python's floats
    # would raise (the same IEEE double arithmetic otherwise, so the same digits).
    a, fa, ga, b, fb, gb = (np.float64(v) for v in (a, fa, ga, b, fb, gb))
    with np.errstate(all="ignore"):
        d1 = ga + gb - 3 * (fa - fb) / (a - b)
        disc = d1 * d1 - ga * gb
        if not np.isfinite(disc) or disc < 0:
            return None
        d2 = np.copysign(np.sqrt(disc), b - a)
        alpha = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2 * d2)
    return float(alpha) if np.isfinite(alpha) else None


def strong_wolfe_line_search(phi, f0, dphi0, alpha1, c1=1e-4, c2=0.9, max_evals=25):
    """Find a step alpha > 0 that satisfies the strong Wolfe conditions along a descent direction.

    Args:
        phi: alpha -> (phi(alpha), phi'(alpha), payload); phi(alpha) = f(x + alpha d) and
            phi'(alpha) its slope; payload is anything to hand back with the accepted step.
        f0, dphi0: phi(0), and phi'(0): finite and < 0 (else ValueError).
        alpha1: first trial step, finite and > 0 (else ValueError).
        c1, c2: 0 < c1 < c2 < 1; c2 = 0.9 is the usual choice for quasi-Newton methods.
        max_evals: calls of phi allowed.

    Returns:
        (alpha, phi(alpha), phi'(alpha), payload, ok). ok is True when both conditions hold:
            sufficient decrease   phi(alpha) <= f0 + c1 alpha dphi0
            curvature             |phi'(alpha)| <= c2 |dphi0|
        If max_evals runs out first, or the steps grow past the largest float, the best step found
        with sufficient decrease is returned with ok False; alpha = 0 (payload None) if there was none.
        A trial whose cost or slope is not finite counts as a step far too long (its payload is never
        returned): the search shrinks the step instead of interpolating with inf or NaN.

    Algorithm 3.5 of Nocedal & Wright: grow the step until an interval is known to hold
    acceptable steps (the cost rose, or the slope turned non-negative), then `zoom` (Alg. 3.6)
    into that interval by safeguarded cubic interpolation. The curvature condition is what makes
    L-BFGS work: it guarantees y.s = phi'(alpha) - phi'(0) > 0 along smooth paths, so the new
    curvature pair keeps the inverse-Hessian estimate positive definite.
    """
    if not -math.inf < dphi0 < 0:
        raise ValueError(f"not a descent direction: phi'(0) = {dphi0}")
    if not 0 < alpha1 < math.inf:
        raise ValueError(f"the first trial step must be finite and positive, got {alpha1}")
    best = (0.0, f0, dphi0, None)  # the lowest point with sufficient decrease so far
    evals = 0

    def armijo(alpha, f):
        return f <= f0 + c1 * alpha * dphi0

    def evaluate(alpha):
        nonlocal evals, best
        evals += 1
        f, df, payload = phi(alpha)
        if not (np.isfinite(f) and np.isfinite(df)):  # overflow or NaN: treat as "far too big a step"
            f, df = np.inf, np.nan
        if armijo(alpha, f) and f < best[1]:
            best = (alpha, f, df, payload)
        return f, df, payload

    def zoom(lo, f_lo, df_lo, hi, f_hi, df_hi):
        # Invariants: lo has sufficient decrease and the lowest cost seen; an acceptable step
        # lies between lo and hi (Nocedal & Wright, Alg. 3.6).
        while evals < max_evals:
            width = abs(hi - lo)
            if width <= 1e-12 * max(abs(lo), abs(hi)):
                break
            alpha = _cubic_minimizer(lo, f_lo, df_lo, hi, f_hi, df_hi)
            # Stay at least 10% of the interval away from both ends, so that every evaluation
            # shrinks the interval by 10% or more even when the cubic is a poor model.
            left, right = min(lo, hi), max(lo, hi)
            if alpha is None:
                alpha = 0.5 * (lo + hi)
            alpha = min(max(alpha, left + 0.1 * width), right - 0.1 * width)
            f, df, payload = evaluate(alpha)
            # ">" rather than Nocedal & Wright's ">=": next to a minimum the cost is flat to the
            # last bit, and a tie with f_lo must not throw away a step whose slope already qualifies.
            if not armijo(alpha, f) or f > f_lo:
                hi, f_hi, df_hi = alpha, f, df
            else:
                if abs(df) <= -c2 * dphi0:
                    return alpha, f, df, payload, True
                if df * (hi - lo) >= 0:
                    hi, f_hi, df_hi = lo, f_lo, df_lo
                lo, f_lo, df_lo = alpha, f, df
        return (*best, False)

    prev, f_prev, df_prev = 0.0, f0, dphi0
    alpha = alpha1
    while evals < max_evals:
        f, df, payload = evaluate(alpha)
        if not armijo(alpha, f) or (evals > 1 and f >= f_prev):
            return zoom(prev, f_prev, df_prev, alpha, f, df)
        if abs(df) <= -c2 * dphi0:
            return alpha, f, df, payload, True
        if df >= 0:
            return zoom(alpha, f, df, prev, f_prev, df_prev)
        # Still going down steeply: extrapolate, by the cubic's minimiser kept between 1.1 and
        # 4 times the last increment beyond alpha (it must grow geometrically to reach far minima).
        step = alpha - prev
        guess = _cubic_minimizer(prev, f_prev, df_prev, alpha, f, df)
        low, high = alpha + 1.1 * step, alpha + 4.0 * step
        guess = high if guess is None else min(max(guess, low), high)
        if not np.isfinite(guess):  # grown past the largest float: x + guess d would be inf or NaN
            break
        prev, f_prev, df_prev = alpha, f, df
        alpha = guess
    return (*best, False)


def _at_bounds(x, box):
    """Indices of the coordinates of x on a bound of the box, (k,) ints (none without a box).

    The box's rules below only concern these: in style transfer a few saturated pixels, so each
    rule touches k values instead of making masks of all n (a pass over n each).
    """
    return _edges(x, box)[0]


def _edges(x, box):
    """(on, past): the indices of x (n,) on or past a bound of the box, and of those past it, (k,) ints each.

    For a trial point of the line search: `past` is what the projection clips back, and once it
    has, `on` is `_at_bounds` of the projected point (what was on a bound stays there, what was
    past it lands on it), so an accepted trial's `on` serves the next iteration without a pass.
    """
    if box is None:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    lo, hi = box
    on = np.flatnonzero((x <= lo) | (x >= hi))
    x_on = x[on]
    return on, on[(x_on < lo[on]) | (x_on > hi[on])]


def _outward(v, x, box, at, sign=1):
    """Of the indices `at` (on a bound), those where sign * v points out of the box: at lo below 0, at hi above.

    With v = g and sign -1 these are the coordinates held at a bound by a gradient that pushes them outside
    (not in the free set); with v = d, the components of a direction that would be clipped back at
    once: left in d they would make the line search's slope g.d promise a decrease the projected
    path cannot deliver.
    """
    if box is None or at.size == 0:
        return at
    lo, hi = box
    xa, va = x[at], sign * v[at]
    return at[((xa <= lo[at]) & (va < 0)) | ((xa >= hi[at]) & (va > 0))]


def _cost_settled(f_old, f, ftol):
    """L-BFGS's ftol test: |f_old - f| <= ftol * max(|f_old|, |f|, 1)."""
    return abs(f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0)


def _masked_direction(d, g, x, box, at, held):
    """The search direction d (n,) with the coordinates the box would stop set to 0, and its slope g.d.

    d: a descent direction the caller owns (written in place); held: the indices held at a bound
    by the gradient. Returns (d, d_wide, dphi0): d, d in the wider of g's and d's dtypes (the
    same array if d's is; the line search's slopes are dot products with it, made once here
    instead of a cast at each of them), and a float (inf or NaN if d is not finite, or the
    product overflows).
    """
    d[held] = 0
    d[_outward(d, x, box, at)] = 0
    d_wide = d.astype(np.result_type(g, d), copy=False)
    return d, d_wide, _slope(g, d_wide)


def _slope(g, d):
    """g.d for (n,) vectors, the terms where d is 0 left out when they make it NaN (an infinite gradient
    where the path does not move: a coordinate held at a bound, or clipped): what the slope of the
    projected path means. NaN still where g.d has an inf - inf, or a NaN where d moves."""
    slope = _dot(g, d)
    if math.isnan(slope):
        moving = np.flatnonzero(d)
        slope = _dot(g[moving], d[moving])
    return slope


def _dot(a, b):
    """a.b for (n,) vectors as a float: in their dtype, or again in float64 where that was not finite.

    float32 products overflow from entries of 1.8e19 on (a cost weight of 1e20), where float64's
    sum is still a number: with float32 x, such a slope or curvature would otherwise stop the run
    or skip every pair. Finite in their dtype, the common case, it costs one pass.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an outcome, not a warning (see the module docstring)
        value = float(np.dot(a, b))
        if not math.isfinite(value) and np.result_type(a, b) != np.float64:
            value = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    return value


def _free_size(g, held):
    """max |g_i| over the coordinates i not in `held`: the projected gradient's largest entry (0 for none).

    Without the projected gradient's copy of g and the array of |g|: two passes over g, and one
    over the k held entries, unless a held entry is as large as any (or g has a NaN): then the plain
    formula, exactly (NaN if a free entry is NaN: the gtol test fails).
    """
    if g.size == 0:
        return 0.0
    high, low = float(g.max()), float(g.min())  # both NaN if g has a NaN
    if not math.isnan(high):
        top = max(high, -low)
        if held.size == 0 or float(np.max(np.abs(g[held]))) < top:
            return top
    return float(np.max(np.abs(_zeroed(g, held)), initial=0.0))


def _zeroed(g, held):
    """g (n,) with the entries at `held` set to 0: the projected gradient (a copy only if some are held)."""
    if held.size == 0:
        return g
    pg = g.copy()
    pg[held] = 0
    return pg


def _inverse_norm(d):
    """1 / ||d||, the first trial step of L-BFGS without pairs, for a finite (n,) vector d != 0: finite and > 0.

    np.linalg.norm sums d**2 in d's dtype, which overflows for d of float32 above about 1.8e19 (the
    direction without pairs is the gradient, in memory_dtype) and underflows for tiny ones. Then the
    norm is taken of d / max|d| in float64, and scaled back: what the plain formula means.
    """
    with np.errstate(over="ignore"):
        norm = float(np.linalg.norm(d))
    if 0 < norm < math.inf:
        return 1.0 / norm
    big = float(np.max(np.abs(d)))
    step = 1.0 / big / float(np.linalg.norm(d.astype(np.float64) / big))  # the second norm is 1..sqrt(n)
    return min(max(step, np.finfo(np.float64).tiny), np.finfo(np.float64).max)


def _fits(s, ss, yy, dtype):
    """Whether memory_dtype `dtype` holds every value of s (n,) and y's (x's dtype, maybe wider); ss = s.s, yy = y.y.

    y is judged by its norm, yy < largest^2, which bounds every |y_i| (a y refused so is a
    gradient change of 1.8e19 for float32, too large for its products anyway); s the same way,
    and only if that fails by its largest entry (two passes over s).
    """
    if np.finfo(dtype).max >= np.finfo(s.dtype).max:
        return True
    largest = float(np.finfo(dtype).max)
    if not yy < largest * largest:
        return False
    return ss < largest * largest or max(float(s.max()), -float(s.min())) <= largest


def lbfgs(
    fun_and_grad,
    x0,
    iters=100,
    *,
    history_size=10,
    bounds=None,
    callback=None,
    gtol=1e-10,
    ftol=0.0,
    max_ls=25,
    c1=1e-4,
    c2=0.9,
    curvature_eps=1e-10,
    memory_dtype=None,
    resume=None,
):
    """Minimise with L-BFGS and a strong Wolfe line search, optionally inside a box.

    Args:
        fun_and_grad: x (n,) -> (f, g) or (f, g, aux), see the module docstring.
        x0: (n,) float starting point (projected onto the box first). Not modified.
        iters: maximum number of iterations (each takes one line search: usually 1 evaluation,
            a few when the step has to be searched for, e.g. in the first iteration).
        history_size: m, the number of curvature pairs kept.
        bounds: None or (lo, hi), numbers or arrays broadcastable to (n,).
        callback: None or function(Iterate), called with the starting point (iteration 0),
            then after each iteration. Iterate.state() is `optim_state.lbfgs_state`'s dict.
        gtol: stop when max |projected gradient| <= gtol (a minimum, or a KKT point in the box).
        ftol: stop when |f_old - f_new| <= ftol * max(|f_old|, |f_new|, 1).
        max_ls: evaluations allowed per line search.
        c1, c2: Wolfe constants (sufficient decrease, curvature).
        curvature_eps: a pair is kept only if s.y > curvature_eps * |s| |y| (and s, y fit memory_dtype).
        memory_dtype: the dtype the curvature pairs are kept and the two-loop recursion runs in;
            None for x0's. Style transfer passes float32 (its points are float32 too): the
            recursion reads every pair twice per iteration. s.y, y.y and the step are computed
            in x0's dtype, the dot products again in float64 if they overflow it (`_dot`).
        resume: None, or the state of an earlier run's Iterate (after a save and load if need be;
            same history_size, n and dtype, else ValueError): continue that run from the
            iteration after it, without evaluating x0 (still needed for its size and dtype) or
            calling the callback for the saved iteration, up to iteration iters. gtol, ftol,
            max_ls, c1, c2 and curvature_eps must be the saved run's too for an identical result.

    Returns:
        OptimizeResult. A resumed run returns exactly what the run without interruption returns
        (counts, history and skipped pairs included); at once if the saved run had stopped there.

    One iteration, at x with gradient g:
      1. Free set F: coordinates not pinned at a bound with the gradient pushing outwards.
         Projected gradient pg = g on F, 0 elsewhere (it is 0 exactly at a box-KKT point).
      2. Direction d = -H pg, restricted to F (`lbfgs_direction`'s two-loop recursion, computed
         as two matrix products over the stacked pairs by `lbfgs_memory`). d = -P H P g with P the
         0/1 diagonal of F, so g.d = -(P g)^T H (P g) < 0: a descent direction, as H is
         positive definite.
      3. Line search on the projected path x(alpha) = P(x + alpha d), whose slope is g(alpha)
         summed over the coordinates still moving (not clipped): strong Wolfe conditions, first
         trial alpha = 1 (the quasi-Newton step), or 1 / ||d|| in the first iteration when H is
         still the identity and knows nothing about scale.
      4. New pair s = x_new - x, y = g_new - g from the points actually evaluated (so clipping
         is accounted for, not hidden); kept only if s.y > curvature_eps * |s| |y|, else skipped, so
         H stays positive definite. The oldest pair is dropped beyond history_size.
    Huge gradients (see the module docstring): when the pairs' products overflow memory_dtype, step 2
    runs the two-loop recursion in float64 instead; a pair memory_dtype cannot hold (s, or y by its
    norm: `_fits`) is skipped; a slope g.d that overflows even in float64 stops the run (message "stopped: ...").
    """
    start = _start(fun_and_grad, x0, bounds, "lbfgs", resume, {"history_size": history_size})
    box, evaluate, done, history = start.box, start.evaluate, start.iteration, start.history
    x, f, g, aux = start.x, start.f, start.g, start.aux
    memory_dtype = x.dtype if memory_dtype is None else np.dtype(memory_dtype)
    if resume is None:
        pairs, skipped, f_previous = PairMemory(history_size, x.size, memory_dtype), 0, None
    else:
        saved, slots, skipped, f_previous = optim_state.saved_lbfgs_memory(resume, x, history_size, memory_dtype)
        pairs = PairMemory(history_size, x.size, memory_dtype)
        for (s, y, rho), slot in zip(saved, slots):
            pairs.add(s, y, rho, slot)  # each in its own row: the passes then add up as they did

    def report(iteration):
        # Called after x, f, g, aux have been replaced (never modified in place, nor are the pair
        # arrays, so the state may hold them as they are); tuple(pairs.pairs) because the deque
        # changes. This tuple is what holds the entries for a state() called later: an entry
        # still held gets copies of its rows when its row is reused (PairMemory.add).
        if callback is not None:
            now = dict(iteration=iteration, x=x, f=f, g=g, aux=aux, n_evals=evaluate.n_evals, history=history,
                       pairs=tuple(pairs.pairs), slots=tuple(pairs.slots), history_size=history_size,
                       skipped=skipped, f_previous=f_previous, memory_dtype=memory_dtype)
            callback(Iterate(iteration, x, f, g, aux, evaluate.n_evals, lambda: optim_state.lbfgs_state(**now)))

    if resume is None:
        report(0)
    elif f_previous is not None and _cost_settled(f_previous, f, ftol):
        # The saved run made its ftol test after the callback that saved the state: it stopped here.
        return OptimizeResult(x, f, aux, done, evaluate.n_evals, history, "converged: cost change below ftol", skipped)
    message = f"done {max(iters, done)} iterations"  # a resumed run may start at or past iters
    at = _at_bounds(x, box)  # then each iteration's from its accepted trial point (see phi)
    for iteration in range(done + 1, iters + 1):
        held = _outward(g, x, box, at, sign=-1)  # held at a bound by the gradient: outside the free set
        # pg, the projected gradient, is g with the held entries 0: read from g where it is needed
        if _free_size(g, held) <= gtol:
            message = "converged: projected gradient below gtol"
            break
        # Huge gradients (a cost weight of 1e20) overflow the products below, memory_dtype's first:
        # inf or NaN there is an outcome handled here, not a warning for the user.
        with np.errstate(over="ignore", invalid="ignore"):
            d = pairs.direction(g, held, negate=True)  # -lbfgs_direction(pg, pairs.pairs), by matrix products
            if d is None:  # their products overflowed memory_dtype: the same recursion in float64
                d = np.negative(lbfgs_direction(_zeroed(g, held), pairs.pairs, np.dtype(np.float64)))
            d, d_wide, dphi0 = _masked_direction(d, g, x, box, at, held)
            if not -math.inf < dphi0 < 0:
                # Round-off (or overflow) made H useless along this gradient: forget the pairs, go
                # steepest descent.
                pairs.clear()
                d, d_wide, dphi0 = _masked_direction(np.negative(g), g, x, box, at, held)
        if not math.isfinite(dphi0):
            message = "stopped: the gradient is too large (its slope g.d overflows) or not finite"
            break
        if not dphi0 < 0:
            message = "converged: no descent direction inside the box"
            break

        def phi(alpha):  # f along the projected path from this iteration's x, in direction d
            x_trial = (x + alpha * d).astype(x.dtype, copy=False)  # x's dtype, even with pairs wider than it
            # the coordinates the step takes out of the box (out): clipped back, and left out of the slope
            edge, out = _edges(x_trial, box)
            if out.size:
                x_trial[out] = np.clip(x_trial[out], box[0][out], box[1][out])
            f_trial, g_trial, aux_trial = evaluate(x_trial)
            with np.errstate(over="ignore", invalid="ignore"):  # an overflowed slope: the search shrinks the step
                d_moving = d_wide
                if out.size:
                    d_moving = d_wide.copy()  # d where the path moves, 0 where it is clipped
                    d_moving[out] = 0
                slope = _slope(g_trial, d_moving)
            return f_trial, slope, (x_trial, g_trial, aux_trial, edge)

        alpha1 = 1.0 if pairs else _inverse_norm(d)
        _, f_new, _, payload, _ = strong_wolfe_line_search(phi, f, dphi0, alpha1, c1, c2, max_ls)
        if payload is None:
            message = "stopped: the line search found no lower cost"
            break
        x_new, g_new, aux_new, at_new = payload
        with np.errstate(over="ignore", invalid="ignore"):  # overflowed, or inf - inf: not a pair to keep
            s = x_new - x
            y = g_new - g
            sy, yy, ss = _dot(s, y), _dot(y, y), _dot(s, s)
        # Clearly positive curvature: the cosine of the angle between s and y above curvature_eps, a
        # test free of the cost's scale and of the variables'. The test before, s.y > eps y.y, is
        # s.y / y.y > eps, and s.y / y.y is 1/c for a cost multiplied by c: with --beta 1e10 it
        # skipped every pair, and L-BFGS, gradient descent then, ended 12 times above PyTorch's.
        if math.isfinite(sy) and sy > curvature_eps * math.sqrt(ss) * math.sqrt(yy) and _fits(s, ss, yy, memory_dtype):
            pairs.add(s, y, 1.0 / sy)  # kept in memory_dtype
        else:
            skipped += 1
        f_previous = f
        x, f, g, aux, at = x_new, f_new, g_new, aux_new, at_new
        history.append(f)
        done = iteration
        report(iteration)
        if _cost_settled(f_previous, f, ftol):
            message = "converged: cost change below ftol"
            break
    return OptimizeResult(x, f, aux, done, evaluate.n_evals, history, message, skipped)


# ---------------------------------------------------------------------------------- minimize
METHODS = ("lbfgs", "adam")


def minimize(
    fun_and_grad, x0, method="lbfgs", iters=100, *, lr=None, bounds=None, callback=None, resume=None, **options
):
    """Minimise fun_and_grad from x0 with L-BFGS or Adam: the one entry point style transfer uses.

    Args:
        fun_and_grad: x (n,) -> (f, g) or (f, g, aux), see the module docstring.
        x0: (n,) float starting point. Not modified.
        method: "lbfgs" or "adam".
        iters: iterations (L-BFGS) or steps (Adam).
        lr: Adam's learning rate (default 0.01, the course's); L-BFGS takes none (its line
            search finds the step), so it must stay None for "lbfgs".
        bounds: None or (lo, hi), numbers or arrays broadcastable to (n,).
        callback: None or function(Iterate), called with the starting point (iteration 0),
            then after every iteration; Iterate.state() is the optimiser's state.
        resume: None, or such a state (of the same method and settings): continue that run to
            exactly the result the run without interruption gives (see `lbfgs`, `adam`).
        **options: passed on to `lbfgs` or `adam` (history_size, gtol, beta1, ...).

    Returns:
        OptimizeResult.
    """
    if method == "lbfgs":
        if lr is not None:
            raise ValueError("L-BFGS has no learning rate: its line search chooses each step")
        return lbfgs(fun_and_grad, x0, iters, bounds=bounds, callback=callback, resume=resume, **options)
    if method == "adam":
        lr = 0.01 if lr is None else lr
        return adam(fun_and_grad, x0, iters, lr=lr, bounds=bounds, callback=callback, resume=resume, **options)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


# ------------------------------------------- plumbing: the evaluations, the box, where a run starts
class _Counted:
    """Wrap fun_and_grad: count the calls and normalise the answer to (f, g, aux)."""

    def __init__(self, fun_and_grad, n):
        self.fun_and_grad = fun_and_grad
        self.n = n
        self.n_evals = 0

    def __call__(self, x):
        self.n_evals += 1
        out = self.fun_and_grad(x)
        f, g = out[0], out[1]
        aux = out[2] if len(out) > 2 else None
        g = np.asarray(g, dtype=x.dtype).reshape(-1)
        if g.size != self.n:
            raise ValueError(f"fun_and_grad returned a gradient of {g.size} values for {self.n} unknowns")
        return float(f), g, aux


def _box(bounds, x0):
    """Turn bounds=(lo, hi) (numbers or arrays broadcastable to x0) into two (n,) arrays, or None."""
    if bounds is None:
        return None
    lo, hi = bounds
    lo = np.broadcast_to(np.asarray(-np.inf if lo is None else lo, dtype=x0.dtype), x0.shape)
    hi = np.broadcast_to(np.asarray(np.inf if hi is None else hi, dtype=x0.dtype), x0.shape)
    if np.any(lo > hi):
        raise ValueError("bounds: every lower bound must be <= its upper bound")
    return lo, hi


def _project(x, box):
    """P(x) = min(max(x, lo), hi); x itself when there is no box (shape (n,))."""
    return x if box is None else np.clip(x, box[0], box[1])


def _as_flat_float(x0):
    x0 = np.asarray(x0)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a flat vector (n,), got shape {x0.shape}")
    if not np.issubdtype(x0.dtype, np.floating):
        raise ValueError(f"x0 must be a float vector, got dtype {x0.dtype}")
    return x0


@dataclass
class _Start:
    """Where an optimiser begins: its box and counted cost function, the iteration, and the point there."""

    box: Optional[tuple]  # (lo (n,), hi (n,)) or None
    evaluate: "_Counted"
    iteration: int
    x: np.ndarray
    f: float
    g: np.ndarray
    aux: Any
    history: list  # the cost of every iteration so far, the starting point's first


def _start(fun_and_grad, x0, bounds, method, resume, settings):
    """Where both optimisers begin: the start point, or the iteration a saved state was taken after.

    Args:
        fun_and_grad, x0, bounds: as the optimiser was given them.
        method: "adam" or "lbfgs", the optimiser asking.
        resume: None, or a state dict from Iterate.state() (possibly saved and loaded back).
        settings: {name: value} that must equal the saved state's (see `optim_state.check_state`).

    Returns:
        _Start. Without resume: iteration 0 at P(x0), evaluated once (the caller tells its
        callback). With resume: the saved iteration, point, cost, gradient, aux and costs so
        far; nothing is evaluated, and evaluate counts on from the saved number of evaluations.
    """
    x0 = _as_flat_float(x0)
    box = _box(bounds, x0)
    evaluate = _Counted(fun_and_grad, x0.size)
    if resume is None:
        x = _project(x0.copy(), box)
        f, g, aux = evaluate(x)
        return _Start(box, evaluate, 0, x, f, g, aux, [f])
    optim_state.check_state(resume, method, x0, settings)
    evaluate.n_evals = int(optim_state.scalar(resume["n_evals"]))
    return _Start(
        box, evaluate, iteration=int(optim_state.scalar(resume["iteration"])),
        x=optim_state.saved_array(resume, "x", x0.shape, x0.dtype), f=float(optim_state.scalar(resume["f"])),
        g=optim_state.saved_array(resume, "g", x0.shape, x0.dtype), aux=optim_state.scalar(resume["aux"]),
        history=[float(h) for h in resume["history"]],
    )

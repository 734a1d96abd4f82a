"""The saved state of an optimiser: what `Iterate.state()` returns, what `resume=` takes, and the checks.

Every Iterate of `optim.adam` and `optim.lbfgs` carries `state()`, the optimiser's complete state
after that iteration (the point, its cost and gradient, Adam's running averages or L-BFGS's
curvature pairs, the counters), as a dict of arrays and plain values that `scratchnst.checkpoint`
saves without pickle. Given back as `resume=`, it continues the run to exactly the result, bit for
bit, that the run would have reached without the interruption. This module is that bookkeeping;
the algorithms are in `optim`.
"""

import numpy as np


class ResumeError(ValueError):
    """A saved state that does not fit the run it is given to (another method, size, settings) or is
    incomplete; raised before anything is evaluated."""


# The keys of the state dicts that Iterate.state returns and `resume=` takes, per optimiser.
COMMON_KEYS = ("method", "n", "iteration", "x", "f", "g", "aux", "n_evals", "history")
STATE_KEYS = {
    "adam": COMMON_KEYS + ("m", "v", "lr", "beta1", "beta2", "epsilon"),
    "lbfgs": COMMON_KEYS + ("pair_s", "pair_y", "pair_rho", "history_size", "skipped", "f_previous"),
}


def common_state(method, iteration, x, f, g, aux, n_evals, history):
    """The part of a saved state both optimisers share (see `_adam_state`, `_lbfgs_state`)."""
    # history only grows, one cost per iteration, so its first iteration + 1 costs are this
    # iteration's even when state() is called later: no copy per iteration needed.
    return {
        "method": method, "n": int(x.size), "iteration": int(iteration), "x": x, "f": float(f), "g": g,
        "aux": aux, "n_evals": int(n_evals), "history": [float(h) for h in history[: iteration + 1]],
    }


def scalar(value):
    """A number, string, bool or None of a saved state as Python's own (np.load gives 0-d arrays)."""
    return value.item() if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0 else value


def saved_array(state, key, shape, dtype):
    """A fresh writable copy of the array state[key] (np.load's may be read-only), checked first.

    Raises ValueError unless it has this shape and dtype: a float32 gradient in a float64 run
    would change every later step without any error.
    """
    array = np.asarray(state[key])
    if array.shape != tuple(shape) or array.dtype != dtype:
        needs = f"{np.dtype(dtype)} {tuple(shape)}"
        raise ResumeError(f"resume: the saved state's {key} is {array.dtype} {array.shape}, this run needs {needs}")
    return array.copy()


def check_state(state, method, x0, settings):
    """Raise ValueError (one line saying what differs) unless `state` continues this run.

    Args:
        state: the dict given as resume=.
        method: "adam" or "lbfgs", the optimiser asked to continue.
        x0: (n,) the call's start point: the saved x must have its size and dtype.
        settings: {name: value} of the call's settings that change the path (Adam's lr and betas,
            L-BFGS's history_size); each must equal the saved one.
    """
    if not isinstance(state, dict):
        raise ResumeError(f"resume: expected a state dict from Iterate.state(), got {type(state).__name__}")
    saved = scalar(state.get("method"))
    if saved != method:
        raise ResumeError(f"resume: the saved state's method is {saved!r}, this run's is {method!r}")
    missing = [key for key in STATE_KEYS[method] if key not in state]
    if missing:
        raise ResumeError(f"resume: the saved {method} state lacks {', '.join(missing)}")
    wanted = {"n": x0.size, "dtype": x0.dtype.name, **settings}
    for name, value in wanted.items():
        saved = np.asarray(state["x"]).dtype.name if name == "dtype" else scalar(state[name])
        if saved != value:
            raise ResumeError(f"resume: the saved state's {name} is {saved!r}, this run's is {value!r}")
    iteration = scalar(state["iteration"])
    if len(state["history"]) != iteration + 1:
        raise ResumeError(f"resume: the saved state has {len(state['history'])} costs for iteration {iteration}")


def adam_state(*, iteration, x, f, g, aux, n_evals, history, m, v, lr, beta1, beta2, epsilon):
    """Adam's complete state after `iteration` steps: what Iterate.state returns and resume= takes.

    Args:
        iteration, x (n,), f, g (n,), aux, n_evals: the Iterate's.
        history: the costs so far (only the first iteration + 1 are taken).
        m, v: (n,) the running averages of the gradient and of its square after this step.
        lr, beta1, beta2, epsilon: the settings (a resumed run must use the same).

    Returns:
        dict with keys method ("adam"), n, iteration, x, f, g, aux, n_evals, history (list of
        iteration + 1 floats), m, v, lr, beta1, beta2, epsilon. The arrays are the optimiser's
        own, not copies: it replaces its arrays each step and never writes into them.
    """
    return {
        **common_state("adam", iteration, x, f, g, aux, n_evals, history),
        "m": m, "v": v, "lr": float(lr), "beta1": float(beta1), "beta2": float(beta2), "epsilon": float(epsilon),
    }


def lbfgs_state(*, iteration, x, f, g, aux, n_evals, history, pairs, history_size, skipped, f_previous,
                memory_dtype=None, slots=None):
    """L-BFGS's complete state after `iteration` iterations: what Iterate.state returns and resume= takes.

    Args:
        iteration, x (n,), f, g (n,), aux, n_evals: the Iterate's.
        history: the costs so far (only the first iteration + 1 are taken).
        pairs: the k <= history_size curvature pairs (s (n,), y (n,), rho) after this
            iteration, oldest first; s and y of dtype memory_dtype (None: x's).
        history_size: m, the pairs kept (a resumed run must use the same).
        skipped: pairs skipped so far.
        f_previous: the cost of the iteration before (None at iteration 0): the ftol test that
            follows the callback compares it with f.
        slots: the row of `lbfgs_memory.PairMemory` each pair is kept in (None: 0, 1, ...); a
            resumed run puts each pair back in its row, so that its sums add up in the same order.

    Returns:
        dict with keys method ("lbfgs"), n, iteration, x, f, g, aux, n_evals, history (list of
        iteration + 1 floats), pair_s (k, n), pair_y (k, n), pair_rho (k,) float64,
        pair_slots (k,) int64, history_size, skipped, f_previous. x and g are the optimiser's own arrays, not copies:
        it replaces them each iteration and never writes into them.
    """
    k, n = len(pairs), x.size
    dtype = x.dtype if memory_dtype is None else memory_dtype
    return {
        **common_state("lbfgs", iteration, x, f, g, aux, n_evals, history),
        "pair_s": np.array([s for s, _, _ in pairs], dtype=dtype).reshape(k, n),
        "pair_y": np.array([y for _, y, _ in pairs], dtype=dtype).reshape(k, n),
        "pair_rho": np.array([rho for _, _, rho in pairs], dtype=np.float64),
        "pair_slots": np.array(range(k) if slots is None else slots, dtype=np.int64).reshape(k),
        "history_size": int(history_size),
        "skipped": int(skipped),
        "f_previous": None if f_previous is None else float(f_previous),
    }


def saved_lbfgs_memory(state, x, history_size, memory_dtype=None):
    """The curvature pairs, skipped count and previous cost of a saved L-BFGS state (see `_lbfgs_state`).

    Returns:
        (pairs, slots, skipped, f_previous): pairs oldest first, each (s (n,), y (n,), rho) as the
        run made them: s and y fresh arrays of memory_dtype (None: x's dtype; a state saved with
        another is refused), rho a Python float (1 / s.y was one); slots the row each was kept
        in (0, 1, ... for a state saved without them).
    """
    k = len(np.asarray(state["pair_rho"]).reshape(-1))
    if k > history_size:
        raise ResumeError(f"resume: the saved state has {k} curvature pairs, more than history_size {history_size}")
    dtype = x.dtype if memory_dtype is None else np.dtype(memory_dtype)
    s = saved_array(state, "pair_s", (k, x.size), dtype)
    y = saved_array(state, "pair_y", (k, x.size), dtype)
    rho = saved_array(state, "pair_rho", (k,), np.float64)
    pairs = [(s[i].copy(), y[i].copy(), float(rho[i])) for i in range(k)]
    slots = list(range(k))
    if "pair_slots" in state:
        slots = [int(v) for v in np.asarray(state["pair_slots"]).reshape(-1)]
        if len(slots) != k or len(set(slots)) != k or not all(0 <= v < history_size for v in slots):
            raise ResumeError(f"resume: the saved state's pair_slots {slots} are not {k} distinct rows "
                              f"of {history_size}")
    f_previous = scalar(state["f_previous"])
    return pairs, slots, int(scalar(state["skipped"])), None if f_previous is None else float(f_previous)

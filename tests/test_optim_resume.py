"""Tests of resuming scratchnst.optim's runs from a saved Iterate.state(): bit for bit the uninterrupted run.

Every comparison here is exact (np.array_equal, ==): `scratchnst stylize --resume` promises the
very image the run without interruption gives, not a close one.
"""

import io
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

from scratchnst import optim


# ------------------------------------------------------------------------------- problems
def rosenbrock(x):
    """Rosenbrock's banana (nonconvex, smooth) in x's dtype, with an aux dict of floats as style transfer's."""
    return rosen(x), rosen_der(x).astype(x.dtype), {"first": float(x[0]), "norm2": float(x @ x)}


def wave(x):
    """f = sum sin(3 x) + 0.05 x.x: many local minima; with a box, clipped steps give pairs with s.y <= 0."""
    return np.sum(np.sin(3 * x)) + 0.05 * x @ x, 3 * np.cos(3 * x) + 0.1 * x


def bounded_quadratic(n, seed):
    """f = 1/2 x^T A x - b^T x, A of condition 100, b large enough to put the minimum outside the box."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(np.geomspace(1.0, 100.0, n)) @ Q.T
    A = (A + A.T) / 2
    b = 3 * rng.standard_normal(n)
    return lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b, {"f": float(0.5 * x @ A @ x - b @ x)})


def rosenbrock_start(n, dtype=np.float64):
    return np.tile([-1.2, 1.0], n // 2).astype(dtype)


QUADRATIC_BOX = (np.full(30, -1.0), np.linspace(0.5, 1.5, 30))


@dataclass
class Problem:
    """One run to interrupt: what to minimise and how, and what the uninterrupted run must show."""

    method: str
    fun: object
    x0: np.ndarray
    iters: int
    options: dict = field(default_factory=dict)
    message: str = "done"  # how the uninterrupted run's message starts
    skips: bool = False  # the run skips at least one curvature pair
    hits_bounds: bool = False  # iterates after the start have coordinates on the box

    def run(self, resume=None, callback=None, fun=None):
        return optim.minimize(
            fun or self.fun, self.x0, self.method, self.iters, resume=resume, callback=callback, **self.options
        )


PROBLEMS = {
    # history_size 3 or 4 < iterations: old pairs drop out of the memory.
    "lbfgs-rosenbrock": Problem("lbfgs", rosenbrock, rosenbrock_start(30), 40, dict(history_size=3)),
    "lbfgs-rosenbrock-float32": Problem(
        "lbfgs", rosenbrock, rosenbrock_start(30, np.float32), 40, dict(history_size=3)
    ),
    # ftol = 0 stops the run when f repeats exactly: the test that follows the callback.
    "lbfgs-rosenbrock-box": Problem(
        "lbfgs", rosenbrock, rosenbrock_start(30), 60, dict(history_size=3, bounds=(-2.0, 0.5)),
        message="converged: cost change below ftol", hits_bounds=True,
    ),
    "lbfgs-rosenbrock-float32-box": Problem(
        "lbfgs", rosenbrock, rosenbrock_start(30, np.float32), 60, dict(history_size=3, bounds=(-2.0, 0.5)),
        message="stopped: the line search found no lower cost", hits_bounds=True,
    ),
    # style transfer's L-BFGS: float64 points, float32 curvature pairs
    "lbfgs-rosenbrock-box-float32-memory": Problem(
        "lbfgs", rosenbrock, rosenbrock_start(30), 60,
        dict(history_size=3, bounds=(-2.0, 0.5), memory_dtype=np.float32),
        # at the minimum in float32's digits: which test stops it first is rounding's choice
        message=("converged: cost change below ftol", "stopped: the line search found no lower cost"),
        hits_bounds=True,
    ),
    "lbfgs-rosenbrock-ftol": Problem(
        "lbfgs", rosenbrock, rosenbrock_start(30), 40, dict(ftol=1e-3), message="converged: cost change below ftol"
    ),
    "lbfgs-quadratic-box": Problem(
        "lbfgs", bounded_quadratic(30, seed=0), np.random.default_rng(0).uniform(-3, 3, 30), 40,
        dict(history_size=3, bounds=QUADRATIC_BOX), hits_bounds=True,
    ),
    "lbfgs-wave-box-skips": Problem(
        "lbfgs", wave, np.random.default_rng(2).uniform(-2, 2, 20), 40, dict(history_size=4, bounds=(-1.5, 1.0)),
        message="converged", skips=True, hits_bounds=True,
    ),
    "lbfgs-wave-box-gtol": Problem(
        "lbfgs", wave, np.random.default_rng(2).uniform(-2, 2, 30), 40, dict(history_size=4, bounds=(-1.5, 1.0)),
        message="converged: projected gradient below gtol", skips=True, hits_bounds=True,
    ),
    "adam-rosenbrock": Problem("adam", rosenbrock, rosenbrock_start(30), 40, dict(lr=0.01)),
    "adam-rosenbrock-float32": Problem("adam", rosenbrock, rosenbrock_start(30, np.float32), 40, dict(lr=0.01)),
    "adam-rosenbrock-box": Problem(
        "adam", rosenbrock, rosenbrock_start(30), 40, dict(lr=0.1, bounds=(-1.0, 0.2)), hits_bounds=True
    ),
    "adam-quadratic-box": Problem(
        "adam", bounded_quadratic(30, seed=1), np.random.default_rng(1).uniform(-3, 3, 30), 40,
        dict(lr=0.05, beta1=0.5, beta2=0.9, epsilon=1e-6, bounds=QUADRATIC_BOX), hits_bounds=True,
    ),
}


# ------------------------------------------------------------------------------- helpers
def saved_and_loaded(state, scalars_in_npz=False):
    """The state after a trip through a checkpoint: arrays by np.savez, the rest by json.

    scalars_in_npz: numbers and strings go into the npz too and come back as 0-d arrays.
    The loaded arrays are made read-only, as a memory-mapped file would give them.
    """
    def in_npz(value):
        return isinstance(value, np.ndarray) or (scalars_in_npz and type(value) in (int, float, str))

    arrays = {key: value for key, value in state.items() if in_npz(value)}
    rest = {key: value for key, value in state.items() if key not in arrays}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer) as npz:
        loaded = {key: npz[key] for key in npz.files}
    for array in loaded.values():
        array.flags.writeable = False
    loaded.update(json.loads(json.dumps(rest)))
    return loaded


def assert_plain(state):
    """Only arrays, Python scalars, lists of floats and None (plus aux, which the caller serialises)."""
    for key, value in state.items():
        if key == "aux":
            continue
        plain = value is None or isinstance(value, np.ndarray) or type(value) in (float, int, str, bool)
        floats = type(value) is list and all(type(v) is float for v in value)
        assert plain or floats, f"state[{key!r}] is a {type(value).__name__}"


def assert_same_state(state, expected):
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert state[key].dtype == value.dtype and np.array_equal(state[key], value), key
        else:
            assert type(state[key]) is type(value) and state[key] == value, key


def assert_same_iterates(seen, expected):
    """Two callback sequences of (Iterate, its state() when it was made) are the same, bit for bit."""
    assert [it.iteration for it, _ in seen] == [it.iteration for it, _ in expected]
    for (it, state), (want, want_state) in zip(seen, expected):
        assert np.array_equal(it.x, want.x) and np.array_equal(it.g, want.g), it.iteration
        assert (it.f, it.aux, it.n_evals) == (want.f, want.aux, want.n_evals), it.iteration
        assert_same_state(state, want_state)


def assert_same_result(result, expected):
    assert result.x.dtype == expected.x.dtype and np.array_equal(result.x, expected.x)
    assert result.fun == expected.fun and result.aux == expected.aux
    assert result.iterations == expected.iterations and result.n_evals == expected.n_evals
    assert result.history == expected.history
    assert result.message == expected.message and result.skipped_pairs == expected.skipped_pairs


class Counting:
    """fun_and_grad that counts its calls."""

    def __init__(self, fun):
        self.fun, self.calls = fun, 0

    def __call__(self, x):
        self.calls += 1
        return self.fun(x)


def uninterrupted(problem):
    """The run without interruption: its result and its callback's (Iterate, state()) sequence."""
    seen = []
    result = problem.run(callback=lambda it: seen.append((it, it.state())))
    return result, seen


# --------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_resuming_after_any_iteration_gives_the_uninterrupted_run(name):
    problem = PROBLEMS[name]
    expected, seen = uninterrupted(problem)
    # The problem does what it is here for.
    assert expected.message.startswith(problem.message)
    assert (expected.skipped_pairs > 0) == problem.skips
    if problem.hits_bounds:  # the box clips points that resumed runs compute
        lo, hi = problem.options["bounds"]
        assert any(np.any((it.x == lo) | (it.x == hi)) for it, _ in seen[1:])
    if "history_size" in problem.options:
        assert expected.iterations > problem.options["history_size"], "no pair would drop out of the memory"
    assert len(seen) == expected.iterations + 1

    for k, (_, state) in enumerate(seen):
        assert state["iteration"] == k and state["method"] == problem.method
        assert_plain(state)
        for scalars_in_npz in (False, True):
            resumed_seen = []
            fun = Counting(problem.fun)
            result = problem.run(
                saved_and_loaded(state, scalars_in_npz), lambda it: resumed_seen.append((it, it.state())), fun
            )
            assert_same_result(result, expected)
            # The saved point is not evaluated again, nor is the callback told about it.
            assert fun.calls == expected.n_evals - state["n_evals"], k
            assert_same_iterates(resumed_seen, seen[k + 1:])
            if resumed_seen:  # asked again once the run is over, the last state is still the same
                assert_same_state(resumed_seen[-1][0].state(), seen[-1][0].state())


@pytest.mark.parametrize("name", ["lbfgs-wave-box-skips", "lbfgs-rosenbrock-box", "adam-quadratic-box"])
def test_a_state_stays_valid_while_the_run_goes_on(name):
    # Iterate.state's arrays are the optimiser's own: it must never write into them afterwards.
    seen = []
    PROBLEMS[name].run(callback=lambda it: seen.append((it, saved_and_loaded(it.state()))))
    for it, state_then in seen:
        assert_same_state(saved_and_loaded(it.state()), state_then)


@pytest.mark.parametrize("method", optim.METHODS)
def test_the_state_holds_what_the_optimiser_needs(method):
    problem = PROBLEMS[f"{method}-rosenbrock-float32"]
    _, seen = uninterrupted(problem)
    it, state = seen[5]
    n = problem.x0.size
    common = {"method", "n", "iteration", "x", "f", "g", "aux", "n_evals", "history"}
    own = {"lbfgs": {"pair_s", "pair_y", "pair_rho", "pair_slots", "history_size", "skipped", "f_previous"},
           "adam": {"m", "v", "lr", "beta1", "beta2", "epsilon"}}[method]
    assert set(state) == common | own
    assert (state["n"], state["iteration"], state["f"], state["n_evals"]) == (n, 5, it.f, it.n_evals)
    assert state["x"].dtype == np.float32 and np.array_equal(state["x"], it.x) and np.array_equal(state["g"], it.g)
    assert state["aux"] == it.aux and state["history"] == [i.f for i, _ in seen[:6]]
    if method == "lbfgs":
        k = len(state["pair_rho"])
        assert 1 <= k <= 3 and state["pair_s"].shape == state["pair_y"].shape == (k, n)
        assert state["pair_s"].dtype == np.float32 and state["pair_rho"].dtype == np.float64
        assert state["f_previous"] == seen[4][0].f and seen[0][1]["f_previous"] is None
    else:
        assert state["m"].shape == state["v"].shape == (n,) and np.all(state["v"] >= 0)
        assert not np.any(seen[0][1]["m"]) and not np.any(seen[0][1]["v"])  # zeros before the first step


def test_iterate_repr_leaves_the_state_out():
    it = optim.Iterate(0, np.zeros(2), 0.0, np.zeros(2), None, 1, state=lambda: {})
    assert "state" not in repr(it)
    assert optim.Iterate(0, np.zeros(2), 0.0, np.zeros(2), None, 1).state is None


def refuse(*args):
    raise AssertionError("called after a resume that had nothing left to do")


@pytest.mark.parametrize("name", ["lbfgs-rosenbrock", "lbfgs-rosenbrock-ftol", "adam-rosenbrock"])
def test_resuming_at_the_last_iteration_returns_at_once(name):
    problem = PROBLEMS[name]
    expected, seen = uninterrupted(problem)
    state = saved_and_loaded(seen[-1][1])
    optimiser = optim.lbfgs if problem.method == "lbfgs" else optim.adam
    result = optimiser(refuse, problem.x0, problem.iters, resume=state, callback=refuse, **problem.options)
    assert_same_result(result, expected)
    # Asked for fewer iterations than the saved run has done: nothing to do either.
    result = optimiser(refuse, problem.x0, expected.iterations - 5, resume=state, callback=refuse, **problem.options)
    assert np.array_equal(result.x, expected.x) and result.history == expected.history
    assert result.iterations == expected.iterations and result.n_evals == expected.n_evals


def test_resuming_where_the_ftol_test_stopped_the_run_stops_there_again():
    problem = PROBLEMS["lbfgs-rosenbrock-ftol"]
    expected, seen = uninterrupted(problem)
    assert expected.iterations < problem.iters
    result = problem.run(saved_and_loaded(seen[-1][1]), refuse, refuse)
    assert result.message == "converged: cost change below ftol"
    assert_same_result(result, expected)


def test_a_resumed_run_can_go_further_than_the_saved_one_meant_to():
    # Saved after 20 of 20 iterations, resumed with iters = 40: the same as 40 at once.
    problem = PROBLEMS["lbfgs-rosenbrock"]
    expected, _ = uninterrupted(problem)
    seen = []
    optim.lbfgs(rosenbrock, problem.x0, 20, callback=lambda it: seen.append(it.state()), **problem.options)
    result = problem.run(saved_and_loaded(seen[-1]))
    assert_same_result(result, expected)


@pytest.fixture(scope="module")
def states():
    """A state of each optimiser after 3 iterations on 6-dimensional Rosenbrock."""
    found = {}
    for method, options in (("lbfgs", dict(history_size=3)), ("adam", dict(lr=0.01))):
        seen = []
        optim.minimize(rosenbrock, rosenbrock_start(6), method, 3, callback=lambda it: seen.append(it.state()),
                       **options)
        found[method] = saved_and_loaded(seen[-1])
    return found


@pytest.mark.parametrize(
    "method, state_of, x0, options, word",
    [
        ("adam", "lbfgs", rosenbrock_start(6), dict(lr=0.01), "method"),
        ("lbfgs", "adam", rosenbrock_start(6), dict(history_size=3), "method"),
        ("lbfgs", "lbfgs", rosenbrock_start(8), dict(history_size=3), "n"),
        ("adam", "adam", rosenbrock_start(4), dict(lr=0.01), "n"),
        ("lbfgs", "lbfgs", rosenbrock_start(6, np.float32), dict(history_size=3), "dtype"),
        ("adam", "adam", rosenbrock_start(6, np.float32), dict(lr=0.01), "dtype"),
        ("lbfgs", "lbfgs", rosenbrock_start(6), dict(history_size=10), "history_size"),
        ("adam", "adam", rosenbrock_start(6), dict(lr=0.02), "lr"),
        ("adam", "adam", rosenbrock_start(6), dict(lr=0.01, beta1=0.8), "beta1"),
        ("adam", "adam", rosenbrock_start(6), dict(lr=0.01, beta2=0.99), "beta2"),
        ("adam", "adam", rosenbrock_start(6), dict(lr=0.01, epsilon=1e-6), "epsilon"),
    ],
)
def test_a_state_that_does_not_match_the_call_is_refused(states, method, state_of, x0, options, word):
    with pytest.raises(ValueError, match=rf"\bresume\b.*\b{word}\b") as error:
        optim.minimize(refuse, x0, method, 10, resume=states[state_of], callback=refuse, **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "method, change, word",
    [
        ("lbfgs", lambda s: s.pop("g"), "lacks g"),
        ("adam", lambda s: s.pop("m"), "lacks m"),
        ("lbfgs", lambda s: s.update(g=s["g"][:-1]), r"state's g is float64 \(5,\)"),
        ("lbfgs", lambda s: s.update(g=s["g"].astype(np.float32)), r"state's g is float32 \(6,\)"),
        ("adam", lambda s: s.update(v=s["v"][None]), r"state's v is float64 \(1, 6\)"),
        ("lbfgs", lambda s: s.update(pair_s=s["pair_s"][:, :-1]), "state's pair_s is"),
        ("lbfgs", lambda s: s.update(history=s["history"][:-1]), "costs for iteration 3"),
        ("lbfgs", lambda s: s.update(pair_slots=np.zeros_like(s["pair_slots"])), "not 3 distinct rows of 3"),
        ("lbfgs", lambda s: s.update(pair_slots=s["pair_slots"] + 3), "not 3 distinct rows of 3"),
        ("lbfgs", lambda s: s.update(method="sgd"), "method"),
    ],
)
def test_a_broken_state_is_refused(states, method, change, word):
    state = dict(states[method])
    change(state)
    options = dict(history_size=3) if method == "lbfgs" else {}
    with pytest.raises(ValueError, match=word) as error:
        optim.minimize(refuse, rosenbrock_start(6), method, 10, resume=state, callback=refuse, **options)
    assert "\n" not in str(error.value)


def test_a_state_saved_without_the_pairs_rows_still_resumes(states):
    # As the version before lbfgs_memory saved them: the pairs go to rows 0, 1, ... in order, and
    # the run goes on to the minimum (not bit for bit: the rows of the products differ).
    state = dict(states["lbfgs"])
    del state["pair_slots"]
    result = optim.lbfgs(rosenbrock, rosenbrock_start(6), 200, history_size=3, resume=state)
    np.testing.assert_allclose(result.x, np.ones(6), atol=1e-5)


def test_resuming_leaves_the_state_alone(states):
    state = dict(states["lbfgs"])
    before = {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in state.items()}
    optim.lbfgs(rosenbrock, rosenbrock_start(6), 10, history_size=3, resume=state)
    assert_same_state(state, before)

"""One check of an exercise, and how the student's answer to it is judged.

A `Case` is one call of the student's function on seeded inputs with the value it must return
and the classic `Mistake`s it can recognise; `judge` turns the worker's answer to it into a
`CheckResult`: ok, or what differs (expected against given, the largest error), the mistake it
matches or a generic reason, the exception and where it was raised. Also here: the small helpers
every exercise's checks make their inputs and witnesses with (`randn`, `as_float32`,
`numeric_gradient`). The exercises' own checks: exercise_checks_layers, _costs and _optim.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def rel_error(x, y):
    """gradcheck.rel_error: max |x - y| / max(1e-8, |x| + |y|), elementwise (0 for empty arrays).

    Written out here, not imported: gradcheck imports layers, and in a student copy that checks
    itself, layers is the student's code, which must run only in the child (a syntax error or an
    endless loop there must cost points, not stop the checker).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))

# Pass thresholds. Against the reference and PyTorch only the order of float64 operations differs
# (errors ~1e-15; 1e-8 leaves room for elements that are small differences of large sums). Against
# finite differences, gradcheck's threshold, relative to the largest value: the differences' round-off
# is absolute, so an element near zero (which a fresh seed can draw) has no meaningful relative error
# (the exact comparisons with the reference check every element). float32 results are compared with the float32
# reference relative to the largest value: elements near zero have no meaningful relative error
# in float32. Costs must reach float64 accuracy even from float32 activations.
VALUE_TOL = 1e-8
FLOAT32_TOL = 1e-5
COST_SUM_TOL = 1e-9
# A given value "is" a known mistake when it agrees with what that mistake computes to 1e-6: far
# looser than round-off, far tighter than any two different formulas agree by chance.
MISTAKE_TOL = 1e-6


@dataclass
class Mistake:
    """A classic mistake: what it computes for one case, and how to explain it.

    Recognised by its value (the given part equals `value`), or, where the mistake's value depends
    on how the student wrote the code (the order of a loop), by where it differs: with
    `differs_only_at` (a boolean array of the part's shape) the given part must equal the right one
    everywhere outside the mask and differ inside it.
    """

    name: str  # short, e.g. "ReLU mask x >= 0"
    why: str  # the explanation shown when the given value matches
    value: Any  # what the mistaken code returns (for part `part` of the result), or None
    part: int = 0
    tol: float = MISTAKE_TOL
    differs_only_at: Any = None


@dataclass(frozen=True)
class Pick:
    """What a check compares of the student's return value: the items at `paths`, as data.

    paths: index paths, e.g. ((0,),) for `out` of (out, cache), or ((0,), (1, 1)) for out and
        cache[1]; one path gives the item itself, several a tuple.
    structures: what the value at each depth should be, for the message when it is not
        ("a tuple (out, cache)", ...).
    """

    paths: tuple
    structures: tuple

    def __call__(self, value):
        picked = []
        for path in self.paths:
            item = value
            for depth, index in enumerate(path):
                item = element(item, index, self.structures[min(depth, len(self.structures) - 1)])
            picked.append(item)
        return picked[0] if len(picked) == 1 else tuple(picked)


@dataclass
class Case:
    """One check: a call of the student's function and what it must return.

    expected is an array, a number, None, or, when `parts` names them, a tuple of those;
    `pick` takes from the student's return value what is compared (default: all of it).
    """

    label: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    parts: tuple = ()  # names of the parts when expected is a tuple, e.g. ("dx", "dw", "db")
    pick: Pick = None
    mistakes: list = field(default_factory=list)
    tol: float = VALUE_TOL
    normwise: bool = False  # error relative to the largest expected value (float32 cases)
    dtype: Any = None  # every floating array part (or a numeric result) must have this dtype
    hint: str = ""  # shown when the check fails and no mistake is recognised
    size_rule: str = ""  # how the output size is computed: named when the given shape is off by one
    # A main case is the exercise's own question: failing one earns the exercise no points at all.
    # None: the first case of the exercise is its main case.
    main: bool = None
    graded_only: bool = False  # not shipped in a student copy's self-check values (see at_scale)
    # Counted in the fraction of checks an exercise's points follow. Not the checks that only some places
    # run (against PyTorch, where it is installed; at scale, when graded): the same code must earn the
    # same points in the self-check, a teacher's grading and Gradescope's. They still pass or fail, and
    # a main one still costs all the points.
    counted: bool = True


def at_scale(what, args, expected, **options):
    """A backward pass's main case on inputs too large to differentiate numerically in the exercise's time.

    The other checks compare values on small inputs, and there a submission could return, with no
    formula in it, centred differences of its own forward pass: exact for the linear layers and, with
    Richardson's extrapolation, for the polynomial costs, and fast on 200 values. On these inputs
    (65,000 to 205,000 values) a formula takes well under a second, even as the course's loops (0.18 s
    for conv2d_backward), while the 2 forward passes per value of differences take about a minute
    (measured on a 2-core Xeon: 44 to 134 s with the reference's vectorised forward passes, against the
    default --timeout of 10 s): they run out of time, and the exercise earns no points. Graded only: a student copy's
    self-check does not ship them (they would make its values file 10 MB larger).
    """
    return Case(f"at scale: {what} (a formula's work; numerical differences would not finish in time)", args,
                expected, main=True, normwise=True, graded_only=True, counted=False, **options)


class Malformed(Exception):
    """The student's return value does not have the structure the function promises."""


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, dict) and "unsupported" in value:
        return f"an object of type {value['unsupported']}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {value}"
    if isinstance(value, int) and abs(value) >= 10 ** 15:   # beyond a float's digits, or its range
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10 ** 4000 else "a huge integer"
    if isinstance(value, (int, float, np.number)):
        return f"the number {float(value):.6g}" + (f" ({value.dtype})" if isinstance(value, np.generic) else "")
    return "None" if value is None else f"a {type(value).__name__}"


def element(value, i, structure):
    """value[i], or Malformed (a failed check) saying that the student returned no `structure`."""
    if isinstance(value, (tuple, list)) and len(value) > i:
        return value[i]
    raise Malformed(f"returned {_describe(value)}; expected {structure}")


def _is_number(value):
    """A real number: Python's, NumPy's, or a 0-d array (booleans are not numbers here)."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _shape_of(value):
    """value's shape if it is an array or a number, read without converting it; None for anything else.

    A wrong answer is converted to float64 to find what went wrong (a modelled mistake, a constant
    factor, float32 sums): only an answer of the form it is compared with is, since one of another
    form (a list of 4000 boolean arrays where one array is due) matches no mistake, and converting it
    cost the grader 0.9 GB and 50 s, outside the student's budget.
    """
    if isinstance(value, np.ndarray):
        return value.shape
    return () if _is_number(value) else None


def _same_form(got, reference):
    """True if got is an array or number of reference's (a trusted value's) shape."""
    return _shape_of(got) == np.shape(reference)


def _error(got, expected, normwise):
    """Largest error of got against expected (float64 arrays of one shape): elementwise relative, as
    gradcheck.rel_error, or relative to the largest expected value (normwise, for float32)."""
    with np.errstate(all="ignore"):
        if normwise:
            error = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30)) \
                if expected.size else 0.0
        else:
            error = rel_error(got, expected)
    return error if np.isfinite(error) else math.inf


def _compare_value(got, expected, case):
    """(ok, error or None, message) for one part of a result."""
    if expected is None:
        return got is None, 0.0 if got is None else None, f"expected None, got {_describe(got)}"
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return False, None, f"expected an array of shape {expected.shape}, got {_describe(got)}"
        if got.shape != expected.shape:
            more = " (the same number of values: a reshape or transpose missing?)" if got.size == expected.size else ""
            return False, None, f"expected shape {expected.shape}, got shape {got.shape}{more}"
        if not (np.issubdtype(got.dtype, np.number) and not np.issubdtype(got.dtype, np.complexfloating)):
            return False, None, f"expected real numbers, got dtype {got.dtype}"
        if case.dtype is not None and np.issubdtype(expected.dtype, np.floating) and got.dtype != case.dtype:
            return False, None, f"expected dtype {np.dtype(case.dtype)}, got {got.dtype}: keep the dtype you are given"
    elif not _is_number(got):
        return False, None, f"expected a number, got {_describe(got)}"
    elif case.dtype is not None and hasattr(got, "dtype") and got.dtype != case.dtype:
        return False, None, f"returned a {got.dtype} number: compute in (and return) {np.dtype(case.dtype)}"
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    error = _error(g, e, case.normwise)
    if e.ndim == 0:
        shown_e, shown_g = _shown(float(e), float(g), 10)
        return error <= case.tol, error, f"expected {shown_e}, got {shown_g}"
    with np.errstate(all="ignore"):
        # the element the error measure blames: largest relative difference, or largest absolute one
        blame = np.abs(g - e) if case.normwise else np.abs(g - e) / np.maximum(1e-8, np.abs(g) + np.abs(e))
        worst = np.unravel_index(np.argmax(np.where(np.isnan(blame), np.inf, blame)), e.shape)
    index = tuple(int(i) for i in worst)
    shown_e, shown_g = _shown(float(e[worst]), float(g[worst]), 6)
    return error <= case.tol, error, f"at {index}: expected {shown_e}, got {shown_g}"


def _shown(expected, got, digits):
    """expected and got as text with `digits` significant digits, or as many more as it takes for two
    different values not to look the same ("expected 0.639595, got 0.639595" helps nobody)."""
    while True:
        a, b = f"{expected:.{digits}g}", f"{got:.{digits}g}"
        if a != b or expected == got or digits >= 17 or expected != expected or got != got:
            return a, b
        digits += 1


# How close an answer computed in float32 comes to the float64 one: float32's rounding (6e-8 a step)
# grown over a long sum; far closer than any wrong formula, far looser than float64's round-off.
FLOAT32_SLIP_TOL = 1e-5


def _float32_reason(got, expected, case):
    """The likely reason when got is the answer to float32's precision only, with float32 inputs or
    float32 values in it (a cost summed in float32 and returned as a float); else ""."""
    if not _same_form(got, expected):
        return ""
    if getattr(got, "dtype", None) == np.float32:  # a float32 result: the dtype checks say what is wrong
        return ""
    try:
        g, e = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if g.shape != e.shape or not np.all(np.isfinite(g)) or _error(g, e, True) > FLOAT32_SLIP_TOL:
        return ""
    inputs = list(case.args) + list(case.kwargs.values())
    float32_in = False
    while inputs and not float32_in:
        item = inputs.pop()
        if isinstance(item, (tuple, list)):
            inputs += list(item)
        float32_in = getattr(item, "dtype", None) == np.float32
    with np.errstate(all="ignore"):
        float32_values = bool(np.all(g.astype(np.float32).astype(np.float64) == g))
    if not (float32_in or float32_values):
        return ""
    return ("right to float32's precision only: summed in float32? (convert to float64 before summing: "
            "x.astype(np.float64))")


def _matches(got, expected, mistake, case):
    """True if the given value is what the mistake computes, to the mistake's (or a float32 case's) tolerance.

    A mistake that, on this input, computes nearly the right answer is never named: the given value
    would match it by being nearly right, not by being that mistake.
    """
    if mistake.differs_only_at is not None:
        return _differs_only_at(got, expected, np.asarray(mistake.differs_only_at, dtype=bool), case)
    if mistake.value is None or got is None:
        return False
    if not _same_form(got, mistake.value):
        return False
    try:
        g, m = np.asarray(got, dtype=np.float64), np.asarray(mistake.value, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    tol = max(mistake.tol, case.tol) if case.normwise else mistake.tol
    if g.shape != m.shape or _error(g, m, case.normwise) > tol:
        return False
    return m.shape != e.shape or _error(m, e, case.normwise) > 10 * tol


def _differs_only_at(got, expected, mask, case):
    """True if got equals expected outside mask and differs somewhere inside it."""
    if not _same_form(got, expected):
        return False
    try:
        g, e = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if g.shape != e.shape or mask.shape != e.shape or not mask.any():
        return False
    outside = _error(g[~mask], e[~mask], case.normwise) if (~mask).any() else 0.0
    return outside <= max(case.tol, MISTAKE_TOL) and _error(g[mask], e[mask], case.normwise) > 10 * case.tol


def dtype_slip(got, expected, case):
    """A Mistake if got has the right values (to float32 accuracy) in the wrong dtype, else None."""
    want = getattr(expected, "dtype", None) if case.dtype is None else np.dtype(case.dtype)
    if want is None and type(expected) is float:
        want = np.dtype(np.float64)  # a cost: a Python float, that is, float64
    have = getattr(got, "dtype", None)
    if want is None or have is None or have == want or not np.issubdtype(want, np.floating):
        return None
    if not _same_form(got, expected):
        return None
    try:
        g, e = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if g.shape != e.shape or _error(g, e, True) > 1e-4:
        return None
    if np.dtype(have).itemsize > np.dtype(want).itemsize:
        why = (f"the values are right but come back as {have} for {want} inputs: an array made with "
               f"np.zeros(shape) or a float64 constant promoted them; make new arrays with dtype=x.dtype")
    else:
        why = f"the values are right but come back as {have}; this result must be {want}"
    return Mistake(f"dtype slip ({have} instead of {want})", why, None)


def size_slip(got, expected, case):
    """A Mistake if got's shape is expected's with H or W off by one (an output-size formula slip)."""
    if not case.size_rule or not isinstance(got, np.ndarray) or not isinstance(expected, np.ndarray):
        return None
    if got.ndim != 4 or expected.ndim != 4 or got.shape[0] != expected.shape[0] or got.shape[3] != expected.shape[3]:
        return None
    off = (got.shape[1] - expected.shape[1], got.shape[2] - expected.shape[2])
    if off == (0, 0) or max(abs(d) for d in off) != 1:
        return None
    return Mistake("output size off by one", case.size_rule, None)


def _generic_reason(got, expected):
    """A generic reason for a wrong value of the right shape: NaN, zeros, a constant factor, the sign."""
    if not _same_form(got, expected):
        return ""
    try:
        g, e = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if g.shape != e.shape:
        return ""
    if not np.all(np.isfinite(g)):
        return "the result contains NaN or inf"
    if not np.any(g) and np.any(e):
        return "the result is all zeros"
    if g.size > 1 and np.any(e) and np.any(g):  # for one number, any two differ by "a constant factor"
        c = float(np.sum(g * e) / np.sum(e * e))
        if np.max(np.abs(g - c * e)) <= 1e-6 * np.max(np.abs(g)) and abs(c - 1) > 1e-3:
            if abs(c + 1) < 1e-6:
                return "the result has the wrong sign (given = -expected)"
            return f"the result is {c:.6g} times the right value: a constant factor is missing or extra"
    return ""


@dataclass
class CheckResult:
    """What one check found."""

    label: str
    status: str  # "ok", "fail", "not done", "error", "timeout"
    error: float = None  # the largest error, when values were compared
    normwise: bool = False  # error is relative to the largest expected value, not elementwise (Case.normwise)
    details: list = field(default_factory=list)  # lines to show under the check, or recognised Mistakes
    mistakes: list = field(default_factory=list)  # names of the recognised mistakes
    hint: str = ""
    where: str = ""  # for "not done" and "error": file:line in the student's code
    function: str = ""  # for "not done" and "error": the function that raised
    printed: list = field(default_factory=list)  # the first lines the call printed (the self-check shows them)
    printed_lines: int = 0  # how many lines it printed in all


def _input_name(path, params):
    head = params[path[0]] if type(path[0]) is int and 0 <= path[0] < len(params) else str(path[0])
    return head + "".join(f"[{i}]" for i in path[1:])


# What interpreting an answer may raise when the student's value is not what it should be (a number
# beyond a float's range, a structure that does not index): the check fails, the grader goes on.
_UNREADABLE = (Malformed, ArithmeticError, ValueError, TypeError, LookupError, MemoryError, RecursionError)


def judge(answer, case, params):
    """Turn the worker's answer to one case into a CheckResult (never raises: an answer that cannot be
    compared, such as an integer too large for a float, fails its check).

    Args:
        answer: the dict StudentProcess.call returned.
        case: the Case that was called.
        params: the names of the function's parameters, to name an input it wrote into.
    """
    result = _verdict(answer, case, params)
    result.printed = list(answer.get("printed") or [])
    result.printed_lines = max(answer.get("printed_count") or 0, len(result.printed))
    return result


def _verdict(answer, case, params):
    status = answer["status"]
    if status == "import timeout":
        return CheckResult(case.label, "timeout", details=[answer["message"]])
    if status == "garbled":
        return CheckResult(case.label, "error", details=[
            f"the answer could not be read and was discarded: {answer['message']}"])
    if status == "budget":
        return CheckResult(case.label, "timeout", details=["not run: the student's total time budget ran out"])
    if status == "timeout":
        return CheckResult(case.label, "timeout", details=[
            "still running when the exercise's time ran out: an endless loop? (stopped; --timeout sets the limit)"])
    if status == "crashed":
        tail = f": {answer['message']}" if answer["message"] else ""
        return CheckResult(case.label, "error", details=[
            f"the student's code ended the worker process (exit status {answer['code']}){tail}"])
    if status in ("not done", "error"):
        where = f" ({answer['where']})" if answer["where"] else ""
        line = f"{answer['type']}: {answer['message']}" if answer["message"] else answer["type"]
        return CheckResult(case.label, status, details=[f"{line}{where}"], where=answer["where"],
                           function=answer["function"])
    if status != "ok":   # sandbox.StudentProcess.call lets no other status through; a grader bug if it did
        raise ValueError(f"judge: unknown answer status {status!r}")
    result = CheckResult(case.label, "ok", normwise=case.normwise)
    for path in answer.get("mutated", []):
        mistake = Mistake(f"wrote into its input {_input_name(path, params)}",
                          "never modify inputs, dout or caches: compute into new arrays", None)
        result.status = "fail"
        result.details.append(mistake)
        result.mistakes.append(mistake.name)
    try:
        got = case.pick(answer.get("value")) if case.pick else answer.get("value")
        if case.parts:
            structure = f"a tuple ({', '.join(case.parts)})"
            if not isinstance(got, (tuple, list)) or len(got) != len(case.parts):
                raise Malformed(f"returned {_describe(got)}; expected {structure}")
            pairs = list(zip(case.parts, got, case.expected))
        else:
            pairs = [("", got, case.expected)]
    except Malformed as error:
        result.status = "fail"
        result.details.append(str(error))
        return result
    except _UNREADABLE as error:
        result.status = "fail"
        result.details.append(f"the answer could not be read as the function's result ({type(error).__name__})")
        return result
    try:
        return _compare_parts(result, pairs, case)
    except _UNREADABLE as error:
        result.status = "fail"
        result.error = None
        result.details.append(f"the answer could not be compared with the expected value ({type(error).__name__})")
        return result


def _compare_parts(result, pairs, case):
    errors = []
    for i, (part, g, e) in enumerate(pairs):
        ok, error, message = _compare_value(g, e, case)
        errors.append(error)
        if ok:
            continue
        result.status = "fail"
        result.details.append(f"{part} {message}" if part else message)
        named = [m for m in (dtype_slip(g, e, case), size_slip(g, e, case)) if m]
        named = named or [m for m in case.mistakes if m.part == i and _matches(g, e, m, case)]
        result.details += named
        result.mistakes += [m.name for m in named]
        if not named:
            reason = _generic_reason(g, e) or _float32_reason(g, e, case)
            if reason:
                result.details.append(reason)
            if case.hint:
                result.hint = case.hint
    # a part that could not be compared (wrong shape or type) leaves no meaningful largest error
    result.error = None if None in errors else max(errors)
    return result


# ------------------------------------------------------------- inputs and witnesses of the checks
def randn(rng, *shape):
    """Standard normal float64 samples of the given shape."""
    return rng.standard_normal(shape)


def as_float32(*arrays):
    """The arrays cast to float32, as a tuple (the run path's dtype)."""
    return tuple(a.astype(np.float32) for a in arrays)


def numeric_gradient(ref, f, x, dout, h=1e-5):
    """Centred differences of sum(f(x) * dout) (ref.gradcheck.eval_numerical_gradient_array)."""
    return ref.gradcheck.eval_numerical_gradient_array(f, x, dout, h=h)

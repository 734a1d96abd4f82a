"""Gradient checking: centred finite differences, `rel_error`, and the engine of the `scratchnst gradcheck` table.

A backward pass is right when it agrees with two independent witnesses:

1. the definition of the derivative, by centred differences in float64:
       dJ/dx[i] ~ (J(x + h e_i) - J(x - h e_i)) / (2h),   with J(x) = sum(f(x) * dout)
   ("pushing" a fixed upstream gradient dout through f turns any layer into a scalar cost);
2. PyTorch autograd on the same inputs and the same `dout`.
"""

import ast
import inspect
import math
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scratchnst import torch_ref

# A row passes when the analytic gradient agrees with the numeric one to NUMERIC_TOL and with
# PyTorch (forward output and every gradient) to TORCH_TOL, all in float64. Centred differences
# have truncation error O(h^2) and round-off O(eps / h): about 1e-10 with h = 1e-5, so 1e-7 leaves
# room for elements that are small compared with the sum they come from. PyTorch computes the same
# sums in another order: only round-off separates us.
NUMERIC_TOL = 1e-7
TORCH_TOL = 1e-10


def rel_error(x, y):
    """Largest elementwise relative error, max |x - y| / max(1e-8, |x| + |y|) (as in CS231n).

    Args:
        x, y: arrays of the same shape (or scalars).

    Returns:
        float; about 1e-16..1e-12 for the same float64 computation done two ways, 1e-7 or more
        points to a mistake (for float64 gradient checks).
    """
    x, y = _float64_pair(x, y)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _float64_pair(x, y):
    """x and y as float64 arrays of one shape (ValueError if their shapes differ)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    return x, y


def rel_error_normwise(x, y):
    """max |x - y| / max(1e-8, max(|x| + |y|)): the error relative to the largest element.

    The yardstick for the gradient of a scalar cost: the round-off of a difference quotient is
    about eps * |J| / h on every element alike, so an element a thousand times smaller than the
    largest has a thousand times its relative error without anything being wrong.
    """
    x, y = _float64_pair(x, y)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y)) / max(1e-8, float(np.max(np.abs(x) + np.abs(y)))))


def eval_numerical_gradient_array(f, x, dout, h=1e-5):
    """Centred finite-difference gradient of sum(f(x) * dout) with respect to x.

    Args:
        f: function of one array returning an array of dout's shape (other inputs held fixed).
        x: point of evaluation, any shape, float64 for a meaningful check. Not modified.
        dout: upstream gradient, the shape of f(x).
        h: step.

    Returns:
        dx, the shape of x: dx[i] = sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2h).
    """
    x = np.array(x, dtype=np.float64, copy=True)  # we perturb a private copy, never the caller's
    dx = np.zeros_like(x)
    flat, dflat = x.reshape(-1), dx.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.array(f(x), dtype=np.float64)
        flat[i] = old - h
        minus = np.array(f(x), dtype=np.float64)
        flat[i] = old
        dflat[i] = np.sum((plus - minus) * dout) / (2 * h)
    return dx


def eval_numerical_gradient_at(f, x, indices, h=1e-5):
    """Centred differences of a scalar function at a few coordinates only (CS231n's grad_check_sparse).

    Args:
        f: function of one array returning a scalar (a float or a 0-d array).
        x: point of evaluation, float64. Not modified.
        indices: flat indices into x where the derivative is estimated.
        h: step.

    Returns:
        (len(indices),) float64: (f(x + h e_i) - f(x - h e_i)) / (2h) for each i in indices.

    For a whole network one evaluation costs a forward pass, so the chain rows differentiate a
    sample of pixels rather than all of them (the PyTorch column compares every pixel).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    flat = x.reshape(-1)
    out = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + h
        plus = float(f(x))
        flat[i] = old - h
        minus = float(f(x))
        flat[i] = old
        out[k] = (plus - minus) / (2 * h)
    return out


# ------------------------------------------------------------------------------ the engine
class Skip(Exception):
    """A check that cannot run here (no weights for its network): the message says how to enable it."""


class Unusable(Exception):
    """A check that cannot run because a file it needs is broken (a truncated weights file): an ERROR row
    whose message, the file's own one line, says what to do. A missing file is a Skip instead."""


class WrongReturn(Exception):
    """A checked function returned the wrong kind of value; the message names it, what it returned and what
    was expected (a student's slip, said in the student's terms rather than as NumPy's error further on)."""


# The package checked (in a student copy's child Python, the copy's) and the checker's own files in it:
# a student's mistake is shown at the innermost line of the package that is not the checker's.
_PACKAGE = Path(__file__).resolve().parent
_CHECKER_FILES = {_PACKAGE / name for name in ("gradcheck.py", "gradcheck_cases.py", "torch_ref.py",
                                                "cli/gradcheck_command.py")}


def place(filename, lineno, package=_PACKAGE):
    """'scratchnst/costs.py:57' for a file of `package` (the one checked), else the file's name and line."""
    path = Path(filename).resolve()
    shown = path.relative_to(package.parent) if path.is_relative_to(package) else path.name
    return f"{shown}:{lineno}"


EXERCISE_FILES = ("layers.py", "costs.py", "optim.py")  # where a student copy's exercises are written


def in_checked_code(filename, package=_PACKAGE):
    """True for a file of `package` (the one checked) that is not the checker itself: a layer, a cost, ..."""
    path = Path(filename).resolve()
    checker = {package / p.relative_to(_PACKAGE) for p in _CHECKER_FILES}
    return path.is_relative_to(package) and path not in checker


def _what(value):
    """What a function returned, in words: 'an array of shape (12, 12)', 'a list of 1 items', 'None'."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}" if value.ndim else "a 0-d array"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return "None" if value is None else f"a {type(value).__name__}"


def call(function, *args, expect, hints=None, **kwargs):
    """function(*args, **kwargs), its result checked by `returned` before anything else uses it."""
    return returned(function, function(*args, **kwargs), expect, hints)


def returned(function, value, expect, hints=None):
    """`value`, which `function` returned, if it is what was expected.

    Args:
        function: the function under check (in a student copy, the student's).
        value: what it returned.
        expect: "number" for a cost (a float, a NumPy scalar or a 0-d array), or (shape, formula):
            an array of that shape, the formula saying it in the course's names, e.g. ((5, 5), "(nC, nC)").
        hints: {wrong shape: the slip that gives it}, e.g. {(11, 11): "A.T @ A instead of A @ A.T?"}.

    Raises:
        WrongReturn: naming the function and where it is defined, what it returned and what was expected.
    """
    if expect == "number":
        scalar = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if scalar or (isinstance(value, np.ndarray) and value.ndim == 0):
            return value
        wanted = "a number"
    else:
        shape, formula = expect
        if isinstance(value, np.ndarray) and value.shape == tuple(shape):
            return value
        wanted = f"{formula} = {tuple(shape)}" if formula else f"shape {tuple(shape)}"
    code = getattr(function, "__code__", None)
    returns = _return_lines(function)
    where = ""
    if code is not None:   # the line the value came from, where the function has one return statement
        where = f" ({place(code.co_filename, returns[0] if returns and len(returns) == 1 else code.co_firstlineno)})"
    name = f"{getattr(function, '__module__', None) or '?'}.{getattr(function, '__qualname__', function)}"
    slip = (hints or {}).get(getattr(value, "shape", None))
    if value is None and returns == [] and code is not None:
        slip = slip or "it has no return statement"
    raise WrongReturn(f"{name}{where} returned {_what(value)}, expected {wanted}{': ' + slip if slip else ''}")


def _return_lines(function):
    """The lines of the return statements of `function`'s own body (not of functions inside it), in
    order; None when its source cannot be read (a function made by exec, a C function)."""
    try:
        lines, first = inspect.getsourcelines(function)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return None
    body = tree.body[0] if tree.body and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None
    if body is None:
        return None
    found, todo = [], list(body.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return):
            found.append(node.lineno + first - 1)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return sorted(found)


@dataclass
class Case:
    """One configuration to check: a function, its hand-derived backward pass, and PyTorch's twin.

    Args:
        name: the check's name in the table, one word ("conv2d", "content_cost", "squeezenet_total").
        config: the configuration shown in the table ("3x3 s2 same 7x9x3->4 N=1", ...).
        inputs: dict name -> float64 array; the differentiable inputs, in backward's order.
        forward: function(**inputs) -> (out, cache); out an array, or a 0-d array for a cost.
        backward: function(dout, cache) -> tuple of gradients in the order of `inputs`; called right
            after forward (a network keeps its caches in itself).
        torch_forward: function(**torch tensors) -> torch tensor, PyTorch's version of forward.
        h: finite-difference step.
        samples: None to differentiate every input element numerically, or how many elements of
            each input to sample (a whole network: one forward pass per difference).
        numeric_tol, torch_tol: the largest relative errors that pass.
        normwise: measure each gradient's error relative to its largest element (rel_error_normwise),
            as the costs and the chain rows do, instead of element by element (rel_error).
    """

    name: str
    config: str
    inputs: dict
    forward: Callable
    backward: Callable
    torch_forward: Callable
    h: float = 1e-5
    samples: int = None
    numeric_tol: float = NUMERIC_TOL
    torch_tol: float = TORCH_TOL
    normwise: bool = False

    @property
    def layer(self):  # the name the table called "layer" before it checked costs and networks too
        return self.name


@dataclass(frozen=True)
class Check:
    """A row of the table before it is built: its name, group, and how to build its Case.

    Building can be slow (a network's weights) or impossible here (raises Skip), so it happens
    only for the rows a run selects.
    """

    name: str
    group: str  # "layers", "costs", "transformer" or "chain"
    build: Callable  # () -> Case
    tags: tuple = ()  # other names that select it with --only, e.g. the network's name


def check_case(case, use_torch=True, seed=0, parts=None):
    """Check one case; returns (numeric_error, torch_error or None).

    numeric_error: max over inputs of rel_error(analytic, centred differences) (normwise: see Case).
    torch_error: max over the output and every gradient of rel_error(ours, PyTorch's).
    parts: None, or a dict that receives torch_error's two halves, "forward" (the output against
        PyTorch's) and "backward" (the gradients against PyTorch's): what tells, when the backward
        and the finite differences of the forward disagree, which of the two is wrong.
    """
    error = rel_error_normwise if case.normwise else rel_error
    originals = {name: np.array(value, copy=True) for name, value in case.inputs.items()}
    out, cache = case.forward(**case.inputs)
    out = np.asarray(out, dtype=np.float64)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dout_given = dout.copy()
    grads = case.backward(dout, cache)
    # A function that writes into what it is given computes every later difference quotient from changed
    # inputs: say so, rather than let the numbers blame the formula
    written = [name for name, value in originals.items()
               if not np.array_equal(case.inputs[name], value, equal_nan=True)]
    if not np.array_equal(dout, dout_given, equal_nan=True):
        written.append("dout")
    if written:
        raise WrongReturn(f"{case.name}'s forward or backward pass wrote into its input {', '.join(written)}: compute "
                          "into new arrays instead (never modify inputs, dout or caches)")
    if not isinstance(grads, (tuple, list)) or len(grads) != len(case.inputs):
        raise WrongReturn(f"{case.name}'s backward pass gave {_what(grads)}, expected a gradient for each of "
                          f"{', '.join(case.inputs)}")
    pick = np.random.default_rng(seed + 1)
    numeric_error = 0.0
    for (name, value), given in zip(case.inputs.items(), grads):
        def f(v, name=name):
            return case.forward(**{**case.inputs, name: v})[0]

        try:
            grad = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError):  # a tuple holding None, a ragged list: not an array of numbers
            grad = None
        if grad is None or grad.shape != value.shape:
            raise WrongReturn(f"{case.name}'s backward pass gave as the gradient of {name} {_what(given)}, "
                              f"expected {name}'s shape {value.shape}")
        if case.samples is None:
            numeric = eval_numerical_gradient_array(f, value, dout, h=case.h)
            numeric_error = _worst(numeric_error, error(grad, numeric))
        else:
            indices = pick.choice(value.size, size=min(case.samples, value.size), replace=False)
            analytic = grad.reshape(-1)[indices]
            numeric = _sampled_differences(lambda v: np.sum(np.asarray(f(v)) * dout), value, indices, analytic,
                                           case.h, case.numeric_tol)
            numeric_error = _worst(numeric_error, error(analytic, numeric))
    if not use_torch:
        return numeric_error, None
    tensors = {name: torch_ref.to_torch(v, requires_grad=True) for name, v in case.inputs.items()}
    out_t = case.torch_forward(**tensors)
    # the "fake loss" sum(out * dout): its gradient is exactly dout pushed backward through the layer
    (out_t * torch_ref.to_torch(dout)).sum().backward()
    theirs = torch_ref.to_numpy(out_t)
    if out.shape != theirs.shape:
        raise WrongReturn(f"{case.name}'s forward pass returned {_what(out)}, expected PyTorch's shape {theirs.shape}")
    forward_error, backward_error = _worst(0.0, rel_error(out, theirs)), 0.0
    for t, grad in zip(tensors.values(), grads):
        backward_error = _worst(backward_error, error(grad, torch_ref.to_numpy(t.grad)))
    if parts is not None:
        parts.update(forward=forward_error, backward=backward_error)
    return numeric_error, _worst(forward_error, backward_error)


def _worst(error, other):
    """The larger of two errors, NaN (a NaN in a gradient or an output) taken as inf: max() keeps its first
    argument when the comparison with NaN is False, and a gradient of NaNs then passed with error 0."""
    return max(error, math.inf if math.isnan(other) else other)


def _sampled_differences(f, x, indices, analytic, h, tol):
    """eval_numerical_gradient_at, with a second look where a kink may have spoilt a quotient.

    Through a whole network the cost is only piecewise smooth: a ReLU that switches, or a max
    pool whose winner changes, between x - h and x + h adds about h * (the jump in slope) to the
    quotient. Where a pixel's quotient misses the analytic value, it is taken again with steps
    h/10 and h/100, which step over the kink with ever higher probability, and the closest
    quotient counts. A wrong gradient agrees with none of them, so this cannot hide a mistake.
    """
    numeric = eval_numerical_gradient_at(f, x, indices, h=h)
    scale = max(1e-8, float(np.max(np.abs(analytic) + np.abs(numeric))))
    for k in np.flatnonzero(np.abs(analytic - numeric) > tol * scale):
        for smaller in (h / 10, h / 100):
            again = eval_numerical_gradient_at(f, x, indices[k:k + 1], h=smaller)[0]
            if abs(again - analytic[k]) < abs(numeric[k] - analytic[k]):
                numeric[k] = again
    return numeric


@dataclass
class Row:
    """The outcome of one check: what the table prints and --json writes."""

    name: str
    group: str
    config: str = ""
    numeric_error: float = None
    torch_error: float = None
    seconds: float = 0.0
    # PASS, FAIL, NOT DONE (an unwritten exercise), ERROR (it raised), TIMEOUT (a student copy's row that
    # was still running at --timeout, stopped)
    result: str = "PASS"
    detail: str = ""  # NOT DONE: the function to write; ERROR, TIMEOUT: what happened where; FAIL: which pass is wrong
    tolerances: tuple = (NUMERIC_TOL, TORCH_TOL)
    normwise: bool = False

    def as_dict(self):
        return {"name": self.name, "group": self.group, "configuration": self.config,
                "vs_numeric": self.numeric_error, "vs_pytorch": self.torch_error, "seconds": round(self.seconds, 3),
                "result": self.result, "detail": self.detail,
                "numeric_tol": self.tolerances[0], "pytorch_tol": self.tolerances[1],
                "error": "relative to the largest element" if self.normwise else "elementwise"}

    @classmethod
    def from_dict(cls, data):
        """The Row that as_dict gave `data` (a student copy's row, sent by its child Python)."""
        return cls(data["name"], data["group"], data["configuration"], data["vs_numeric"], data["vs_pytorch"],
                   data["seconds"], data["result"], data["detail"], (data["numeric_tol"], data["pytorch_tol"]),
                   data["error"] != "elementwise")


def unwritten_function(error):
    """'module.function' of the innermost frame of a NotImplementedError: the exercise left to write."""
    frame, tb = None, error.__traceback__
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    if frame is None:
        return "a function"
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"


def _one_line(error):
    """The exception as one line: its type, the first line of its message, and where it was raised.

    Where: the innermost line of the package's own code (a student's function), not NumPy's line
    inside np.sum nor the checker's, which say nothing about the mistake; the innermost line when
    the error did not pass through the package.
    """
    text = str(error).splitlines()[0].strip() if str(error).strip() else ""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    ours = [f for f in frames if in_checked_code(f.filename)]
    # the exercises' files first: a recursion that ran away into arguments.check_floats started in them
    written = [f for f in ours if Path(f.filename).name in EXERCISE_FILES]
    where = (written or ours or frames or [None])[-1]
    at = f" in {where.name} at {place(where.filename, where.lineno)}" if where else ""
    return f"{type(error).__name__}{': ' + text if text else ''}{at}"


def run_check(check, use_torch, seed, on_built=None):
    """Build and check one row; Skip propagates, everything else becomes the row's result.

    on_built: None or function(case), called once the case is built, before it is checked (a student
    copy's child Python sends its configuration then, for the row of a check stopped in the middle).
    """
    start = time.perf_counter()
    row = Row(check.name, check.group)
    try:
        case = check.build()
        row.config, row.tolerances, row.normwise = case.config, (case.numeric_tol, case.torch_tol), case.normwise
        if on_built is not None:
            on_built(case)
        parts = {}
        row.numeric_error, row.torch_error = check_case(case, use_torch=use_torch, seed=seed, parts=parts)
    except Skip:
        raise
    except NotImplementedError as error:
        row.result, row.detail = "NOT DONE", unwritten_function(error)
    except (WrongReturn, Unusable) as error:
        row.result, row.detail = "ERROR", str(error)
    # A student's code may raise anything, sys.exit() too: the row says what, and the table goes on.
    except (Exception, SystemExit) as error:  # noqa: BLE001
        row.result, row.detail = "ERROR", _one_line(error)
    else:
        ok = row.numeric_error < case.numeric_tol and (row.torch_error is None or row.torch_error < case.torch_tol)
        row.result = "PASS" if ok else "FAIL"
        if not ok:
            row.detail = _which_pass_is_wrong(parts, case.torch_tol)
    row.seconds = time.perf_counter() - start
    return row


def _which_pass_is_wrong(parts, torch_tol):
    """A FAIL row's detail: which of the forward and the backward pass PyTorch disagrees with.

    Finite differences check the backward against the forward as written, so a wrong forward with a
    right backward fails as a wrong backward would; PyTorch, which computes both from the formula,
    tells them apart.
    """
    if not parts:
        return ("the backward pass disagrees with finite differences of the forward pass: one of the two is "
                "wrong (with PyTorch installed, this check says which)")
    forward_wrong, backward_wrong = parts["forward"] >= torch_tol, parts["backward"] >= torch_tol
    if forward_wrong and backward_wrong:
        return (f"both passes differ from PyTorch's: the forward by {parts['forward']:.1e}, the backward "
                f"by {parts['backward']:.1e}")
    if forward_wrong:
        return (f"the forward pass differs from PyTorch's ({parts['forward']:.1e}); the backward agrees with "
                "PyTorch: the forward pass is wrong")
    if backward_wrong:
        return (f"the backward pass differs from PyTorch's ({parts['backward']:.1e}); the forward agrees with "
                "PyTorch: the backward pass is wrong")
    return ("both passes agree with PyTorch, yet the backward disagrees with finite differences of the forward: "
            "a forward pass that is not smooth at these inputs?")


def run_checks(checks, use_torch=True, seed=0, on_row=None, on_start=None):
    """Run the checks in order.

    Args:
        on_row: called with each Row once it is complete.
        on_start: called with (i, check) before the i-th check, and with (len(checks), None) after the
            last: the progress line, and which row a Ctrl-C stopped.

    Returns:
        (rows, skipped): the Rows, and [(name, reason)] of the checks that raised Skip.
    """
    rows, skipped = [], []
    for i, check in enumerate(checks):
        if on_start is not None:
            on_start(i, check)
        try:
            row = run_check(check, use_torch, seed)
        except Skip as why:
            skipped.append((check.name, str(why)))
            continue
        rows.append(row)
        if on_row is not None:
            on_row(row)
    if on_start is not None:
        on_start(len(checks), None)
    return rows, skipped


def _result_text(row):
    return f"{row.result} ({row.detail})" if row.result == "NOT DONE" else row.result


_EXPLAINED = ("ERROR", "TIMEOUT")  # results whose detail is a line of its own under the table


def format_table(rows, skipped, torch_note, seconds):
    """The table as text: a row per check, notes for the skipped ones, the tolerances, a summary line."""
    header = ("check", "configuration", "vs numeric", "vs PyTorch", "seconds", "result")
    cells = []
    for row in rows:
        numeric = "-" if row.numeric_error is None else f"{row.numeric_error:.1e}"
        theirs = "-" if row.result in ("NOT DONE", *_EXPLAINED) else (
            (torch_note or "-") if row.torch_error is None else f"{row.torch_error:.1e}")
        cells.append((row.name, row.config or "-", numeric, theirs, f"{row.seconds:.2f}", _result_text(row)))
    widths = [max(len(r[i]) for r in cells + [header]) for i in range(len(header) - 1)]
    line = "  ".join("{:<%d}" % w_ for w_ in widths) + "  {}"
    lines = [line.format(*header), "  ".join("-" * w_ for w_ in widths) + "  ------"]
    lines += [line.format(*c).rstrip() for c in cells]
    lines += [f"  {row.name}: {row.detail}" for row in rows if row.result in _EXPLAINED + ("FAIL",) and row.detail]
    by_reason = {}
    for name, why in skipped:
        by_reason.setdefault(why, []).append(name)
    lines += [f"skipped {', '.join(names)}: {why}" for why, names in by_reason.items()]
    kinds = {}  # (numeric tol, torch tol, normwise) -> the rows judged so
    for row in rows:
        if row.result in ("PASS", "FAIL"):
            kinds.setdefault((*row.tolerances, row.normwise), []).append(row)
    if kinds:
        lines.append("")
        lines.append("a row passes when its largest relative error (float64) is below:")
        for (numeric_tol, torch_tol, normwise), judged in kinds.items():
            groups = [g for g in dict.fromkeys(r.group for r in judged)
                      if all((*r.tolerances, r.normwise) == (numeric_tol, torch_tol, normwise)
                             for r in rows if r.group == g and r.result in ("PASS", "FAIL"))]
            names = groups + [r.name for r in judged if r.group not in groups]
            how = "relative to each gradient's largest element" if normwise else "element by element"
            lines.append(f"  {', '.join(dict.fromkeys(names))}: {numeric_tol:.0e} against finite differences, "
                         f"{torch_tol:.0e} against PyTorch, {how}")
    lines.append(summary_line(rows, skipped, seconds))
    return "\n".join(lines)


def summary_line(rows, skipped, seconds):
    counts = {result: sum(r.result == result for r in rows)
              for result in ("PASS", "FAIL", "NOT DONE", "ERROR", "TIMEOUT")}
    parts = [f"{counts['PASS']} passed", f"{counts['FAIL']} failed"]
    if counts["ERROR"]:
        parts.append(f"{counts['ERROR']} raised an error")
    if counts["TIMEOUT"]:
        parts.append(f"{counts['TIMEOUT']} ran out of time")
    if counts["NOT DONE"]:
        parts.append(f"{counts['NOT DONE']} not done (exercises to write)")
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    return ", ".join(parts) + f" in {seconds:.1f} s"


def exit_status(rows):
    """0 when every row that ran passed; 1 when one failed, raised, ran out of time or is not written yet."""
    return 0 if all(row.result == "PASS" for row in rows) else 1


def report(rows, skipped, torch_note, seconds):
    """The run as plain data, for --json: every row, the skipped checks and why, the counts."""
    by_reason = {}
    for name, why in skipped:
        by_reason.setdefault(why, []).append(name)
    return {
        "rows": [row.as_dict() for row in rows],
        "skipped": [{"names": names, "reason": why} for why, names in by_reason.items()],
        "passed": sum(r.result == "PASS" for r in rows),
        "failed": sum(r.result == "FAIL" for r in rows),
        "errors": sum(r.result == "ERROR" for r in rows),
        "not_done": sum(r.result == "NOT DONE" for r in rows),
        "timeouts": sum(r.result == "TIMEOUT" for r in rows),
        "pytorch": "installed" if torch_note is None else torch_note,
        "seconds": round(seconds, 3),
        "exit_status": exit_status(rows),
    }

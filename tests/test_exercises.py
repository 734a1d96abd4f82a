"""The exercises end to end: the student copy (`make`) and the autograder (`check`).

The round trip an instructor relies on: a fresh student copy scores 0% without crashing; the
solutions put back score 100%; classic mistakes planted in a copy are caught and named; a student's
crash, endless loop, exception, print or forbidden import costs that exercise only. Grading runs
the student's code in a child process, so the copies and their reports are made once per module.
"""

import ast
import hashlib
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exercise_helpers import by_name, plant, rendered
import scratchnst
from scratchnst import exercises
from scratchnst.exercises import markers as exercise_markers
from scratchnst.cli import build_parser, main
from scratchnst.errors import UsageError, UserError
from scratchnst.exercises import CATALOGUE, MarkerError, find_regions

PACKAGE = Path(scratchnst.__file__).resolve().parent

# The bodies issue 5 asks students to write, as (module, function).
EXPECTED_EXERCISES = {
    ("layers", "conv2d_forward"), ("layers", "conv2d_backward"),
    ("layers", "relu_forward"), ("layers", "relu_backward"),
    ("layers", "max_pool_forward"), ("layers", "max_pool_backward"),
    ("layers", "avg_pool_forward"), ("layers", "avg_pool_backward"),
    ("costs", "compute_content_cost"), ("costs", "content_cost_backward"), ("costs", "gram_matrix"),
    ("costs", "compute_layer_style_cost"), ("costs", "layer_style_cost_backward"), ("costs", "total_cost"),
    ("optim", "adam_update"),
    # the optimisation loop's fast layer style cost: unmarked, it would answer both style exercises
    ("costs", "style_target"), ("costs", "layer_style_cost_from_target"),
}


def marked_functions():
    return {(r.module, r.function) for r in exercises.package_regions(PACKAGE)}


def write_in_student_copy(root, module, function, code):
    """What a student does in a student copy: replace the NotImplementedError stub of module.function with `code`."""
    path = Path(root) / "scratchnst" / f"{module}.py"
    text = path.read_text(encoding="utf-8")
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == function)
    (stub,) = [s for s in node.body if isinstance(s, ast.Raise) and "NotImplementedError" in ast.unparse(s)]
    lines = text.splitlines(keepends=True)
    indent = " " * stub.col_offset
    lines[stub.lineno - 1:stub.end_lineno] = [textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)]
    path.write_text("".join(lines), encoding="utf-8")


def package_digest():
    """One hash of every file of the installed package (caches left out)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    exercises.make_student_copy(root, force=True)  # tmp_path_factory's folder exists and is empty
    return root


@pytest.fixture(scope="module")
def solutions_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("solutions")
    exercises.make_student_copy(root, force=True, solutions=True)
    return root


@pytest.fixture(scope="module")
def untouched_report(student_copy):
    return exercises.grade(student_copy, use_torch=False)


@pytest.fixture(scope="module")
def solutions_report(solutions_copy):
    return exercises.grade(solutions_copy)  # with the PyTorch checks, where torch is installed


# Classic mistakes, one per exercise, each written against the function's own variables, and the
# name the grader must give it. The planted code never calls the reference answers' helpers of the
# exercise it replaces, so it keeps meaning what it says when the reference is rewritten.
CLASSIC_MISTAKES = {
    ("costs", "layer_style_cost_backward"): ("gradient with a_S instead of a_G", """
        n_C = a_G.shape[3]
        A_S = a_S.astype(np.float64).reshape(-1, n_C).T
        A_G = a_G.astype(np.float64).reshape(-1, n_C).T
        D = A_G @ A_G.T / A_G.shape[1] - A_S @ A_S.T / A_S.shape[1]
        dA_G = D @ A_S / (n_C**2 * A_G.shape[1])  # the planted mistake: the style image's features
        return dA_G.T.reshape(a_G.shape).astype(a_G.dtype)
    """),
    ("layers", "relu_backward"): ("ReLU mask x >= 0", """
        dx = np.where(out >= 0, dout, 0).astype(dout.dtype)
    """),
    ("layers", "conv2d_backward"): ("kernel not flipped", """
        # 'full' correlation of dout with the kernel, channels swapped, but not flipped in space
        dpad = np.pad(dout, ((0, 0), (KH - 1 - top, KH - 1 - bottom), (KW - 1 - left, KW - 1 - right), (0, 0)))
        w_T = w.transpose(0, 1, 3, 2)
        dx = np.zeros(x.shape, dtype=dout.dtype)
        for kh in range(KH):
            for kw in range(KW):
                dx += np.einsum("nijc,cd->nijd", dpad[:, kh:kh + H, kw:kw + W], w_T[kh, kw])
        if not weight_grads:
            return dx, None, None
        xpad = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        dw = np.zeros(w.shape, dtype=dout.dtype)
        for kh in range(KH):
            for kw in range(KW):
                window = xpad[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
                dw[kh, kw] = np.einsum("nijc,nijd->cd", window, dout)
        db = dout.sum(axis=(0, 1, 2))
    """),
    ("costs", "compute_content_cost"): ("factor 1/(4 nH nW nC) missing", """
        return float(np.sum((a_C.astype(np.float64) - a_G) ** 2))
    """),
    ("costs", "compute_layer_style_cost"): ("Gram of the wrong unrolling", """
        n_C = a_G.shape[3]
        A_S = a_S.astype(np.float64).reshape(n_C, -1)  # straight to (nC, nH*nW): no transpose
        A_G = a_G.astype(np.float64).reshape(n_C, -1)
        G_S, G_G = A_S @ A_S.T / A_S.shape[1], A_G @ A_G.T / A_G.shape[1]
        return float(np.sum((G_S - G_G) ** 2) / (4 * n_C**2))
    """),
    ("optim", "adam_update"): ("wrote into its input m", """
        m *= beta1
        m += (1 - beta1) * dx
        v_new = beta2 * v + (1 - beta2) * dx * dx
        x_new = x - lr * (m / (1 - beta1**t)) / (np.sqrt(v_new / (1 - beta2**t)) + epsilon)
        return x_new, m, v_new
    """),
    ("layers", "conv2d_forward"): ("kernel flipped", """
        N_, Hp, Wp, _ = xpad.shape
        H_out, W_out = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
        w_flipped = w[::-1, ::-1]  # a true convolution
        out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w))
        for kh in range(KH):
            for kw in range(KW):
                window = xpad[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
                out += window @ w_flipped[kh, kw]
        out = out + b
    """),
    ("layers", "max_pool_forward"): ("ties to the last maximum", """
        out = arg = None
        for kh in range(size):
            for kw in range(size):
                tap = xpad[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
                if out is None:
                    out, arg = tap.copy(), np.zeros(tap.shape, dtype=np.uint8)
                else:
                    later = tap >= out  # >=: a tie moves arg to the later cell
                    out, arg = np.where(later, tap, out), np.where(later, kh * size + kw, arg).astype(np.uint8)
    """),
    ("layers", "avg_pool_forward"): ("padded cells counted", """
        out = np.zeros((x.shape[0], H_out, W_out, x.shape[3]), dtype=x.dtype)
        for kh in range(size):
            for kw in range(size):
                out += xpad[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
        out /= size * size
    """),
    ("costs", "content_cost_backward"): ("sign flipped", """
        _, n_H, n_W, n_C = a_G.shape
        return ((a_C - a_G) / (2 * n_H * n_W * n_C)).astype(a_G.dtype)
    """),
    ("costs", "gram_matrix"): ("A.T @ A", """
        return A.T @ A
    """),
    ("costs", "total_cost"): ("alpha and beta swapped", """
        return alpha * J_style + beta * J_content
    """),
    ("costs", "style_target"): ("Gram not divided by nH*nW", """
        A_S = a_S.astype(np.float64).reshape(-1, a_S.shape[3]).T
        return A_S @ A_S.T  # the planted mistake: the plain Gram, not per position
    """),
    ("costs", "layer_style_cost_from_target"): ("1/(nH nW) missing from the gradient", """
        F = a_G.astype(np.float64).reshape(n_H * n_W, n_C)
        D = F.T @ F / (n_H * n_W) - target
        return float(np.sum(D * D)) / (4 * n_C**2), (F @ D / n_C**2).reshape(a_G.shape).astype(a_G.dtype)
    """),
}


@pytest.fixture(scope="module")
def mistakes_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    exercises.make_student_copy(root, force=True, solutions=True)
    for (module, function), (_, code) in CLASSIC_MISTAKES.items():
        plant(root, module, function, code)
    return exercises.grade(root)


# What students do that is not a wrong formula, and correct answers written differently from the
# reference (loops, einsum, another order of operations): these must pass.
ROBUSTNESS = {
    ("layers", "relu_forward"): "while True:\n    pass",
    ("layers", "max_pool_backward"): "raise ZeroDivisionError('division by zero in my loop')",
    ("layers", "avg_pool_backward"): "import os\nos._exit(3)",
    ("costs", "gram_matrix"): "import torch\nreturn (torch.from_numpy(A) @ torch.from_numpy(A).T).numpy()",
    ("costs", "total_cost"): "print('debugging', J_content, J_style)\nreturn alpha * J_content + beta * J_style",
    ("layers", "relu_backward"): "dx = dout * float(input('scale? '))",
    ("layers", "conv2d_forward"): """
        H_out, W_out = (xpad.shape[1] - KH) // stride + 1, (xpad.shape[2] - KW) // stride + 1
        out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w, b))
        for n in range(N):
            for i in range(H_out):
                for j in range(W_out):
                    window = xpad[n, i * stride:i * stride + KH, j * stride:j * stride + KW, :]
                    out[n, i, j, :] = np.tensordot(window, w, axes=3) + b
    """,
    ("costs", "compute_content_cost"): """
        return 0.25 * float(np.mean((a_G.astype(np.float64) - a_C.astype(np.float64)) ** 2))
    """,
    ("costs", "layer_style_cost_backward"): """
        a_S64, a_G64 = a_S.astype(np.float64), a_G.astype(np.float64)
        M_S, M_G, n_C = a_S.shape[1] * a_S.shape[2], a_G.shape[1] * a_G.shape[2], a_G.shape[3]
        G_S = np.einsum("nhwc,nhwd->cd", a_S64, a_S64) / M_S
        G_G = np.einsum("nhwc,nhwd->cd", a_G64, a_G64) / M_G
        return (np.einsum("nhwc,cd->nhwd", a_G64, G_G - G_S) / (n_C**2 * M_G)).astype(a_G.dtype)
    """,
    ("costs", "layer_style_cost_from_target"): """
        a = a_G.astype(np.float64)
        D = np.einsum("nhwc,nhwd->cd", a, a) / (n_H * n_W) - target
        da = np.einsum("nhwc,cd->nhwd", a, D) / (n_C**2 * n_H * n_W)
        return (D**2).sum() / (4 * n_C**2), da.astype(a_G.dtype)  # J a NumPy float64: fine too
    """,
    ("optim", "adam_update"): """
        m_new = m + (1 - beta1) * (dx - m)
        v_new = v + (1 - beta2) * (dx ** 2 - v)
        x_new = x - lr / (1 - beta1**t) * m_new / (np.sqrt(v_new / (1 - beta2**t)) + epsilon)
        return x_new, m_new, v_new
    """,
}
ROBUSTNESS_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def robustness_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    exercises.make_student_copy(root, force=True, solutions=True)
    for (module, function), code in ROBUSTNESS.items():
        plant(root, module, function, code)
    only = [f"{module}.{function}" for module, function in ROBUSTNESS]
    return exercises.grade(root, only=only, timeout=ROBUSTNESS_TIMEOUT, use_torch=False)


# --------------------------------------------------------------------------- the markers
def test_every_exercise_of_the_issue_is_marked_and_has_checks():
    marked = marked_functions()
    assert EXPECTED_EXERCISES <= marked, f"not marked: {sorted(EXPECTED_EXERCISES - marked)}"
    checked = {(e.module, e.function) for e in CATALOGUE}
    assert marked <= checked, f"marked but never graded: {sorted(marked - checked)}"


def test_find_regions_reads_markers_and_hints_and_ignores_strings():
    source = textwrap.dedent('''
        def f(x):
            """A docstring may quote the markers:
            # BEGIN SOLUTION
            """
            y = 0
            # BEGIN SOLUTION
            # HINT: add one
            # HINT: to x
            y = x + 1
            # END SOLUTION
            return y


        def g(a):
            # BEGIN SOLUTION
            return a
            # END SOLUTION
    ''')
    regions = find_regions(source, "m")
    assert [(r.function, r.begin, r.end, r.indent, r.hint) for r in regions] == [
        ("f", 7, 11, "    ", "add one to x"),
        ("g", 16, 18, "    ", ""),  # END after the function's last statement still belongs to it
    ]


@pytest.mark.parametrize("body, message", [
    ("    # END SOLUTION\n", "without"),
    ("    # BEGIN SOLUTION\n    return x\n", "without"),
    ("    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    x\n    # END SOLUTION\n", "inside the region"),
    ("    if x:\n        # BEGIN SOLUTION\n        x = 1\n    # END SOLUTION\n", "not indented"),
    ("    # BEGIN SOLUTIONS\n    x = 1\n    # END SOLUTION\n", "not a valid marker"),
    ("    #BEGIN SOLUTION\n    x = 1\n    # END SOLUTION\n", "not a valid marker"),
    ("    x = 1\n    # HINT: a hint far from any BEGIN\n", "not a valid marker"),
])
def test_find_regions_rejects_malformed_markers(body, message):
    with pytest.raises(MarkerError, match=message):
        find_regions("def f(x):\n    x = 0\n" + body, "m")


def test_find_regions_rejects_a_region_outside_functions():
    with pytest.raises(MarkerError, match="not inside one top-level function"):
        find_regions("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "m")


# ------------------------------------------------------------------------ the student copy
def test_student_copy_stubs_every_exercise_with_its_hint(student_copy):
    hints = {(s.module, r.function): r.hint for s in exercise_markers._read_package(PACKAGE) for r in s.regions}
    for module in {m for m, _ in hints}:
        text = (student_copy / "scratchnst" / f"{module}.py").read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        functions = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
        for (m, function), hint in hints.items():
            if m != module:
                continue
            raised = [node.exc.args[0].value for node in ast.walk(functions[function])
                      if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                      and getattr(node.exc.func, "id", "") == "NotImplementedError"]
            assert raised == [hint], f"{module}.{function}"


def test_hidden_functions_follow_the_rule_on_a_small_package(tmp_path):
    (tmp_path / "mod.py").write_text(textwrap.dedent('''
        def _scaffold(x):
            return x


        def _answer_helper(x):
            """Used by the answer only."""
            return _deeper(x)


        def _deeper(x):
            return x + 1


        def _shared(x):
            return x


        def _unused(x):
            return x


        def f_naive(x):
            """The loop twin of exercise f."""
            return x + 1


        def f(x):
            x = _scaffold(x)
            # BEGIN SOLUTION
            # HINT: add one
            return _shared(_answer_helper(x))
            # END SOLUTION
    '''))
    (tmp_path / "other.py").write_text("from mod import _shared\n")
    # the grader's checks model a mistake with the answer's helper: that must not keep it visible
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "checks_mod.py").write_text(textwrap.dedent('''
        def _mistake_model(x):
            """What f computes when it forgets the one."""
            return _deeper(x) - 1


        def f_cases(ref, rng, use_torch):
            return [_mistake_model(1)]
    '''))
    sources = exercise_markers._read_package(tmp_path)
    hidden = exercises.hidden_functions(sources)
    # hidden: the twin, the helper only the answer calls, the helper only that helper (and the
    # grader's checks) call, and every function of the grader's checks; kept: what unmarked code
    # uses (in this module or another), and what nothing uses
    assert set(hidden) == {("mod", "f_naive"), ("mod", "_answer_helper"), ("mod", "_deeper"),
                           ("exercises.checks_mod", "_mistake_model"), ("exercises.checks_mod", "f_cases")}
    text = exercise_markers._student_text(next(s for s in sources if s.module == "mod"), hidden)
    namespace = {}
    exec(compile(text, "mod.py", "exec"), namespace)
    assert namespace["_scaffold"](1) == 1 and namespace["_shared"](1) == 1 and namespace["_unused"](1) == 1
    for name, message in (("f", "add one"), ("f_naive", "loop version of f"), ("_answer_helper", "helper"),
                          ("_deeper", "helper")):
        with pytest.raises(NotImplementedError, match=message):
            namespace[name](1)
    assert '"""Used by the answer only."""' in text  # the docstring stays: it says what to compute
    checks = exercise_markers._student_text(next(s for s in sources if s.module == "exercises.checks_mod"), hidden)
    namespace = {}
    exec(compile(checks, "exercises/checks_mod.py", "exec"), namespace)
    for name in ("_mistake_model", "f_cases"):
        with pytest.raises(NotImplementedError, match="grader's checks"):
            namespace[name](None, None, None) if name == "f_cases" else namespace[name](1)


def test_the_loops_fast_style_cost_is_no_shortcut_in_a_student_copy(tmp_path):
    """costs.style_target and layer_style_cost_from_target compute both style exercises' answers, fast, for
    transfer.py. In the copy they are exercises themselves: with only gram_matrix written, the one-line
    shortcut through them earns nothing, and nothing else in the copy computes a style cost or gradient."""
    exercises.make_student_copy(tmp_path)
    write_in_student_copy(tmp_path, "costs", "gram_matrix", "return A @ A.T")
    write_in_student_copy(tmp_path, "costs", "compute_layer_style_cost",
                          "return layer_style_cost_from_target(style_target(a_S), a_G)[0]")
    write_in_student_copy(tmp_path, "costs", "layer_style_cost_backward",
                          "return layer_style_cost_from_target(style_target(a_S), a_G)[1]")
    report = exercises.grade(tmp_path, only=["gram_matrix", "layer_style_cost", "style_target"], use_torch=False)
    results = by_name(report)
    assert results["gram_matrix"].status == "pass"
    for name in ("compute_layer_style_cost", "layer_style_cost_backward", "style_target",
                 "layer_style_cost_from_target"):
        assert results[name].status == "not done" and results[name].points == 0, name
    assert "calls style_target, which raises NotImplementedError" in rendered(report)
    # every function of the copy's costs.py with "style" in its name raises, and so does transfer's loop
    script = textwrap.dedent("""
        import numpy as np
        from scratchnst import costs, transfer

        class Identity:  # a network of one layer "l" that passes the image through
            dtype = np.float64
            def forward(self, x, names):
                return {name: x for name in names}
            def backward(self, grads):
                return sum(grads.values())

        a, b = np.ones((1, 2, 3, 2)), np.arange(12.0).reshape(1, 2, 3, 2)
        calls = {
            "style_target": lambda: costs.style_target(a),
            "layer_style_cost_from_target": lambda: costs.layer_style_cost_from_target(np.eye(2), b),
            "compute_layer_style_cost": lambda: costs.compute_layer_style_cost(a, b),
            "layer_style_cost_backward": lambda: costs.layer_style_cost_backward(a, b),
            "compute_style_cost": lambda: costs.compute_style_cost({"l": a}, {"l": b}, [("l", 1.0)]),
            "style_cost_backward": lambda: costs.style_cost_backward({"l": a}, {"l": b}, [("l", 1.0)]),
            "make_cost_function": lambda: transfer.make_cost_function(Identity(), b, [a], "l", [("l", 1.0)],
                                                                      [1.0], 1.0, 1.0, 0.0)(b),
        }
        style_functions = {n for n in dir(costs) if "style" in n and callable(getattr(costs, n))}
        assert style_functions == set(calls) - {"make_cost_function"}, style_functions
        assert costs.gram_matrix(np.eye(2)).tolist() == [[1, 0], [0, 1]]  # the student's gram_matrix runs
        for name, call in calls.items():
            try:
                call()
            except NotImplementedError:
                continue
            raise AssertionError(f"{name} computes a style cost in the student copy")
        print("checked")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr


def test_the_package_hides_loop_twins_and_shows_every_helper_its_answers_call():
    sources = exercise_markers._read_package(PACKAGE)
    hidden = exercises.hidden_functions(sources)
    for kind in ("conv2d_forward", "conv2d_backward", "max_pool_forward", "max_pool_backward",
                 "avg_pool_forward", "avg_pool_backward"):
        assert ("layers", f"{kind}_naive") in hidden
    # an answer is code a student could write from its hint: every helper it calls is there to read
    by_module = {s.module: s for s in sources}
    for source in sources:
        for region in source.regions:
            answer = "".join(source.text.splitlines(keepends=True)[region.begin - 1:region.end])
            for name in set(re.findall(r"(?<![.\w])(_[a-z]\w*)\(", answer)):
                assert (source.module, name) not in hidden, (region.function, name)
                assert f"def {name}(" in by_module[source.module].text, (region.function, name)
    scaffolding = {("layers", "conv_output_size"), ("layers", "_pad_hw"), ("layers", "_pool_geometry"),
                   ("layers", "_window_taps"), ("costs", "unroll"), ("costs", "_check_activation"),
                   ("layers", "concat_forward")}
    assert not set(hidden) & scaffolding
    # the grader's own checks compute answers (exercises.checks_optim._adam is adam_update): all hidden
    graders = [s for s in sources if s.module.startswith("exercises.checks_")]
    assert {s.module for s in graders} >= {"exercises.checks_layers", "exercises.checks_costs", "exercises.checks_optim"}
    for s in graders:
        functions = {n.name for n in s.tree.body if isinstance(n, ast.FunctionDef)}
        assert functions and all((s.module, name) in hidden for name in functions), s.module


def test_student_copy_imports_and_its_hidden_functions_raise(student_copy):
    script = textwrap.dedent("""
        import importlib, pkgutil
        import numpy as np
        import scratchnst
        from pathlib import Path
        assert Path(scratchnst.__file__).resolve().parents[1] == Path.cwd().resolve(), scratchnst.__file__
        for info in pkgutil.iter_modules(scratchnst.__path__):
            if info.name != "__main__":  # it would run the command line
                importlib.import_module("scratchnst." + info.name)
        from scratchnst import layers
        assert layers.conv_output_size(8, 3, 2, "same") == (4, 0, 1)  # scaffolding still works
        x, w, b = np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 2)), np.zeros(2)
        from scratchnst.exercises import checks_costs as exercise_checks_costs, checks_optim as exercise_checks_optim
        a = np.ones((1, 2, 2, 3))
        for call in (lambda: layers.conv2d_forward_naive(x, w, b), lambda: layers.max_pool_backward_naive(x, x),
                     lambda: layers.conv2d_forward(x, w, b), lambda: layers.max_pool_forward(x),
                     lambda: exercise_checks_optim._adam(x, x, x, x, 1),  # with its defaults: adam_update
                     lambda: exercise_checks_costs._style_cost(a, a, lambda v: v.reshape(-1, 3).T)):
            try:
                call()
            except NotImplementedError:
                continue
            raise AssertionError("a hidden function or exercise still runs")
        print("checked")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=student_copy, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr


def test_the_networks_pooling_in_a_student_copy_is_the_students_own(student_copy, solutions_copy):
    """fast_pool computes the pooling exercises' answers: in the copy it calls the student's layers instead."""
    text = (student_copy / "scratchnst" / "fast_pool.py").read_text()
    assert "_max_band" not in text and "np.maximum" not in text and "return layers.max_pool_forward(" in text
    assert (solutions_copy / "scratchnst" / "fast_pool.py").read_bytes() == (PACKAGE / "fast_pool.py").read_bytes()
    script = textwrap.dedent("""
        import numpy as np
        from scratchnst import fast_pool, layers, networks
        from scratchnst.cli import bench
        for name in ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"):
            assert "layers." + name in getattr(fast_pool, name).__doc__  # its docstring kept
        net = networks.Network("squeezenet", bench.random_params("squeezenet"))
        try:
            net.forward(np.zeros((1, 40, 40, 3), np.float32), ["fire3"])
        except NotImplementedError as error:
            print("NotImplementedError:", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=student_copy, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    hint = next(r.hint for r in exercises.package_regions(PACKAGE) if r.function == "max_pool_forward")
    assert done.stdout.strip() == f"NotImplementedError: {hint}"


def test_unmarked_files_are_copied_unchanged(student_copy):
    # the grader's own modules too, except its checks (see test_the_graders_checks_are_stubbed_in_the_copy)
    for name in ("errors.py", "gradcheck.py", "torch_ref.py", "exercises/__init__.py", "exercises/markers.py",
                 "exercises/worker.py", "exercises/sandbox.py", "exercises/grading.py", "exercises/batch.py",
                 "exercises/cases.py", "exercises/casefile.py", "exercises/catalogue.py"):
        assert (student_copy / "scratchnst" / name).read_bytes() == (PACKAGE / name).read_bytes()
    assert not list(student_copy.rglob("__pycache__"))
    readme = (student_copy / "README.md").read_text()
    assert "scratchnst exercises check" in readme and "conv2d_backward" in readme


def test_the_graders_checks_are_stubbed_in_the_copy(student_copy):
    """Every function of the grader's checks is its docstring and a NotImplementedError in the copy."""
    modules = sorted((student_copy / "scratchnst" / "exercises").glob("checks_*.py"))
    assert len(modules) >= 3
    for path in modules:
        functions = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
        assert functions, path.name
        for node in functions:
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # after the docstring
            assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{path.name}: {node.name}"
            assert "grader's checks" in ast.unparse(body[0]), f"{path.name}: {node.name}"


def test_solutions_copy_is_the_package(solutions_copy):
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" not in path.parts:
            assert (solutions_copy / "scratchnst" / path.relative_to(PACKAGE)).read_bytes() == path.read_bytes()


def test_make_refuses_a_non_empty_folder_and_force_replaces_only_its_own_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        exercises.make_student_copy(tmp_path)
    (tmp_path / "scratchnst").mkdir()
    (tmp_path / "scratchnst" / "stale.py").write_text("old")
    exercises.make_student_copy(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "scratchnst" / "stale.py").exists()
    assert (tmp_path / "scratchnst" / "layers.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "notes.txt", "scratchnst"]


def test_force_keeps_the_old_copy_when_the_swap_is_interrupted(tmp_path, monkeypatch):
    (tmp_path / "scratchnst").mkdir()
    (tmp_path / "scratchnst" / "old.py").write_text("old")
    real = exercise_markers.os.replace

    def replace_then_ctrl_c(src, dst):
        if Path(src).name == "scratchnst" and ".scratchnst-exercises-" in str(src):  # the new copy going in
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(exercise_markers.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        exercises.make_student_copy(tmp_path, force=True)
    assert (tmp_path / "scratchnst" / "old.py").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratchnst"]


def test_make_refuses_to_overwrite_the_installed_package():
    with pytest.raises(UsageError, match="installed scratchnst"):
        exercises.make_student_copy(PACKAGE.parent, force=True)
    with pytest.raises(UsageError, match="installed scratchnst"):
        exercises.make_student_copy(PACKAGE / "sub", force=True)


def test_make_leaves_nothing_behind_when_writing_fails(tmp_path, monkeypatch):
    def broken_copytree(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exercise_markers.shutil, "copytree", broken_copytree)
    dest = tmp_path / "new"
    with pytest.raises(UserError, match="No space left"):
        exercises.make_student_copy(dest)
    assert not dest.exists()


# ------------------------------------------------------------------------------- grading
def test_untouched_copy_scores_zero_and_every_exercise_is_not_done(untouched_report):
    report = untouched_report
    assert {(r.exercise.module, r.exercise.function) for r in report.results} == marked_functions()
    assert all(r.status == "not done" and r.points == 0 for r in report.results)
    assert report.points == 0 and report.percent == 0 and not report.perfect
    text = rendered(report)
    assert "Traceback" not in text and "score: 0/" in text and "(0%)" in text
    assert text.count("not done: raises NotImplementedError") == len(report.results)


def test_solutions_score_full_marks(solutions_report):
    report = solutions_report
    failing = {r.exercise.name: [c.details for c in r.checks if c.status != "ok"] for r in report.results
               if r.status != "pass"}
    assert not failing
    assert report.perfect and report.percent == 100 and report.points == report.total
    assert "(100%)" in rendered(report)


def test_solutions_pass_the_pytorch_checks(solutions_report, torch):
    """Under CI torch must be there (the `torch` fixture fails without it): the PyTorch checks must run."""
    labels = [c.label for r in solutions_report.results for c in r.checks if "PyTorch" in c.label]
    assert solutions_report.torch.startswith("PyTorch") and len(labels) >= 6  # every layer exercise has one


def test_the_package_source_itself_scores_full_marks():
    report = exercises.grade(PACKAGE, use_torch=False)  # DIR may name the package folder itself
    assert report.perfect, rendered(report)


@pytest.mark.parametrize("module, function", sorted(CLASSIC_MISTAKES))
def test_a_classic_mistake_is_caught_and_named(mistakes_report, module, function):
    name = CLASSIC_MISTAKES[(module, function)][0]
    result = by_name(mistakes_report)[function]
    assert result.status == "fail"
    assert name in result.mistakes, f"{module}.{function}: named {result.mistakes}"
    assert result.points < result.exercise.points
    assert f"mistake: {name}" in rendered(mistakes_report)


def test_unplanted_exercises_still_pass_beside_planted_mistakes(mistakes_report):
    planted = {function for _, function in CLASSIC_MISTAKES}
    assert all(r.status == "pass" for r in mistakes_report.results if r.exercise.function not in planted)
    assert 0 < mistakes_report.percent < 100


def test_a_mistake_shows_expected_against_given(mistakes_report):
    check = next(c for c in by_name(mistakes_report)["compute_content_cost"].checks if c.status == "fail")
    assert check.details[0].startswith("expected ") and ", got " in check.details[0]
    assert check.error is not None and check.error > 0.5


def test_each_compared_check_names_its_measure_of_error(mistakes_report):
    """rel_error (lesson 2's, elementwise, at most 1) and the float32 and finite-difference checks'
    largest difference over the largest value (which can pass 1) are two measures: named apart."""
    text = rendered(mistakes_report)
    checks = [c for r in mistakes_report.results for c in r.checks if c.error is not None]
    assert {c.normwise for c in checks} == {True, False}
    for check in checks:
        measure = "max error / largest value" if check.normwise else "max rel error"
        assert f"{check.label}   ({measure} {check.error:.1e})" in text
        if not check.normwise:
            assert check.error <= 1
    assert any(c.normwise and c.label.startswith("against finite differences") for c in checks)


def test_an_endless_loop_times_out_without_hanging_the_grader(robustness_report):
    result = by_name(robustness_report)["relu_forward"]
    assert result.checks[0].status == "timeout"
    assert all(c.status == "timeout" for c in result.checks)  # the budget is the exercise's, not per call


def test_an_exception_is_one_line_with_the_students_file_and_line(robustness_report):
    check = by_name(robustness_report)["max_pool_backward"].checks[0]
    assert check.status == "error"
    assert check.details == [f"ZeroDivisionError: division by zero in my loop ({check.where})"]
    assert check.where.startswith("scratchnst/layers.py:") and check.where.endswith("in max_pool_backward")


def test_a_student_ending_the_process_costs_that_exercise_only(robustness_report):
    result = by_name(robustness_report)["avg_pool_backward"]
    assert result.status == "fail" and all(c.status == "error" for c in result.checks)
    assert "exit status 3" in result.checks[0].details[0]
    assert by_name(robustness_report)["total_cost"].status == "pass"  # graded after the crash, by a new worker


def test_input_reads_nothing_and_cannot_disturb_the_grader(robustness_report):
    check = by_name(robustness_report)["relu_backward"].checks[0]
    assert check.status == "error" and check.details[0].startswith("EOFError")


def test_a_syntax_error_is_reported_with_its_line_and_costs_that_module_only(tmp_path):
    exercises.make_student_copy(tmp_path, solutions=True)
    plant(tmp_path, "optim", "adam_update", "x_new = (x -")
    report = exercises.grade(tmp_path, only=["adam_update", "total_cost"], use_torch=False)
    adam, total = by_name(report)["adam_update"], by_name(report)["total_cost"]
    assert total.status == "pass"
    assert adam.status == "fail" and all(c.status == "error" for c in adam.checks)
    assert adam.checks[0].details[0].startswith("SyntaxError") and "scratchnst/optim.py:" in adam.checks[0].where


def test_a_syntax_error_in_layers_leaves_the_costs_graded(tmp_path):
    """costs.py must not import layers.py: a broken layers.py would cost every exercise of the costs too."""
    exercises.make_student_copy(tmp_path, solutions=True)
    plant(tmp_path, "layers", "relu_forward", "out = (x -")
    report = exercises.grade(tmp_path, only=["relu_forward", "gram_matrix", "compute_content_cost"], use_torch=False)
    assert by_name(report)["relu_forward"].status == "fail"
    assert by_name(report)["gram_matrix"].status == "pass" and by_name(report)["compute_content_cost"].status == "pass"


def test_torch_cannot_be_imported_by_the_students_code(robustness_report):
    check = by_name(robustness_report)["gram_matrix"].checks[0]
    assert check.status == "error" and "torch cannot be imported" in check.details[0]


@pytest.mark.parametrize("function", ["total_cost", "conv2d_forward", "compute_content_cost",
                                      "layer_style_cost_backward", "layer_style_cost_from_target", "adam_update"])
def test_correct_answers_written_differently_pass(robustness_report, function):
    """Loops, einsum, a mean instead of a sum, a print: a right answer passes whatever its form."""
    result = by_name(robustness_report)[function]
    assert result.status == "pass", [c.details for c in result.checks if c.status != "ok"]


def test_a_table_of_the_course_checks_answers_earns_nothing_for_total_cost(tmp_path):
    """The course's checks of total_cost are fixed numbers: a table of their answers passes them, and
    fails the checks drawn afresh, whatever the salt; a right answer passes whatever the salt."""
    table, right = tmp_path / "table", tmp_path / "right"
    for root in (table, right):
        exercises.make_student_copy(root, solutions=True)
    plant(table, "costs", "total_cost", """
        table = {(0.2, 0.8, 10, 40): 34.0, (0.3, 0.5, 3, 8): 4.9}
        return table.get((J_content, J_style, alpha, beta), 35.34667875478276)
    """)
    plant(right, "costs", "total_cost", "return float(np.dot([alpha, beta], [J_content, J_style]))")
    for salt in (None, 1, 2, 12345):
        cheat = by_name(exercises.grade(table, only=["total_cost"], use_torch=False, salt=salt))["total_cost"]
        assert cheat.status == "fail" and cheat.points == 0 and cheat.main_failed, salt
        assert [c.status for c in cheat.checks if c.label.startswith("course check")] == ["ok"] * 3
        honest = by_name(exercises.grade(right, only=["total_cost"], use_torch=False, salt=salt))["total_cost"]
        assert honest.status == "pass", (salt, [c.details for c in honest.checks if c.status != "ok"])


def test_the_report_says_what_broke_for_each_kind_of_failure(robustness_report):
    text = rendered(robustness_report)
    assert "TIMEOUT" in text and "ERROR" in text and "ended the worker process" in text
    assert "debugging" not in text  # the student's print() never reaches the report
    assert "Traceback" not in text


def test_only_grades_the_named_exercises(student_copy):
    report = exercises.grade(student_copy, only=["relu"], use_torch=False)
    assert [r.exercise.function for r in report.results] == ["relu_forward", "relu_backward"]
    with pytest.raises(UsageError, match="no exercise matches"):
        exercises.grade(student_copy, only=["no_such_exercise"], use_torch=False)


def test_percent_is_floored_so_only_a_perfect_copy_shows_100():
    from scratchnst.exercises import CheckResult, ExerciseResult, Report

    exercise = exercises.Exercise("m", "f", 1000, None)
    result = ExerciseResult(exercise, [CheckResult("a", "ok")] * 999 + [CheckResult("b", "fail")], "")
    report = Report(Path("."), [result], [], "")
    assert report.points == pytest.approx(999) and report.percent == 99 and not report.perfect


def test_make_and_check_never_modify_the_installed_package(tmp_path):
    before = package_digest()  # taken here, not per module: others may edit the package meanwhile
    exercises.make_student_copy(tmp_path / "student")
    exercises.make_student_copy(tmp_path / "solutions", solutions=True)
    exercises.grade(tmp_path / "student", only=["relu"], use_torch=False)
    exercises.grade(PACKAGE, only=["relu"], use_torch=False)
    assert package_digest() == before


# ------------------------------------------------------------------------ the command line
def test_cli_exit_statuses(tmp_path, student_copy, solutions_copy, capsys):
    assert main(["exercises", "check", str(solutions_copy), "--only", "relu", "--no-torch"]) == 0
    assert "(100%)" in capsys.readouterr().out
    assert main(["exercises", "check", str(student_copy), "--only", "relu", "--no-torch"]) == 1
    assert "(0%)" in capsys.readouterr().out
    assert main(["exercises", "check", str(tmp_path)]) == 1  # no scratchnst/ there: a folder problem
    assert "holds no scratchnst package" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # wrong usage, refused as the options are read
        main(["exercises", "check", str(student_copy), "--timeout", "0"])
    assert stop.value.code == 2 and "--timeout: '0': give a number of seconds above 0" in capsys.readouterr().err
    assert main(["exercises", "make", str(student_copy)]) == 2  # not empty, and no --force: wrong usage
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err  # one line, says what to do
    assert main(["exercises", "make", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "scratchnst" / "layers.py").is_file()


def test_cli_default_timeout_is_the_modules():
    args = build_parser().parse_args(["exercises", "check"])
    assert args.timeout == exercises.DEFAULT_TIMEOUT and args.dir == "."


def test_running_the_copys_own_grader_self_checks_with_the_values_shipped_in_the_copy(student_copy):
    done = subprocess.run([sys.executable, "-m", "scratchnst", "exercises", "check", "--only", "relu"],
                          cwd=student_copy, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "against the reference values shipped with the copy" in done.stdout and "(0%)" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("how", ["markers of their own", "the answer key's file copied in"])
def test_a_student_copy_is_told_by_its_shipped_values_not_by_markers_in_the_students_files(tmp_path, how):
    """A student who wrote an answer between solution markers (or copied an answer key's file in) is
    self-checked against the values shipped with the copy, as any other student."""
    exercises.make_student_copy(tmp_path / "carol")
    layers = tmp_path / "carol" / "scratchnst" / "layers.py"
    if how == "markers of their own":
        stub = '    raise NotImplementedError("elementwise max with 0; keep the dtype (np.maximum(x, 0) does).")\n'
        text = layers.read_text(encoding="utf-8")
        assert text.count(stub) == 1
        layers.write_text(text.replace(stub, "    # BEGIN SOLUTION\n    out = np.maximum(x, 0)\n    # END SOLUTION\n"),
                          encoding="utf-8")
    else:
        exercises.make_student_copy(tmp_path / "key", solutions=True)
        shutil.copy(tmp_path / "key" / "scratchnst" / "layers.py", layers)
    done = subprocess.run([sys.executable, "-m", "scratchnst", "exercises", "check", "--only", "relu_forward"],
                          cwd=tmp_path / "carol", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "against the reference values shipped with the copy" in done.stdout and "(100%)" in done.stdout


def test_a_student_copy_without_its_shipped_values_says_what_to_do(tmp_path):
    exercises.make_student_copy(tmp_path, selfcheck=False)
    done = subprocess.run([sys.executable, "-m", "scratchnst", "exercises", "check"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "student copy" in done.stderr and "Traceback" not in done.stderr

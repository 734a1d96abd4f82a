"""The self-check and grading give the same verdict: what a student sees at home is what they get.

The red team's cases: a correct copy that imports matplotlib at the top of costs.py passed its
self-check (37/37) and got 18/37 when graded; a gram_matrix that printed 200,000 lines failed with
"File too large" and made later exercises that print fail too; two values that differ were shown
alike. The self-check here is the command a student runs (`python -m scratchnst exercises check`
inside a student copy, which runs the copy's own checker); grading is `exercises.grade`, in
bubblewrap where it works and uncontained (--uncontained) always.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from exercise_helpers import by_name, plant, rendered
from scratchnst import exercises
from scratchnst.exercises import sandbox, worker
from scratchnst.exercises.cases import Case, Mistake, judge

BWRAP, WHY = sandbox.bwrap_status()
GRADED_IN = [pytest.param(True, marks=pytest.mark.skipif(not BWRAP, reason=WHY), id="bwrap"),
             pytest.param(False, id="uncontained")]

GRAM = "return A @ A.T"
GRAM_BACKWARD = "return ((dG + dG.T) @ A).astype(A.dtype)"


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    """A student copy with the reference values of its self-check, made once."""
    base = tmp_path_factory.mktemp("parity")
    exercises.make_student_copy(base / "copy", selfcheck=True)
    return base / "copy"


def student(stub, tmp_path, plants, top_of_costs=""):
    """A copy of the stub with answers planted and `top_of_costs` put after costs.py's NumPy import."""
    root = tmp_path / "student"
    shutil.copytree(stub, root)
    for (module, function), code in plants.items():
        plant(root, module, function, code)
    if top_of_costs:
        costs = root / "scratchnst" / "costs.py"
        text = costs.read_text(encoding="utf-8")
        assert "\nimport numpy as np\n" in text
        costs.write_text(text.replace("\nimport numpy as np\n", f"\nimport numpy as np\n{top_of_costs}\n", 1),
                         encoding="utf-8")
    return root


def self_check(root, *only):
    """(exit status, output) of the student's own command, run inside the copy as the README says."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    command = [sys.executable, "-m", "scratchnst", "exercises", "check", "--no-torch"]
    for name in only:
        command += ["--only", name]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert "against the reference values shipped with the copy" in done.stdout, done.stdout + done.stderr
    return done.returncode, done.stdout


def verdicts(report):
    """{function: [(status, first detail line) of each check]}: what a verdict is, whoever gave it."""
    return {r.exercise.function: [(c.status, str(c.details[0]) if c.details else "") for c in r.checks]
            for r in report.results}


@pytest.mark.parametrize("library", ["matplotlib.pyplot", "PIL.Image", "h5py", "scipy", "torch"])
@pytest.mark.parametrize("contained", GRADED_IN)
def test_an_import_refused_when_graded_is_refused_by_the_self_check(stub, tmp_path, library, contained):
    root = student(stub, tmp_path, {("costs", "gram_matrix"): GRAM}, top_of_costs=f"import {library}")
    status, text = self_check(root, "gram_matrix")
    message = f"{library.partition('.')[0]} cannot be imported while the exercises are graded: use NumPy"
    assert status == 1 and message in text and "0/1 points" in text, text
    graded = exercises.grade(root, only=["gram_matrix"], use_torch=False, contained=contained)
    (check, *others) = by_name(graded)["gram_matrix"].checks
    assert graded.points == 0 and check.status == "error", rendered(graded)
    assert check.details[0].startswith(f"ModuleNotFoundError: {message}"), check.details
    assert check.details[0] in " ".join(text.split()), "the self-check said something else"


@pytest.mark.parametrize("contained", GRADED_IN)
def test_the_standard_library_and_numpy_import_alike_in_both(stub, tmp_path, contained):
    root = student(stub, tmp_path, {("costs", "gram_matrix"): GRAM},
                   top_of_costs="import numpy.linalg, itertools, functools, math, json, dataclasses, typing")
    assert self_check(root, "gram_matrix")[0] == 0
    graded = exercises.grade(root, only=["gram_matrix"], use_torch=False, contained=contained)
    assert graded.perfect, rendered(graded)


def test_the_copys_readme_says_what_can_be_imported_and_how_print_works(stub):
    readme = " ".join((stub.parent / "copy" / "README.md").read_text(encoding="utf-8").split())
    assert "Python's standard library, `numpy` and this package only" in readme
    assert "matplotlib, PIL, h5py" in readme and "torch and scipy cannot" not in readme
    assert f"printed ({worker.SHOWN_LINES} lines per exercise at most" in readme
    assert f"printed more than {worker.OUTPUT_MB} MB: remove the print() calls" in readme


# A gram_matrix that prints 5 MB a call: its first check passes, its second goes over the exercise's
# 8 MB; the byte counts are exact, so nothing here depends on timing or the CPU.
FLOOD = 'print("x" * (5 << 20))\nreturn A @ A.T'
SMALL_PRINT = 'print("DEBUG dG", dG.shape)\nreturn ((dG + dG.T) @ A).astype(A.dtype)'


@pytest.mark.parametrize("contained", GRADED_IN)
def test_printing_too_much_is_said_alike_and_costs_that_exercise_only(stub, tmp_path, contained):
    root = student(stub, tmp_path, {("costs", "gram_matrix"): FLOOD, ("costs", "gram_matrix_backward"): SMALL_PRINT})
    both = ["gram_matrix", "gram_matrix_backward"]
    graded = exercises.grade(root, only=both, use_torch=False, contained=contained)
    status, text = self_check(root, *both)
    verdict = f"TooMuchOutput: printed more than {worker.OUTPUT_MB} MB: remove the print() calls"
    got = verdicts(graded)
    first, *rest = got["gram_matrix"]
    assert first == ("ok", "") and rest and all(c[0] == "error" and c[1].startswith(verdict) for c in rest), got
    assert all(c[0] == "ok" for c in got["gram_matrix_backward"]), got  # graded after it: no cascade
    assert "File too large" not in rendered(graded)
    flat = " ".join(text.split())
    assert verdict in flat and "File too large" not in flat and "1/3 checks" in flat, text
    assert "gram_matrix_backward 1/1 points pass" in flat


def test_the_self_check_shows_the_start_of_what_each_exercise_printed(stub, tmp_path):
    root = student(stub, tmp_path, {("costs", "gram_matrix"): FLOOD, ("costs", "gram_matrix_backward"): SMALL_PRINT})
    text = self_check(root, "gram_matrix_backward")[1]
    assert "printed during" in text and "| DEBUG dG (3, 3)" in text, text
    text = self_check(root, "costs.gram_matrix")[1]
    shown = [line for line in text.splitlines() if line.strip().startswith("| ")]
    # 5 MB on one line: one line shown, cut short, and the report stays small
    assert len(shown) == 1 and len(shown[0]) < 2 * worker.SHOWN_LINE_CHARS and len(text) < 20_000, text
    graded = exercises.grade(root, only=["gram_matrix_backward"], use_torch=False)
    assert "DEBUG" not in rendered(graded)  # a teacher's report of a class leaves the students' output out
    assert by_name(graded)["gram_matrix_backward"].checks[0].printed == ["DEBUG dG (3, 3)"]


def test_many_printed_lines_are_shown_up_to_the_bound(stub, tmp_path):
    code = "for i in range(1000):\n    print('line', i)\nreturn ((dG + dG.T) @ A).astype(A.dtype)"
    root = student(stub, tmp_path, {("costs", "gram_matrix_backward"): code})
    status, text = self_check(root, "gram_matrix_backward")
    shown = [line.strip() for line in text.splitlines() if line.strip().startswith("| ")]
    assert status == 0 and shown == [f"| line {i}" for i in range(worker.SHOWN_LINES)], text
    assert f"(1000 lines; the first {worker.SHOWN_LINES})" in text
    assert "later checks printed too: not shown" in text


def test_a_flood_caught_by_the_students_code_still_fails_its_check(stub, tmp_path):
    code = """
        try:
            while True:
                print("x" * 4096)
        except BaseException:
            pass
        return A @ A.T
    """
    root = student(stub, tmp_path, {("costs", "gram_matrix"): code})
    graded = exercises.grade(root, only=["costs.gram_matrix"], use_torch=False)
    check = by_name(graded)["gram_matrix"].checks[0]
    assert check.status == "error" and "printed more than" in check.details[0]
    assert "scratchnst/costs.py:" in check.where and check.where.endswith("in gram_matrix")


# ------------------------------------------------------------------------- values shown
def ok(value):
    return {"status": "ok", "value": value, "mutated": []}


def test_values_that_differ_never_look_the_same():
    expected = np.array([0.1, 0.6395946312345678])
    got = expected.copy()
    got[1] = 0.6395945912345678   # equal to 6 digits: the message needs more to show the difference
    result = judge(ok(got), Case("x", (), expected), [])
    assert result.status == "fail"
    assert result.details[0] == "at (1,): expected 0.63959463, got 0.63959459", result.details
    number = judge(ok(1.00000000001), Case("a number", (), 1.0, tol=1e-13), [])
    assert number.status == "fail" and number.details[0] == "expected 1, got 1.00000000001", number.details


def test_an_answer_of_another_form_is_judged_without_converting_it():
    """The red team's answers: every call returned a list of 4000 boolean arrays (64 MB, a frame's
    limit), and the grader converted each to float64 once per diagnosis (0.9 GB, 50 s for one
    submission, outside its budget). An answer of another form than the one due is only described."""
    import tracemalloc

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    expected = x.astype(np.float64) * 2
    mistakes = [Mistake("times 3", "why", expected * 1.5), Mistake("masked", "why", None, differs_only_at=x > 5)]
    flood = [np.ones(20000, dtype=bool) for _ in range(200)]   # 4 MB; 32 MB once converted to float64
    for case in (Case("array", (x,), expected, mistakes=mistakes), Case("number", (x,), 3.0, dtype=np.float64),
                 Case("parts", (x,), (expected, 3.0), parts=("da", "J"))):
        answer = ok((flood, flood) if case.parts else flood)
        tracemalloc.start()
        try:
            result = judge(answer, case, ["x"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.status == "fail" and not result.mistakes, result.details
        assert peak < 1 << 20, peak
        assert "got a list" in " ".join(map(str, result.details)), result.details
    # an answer of the right form still gets its diagnosis
    named = judge(ok(expected * 1.5), Case("array", (x,), expected, mistakes=mistakes), ["x"])
    assert named.mistakes == ["times 3"]
    factor = judge(ok(expected * 4), Case("array", (x,), expected), ["x"])
    assert "times the right value" in " ".join(map(str, factor.details))


def test_a_cost_summed_in_float32_is_named_so():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 16, 3)).astype(np.float32)
    expected = float(np.sum(x.astype(np.float64) ** 2))
    slipped = float(np.sum(x ** 2))   # what `float(np.sum(x ** 2))` gives for float32 pixels
    assert slipped != expected
    result = judge(ok(slipped), Case("float32 pixels", (x,), expected, tol=1e-9), [])
    assert result.status == "fail" and "summed in float32?" in " ".join(map(str, result.details)), result.details
    # float64 inputs and a float64 answer that is off by more than round-off: no float32 to blame
    x64 = x.astype(np.float64)
    off = judge(ok(expected * (1 + 3e-8)), Case("float64 pixels", (x64,), expected, tol=1e-9), [])
    assert off.status == "fail" and "float32" not in " ".join(map(str, off.details)), off.details
    # a wrong formula is far from float32's precision: not blamed on it
    wrong = judge(ok(expected / 2), Case("float32 pixels", (x,), expected, tol=1e-9), [])
    assert "float32" not in " ".join(map(str, wrong.details)), wrong.details


# conv2d_forward with PyTorch's symmetric padding instead of Keras's 'same' (the odd extra zero at the top
# and left): a partial answer, which fails some checks and passes others
SYMMETRIC_CONV = """
N, H, W, _ = x.shape
KH, KW, _, C_out = w.shape
if padding == "same":
    H_out, W_out = -(-H // stride), -(-W // stride)
    ph, pw = max((H_out - 1) * stride + KH - H, 0), max((W_out - 1) * stride + KW - W, 0)
    top, bottom, left, right = ph - ph // 2, ph // 2, pw - pw // 2, pw // 2
else:
    p = 0 if padding == "valid" else padding
    top = bottom = left = right = p
    H_out, W_out = (H + 2 * p - KH) // stride + 1, (W + 2 * p - KW) // stride + 1
xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w))
for kh in range(KH):
    for kw in range(KW):
        out += xp[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride, :] @ w[kh, kw]
out += np.reshape(b, -1)
return out, (x, w, b, stride, padding)
"""


def test_a_partial_answer_earns_the_same_points_with_or_without_pytorch(stub, tmp_path, torch):
    """PyTorch's checks run where it is installed only: they pass or fail, but the points leave them out."""
    root = student(stub, tmp_path, {("layers", "conv2d_forward"): SYMMETRIC_CONV})
    with_torch = exercises.grade(root, only=["conv2d_forward"], use_torch=True, contained=False)
    without = exercises.grade(root, only=["conv2d_forward"], use_torch=False, contained=False)
    (result,) = with_torch.results
    assert any(c.status != "ok" for c in result.checks) and 0 < with_torch.points < 3, rendered(with_torch)
    assert len(result.checks) > len(without.results[0].checks)  # PyTorch's check ran
    assert with_torch.points == without.points
    passed = sum(c.status == "ok" for c in result.checks)
    assert f"{passed}/{len(result.checks)} checks ({passed}/{len(result.checks) - 1} counted)" in rendered(with_torch)
    status, text = self_check(root, "conv2d_forward")
    assert status == 1 and f"conv2d_forward {without.points:g}/3 points" in " ".join(text.split()), text


def test_a_recursion_that_runs_away_is_placed_in_the_students_file(stub, tmp_path):
    """It ends in arguments.check_floats, the package's own code the student's function calls first."""
    root = student(stub, tmp_path, {("costs", "gram_matrix"): "return gram_matrix(A.T)"})
    graded = exercises.grade(root, only=["gram_matrix"], use_torch=False, contained=False)
    (first, *_) = by_name(graded)["gram_matrix"].checks
    assert first.status == "error" and first.details[0].startswith("RecursionError"), first.details
    assert "scratchnst/costs.py:" in first.details[0] and "arguments.py" not in first.details[0], first.details
    text = " ".join(self_check(root, "gram_matrix")[1].split())
    assert "(scratchnst/costs.py:" in text and "arguments.py" not in text, text


def test_an_unwritten_exercise_of_another_module_is_named_with_only(stub, tmp_path):
    """--only compute_content_cost imports costs only; the relu_forward it calls is layers' and unwritten."""
    root = student(stub, tmp_path, {("costs", "compute_content_cost"):
                                    "from scratchnst import layers\nlayers.relu_forward(a_G)\nreturn 0.0"})
    graded = exercises.grade(root, only=["compute_content_cost"], use_torch=False, contained=False)
    (first, *_) = by_name(graded)["compute_content_cost"].checks
    assert first.status == "not done" and "scratchnst/layers.py:" in first.details[0], first.details

"""Fair feedback: the classic slips of issue 13 each get their own name, once, the same across
exercises, and a wrong answer to an exercise's main question earns none of its points. The slips are
planted in an answer key (self-check role: a plain child process, fast) and, for one, in a student
copy checked against the values shipped with it (no answer key involved in judging).
"""


import pytest

from exercise_helpers import plant, rendered
from scratchnst import exercises

SLIPS = {
    # dtype only: right values, float64 out for float32 in
    ("layers", "relu_backward"): """
        return (dout * (cache > 0)).astype(np.float64)
    """,
    # dtype only, for a cost that must be a float64 number
    ("costs", "compute_content_cost"): """
        _, n_H, n_W, n_C = a_G.shape
        return np.float32(np.sum((a_C.astype(np.float64) - a_G) ** 2) / (4 * n_H * n_W * n_C))
    """,
    # the 1/4 missing in the layer style cost
    ("costs", "compute_layer_style_cost"): """
        n_C = a_G.shape[3]
        A_S = a_S.astype(np.float64).reshape(-1, n_C).T
        A_G = a_G.astype(np.float64).reshape(-1, n_C).T
        G_S, G_G = A_S @ A_S.T / A_S.shape[1], A_G @ A_G.T / A_G.shape[1]
        return float(np.sum((G_S - G_G) ** 2) / n_C**2)
    """,
    # PyTorch's symmetric padding for 'same'
    ("layers", "conv2d_forward"): """
        N, H, W, C_in = x.shape
        KH, KW, _, C_out = w.shape
        if padding == "same":
            pads = ((KH // 2, KH // 2), (KW // 2, KW // 2))
        elif padding == "valid":
            pads = ((0, 0), (0, 0))
        else:
            pads = ((padding, padding), (padding, padding))
        xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        H_out, W_out = (xp.shape[1] - KH) // stride + 1, (xp.shape[2] - KW) // stride + 1
        out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w))
        for kh in range(KH):
            for kw in range(KW):
                out += xp[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride] @ w[kh, kw]
        return out + b, (x, w, b, stride, padding)
    """,
    # the output size without its + 1 (the padding right)
    ("layers", "avg_pool_forward"): """
        N, H, W, C = x.shape
        H_full, W_full, (top, bottom), (left, right) = _pool_geometry(x.shape, size, stride, padding)
        H_out, W_out = (H + top + bottom - size) // stride, (W + left + right - size) // stride
        xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        ones = np.pad(np.ones((1, H, W, 1)), ((0, 0), (top, bottom), (left, right), (0, 0)))
        total = np.zeros((N, H_out, W_out, C), dtype=x.dtype)
        count = np.zeros((1, H_out, W_out, 1))
        for kh in range(size):
            for kw in range(size):
                total += xp[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
                count += ones[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
        return (total / count).astype(x.dtype), (x.shape, size, stride, padding)
    """,
    # = for += in the max-pool backward pass
    ("layers", "max_pool_backward"): """
        x_shape, arg, size, stride, padding = cache
        N, H, W, C = x_shape
        H_out, W_out, (top, bottom), (left, right) = _pool_geometry(x_shape, size, stride, padding)
        dxp = np.zeros((N, H + top + bottom, W + left + right, C), dtype=dout.dtype)
        for n in range(N):
            for i in range(H_out):
                for j in range(W_out):
                    for c in range(C):
                        kh, kw = divmod(int(arg[n, i, j, c]), size)
                        dxp[n, i * stride + kh, j * stride + kw, c] = dout[n, i, j, c]  # = where += belongs
        return dxp[:, top:top + H, left:left + W, :].copy()
    """,
}
NAMES = {
    "relu_backward": "dtype slip (float64 instead of float32)",
    "compute_content_cost": "dtype slip (float32 instead of float64)",
    "compute_layer_style_cost": "the 1/4 missing",
    "conv2d_forward": "symmetric padding",
    "avg_pool_forward": "output size off by one",
    "max_pool_backward": "= instead of += where windows overlap",
}


@pytest.fixture(scope="module")
def slips_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("slips")
    exercises.make_student_copy(root, force=True, solutions=True)
    for (module, function), code in SLIPS.items():
        plant(root, module, function, code)
    only = [f"{m}.{f}" for m, f in SLIPS] + ["layer_style_cost_backward", "total_cost"]
    return exercises.grade(root, only=only, use_torch=True)


@pytest.mark.parametrize("function", sorted(NAMES))
def test_each_slip_has_its_own_name_and_only_that_one(slips_report, function):
    result = next(r for r in slips_report.results if r.exercise.function == function)
    assert result.status == "fail"
    assert result.mistakes == [NAMES[function]], result.mistakes  # named, and nothing contradicts it
    text = rendered(slips_report)
    assert f"mistake: {NAMES[function]}: " in text
    assert "constant factor" not in text  # a dtype slip is not a factor


def test_the_same_slip_has_the_same_name_in_every_exercise(tmp_path):
    """The 1/4 missing from the content cost and from the layer style cost: one name for both."""
    exercises.make_student_copy(tmp_path, solutions=True)
    plant(tmp_path, "costs", "compute_content_cost", """
        _, n_H, n_W, n_C = a_G.shape
        return float(np.sum((a_C.astype(np.float64) - a_G) ** 2) / (n_H * n_W * n_C))
    """)
    plant(tmp_path, "costs", "compute_layer_style_cost", SLIPS[("costs", "compute_layer_style_cost")])
    report = exercises.grade(tmp_path, only=["compute_content_cost", "compute_layer_style_cost"], use_torch=False)
    assert [r.mistakes for r in report.results] == [["the 1/4 missing"], ["the 1/4 missing"]]


def test_a_wrong_main_answer_earns_no_partial_credit(slips_report):
    """= for += passes the non-overlapping checks but fails SqueezeNet's overlapping pools: 0 of 2."""
    result = next(r for r in slips_report.results if r.exercise.function == "max_pool_backward")
    assert result.passed > 0 and result.main_failed and result.points == 0
    assert "no points: a main check" in rendered(slips_report)


def test_a_slip_beside_a_right_main_answer_keeps_its_partial_credit(slips_report):
    result = next(r for r in slips_report.results if r.exercise.function == "relu_backward")
    assert not result.main_failed and 0 < result.points < result.exercise.points


def test_unplanted_exercises_pass_beside_the_slips(slips_report):
    others = [r for r in slips_report.results if r.exercise.function not in NAMES]
    assert others and all(r.status == "pass" for r in others)


def test_a_student_copy_names_the_slip_from_the_values_shipped_with_it(tmp_path):
    """Self-check with no answer key: the diagnosis comes from the copy's own plain-data values."""
    exercises.make_student_copy(tmp_path)
    plant(tmp_path, "layers", "max_pool_backward", SLIPS[("layers", "max_pool_backward")])
    cases = exercises.grading.shipped_cases(tmp_path / "scratchnst", only=["max_pool_backward"])
    report = exercises.grade(tmp_path, cases=cases)
    (result,) = report.results
    assert report.against == "the reference values shipped with the copy"
    assert result.mistakes == [NAMES["max_pool_backward"]] and result.points == 0


def test_the_answer_key_passes_and_the_slips_keep_their_names_on_a_teachers_fresh_inputs(tmp_path):
    """A teacher's grade draws new inputs each run: no seed may fail a right answer or lose a diagnosis."""
    key, slips = tmp_path / "key", tmp_path / "slips"
    exercises.make_student_copy(key, solutions=True, selfcheck=False)
    exercises.make_student_copy(slips, solutions=True, selfcheck=False)
    for (module, function), code in SLIPS.items():
        plant(slips, module, function, code)
    for salt in (3, 99, 2**31 + 5):
        cases = exercises.reference_cases(use_torch=False, salt=salt)
        report = exercises.grade(key, cases=cases)
        assert report.perfect, (salt, [(r.exercise.name, r.mistakes) for r in report.results if r.status != "pass"])
        named = {r.exercise.function: r.mistakes for r in exercises.grade(slips, cases=cases).results}
        assert {f: named[f] for f in NAMES} == {f: [name] for f, name in NAMES.items()}, salt

"""The checker itself: it passes the real layers, costs and networks, and it catches deliberately wrong
backward passes; the command's selection, JSON, and its run on a student copy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import strict_json
from scratchnst import costs, fast_conv, gradcheck, gradcheck_cases, layers, torch_ref
from scratchnst.gradcheck import Case, check_case, eval_numerical_gradient_array, rel_error
from scratchnst.gradcheck_cases import run_gradcheck


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(1.0, 1.0 + 1e-9) == pytest.approx(5e-10, rel=1e-3)
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, -2.0])) == 1.0
    with pytest.raises(ValueError):
        rel_error(np.ones(2), np.ones(3))


def test_numerical_gradient_of_a_known_function_and_input_untouched():
    x = np.random.default_rng(0).standard_normal((3, 4))
    before = x.copy()
    dout = np.random.default_rng(1).standard_normal((3, 4))
    numeric = eval_numerical_gradient_array(lambda v: np.sin(v) * v, x, dout)
    exact = (np.cos(x) * x + np.sin(x)) * dout
    assert rel_error(numeric, exact) < 1e-7
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_at_sampled_coordinates():
    x = np.random.default_rng(2).standard_normal((3, 5))
    indices = np.array([0, 7, 14])
    numeric = gradcheck.eval_numerical_gradient_at(lambda v: np.sum(np.sin(v)), x, indices)
    assert rel_error(numeric, np.cos(x).reshape(-1)[indices]) < 1e-8


def test_normwise_error_ignores_round_off_on_tiny_elements():
    exact = np.array([1.0, 1e-9])
    assert rel_error(exact, exact + [0, 1e-13]) > 1e-5  # elementwise: the tiny element looks wrong
    assert gradcheck.rel_error_normwise(exact, exact + [0, 1e-13]) < 1e-12
    assert gradcheck.rel_error_normwise(exact, 2 * exact) > 0.3


@pytest.fixture
def weights_dir(squeezenet_weights_path, monkeypatch):
    """The command's search finds the SqueezeNet weights (the tests may have them from ../shared only)."""
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(squeezenet_weights_path.parent))
    return squeezenet_weights_path.parent


@pytest.fixture(scope="module")
def vgg_weights_dir(tmp_path_factory):
    """A folder with random VGG-19 weights in the Keras layout (the real ones cannot be fetched here)."""
    import network_helpers

    folder = tmp_path_factory.mktemp("vgg19")
    params = network_helpers.random_params("vgg19", np.random.default_rng(5))
    network_helpers.write_keras_weights(folder / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg19", params)
    return folder


def _run_rows(checks, seed=3, use_torch=True):
    rows, skipped = gradcheck.run_checks(checks, use_torch=use_torch, seed=seed)
    return rows, skipped


def test_every_layer_and_cost_row_passes(torch):
    checks = [c for c in gradcheck_cases.default_checks(seed=3) if c.group in ("layers", "costs")]
    rows, skipped = _run_rows(checks)
    assert not skipped and len(rows) == 27
    for row in rows:
        assert row.result == "PASS", row
        assert row.numeric_error < row.tolerances[0] and row.torch_error < row.tolerances[1], row


def test_every_cost_has_a_row():
    names = {c.name for c in gradcheck_cases.default_checks() if c.group == "costs"}
    assert names == {"content_cost", "gram_matrix", "layer_style_cost", "layer_style_cost_fast", "style_cost",
                     "total_cost", "total_variation"}


def test_the_chain_through_squeezenet_passes(weights_dir, torch):
    checks = gradcheck_cases.select(gradcheck_cases.default_checks(seed=4), ["squeezenet"])
    rows, skipped = _run_rows(checks, seed=4)
    assert [r.name for r in rows] == ["squeezenet_content", "squeezenet_style", "squeezenet_total"] and not skipped
    for row in rows:
        assert row.result == "PASS", row
        assert row.numeric_error < 1e-7 and row.torch_error < 1e-12, row  # far inside the tolerances


def test_the_chain_through_vgg19_passes_with_its_weights(vgg_weights_dir, monkeypatch, torch):
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(vgg_weights_dir))
    checks = gradcheck_cases.select(gradcheck_cases.default_checks(seed=1), ["vgg19"])
    rows, skipped = _run_rows(checks, seed=1)
    assert [r.result for r in rows] == ["PASS"] * 3 and not skipped, rows


def test_without_weights_the_chain_rows_say_how_to_get_them(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert run_gradcheck(only=["vgg19", "content_cost"]) == 0
    out = capsys.readouterr().out
    assert "skipped vgg19_content, vgg19_style, vgg19_total: no vgg19 weights" in out
    assert "scratchnst weights download vgg19" in out
    assert "1 passed, 0 failed, 3 skipped" in out


def test_a_broken_weights_file_is_an_error_not_a_skip(squeezenet_weights_path, monkeypatch, tmp_path, capsys):
    data = squeezenet_weights_path.read_bytes()
    (tmp_path / squeezenet_weights_path.name).write_bytes(data[:len(data) // 2])
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))
    assert run_gradcheck(only=["squeezenet"], use_torch=False) == 1
    out = capsys.readouterr().out
    assert "skipped" not in out and "3 raised an error" in out and out.count("truncated") >= 1, out


def test_a_missing_weights_file_names_no_option_gradcheck_lacks(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert run_gradcheck(only=["vgg19"], use_torch=False) == 0
    out = capsys.readouterr().out
    assert "no vgg19 weights" in out and "--weights" not in out and "put the file in one of these folders" in out


def test_a_kink_inside_the_step_is_stepped_over():
    """|x| at 5e-4 with h = 1e-3 straddles the kink; the smaller steps find the true slope."""
    case = Case("abs", "kink", {"x": np.array([5e-4, 0.3, -0.2])},
                lambda x: (np.asarray(np.sum(np.abs(x))), x), lambda d, x: (d * np.sign(x),), None,
                h=1e-3, samples=3, normwise=True)
    numeric_error, _ = check_case(case, use_torch=False)
    assert numeric_error < 1e-9
    wrong = Case("abs", "wrong", case.inputs, case.forward, lambda d, x: (d * 2 * np.sign(x),), None,
                 h=1e-3, samples=3, normwise=True)
    assert check_case(wrong, use_torch=False)[0] > 0.3


def test_command_prints_a_full_table(weights_dir, torch):
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"checking the functions of the package in {Path(gradcheck.__file__).parent}"
    lines = lines[1:]
    assert lines[0].split() == ["check", "configuration", "vs", "numeric", "vs", "PyTorch", "seconds", "result"]
    rows = [line for line in lines if line.endswith("PASS") or line.endswith("FAIL")]
    assert len(rows) >= 27 + 3
    assert all(row.endswith("PASS") for row in rows)
    assert all(float(row.split()[-2]) >= 0 for row in rows)  # the seconds column
    assert "not installed" not in result.stdout
    for name in ("conv2d", "conv2d_fast", "relu", "max_pool", "avg_pool", "concat", "content_cost", "gram_matrix",
                 "layer_style_cost", "style_cost", "total_cost", "total_variation", "squeezenet_content",
                 "squeezenet_style", "squeezenet_total"):
        assert any(row.split()[0] == name for row in rows), name
    assert ("skipped vgg19_content, vgg19_style, vgg19_total" in result.stdout) != any(
        row.startswith("vgg19_") for row in rows)
    assert lines[-1].startswith(f"{len(rows)} passed, 0 failed")


def test_only_selects_rows_groups_and_networks(capsys):
    checks = gradcheck_cases.default_checks()
    assert [c.name for c in gradcheck_cases.select(checks, ["content_cost"])] == ["content_cost"]
    assert {c.name for c in gradcheck_cases.select(checks, ["costs", "relu"])} == {
        "relu", "content_cost", "gram_matrix", "layer_style_cost", "layer_style_cost_fast", "style_cost",
        "total_cost", "total_variation"}
    assert len(gradcheck_cases.select(checks, ["conv2d"])) == 6
    assert [c.name for c in gradcheck_cases.select(checks, ["vgg19"])] == ["vgg19_content", "vgg19_style",
                                                                          "vgg19_total"]
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck", "--only", "contentcost"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("scratchnst: error: gradcheck has no check 'contentcost'; did you mean "
                                    "content_cost?")
    assert len(result.stderr.strip().splitlines()) == 1


def test_json_output(torch):
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck", "--only", "costs", "--only", "relu",
                             "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["rows"]][:2] == ["relu", "content_cost"] and len(data["rows"]) == 8
    assert data["passed"] == 8 and data["failed"] == data["not_done"] == data["errors"] == 0
    assert data["exit_status"] == 0 and data["pytorch"] == "installed"
    row = data["rows"][1]
    assert row["result"] == "PASS" and row["vs_numeric"] < row["numeric_tol"] and row["vs_pytorch"] < 1e-10
    assert row["seconds"] >= 0 and row["configuration"]


def test_without_torch_the_columns_say_so(monkeypatch, capsys):
    monkeypatch.setattr(torch_ref, "available", lambda: False)
    assert run_gradcheck(only=["relu", "costs"]) == 0
    out = capsys.readouterr().out
    assert out.count("not installed") == 8
    assert run_gradcheck(only=["relu"], as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["pytorch"] == "not installed"


# --------------------------------------------------------------------- planted bugs are caught
def _relu_backward_mask_ge(dout, cache):
    """BUG: the mask at x >= 0 lets the gradient through where x == 0."""
    out = cache
    return np.where(out >= 0, dout, 0)


def _max_pool_backward_last_cell(dout, cache):
    """BUG: each window's gradient goes to the window's last cell, not to its maximum."""
    x_shape, arg, size, stride, padding = cache
    wrong = np.full_like(arg, size * size - 1)
    return layers.max_pool_backward(dout, (x_shape, wrong, size, stride, padding))


def _conv_backward_unflipped(dout, cache):
    """BUG: dx computed as a correlation with the kernel NOT flipped in space."""
    x, w, b, stride, padding = cache
    dx, dw, db = layers.conv2d_backward(dout, (x, w[::-1, ::-1], b, stride, padding))
    return dx, layers.conv2d_backward(dout, cache)[1], db


def _avg_pool_backward_full_count(dout, cache):
    """BUG: with 'same' padding, divide by size*size at the border too (Keras divides by the real count)."""
    x_shape, size, stride, padding = cache
    _, H_out, W_out, _ = dout.shape
    # 'valid' geometry on a padded input gives the same windows, all counted as full
    N, H, W, C = x_shape
    _, top, bottom = layers.conv_output_size(H, size, stride, padding)
    _, left, right = layers.conv_output_size(W, size, stride, padding)
    padded = (N, H + top + bottom, W + left + right, C)
    dxpad = layers.avg_pool_backward(dout, (padded, size, stride, "valid"))
    return dxpad[:, top:top + H, left:left + W, :]


def _planted_cases():
    rng = np.random.default_rng(9)
    x_relu = rng.standard_normal((1, 5, 6, 3))
    x_relu[0, 0, :, 0] = 0.0  # exact zeros, as after a ReLU and zero padding
    return [
        Case("relu", "mask x >= 0", {"x": x_relu}, layers.relu_forward,
             lambda d, c: (_relu_backward_mask_ge(d, c),), torch_ref.relu),
        Case("max_pool", "gradient to the last cell", {"x": rng.standard_normal((1, 7, 9, 2))},
             lambda x: layers.max_pool_forward(x, 3, 2), lambda d, c: (_max_pool_backward_last_cell(d, c),),
             lambda x: torch_ref.max_pool(x, 3, 2)),
        Case("conv2d", "kernel not flipped", dict(x=rng.standard_normal((1, 6, 7, 3)),
                                                  w=rng.standard_normal((3, 3, 3, 4)), b=rng.standard_normal(4)),
             lambda x, w, b: layers.conv2d_forward(x, w, b), _conv_backward_unflipped,
             lambda x, w, b: torch_ref.conv2d(x, w, b)),
        Case("avg_pool", "border counted as full", {"x": rng.standard_normal((1, 7, 8, 2))},
             lambda x: layers.avg_pool_forward(x, 3, 2, "same"), lambda d, c: (_avg_pool_backward_full_count(d, c),),
             lambda x: torch_ref.avg_pool(x, 3, 2, "same")),
    ]


@pytest.mark.parametrize("index", range(4))
def test_planted_bug_is_caught_by_pytorch(index, torch):
    case = _planted_cases()[index]
    _, torch_error = check_case(case, use_torch=True)
    assert torch_error > 1e-3, case.config


@pytest.mark.parametrize("index", [1, 2, 3])  # the ReLU bug lives on the kink, where differences are blind
def test_planted_bug_is_caught_by_finite_differences(index):
    case = _planted_cases()[index]
    numeric_error, _ = check_case(case, use_torch=False)
    assert numeric_error > 1e-3, case.config


def test_a_failing_row_makes_the_command_fail(torch, capsys):
    assert run_gradcheck(cases=_planted_cases()) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 4
    assert "0 passed, 4 failed" in out


# ------------------------------------------------------------- planted mistakes in the costs' gradients
def _content_missing_2(a_C, a_G):
    """BUG: the 2 of the square forgotten: (a_G - a_C) / (4 nH nW nC)."""
    return (a_G - a_C) / (4 * a_G[0].size)


def _gram_one_side(A, dG):
    """BUG: only A's appearance in the rows of G: dG @ A."""
    return dG @ A


def _layer_style_no_positions(a_S, a_G):
    """BUG: the generated image's Gram not divided by its positions in the gradient's factor."""
    return ORIGINAL["layer_style_cost_backward"](a_S, a_G) * a_G.shape[1] * a_G.shape[2]


def _from_target_sign(target, a_G):
    J, da = ORIGINAL["layer_style_cost_from_target"](target, a_G)
    return J, -da


def _style_lambda_ignored(a_S, a_G, style_layers=costs.COURSE_STYLE_LAYERS):
    """BUG: every layer's gradient with weight 1 instead of its lambda."""
    return {name: costs.layer_style_cost_backward(a_S[name], a_G[name]) for name, _ in style_layers}


def _total_swapped(J_content, J_style, alpha=10, beta=40):
    """BUG: alpha and beta swapped."""
    return beta * J_content + alpha * J_style


def _tv_missing_2(x):
    return ORIGINAL["total_variation_cost_backward"](x) / 2


ORIGINAL = {name: getattr(costs, name) for name in ("layer_style_cost_backward", "layer_style_cost_from_target",
                                                    "total_variation_cost_backward")}

PLANTED = [
    ("content_cost", "content_cost_backward", _content_missing_2),
    ("gram_matrix", "gram_matrix_backward", _gram_one_side),
    ("layer_style_cost", "layer_style_cost_backward", _layer_style_no_positions),
    ("layer_style_cost_fast", "layer_style_cost_from_target", _from_target_sign),
    ("style_cost", "style_cost_backward", _style_lambda_ignored),
    ("total_cost", "total_cost", _total_swapped),
    ("total_variation", "total_variation_cost_backward", _tv_missing_2),
]


@pytest.mark.parametrize("row, function, mistake", PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_mistake_in_a_cost_fails_its_row(row, function, mistake, monkeypatch, torch):
    monkeypatch.setattr(costs, function, mistake)
    checks = gradcheck_cases.default_checks(seed=2)
    failed = {r.name: r for r in _run_rows(gradcheck_cases.select(checks, ["costs"]), seed=2)[0]
              if r.result != "PASS"}
    assert row in failed and failed[row].result == "FAIL", failed
    assert failed[row].numeric_error > 1e-2 and failed[row].torch_error > 1e-2, failed[row]


@pytest.mark.parametrize("wrong", ["forward", "backward"])
def test_a_failing_row_says_which_pass_pytorch_disagrees_with(wrong, monkeypatch, torch, capsys):
    """Finite differences check the backward against the forward as written: a wrong forward with a
    right backward fails as a wrong backward does. PyTorch tells the two apart, and the row says it."""
    if wrong == "forward":
        right = costs.compute_content_cost
        monkeypatch.setattr(costs, "compute_content_cost", lambda a_C, a_G: 2 * right(a_C, a_G))
    else:
        monkeypatch.setattr(costs, "content_cost_backward", _content_missing_2)
    rows = _run_rows(gradcheck_cases.select(gradcheck_cases.default_checks(seed=2), ["content_cost"]), seed=2)[0]
    assert [r.result for r in rows] == ["FAIL"]
    other = "backward" if wrong == "forward" else "forward"
    assert rows[0].detail.startswith(f"the {wrong} pass differs from PyTorch's (")
    assert rows[0].detail.endswith(f"the {other} agrees with PyTorch: the {wrong} pass is wrong")
    assert run_gradcheck(only=["content_cost"]) == 1   # and the table shows it under the row
    assert f"  content_cost: the {wrong} pass differs from PyTorch's" in capsys.readouterr().out
    # without PyTorch the row cannot tell, and says so
    row = gradcheck.run_check(gradcheck_cases.select(gradcheck_cases.default_checks(seed=2), ["content_cost"])[0],
                              use_torch=False, seed=2)
    assert row.result == "FAIL" and "one of the two is wrong" in row.detail


def test_the_missing_factor_2_fails_the_content_cost_row_and_its_chain(weights_dir, monkeypatch, capsys, torch):
    monkeypatch.setattr(costs, "content_cost_backward", _content_missing_2)
    assert run_gradcheck(only=["content_cost", "squeezenet_content", "squeezenet_style"]) == 1
    out = capsys.readouterr().out
    results = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:5]}
    assert results == {"content_cost": "FAIL", "squeezenet_content": "FAIL", "squeezenet_style": "PASS"}, out
    assert "2 failed" in out


def test_a_wrong_network_backward_fails_the_chain_rows(weights_dir, monkeypatch, torch):
    """BUG: the ReLU mask forgotten in the fused conv+ReLU backward the networks run."""
    def unmasked(dout, cache):
        conv_cache, _ = cache
        return fast_conv.conv2d_backward(dout, conv_cache, weight_grads=False)[0]

    monkeypatch.setattr(fast_conv, "conv2d_relu_backward", unmasked)
    checks = gradcheck_cases.select(gradcheck_cases.default_checks(), ["squeezenet_content"])
    (row,), _ = _run_rows(checks)
    assert row.result == "FAIL" and row.numeric_error > 1e-2 and row.torch_error > 1e-2, row


# ------------------------------------------------------------------------ --package: a student's copy
def _gradcheck_copy(folder, *options):
    return subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck", "--package", str(folder), *options],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def untouched_copy(tmp_path_factory):
    from scratchnst.exercises import make_student_copy

    folder = tmp_path_factory.mktemp("copy")
    make_student_copy(folder)
    return folder


def test_an_untouched_copy_reports_every_exercise_row_not_done(untouched_copy, weights_dir):
    result = _gradcheck_copy(untouched_copy, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert data["package"] == str(untouched_copy.resolve() / "scratchnst")
    rows = {(r["name"], r["configuration"]): r for r in data["rows"]}
    for row in rows.values():
        if row["group"] in ("costs", "chain"):
            assert row["result"] == "NOT DONE" and row["detail"].startswith("scratchnst."), row
    not_done = {r["name"]: r["detail"] for r in data["rows"] if r["result"] == "NOT DONE"}
    assert not_done["content_cost"] == "scratchnst.costs.compute_content_cost"
    assert not_done["total_variation"] == "scratchnst.costs.compute_total_variation_cost"
    # the given code (the fast convolution, concatenation) is checked and passes
    passed = {r["name"] for r in data["rows"] if r["result"] == "PASS"}
    transformer = {r["name"] for r in data["rows"] if r["group"] == "transformer"} - {"transformer_net"}
    assert passed == {"conv2d_fast", "concat"} | transformer and "instance_norm" in transformer
    assert not_done["transformer_net"] == "scratchnst.layers.relu_forward"  # the network runs the student's ReLU
    assert data["failed"] == data["errors"] == 0


def test_an_untouched_copy_as_a_table(untouched_copy):
    result = _gradcheck_copy(untouched_copy, "--only", "costs")
    assert result.returncode == 1 and "Traceback" not in result.stderr and not result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"checking the functions of the student copy in {untouched_copy.resolve() / 'scratchnst'}; "
                        "a row still running after 60 s is stopped")
    assert "content_cost" in lines[3] and lines[3].endswith("NOT DONE (scratchnst.costs.compute_content_cost)")
    assert lines[-1].endswith(f"0 passed, 0 failed, 7 not done (exercises to write) in {lines[-1].split()[-2]} s")


def test_a_copy_with_one_exercise_written_wrong_fails_that_row(untouched_copy, tmp_path, torch):
    """A student writes the content cost and its gradient, forgetting the 2 of the square."""
    import shutil

    import exercise_helpers

    folder = tmp_path / "student"
    shutil.copytree(untouched_copy, folder)
    exercise_helpers.plant(folder, "costs", "compute_content_cost", """
    _, n_H, n_W, n_C = a_G.shape
    return float(np.sum((a_C.astype(np.float64) - a_G) ** 2) / (4 * n_H * n_W * n_C))
""")
    exercise_helpers.plant(folder, "costs", "content_cost_backward", """
    _, n_H, n_W, n_C = a_G.shape
    return ((a_G - a_C) / (4 * n_H * n_W * n_C)).astype(a_G.dtype)
""")
    result = _gradcheck_copy(folder, "--only", "content_cost", "--json")
    (row,) = json.loads(result.stdout)["rows"]
    assert result.returncode == 1 and row["result"] == "FAIL", row
    assert row["vs_numeric"] > 0.3 and row["vs_pytorch"] > 0.3


def test_a_gradient_of_nan_gives_json_that_strict_parsers_read(untouched_copy, tmp_path):
    import shutil

    import exercise_helpers

    folder = tmp_path / "student"
    shutil.copytree(untouched_copy, folder)
    exercise_helpers.plant(folder, "layers", "relu_forward", "return np.maximum(x, 0), x")
    exercise_helpers.plant(folder, "layers", "relu_backward", "return np.full_like(dout, np.nan)")
    result = _gradcheck_copy(folder, "--only", "relu", "--no-torch", "--json")
    (row,) = strict_json(result.stdout)["rows"]
    assert result.returncode == 1 and row["result"] == "FAIL" and row["vs_numeric"] is None, row


def test_a_function_that_writes_into_its_input_is_told_so(untouched_copy, tmp_path):
    import shutil

    import exercise_helpers

    folder = tmp_path / "student"
    shutil.copytree(untouched_copy, folder)
    exercise_helpers.plant(folder, "costs", "compute_content_cost",
                           "return float(np.sum((a_C - a_G) ** 2) / (4 * a_G.size))")
    exercise_helpers.plant(folder, "costs", "content_cost_backward", "d = a_G\nd -= a_C\nreturn d / (2 * d.size)")
    result = _gradcheck_copy(folder, "--only", "content_cost", "--no-torch")
    assert result.returncode == 1 and "wrote into its input a_G" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not any(getattr(f, "__module__", "").startswith("__editable__") for f in sys.meta_path),
                    reason="needs an editable install (pip install -e .), whose finder supplies a missing module")
def test_a_module_missing_from_the_copy_is_not_taken_from_elsewhere(untouched_copy, tmp_path):
    """An editable install's finder supplies a module the copy lacks: its answers must not pass as the student's."""
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(untouched_copy, folder)
    (folder / "scratchnst" / "costs.py").unlink()
    result = _gradcheck_copy(folder, "--only", "costs")
    assert result.returncode == 1 and "passed" not in result.stdout, result.stdout
    assert result.stderr.count("\n") == 1 and "costs" in result.stderr, result.stderr


def test_a_syntax_error_in_the_copy_run_from_inside_it_is_one_line(untouched_copy, tmp_path):
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(untouched_copy, folder)
    costs_py = folder / "scratchnst" / "costs.py"
    costs_py.write_text(costs_py.read_text() + "\ndef broken(:\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck"], cwd=folder, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("scratchnst: error: scratchnst does not import: ") and "costs.py:" in result.stderr
    assert "SyntaxError" in result.stderr and "internal error" not in result.stderr


def test_an_answer_key_passes_every_row(tmp_path, weights_dir, torch):
    from scratchnst.exercises import make_student_copy

    make_student_copy(tmp_path, solutions=True)
    result = _gradcheck_copy(tmp_path, "--only", "layers", "--only", "costs", "--only", "squeezenet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("30 passed, 0 failed")


def test_package_that_is_not_a_copy(tmp_path):
    result = _gradcheck_copy(tmp_path / "nowhere")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no such folder" in result.stderr
    result = _gradcheck_copy(tmp_path)
    assert result.returncode == 1 and "holds no scratchnst package" in result.stderr


# --------------------------------------------- --package: endless loops, Ctrl-C, wrong returns, the package named
@pytest.fixture(scope="module")
def answer_key(tmp_path_factory):
    from scratchnst.exercises import make_student_copy

    folder = tmp_path_factory.mktemp("key")
    make_student_copy(folder, solutions=True)
    return folder


def _planted_copy(answer_key, folder, plants):
    """A copy of the answer key with {(module, function): body} written in."""
    import shutil

    import exercise_helpers

    shutil.copytree(answer_key, folder)
    for (module, function), code in plants.items():
        exercise_helpers.plant(folder, module, function, code)
    return folder


# An endless loop that no exception ends (a student's bare except), telling the test once it is in there.
_ENDLESS = """
import os
with open({flag!r}, "w") as f:
    f.write(str(os.getpid()))
while True:
    try:
        pass
    except BaseException:
        pass
"""


def test_an_endless_loop_is_stopped_and_the_rows_after_it_run(answer_key, tmp_path):
    # 20 s: far above the 0.01 s of these rows on any machine, so that only the loop reaches it
    flag = tmp_path / "in_the_loop"
    loop = {("costs", "gram_matrix"): _ENDLESS.format(flag=str(flag))}
    folder = _planted_copy(answer_key, tmp_path / "student", loop)
    result = _gradcheck_copy(folder, "--only", "content_cost", "--only", "gram_matrix", "--only", "total_variation",
                             "--timeout", "20", "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert [(r["name"], r["result"]) for r in data["rows"]] == [
        ("content_cost", "PASS"), ("gram_matrix", "TIMEOUT"), ("total_variation", "PASS")]
    detail = data["rows"][1]["detail"]
    assert detail.startswith("scratchnst.costs.gram_matrix (scratchnst/costs.py:"), detail
    assert "still running after 20 s: an endless loop?" in detail and data["timeouts"] == 1
    assert flag.exists()
    from scratchnst import gradcheck_cases   # the stopped row keeps its configuration, as a finished one does
    built = gradcheck_cases.checks_to_run(0, only=["gram_matrix"])[0].build()
    assert data["rows"][1]["configuration"] == built.config != ""


def test_a_row_stopped_while_printing_says_so(answer_key, tmp_path):
    """A print in a function a check calls hundreds of times can fill the time limit by itself."""
    folder = _planted_copy(answer_key, tmp_path / "student", {("costs", "gram_matrix"): 'while True: print("G")'})
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck", "--package", str(folder), "--only",
                             "gram_matrix", "--timeout", "10", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    row, = json.loads(result.stdout)["rows"]
    assert row["result"] == "TIMEOUT" and "still running after 10 s: printing, which is slow" in row["detail"], row


def test_ctrl_c_names_the_row_and_ends_the_check(answer_key, tmp_path):
    import os
    import signal
    import time

    flag = tmp_path / "in_the_loop"
    loop = {("costs", "gram_matrix"): _ENDLESS.format(flag=str(flag))}
    folder = _planted_copy(answer_key, tmp_path / "student", loop)
    command = subprocess.Popen([sys.executable, "-m", "scratchnst", "gradcheck", "--package", str(folder), "--only",
                                "content_cost", "--only", "gram_matrix", "--timeout", "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # the child's imports and the first row, on a slow machine
        while not (flag.exists() and flag.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), "the planted loop was never reached"
        os.killpg(command.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130, err
    # the last line (a library's warning at import would come before it)
    assert err.splitlines()[-1] == ("scratchnst: interrupted (Ctrl-C) while checking gram_matrix (row 2 of 2); "
                                    "no table was printed")
    assert "Traceback" not in err
    child = int(flag.read_text())
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:  # killed; the kernel may lag a little
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}"), "the child running the loop was left behind"


def test_wrong_returns_are_named_in_the_students_terms(answer_key, tmp_path):
    folder = _planted_copy(answer_key, tmp_path / "student", {
        ("costs", "gram_matrix"): "return A.T @ A",
        ("costs", "compute_content_cost"): """
            _, n_H, n_W, n_C = a_G.shape
            return [np.sum((a_C - a_G) ** 2) / (4 * n_H * n_W * n_C)]
        """,
        # an error raised inside NumPy: the row shows the student's line, not numeric.py's
        ("costs", "total_variation_cost_backward"): "return np.tensordot(x, x, axes=([1], [2]))",
    })
    result = _gradcheck_copy(folder, "--only", "content_cost", "--only", "gram_matrix", "--only", "total_variation")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    details = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
               for line in result.stdout.splitlines() if line.startswith("  ") and ": " in line}
    planted = (folder / "scratchnst" / "costs.py").read_text().splitlines()
    line_of = {text: 1 + next(i for i, line in enumerate(planted) if text in line)
               for text in ("return A.T @ A", "return [np.sum((a_C - a_G) ** 2)")}
    # each shown at the line that returned the value
    assert details["gram_matrix"].startswith(
        f"scratchnst.costs.gram_matrix (scratchnst/costs.py:{line_of['return A.T @ A']})"), details["gram_matrix"]
    assert details["gram_matrix"].endswith("returned an array of shape (11, 11), expected (nC, nC) = (5, 5): "
                                           "A.T @ A instead of A @ A.T?")
    assert details["content_cost"].endswith("returned a list of 1 items, expected a number")
    assert f"(scratchnst/costs.py:{line_of['return [np.sum((a_C - a_G) ** 2)']})" in details["content_cost"]
    assert details["total_variation"].startswith("ValueError: shape-mismatch for sum in "
                                                 "total_variation_cost_backward at scratchnst/costs.py:")


def test_a_wrong_return_is_shown_at_its_return_line_or_says_there_is_none():
    def no_return(A):
        A @ A.T

    def two_returns(A):
        if A.size:
            return A
        return None

    def one_return(A):
        def inner():
            return 0   # a nested function's return is not the function's
        return [A, inner]

    first = {f: f.__code__.co_firstlineno for f in (no_return, two_returns, one_return)}
    cases = {no_return: (first[no_return], "returned None, expected (nC, nC) = (2, 2): it has no return statement"),
             two_returns: (first[two_returns], "returned an array of shape (3,), expected (nC, nC) = (2, 2)"),
             one_return: (first[one_return] + 3, "returned a list of 2 items, expected (nC, nC) = (2, 2)")}
    for function, (line, message) in cases.items():
        with pytest.raises(gradcheck.WrongReturn) as info:
            gradcheck.call(function, np.ones(3), expect=((2, 2), "(nC, nC)"))
        assert f"test_gradcheck.py:{line})" in str(info.value) and str(info.value).endswith(message), info.value


def test_wrong_gradients_name_the_row_and_the_input(monkeypatch):
    monkeypatch.setattr(costs, "content_cost_backward", lambda a_C, a_G: (a_G - a_C, None))
    (row,), _ = _run_rows(gradcheck_cases.select(gradcheck_cases.default_checks(), ["content_cost"]), use_torch=False)
    assert row.result == "ERROR" and row.detail.endswith("returned a tuple of 2 items, expected a_G's shape = "
                                                         "(1, 5, 7, 3)"), row


def test_the_table_names_the_package_and_another_one_here(tmp_path, monkeypatch, capsys):
    from scratchnst.cli import main

    checked = Path(gradcheck.__file__).parent
    (tmp_path / "scratchnst").mkdir()
    (tmp_path / "scratchnst" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(["gradcheck", "--only", "relu", "--no-torch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"checking the functions of the package in {checked}"
    assert lines[1] == (f"note: the current folder holds another scratchnst package, {tmp_path / 'scratchnst'} "
                        "(a student copy?); to check that one: scratchnst gradcheck --package .")
    assert main(["gradcheck", "--only", "relu", "--no-torch", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["package"] == str(checked) and "--package ." in data["note"]
    monkeypatch.chdir(checked.parent)  # the package checked is the one here: nothing to note
    assert main(["gradcheck", "--only", "relu", "--no-torch"]) == 0
    assert not capsys.readouterr().out.splitlines()[1].startswith("note:")


def test_ctrl_c_in_the_packages_own_table_names_the_row(monkeypatch, capsys):
    from scratchnst.cli import main

    def interrupted(a_C, a_G):
        raise KeyboardInterrupt

    monkeypatch.setattr(costs, "compute_content_cost", interrupted)
    assert main(["gradcheck", "--only", "relu", "--only", "content_cost", "--no-torch"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("scratchnst: interrupted (Ctrl-C) while checking content_cost (row 2 of 2); "
                                    "no table was printed")

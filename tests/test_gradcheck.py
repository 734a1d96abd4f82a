"""The checker itself: it passes the real layers, and it catches deliberately wrong backward passes."""

import subprocess
import sys

import numpy as np
import pytest

from scratchnst import gradcheck, layers, torch_ref
from scratchnst.gradcheck import Case, check_case, eval_numerical_gradient_array, rel_error, run_gradcheck


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


def test_every_default_case_passes(torch):
    for case in gradcheck.default_cases(seed=3):
        numeric_error, torch_error = check_case(case, use_torch=True, seed=3)
        assert numeric_error < gradcheck.NUMERIC_TOL, (case.layer, case.config, numeric_error)
        assert torch_error < gradcheck.TORCH_TOL, (case.layer, case.config, torch_error)


def test_command_prints_a_full_table(torch):
    result = subprocess.run([sys.executable, "-m", "scratchnst", "gradcheck"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "configuration", "vs", "numeric", "vs", "PyTorch", "result"]
    rows = [line for line in lines if line.endswith("PASS") or line.endswith("FAIL")]
    assert len(rows) == len(gradcheck.default_cases())
    assert all(row.endswith("PASS") for row in rows)
    assert "not installed" not in result.stdout
    for layer in ("conv2d", "relu", "max_pool", "avg_pool", "concat"):
        assert any(row.startswith(layer) for row in rows)


def test_without_torch_the_columns_say_so(monkeypatch, capsys):
    monkeypatch.setattr(torch_ref, "available", lambda: False)
    cases = gradcheck.default_cases()[:2]
    assert run_gradcheck(cases=cases) == 0
    out = capsys.readouterr().out
    assert out.count("not installed") == 2


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

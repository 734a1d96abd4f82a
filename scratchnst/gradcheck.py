"""Gradient checking: centred finite differences, `rel_error`, and the `scratchnst gradcheck` table.

A backward pass is right when it agrees with two independent witnesses:

1. the definition of the derivative, by centred differences in float64:
       dJ/dx[i] ~ (J(x + h e_i) - J(x - h e_i)) / (2h),   with J(x) = sum(f(x) * dout)
   ("pushing" a fixed upstream gradient dout through f turns any layer into a scalar cost);
2. PyTorch autograd on the same inputs and the same `dout`.
"""

import numpy as np

from scratchnst import fast_conv, layers, torch_ref

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
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


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


# ----------------------------------------------------------------------- the checks table
class Case:
    """One layer configuration to check.

    Args:
        layer: name shown in the table ("conv2d", "relu", ...).
        config: configuration shown in the table ("3x3 s2 same", ...).
        inputs: dict name -> float64 array; the differentiable inputs, in backward's order.
        forward: function(**inputs) -> (out, cache), our layer.
        backward: function(dout, cache) -> tuple of gradients in the order of `inputs`.
        torch_forward: function(**torch tensors) -> torch tensor, PyTorch's layer.
        h: finite-difference step.
    """

    def __init__(self, layer, config, inputs, forward, backward, torch_forward, h=1e-5):
        self.layer, self.config, self.h = layer, config, h
        self.inputs, self.forward, self.backward, self.torch_forward = inputs, forward, backward, torch_forward


def _conv_case(rng, shape, kernel, c_out, stride, padding, module=layers):
    """A convolution's case; module: `layers` (the readable one) or `fast_conv` (the one networks run)."""
    N, H, W, C_in = shape
    inputs = {
        "x": rng.standard_normal(shape),
        "w": rng.standard_normal((kernel, kernel, C_in, c_out)),
        "b": rng.standard_normal(c_out),
    }
    return Case(
        "conv2d" if module is layers else "conv2d (fast)",
        f"{kernel}x{kernel} s{stride} {padding} {H}x{W}x{C_in}->{c_out} N={N}",
        inputs,
        lambda x, w, b: module.conv2d_forward(x, w, b, stride, padding),
        module.conv2d_backward,
        lambda x, w, b: torch_ref.conv2d(x, w, b, stride, padding),
        # Convolution is linear in each of x, w and b, so centred differences have no truncation
        # error at any step; a larger step shrinks the round-off, which otherwise dominates for
        # gradient elements that are small sums of large terms (border pixels of a 7x7 kernel).
        h=1e-3,
    )


def _pool_case(kind, rng, shape, size, stride, padding):
    fwd, bwd, ref = {
        "max": (layers.max_pool_forward, layers.max_pool_backward, torch_ref.max_pool),
        "avg": (layers.avg_pool_forward, layers.avg_pool_backward, torch_ref.avg_pool),
    }[kind]
    N, H, W, C = shape
    return Case(
        f"{kind}_pool",
        f"{size}x{size} s{stride} {padding} {H}x{W}x{C} N={N}",
        {"x": rng.standard_normal(shape)},
        lambda x: fwd(x, size, stride, padding),
        lambda dout, cache: (bwd(dout, cache),),
        lambda x: ref(x, size, stride, padding),
    )


def default_cases(seed=0):
    """The configurations `scratchnst gradcheck` checks: every layer as the networks use it, and more."""
    rng = np.random.default_rng(seed)
    cases = [
        _conv_case(rng, (2, 7, 9, 3), 3, 4, 1, "same"),  # VGG-19's convolutions, odd sizes
        _conv_case(rng, (1, 7, 9, 3), 3, 4, 2, "valid"),  # SqueezeNet's conv1
        _conv_case(rng, (1, 8, 6, 3), 3, 4, 2, "same"),  # odd total padding: one more bottom/right
        _conv_case(rng, (3, 5, 7, 4), 1, 3, 1, "same"),  # fire modules' squeeze and expand1x1
        _conv_case(rng, (1, 9, 7, 2), 5, 3, 1, "same"),
        _conv_case(rng, (1, 9, 11, 2), 7, 2, 2, 3),  # int padding, as PyTorch's padding=3
    ]
    cases += [
        _conv_case(rng, (2, 7, 9, 3), 3, 4, 1, "same", fast_conv),
        _conv_case(rng, (1, 7, 9, 3), 3, 4, 2, "valid", fast_conv),
        _conv_case(rng, (3, 5, 7, 4), 1, 3, 1, "same", fast_conv),  # 1x1: a plain product
        _conv_case(rng, (1, 9, 11, 2), 7, 2, 2, 3, fast_conv),
        _conv_case(rng, (1, 6, 7, 12), 3, 10, 1, "same", fast_conv),  # many channels: the flipped-kernel dx
        _conv_case(rng, (1, 6, 7, 12), 3, 10, 1, 1, fast_conv),
    ]
    x_relu = rng.standard_normal((2, 5, 7, 3))
    x_relu[np.abs(x_relu) < 1e-3] = 0.5  # keep away from the kink, where differences are wrong
    cases.append(Case(
        "relu", "5x7x3 N=2", {"x": x_relu}, layers.relu_forward,
        lambda dout, cache: (layers.relu_backward(dout, cache),), torch_ref.relu,
    ))
    for kind in ("max", "avg"):
        cases += [
            _pool_case(kind, rng, (2, 7, 9, 3), 2, 2, "valid"),  # VGG-19's pools, odd sizes floor
            _pool_case(kind, rng, (1, 9, 11, 3), 3, 2, "valid"),  # SqueezeNet's overlapping pools
            _pool_case(kind, rng, (1, 8, 7, 2), 3, 2, "same"),
        ]
    a, b = rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((2, 4, 5, 6))
    cases.append(Case(
        "concat", "4x5x(3+6) N=2", {"a": a, "b": b},
        lambda a, b: layers.concat_forward([a, b]),
        lambda dout, cache: tuple(layers.concat_backward(dout, cache)),
        lambda a, b: torch_ref.concat([a, b]),
    ))
    return cases


def check_case(case, use_torch=True, seed=0):
    """Check one case; returns (numeric_error, torch_error or None).

    numeric_error: max over inputs of rel_error(analytic, centred differences).
    torch_error: max over the output and every gradient of rel_error(ours, PyTorch's).
    """
    out, cache = case.forward(**case.inputs)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    grads = case.backward(dout, cache)
    numeric_error = 0.0
    for (name, value), grad in zip(case.inputs.items(), grads):
        def f(v, name=name):
            return case.forward(**{**case.inputs, name: v})[0]

        numeric = eval_numerical_gradient_array(f, value, dout, h=case.h)
        numeric_error = max(numeric_error, rel_error(grad, numeric))
    if not use_torch:
        return numeric_error, None
    tensors = {name: torch_ref.to_torch(v, requires_grad=True) for name, v in case.inputs.items()}
    out_t = case.torch_forward(**tensors)
    # the "fake loss" sum(out * dout): its gradient is exactly dout pushed backward through the layer
    (out_t * torch_ref.to_torch(dout)).sum().backward()
    torch_error = rel_error(out, torch_ref.to_numpy(out_t))
    for t, grad in zip(tensors.values(), grads):
        torch_error = max(torch_error, rel_error(grad, torch_ref.to_numpy(t.grad)))
    return numeric_error, torch_error


def run_gradcheck(seed=0, use_torch=True, cases=None, stream=None):
    """Check every case, print the table, return the exit status (0 if all pass, 1 otherwise)."""
    import sys

    stream = stream or sys.stdout
    have_torch = use_torch and torch_ref.available()
    torch_note = "not installed" if use_torch else "skipped"
    rows, failed = [], 0
    for case in cases if cases is not None else default_cases(seed):
        numeric_error, torch_error = check_case(case, use_torch=have_torch, seed=seed)
        ok = numeric_error < NUMERIC_TOL and (torch_error is None or torch_error < TORCH_TOL)
        failed += not ok
        rows.append((case.layer, case.config, f"{numeric_error:.1e}",
                     torch_note if torch_error is None else f"{torch_error:.1e}", "PASS" if ok else "FAIL"))
    header = ("layer", "configuration", "vs numeric", "vs PyTorch", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w_ for w_ in widths)
    print(line.format(*header).rstrip(), file=stream)
    print("  ".join("-" * w_ for w_ in widths), file=stream)
    for r in rows:
        print(line.format(*r).rstrip(), file=stream)
    print(f"\nmax relative error allowed: {NUMERIC_TOL:.0e} against finite differences (float64), "
          f"{TORCH_TOL:.0e} against PyTorch (float64)", file=stream)
    print(f"{len(rows) - failed} passed, {failed} failed", file=stream)
    return 1 if failed else 0

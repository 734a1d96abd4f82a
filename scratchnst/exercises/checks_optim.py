"""The checks of the optimiser exercise (optim.py): one Adam step, adam_update.

As in exercise_checks_layers: the checks come from a function (ref, rng, use_torch) -> list of
Case; the expected values from the reference; the classic mistakes from `_adam`, an Adam step of
our own with a switch per mistake.
"""

import numpy as np

from scratchnst.exercises.cases import FLOAT32_TOL, Case, Mistake, as_float32, randn


def _adam(x, dx, m, v, t, lr=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8, *, bias=True, eps_inside=False,
          square=True, sign=-1):
    """One Adam step, computed independently of the reference so that mistakes can be modelled.

    Returns (x_new, m_new, v_new, m_hat, v_hat).
    """
    m = beta1 * m + (1 - beta1) * dx
    v = beta2 * v + (1 - beta2) * (dx * dx if square else dx)
    m_hat, v_hat = (m / (1 - beta1**t), v / (1 - beta2**t)) if bias else (m, v)
    with np.errstate(all="ignore"):
        step = m_hat / (np.sqrt(v_hat + epsilon) if eps_inside else np.sqrt(v_hat) + epsilon)
    return x + sign * lr * step, m, v, m_hat, v_hat


def adam_update_cases(ref, rng, use_torch):
    O, parts = ref.optim, ("x_new", "m_new", "v_new")
    x, dx = randn(rng, 40), randn(rng, 40)
    common = [
        ("no bias correction", "divide m by (1 - beta1**t) and v by (1 - beta2**t) before the step",
         {"bias": False}, 0),
        ("stepped uphill", "Adam steps against the gradient: x - lr * m_hat / (sqrt(v_hat) + epsilon)",
         {"sign": 1}, 0),
        ("epsilon inside the square root", "the step divides by sqrt(v_hat) + epsilon", {"eps_inside": True}, 0),
        ("v from dx instead of dx**2", "v averages the squared gradients", {"square": False}, 2),
    ]

    def mistakes(args, kwargs):
        found = [Mistake(name, why, _adam(*args, **kwargs, **how)[part], part=part) for name, why, how, part in common]
        _, _, _, m_hat, v_hat = _adam(*args, **kwargs)
        found += [Mistake("m_hat returned as m", "return the running average m itself; the bias-corrected "
                          "m_hat is only for this step", m_hat, part=1),
                  Mistake("v_hat returned as v", "return the running average v itself; the bias-corrected "
                          "v_hat is only for this step", v_hat, part=2)]
        return found

    args = (x, dx, np.zeros(40), np.zeros(40), 1)  # two arrays: the same one twice would alias m and v
    cases = [Case("first step: t = 1 from m = v = 0, default hyperparameters", args, O.adam_update(*args),
                  parts=parts, mistakes=mistakes(args, {}))]
    m, v = 0.1 * randn(rng, 40), 0.1 * np.abs(randn(rng, 40))
    args, kwargs = (x, dx, m, v, 7), {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "epsilon": 1e-4}
    cases.append(Case("step t = 7 from running averages; lr=0.05, beta1=0.8, beta2=0.95, epsilon=1e-4", args,
                      O.adam_update(*args, **kwargs), kwargs=kwargs, parts=parts, mistakes=mistakes(args, kwargs) + [
                          Mistake("hyperparameters ignored", "use the arguments lr, beta1, beta2 and epsilon, "
                                  "not the defaults", _adam(*args)[0])]))
    args = as_float32(x, dx, m, v) + (7,)
    cases.append(Case("float32 in, float32 out", args, O.adam_update(*args), parts=parts, tol=FLOAT32_TOL,
                      normwise=True, dtype=np.float32, mistakes=mistakes(args, {})))
    return cases

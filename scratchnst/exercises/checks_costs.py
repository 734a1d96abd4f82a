"""The checks of the cost exercises (costs.py): content cost, Gram matrix and its gradient, layer style
cost (the course's and the optimisation loop's fast one, from a precomputed style target), total cost,
total variation cost.

As in exercise_checks_layers: each exercise's checks come from a function (ref, rng, use_torch)
-> list of Case; expected values from the reference (and finite differences of it); the classic
mistakes modelled by code of their own here, or from the right value (a missing factor, a sign).
"""

import numpy as np

from scratchnst.exercises.cases import (COST_SUM_TOL, FLOAT32_TOL, Case, Mistake, Pick, as_float32, at_scale,
                                       numeric_gradient, randn)

_QUARTER = "the 1/4 missing"
_FLOAT32_SUM = "only float32-accurate: cast to float64 before subtracting and summing (costs are summed in float64)"


def _content_cost_mistakes(a_C, a_G, J):
    """The classic mistakes of compute_content_cost, for these inputs (J: the right value)."""
    _, nH, nW, nC = a_G.shape
    factor = 4 * nH * nW * nC
    return [
        Mistake("factor 1/(4 nH nW nC) missing", "J_content = 1 / (4 * nH * nW * nC) * sum((a_C - a_G) ** 2)",
                J * factor),
        Mistake(_QUARTER, "J_content = 1 / (4 nH nW nC) * sum(...): the course's factor has a 4", J * 4),
        Mistake("1/(2 nH nW nC) instead of 1/(4 nH nW nC)", "the course's factor is 1/4, not 1/2", J * 2),
        Mistake("a(C) - a(C)", "always 0: the course notes' typo a[l](C) - a[l](C); the difference is "
                "a[l](C) - a[l](G)", 0.0),
        Mistake("not squared", "the sum of |a_C - a_G|; the cost sums the squares",
                np.sum(np.abs(a_C.astype(np.float64) - a_G)) / factor),
    ]


def content_cost_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for shape in ((1, 4, 5, 3), (1, 3, 7, 8)):
        a_C, a_G = randn(rng, *shape), randn(rng, *shape)
        J = C.compute_content_cost(a_C, a_G)
        cases.append(Case(f"a_C, a_G of shape {shape}", (a_C, a_G), J, mistakes=_content_cost_mistakes(a_C, a_G, J)))
    a_C, a_G = as_float32(randn(rng, 1, 24, 24, 64), randn(rng, 1, 24, 24, 64))
    J = C.compute_content_cost(a_C, a_G)
    cases.append(Case("float32 activations 1x24x24x64: summed in float64", (a_C, a_G), J, tol=COST_SUM_TOL,
                      dtype=np.float64, mistakes=_content_cost_mistakes(a_C, a_G, J) + [
                          Mistake("summed in float32", _FLOAT32_SUM, J, tol=1e-5)]))
    return cases


def _content_cost_backward_mistakes(da):
    """The classic mistakes of content_cost_backward, from the right gradient da (1, nH, nW, nC)."""
    _, nH, nW, nC = da.shape
    return [
        Mistake("sign flipped", "the gradient with respect to a_G is (a_G - a_C) / (2 nH nW nC), not "
                "(a_C - a_G) / ...", -da),
        Mistake("the 2 of the square forgotten", "differentiating (a_C - a_G) ** 2 brings a factor 2: "
                "1/(4 nH nW nC) becomes 1/(2 nH nW nC)", da / 2),
        Mistake("factor 1/(2 nH nW nC) missing", "dJ/da_G = (a_G - a_C) / (2 * nH * nW * nC)", da * 2 * nH * nW * nC),
    ]


def content_cost_backward_cases(ref, rng, use_torch):
    C = ref.costs
    a_C, a_G = randn(rng, 1, 4, 5, 3), randn(rng, 1, 4, 5, 3)
    da = C.content_cost_backward(a_C, a_G)
    cases = [Case("a_C, a_G of shape (1, 4, 5, 3)", (a_C, a_G), da, mistakes=_content_cost_backward_mistakes(da))]
    a_C, a_G = randn(rng, 1, 3, 4, 2), randn(rng, 1, 3, 4, 2)
    # the cost is quadratic: centred differences are exact, a larger step has less round-off
    numeric = numeric_gradient(ref, lambda v: C.compute_content_cost(a_C, v), a_G, 1.0, h=1e-3)
    cases.append(Case("against finite differences of compute_content_cost", (a_C, a_G), numeric,
                      tol=ref.gradcheck.NUMERIC_TOL, normwise=True, mistakes=_content_cost_backward_mistakes(numeric)))
    a_C, a_G = as_float32(randn(rng, 1, 4, 5, 3), randn(rng, 1, 4, 5, 3))
    da = C.content_cost_backward(a_C, a_G)
    cases.append(Case("float32 in, float32 out", (a_C, a_G), da, tol=FLOAT32_TOL, normwise=True, dtype=np.float32,
                      mistakes=_content_cost_backward_mistakes(da)))
    a_C, a_G = randn(rng, 1, 64, 64, 32), randn(rng, 1, 64, 64, 32)
    cases.append(at_scale("a_C, a_G of shape (1, 64, 64, 32)", (a_C, a_G), C.content_cost_backward(a_C, a_G)))
    return cases


def gram_matrix_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for nC, M in ((3, 20), (6, 12)):
        A = randn(rng, nC, M)
        G = C.gram_matrix(A)
        cases.append(Case(f"A of shape ({nC}, {M}) = (nC, nH*nW)", (A,), G, mistakes=[
            Mistake("A.T @ A", "that is (nH*nW, nH*nW); the Gram matrix is G = A @ A.T, (nC, nC)", A.T @ A),
            Mistake("Gram divided by nH*nW", "gram_matrix is the plain A @ A.T; the style cost does the "
                    "normalising", G / M),
        ]))
    (A,) = as_float32(randn(rng, 5, 30))
    cases.append(Case("float32 in, float32 out", (A,), C.gram_matrix(A), tol=FLOAT32_TOL, normwise=True,
                      dtype=np.float32))
    return cases


def _gram_backward_mistakes(A, dG):
    """The classic mistakes of gram_matrix_backward, for these inputs."""
    return [
        Mistake("only one appearance of A", "each entry of A sits in a row and in a column of G: "
                "dJ/dA = (dG + dG^T) @ A, not dG @ A", dG @ A),
        Mistake("dG assumed symmetric", "2 dG @ A holds only when dG is symmetric; in general "
                "dJ/dA = (dG + dG^T) @ A", 2 * dG @ A),
    ]


def gram_matrix_backward_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for nC, M in ((3, 20), (5, 7)):
        A, dG = randn(rng, nC, M), randn(rng, nC, nC)  # dG not symmetric: both appearances of A count
        dA = C.gram_matrix_backward(A, dG)
        cases.append(Case(f"A of shape ({nC}, {M}), dG (not symmetric) ({nC}, {nC})", (A, dG), dA,
                          mistakes=_gram_backward_mistakes(A, dG)))
    A, dG = randn(rng, 4, 6), randn(rng, 4, 4)
    numeric = numeric_gradient(ref, lambda v: C.gram_matrix(v), A, dG, h=1e-3)  # quadratic: exact differences
    cases.append(Case("against finite differences of gram_matrix", (A, dG), numeric, tol=ref.gradcheck.NUMERIC_TOL,
                      normwise=True, mistakes=_gram_backward_mistakes(A, dG)))
    A, dG = as_float32(randn(rng, 5, 30), randn(rng, 5, 5))
    cases.append(Case("float32 in, float32 out", (A, dG), C.gram_matrix_backward(A, dG), tol=FLOAT32_TOL,
                      normwise=True, dtype=np.float32))
    A, dG = randn(rng, 64, 2048), randn(rng, 64, 64)
    cases.append(at_scale("A of shape (64, 2048), dG (64, 64)", (A, dG), C.gram_matrix_backward(A, dG)))
    return cases


def _unroll_wrong(a):
    """The slip costs.unroll warns about: a.reshape(nC, nH*nW) straight away."""
    return a.reshape(a.shape[3], -1)  # mixes channels and positions: the channels vary fastest in memory


def _style_cost(a_S, a_G, unroll, M_S=None, M_G=None):
    """The layer style cost computed independently of the reference answer, so mistakes can be modelled.

    unroll: costs.unroll (the course's), or `_unroll_wrong`.
    """
    A_S, A_G = unroll(a_S), unroll(a_G)
    M_S, M_G = M_S or A_S.shape[1], M_G or A_G.shape[1]
    return float(np.sum((A_S @ A_S.T / M_S - A_G @ A_G.T / M_G) ** 2) / (4 * a_G.shape[3] ** 2))


def _style_gradient(a_S, a_G, unroll, roll, with_features=None, M_S=None, M_G=None):
    """dJ/da_G of `_style_cost`: (G_G/M_G - G_S/M_S) @ A_G / (nC**2 M_G), rolled back by `roll`."""
    A_S, A_G = unroll(a_S), unroll(a_G)
    M_S, M_G = M_S or A_S.shape[1], M_G or A_G.shape[1]
    D = A_G @ A_G.T / M_G - A_S @ A_S.T / M_S
    features = A_G if with_features is None else with_features(A_S, A_G)
    return roll(D @ features / (a_G.shape[3] ** 2 * M_G), a_G.shape)


def _roll_right(dA, shape):
    """The inverse of costs.unroll: (nC, nH*nW) -> (nH*nW, nC) -> shape (1, nH, nW, nC)."""
    return dA.T.reshape(shape)


def _roll_wrong(dA, shape):
    """The inverse of `_unroll_wrong`, or a roll that forgets the transpose."""
    return dA.reshape(shape)


_STYLE_SHAPES = (  # label, a_S shape, a_G shape
    ("a_S, a_G of shape (1, 4, 5, 3): the course's formula", (1, 4, 5, 3), (1, 4, 5, 3)),
    ("a_S (1, 6, 7, 3) larger than a_G (1, 4, 5, 3): each Gram over its own nH*nW", (1, 6, 7, 3), (1, 4, 5, 3)),
)
_OWN_M = "each Gram is divided by its own number of positions: G_S by M_S = nH_S nW_S, G_G by M_G = nH nW"
_WRONG_UNROLL = ("the activations were unrolled with a.reshape(nC, nH*nW) directly, which mixes channels and "
                 "positions (channels vary fastest in memory): reshape to (nH*nW, nC), then transpose (or use unroll)")


def _layer_style_cost_mistakes(C, a_S, a_G, J):
    """The classic mistakes of compute_layer_style_cost, for these inputs (C: ref.costs, J: the right value)."""
    a_S, a_G = a_S.astype(np.float64), a_G.astype(np.float64)
    nC, M_S, M_G = a_G.shape[3], a_S.shape[1] * a_S.shape[2], a_G.shape[1] * a_G.shape[2]
    mistakes = [Mistake("Gram of the wrong unrolling", _WRONG_UNROLL, _style_cost(a_S, a_G, _unroll_wrong)),
                Mistake(_QUARTER, "J_style_layer = 1 / (4 nC**2 (nH nW)**2) * sum((G_S - G_G) ** 2): the course's "
                        "factor has a 4", J * 4)]
    if M_S == M_G:
        mistakes += [
            Mistake("normalisation missing", "J = 1 / (4 nC**2 (nH nW)**2) * sum((G_S - G_G) ** 2)",
                    J * 4 * nC**2 * M_G**2),
            Mistake("(nH nW) not squared", "the factor is 1 / (4 nC**2 (nH nW)**2)", J * M_G),
        ]
    else:
        mistakes += [Mistake(f"one nH*nW for both Grams ({who}'s)", _OWN_M, _style_cost(a_S, a_G, C.unroll, M, M))
                     for who, M in (("a_G", M_G), ("a_S", M_S))]
    return mistakes


def layer_style_cost_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for label, shape_S, shape_G in _STYLE_SHAPES:
        a_S, a_G = randn(rng, *shape_S), randn(rng, *shape_G)
        J = C.compute_layer_style_cost(a_S, a_G)
        cases.append(Case(label, (a_S, a_G), J, mistakes=_layer_style_cost_mistakes(C, a_S, a_G, J)))
    a_S, a_G = as_float32(randn(rng, 1, 16, 16, 32), randn(rng, 1, 16, 16, 32))
    J = C.compute_layer_style_cost(a_S, a_G)
    cases.append(Case("float32 activations 1x16x16x32: summed in float64", (a_S, a_G), J, tol=COST_SUM_TOL,
                      dtype=np.float64, mistakes=_layer_style_cost_mistakes(C, a_S, a_G, J) + [
                          Mistake("summed in float32", _FLOAT32_SUM, J, tol=1e-5)]))
    return cases


def _layer_style_cost_backward_mistakes(C, a_S, a_G, da):
    """The classic mistakes of layer_style_cost_backward, for these inputs (C: ref.costs, da: the right gradient)."""
    a_S, a_G = a_S.astype(np.float64), a_G.astype(np.float64)
    M_S, M_G = a_S.shape[1] * a_S.shape[2], a_G.shape[1] * a_G.shape[2]
    mistakes = [
        Mistake("Gram of the wrong unrolling", _WRONG_UNROLL, _style_gradient(a_S, a_G, _unroll_wrong, _roll_wrong)),
        Mistake("rolled back without the transpose", "dJ/dA_G is (nC, nH*nW): transpose it to (nH*nW, nC) before "
                "reshaping to a_G's shape", _style_gradient(a_S, a_G, C.unroll, _roll_wrong)),
        Mistake("sign flipped", "the gradient is (G_G - G_S) @ A_G ..., not (G_S - G_G) @ A_G ...", -da),
        Mistake("half the gradient", "G_G = A_G A_G^T depends on A_G twice: dJ/dA_G = 2 (dJ/dG_G) A_G, so the "
                "factor is 1/(nC**2 (nH nW)**2), not 1/(2 ...)", da / 2),
    ]
    if M_S == M_G:
        mistakes.insert(0, Mistake(
            "gradient with a_S instead of a_G", "the gradient was computed with the style image's features a_S; "
            "it is (G_G - G_S) @ A_G / (nC**2 (nH nW)**2): G_S is a constant, and the cost depends on a_G through "
            "G_G = A_G A_G^T, which brings the generated image's A_G",
            _style_gradient(a_S, a_G, C.unroll, _roll_right, with_features=lambda A_S, A_G: A_S)))
    else:
        mistakes += [Mistake(f"one nH*nW for both Grams ({who}'s)", _OWN_M,
                             _style_gradient(a_S, a_G, C.unroll, _roll_right, M_S=M, M_G=M))
                     for who, M in (("a_G", M_G), ("a_S", M_S))]
    return mistakes


def layer_style_cost_backward_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for label, shape_S, shape_G in _STYLE_SHAPES:
        a_S, a_G = randn(rng, *shape_S), randn(rng, *shape_G)
        da = C.layer_style_cost_backward(a_S, a_G)
        cases.append(Case(label, (a_S, a_G), da, mistakes=_layer_style_cost_backward_mistakes(C, a_S, a_G, da)))
    a_S, a_G = randn(rng, 1, 4, 4, 3), randn(rng, 1, 4, 4, 3)
    numeric = numeric_gradient(ref, lambda v: C.compute_layer_style_cost(a_S, v), a_G, 1.0)
    cases.append(Case("against finite differences of compute_layer_style_cost", (a_S, a_G), numeric,
                      tol=ref.gradcheck.NUMERIC_TOL, normwise=True,
                      mistakes=_layer_style_cost_backward_mistakes(C, a_S, a_G, numeric)))
    a_S, a_G = as_float32(randn(rng, 1, 4, 5, 3), randn(rng, 1, 4, 5, 3))
    da = C.layer_style_cost_backward(a_S, a_G)
    cases.append(Case("float32 in, float32 out", (a_S, a_G), da, tol=FLOAT32_TOL, normwise=True, dtype=np.float32,
                      mistakes=_layer_style_cost_backward_mistakes(C, a_S, a_G, da)))
    a_S, a_G = randn(rng, 1, 48, 48, 32), randn(rng, 1, 48, 48, 32)
    cases.append(at_scale("a_S, a_G of shape (1, 48, 48, 32)", (a_S, a_G), C.layer_style_cost_backward(a_S, a_G)))
    return cases


# ------------------------------------------- the layer style cost, fast, for the optimisation loop
def _style_target(a_S, unroll):
    """style_target computed independently of the reference answer: G_S / M_S (unroll: as in `_style_cost`)."""
    A_S = unroll(a_S)
    return A_S @ A_S.T / A_S.shape[1]


def _style_target_mistakes(a_S, target):
    """The classic mistakes of style_target, for this input (target: the right value)."""
    a_S = a_S.astype(np.float64)
    M_S = a_S.shape[1] * a_S.shape[2]
    return [
        Mistake("Gram of the wrong unrolling", _WRONG_UNROLL, _style_target(a_S, _unroll_wrong)),
        Mistake("Gram not divided by nH*nW", "the target is the style image's Gram per position: "
                "G_S / M_S with M_S = nH_S nW_S", target * M_S),
        Mistake("Gram divided by (nH*nW)**2", "the target is divided by M_S = nH_S nW_S once: the course's "
                "1/(nH nW)**2 is that division, squared along with the Grams' difference", target / M_S),
    ]


def style_target_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for shape in ((1, 4, 5, 3), (1, 6, 7, 3)):
        a_S = randn(rng, *shape)
        target = C.style_target(a_S)
        cases.append(Case(f"a_S of shape {shape}", (a_S,), target, mistakes=_style_target_mistakes(a_S, target)))
    (a_S,) = as_float32(randn(rng, 1, 16, 16, 32))
    target = C.style_target(a_S)
    # No dtype= here: a float32 target fails the tolerance anyway, and the dtype check's advice ("keep the
    # dtype you are given") would mislead (the exercise's HINT says the target is float64). Relative to
    # the largest value: some entries are near 0.
    cases.append(Case("float32 activations 1x16x16x32: the target is float64", (a_S,), target, tol=COST_SUM_TOL,
                      normwise=True, mistakes=_style_target_mistakes(a_S, target)))
    return cases


def _cost_from_target(target, a_G, unroll, roll, per_position=True):
    """(J, dJ/da_G) of layer_style_cost_from_target, computed independently of the reference answer.

    unroll, roll: costs.unroll and `_roll_right`, or the slips `_unroll_wrong` and `_roll_wrong`.
    per_position: False models a Gram of a_G compared with the target without dividing by its M.
    """
    A_G = unroll(a_G)
    nC, M = a_G.shape[3], A_G.shape[1]
    scale = M if per_position else 1
    D = A_G @ A_G.T / scale - target
    return float(np.sum(D * D) / (4 * nC**2)), roll(D @ A_G / (nC**2 * scale), a_G.shape)


def _from_target_mistakes(C, target, a_G, J, da, J_part=0, da_part=1):
    """The classic mistakes of layer_style_cost_from_target, for these inputs (J, da: the right values).

    J_part, da_part: where J and dJ/da_G are in the compared result (None: not compared).
    The style image's features never reach this function (only its Gram, in target): the mistake of
    compute_layer_style_cost's gradient, a_S's features in place of a_G's, cannot be made here.
    """
    a_G = a_G.astype(np.float64)
    nC, M = a_G.shape[3], a_G.shape[1] * a_G.shape[2]
    pairs = [  # name, why, (J, da) the mistake computes
        ("Gram of the wrong unrolling", _WRONG_UNROLL, _cost_from_target(target, a_G, _unroll_wrong, _roll_wrong)),
        ("Gram of a_G not divided by nH*nW", "target is a Gram per position (G_S / M_S): compare it with a_G's "
         "Gram per position, G_G / M with M = nH nW", _cost_from_target(target, a_G, C.unroll, _roll_right, False)),
    ]
    mistakes = []
    for name, why, (J_wrong, da_wrong) in pairs:
        if J_part is not None:
            mistakes.append(Mistake(name, why, J_wrong, part=J_part))
        if da_part is not None:
            mistakes.append(Mistake(name, why, da_wrong, part=da_part))
    if J_part is not None:
        mistakes += [Mistake("factor 1/(4 nC**2) missing", "J = 1 / (4 nC**2) * sum((G_G / M - target) ** 2)",
                             J * 4 * nC**2, part=J_part),
                     Mistake(_QUARTER, "J = 1 / (4 nC**2) * sum((G_G / M - target) ** 2): the factor has a 4",
                             J * 4, part=J_part)]
    if da_part is not None:
        mistakes += [
            Mistake("rolled back without the transpose", "dJ/dA_G is (nC, nH*nW): transpose it to (nH*nW, nC) "
                    "before reshaping to a_G's shape", _cost_from_target(target, a_G, C.unroll, _roll_wrong)[1],
                    part=da_part),
            Mistake("sign flipped", "the gradient is (G_G / M - target) @ A_G ..., not (target - G_G / M) @ A_G ...",
                    -da, part=da_part),
            Mistake("half the gradient", "G_G = A_G A_G^T depends on A_G twice: dJ/dA_G = 2 (dJ/dG_G) A_G, so the "
                    "factor is 1/(nC**2 nH nW), not 1/(2 ...)", da / 2, part=da_part),
            Mistake("1/(nH nW) missing from the gradient", "a_G's Gram is divided by M = nH nW in the cost, so its "
                    "gradient is too: dJ/dA_G = (G_G / M - target) @ A_G / (nC**2 M)", da * M, part=da_part),
        ]
    return mistakes


# What is compared of layer_style_cost_from_target's (J, dJ/da_G)
_gradient = Pick(((1,),), ("a tuple (J, dJ/da_G)",))
_cost = Pick(((0,),), ("a tuple (J, dJ/da_G)",))


def layer_style_cost_from_target_cases(ref, rng, use_torch):
    C, parts = ref.costs, ("J", "dJ/da_G")
    cases = []
    for label, shape_S, shape_G in _STYLE_SHAPES:
        a_S, a_G = randn(rng, *shape_S), randn(rng, *shape_G)
        target = C.style_target(a_S)
        J, da = C.layer_style_cost_from_target(target, a_G)
        cases.append(Case(f"target = style_target(a_S), {label}", (target, a_G), (J, da), parts=parts,
                          mistakes=_from_target_mistakes(C, target, a_G, J, da)))
    a_S, a_G = randn(rng, 1, 5, 3, 3), randn(rng, 1, 4, 4, 3)
    target = C.style_target(a_S)
    numeric = numeric_gradient(ref, lambda v: C.compute_layer_style_cost(a_S, v), a_G, 1.0)
    cases.append(Case("dJ/da_G against finite differences of compute_layer_style_cost (a_S 1x5x3x3, a_G 1x4x4x3)",
                      (target, a_G), numeric, pick=_gradient, tol=ref.gradcheck.NUMERIC_TOL, normwise=True,
                      mistakes=_from_target_mistakes(C, target, a_G, None, numeric, J_part=None, da_part=0)))
    a_S, a_G = as_float32(randn(rng, 1, 5, 6, 3), randn(rng, 1, 4, 5, 3))
    target = C.style_target(a_S)  # float64, as the loop makes it
    J, da = C.layer_style_cost_from_target(target, a_G)
    cases.append(Case("float32 a_G: dJ/da_G float32 in, float32 out", (target, a_G), da, pick=_gradient,
                      tol=FLOAT32_TOL, normwise=True, dtype=np.float32,
                      mistakes=_from_target_mistakes(C, target, a_G, None, da, J_part=None, da_part=0)))
    a_S, a_G = as_float32(randn(rng, 1, 16, 16, 32), randn(rng, 1, 16, 16, 32))
    target = C.style_target(a_S)
    J, da = C.layer_style_cost_from_target(target, a_G)
    # The loop's version multiplies float32 activations in float32 (as the network that made them),
    # so J is as accurate as float32 products allow, not float64's: products in float64 pass too.
    cases.append(Case("float32 a_G 1x16x16x32: J a float64 number, to float32's accuracy", (target, a_G), J,
                      pick=_cost, tol=FLOAT32_TOL, dtype=np.float64,
                      mistakes=_from_target_mistakes(C, target, a_G, J, None, da_part=None)))
    # last, so that the inputs above stay what they were (one generator per exercise)
    a_S, a_G = randn(rng, 1, 48, 48, 32), randn(rng, 1, 48, 48, 32)
    target = C.style_target(a_S)
    cases.append(at_scale("dJ/da_G, a_S and a_G of shape (1, 48, 48, 32)", (target, a_G),
                          C.layer_style_cost_from_target(target, a_G)[1], pick=_gradient))
    return cases


def _total_cost_mistakes(J_content, J_style, alpha=10, beta=40):
    """The classic mistakes of total_cost, for these inputs (ignoring the weights is one only where they
    are not the defaults, 10 and 40)."""
    mistakes = [Mistake("alpha and beta swapped", "alpha weighs the content cost and beta the style cost: "
                        "J = alpha J_content + beta J_style", alpha * J_style + beta * J_content)]
    if (alpha, beta) != (10, 40):
        mistakes.append(Mistake("alpha and beta ignored", "use the arguments alpha and beta, not the defaults "
                                "10 and 40", 10 * J_content + 40 * J_style))
    return mistakes


def total_cost_cases(ref, rng, use_torch):
    C = ref.costs
    # Costs (>= 0) and weights drawn from rng first: the course's three fixed calls alone would pass a table
    # of their answers, while a grading run's salt draws inputs no one has seen.
    J_content, J_style = (float(v) for v in rng.uniform(0, 10, 2))
    alpha, beta = (float(v) for v in rng.uniform(0.5, 50, 2))
    drawn = f"{J_content:.4g}, {J_style:.4g}"
    draws = tuple(np.random.RandomState(3).randn(2))  # the course's np.random.seed(3); randn(); randn()
    return [
        Case(f"total_cost({drawn}) (alpha = 10, beta = 40)", (J_content, J_style), C.total_cost(J_content, J_style),
             mistakes=_total_cost_mistakes(J_content, J_style)),
        Case(f"total_cost({drawn}, alpha={alpha:.4g}, beta={beta:.4g})", (J_content, J_style),
             C.total_cost(J_content, J_style, alpha, beta), kwargs={"alpha": alpha, "beta": beta},
             mistakes=_total_cost_mistakes(J_content, J_style, alpha, beta)),
        Case("course check: total_cost(0.2, 0.8) = 34 (alpha = 10, beta = 40)", (0.2, 0.8), C.total_cost(0.2, 0.8),
             mistakes=_total_cost_mistakes(0.2, 0.8)),
        Case("course check: total_cost(0.3, 0.5, alpha=3, beta=8) = 4.9", (0.3, 0.5), C.total_cost(0.3, 0.5, 3, 8),
             kwargs={"alpha": 3, "beta": 8}, mistakes=_total_cost_mistakes(0.3, 0.5, 3, 8)),
        Case("course check: two randn() draws after np.random.seed(3) give 35.34667875478276", draws,
             C.total_cost(*draws)),
    ]


def _tv_parts(x):
    x64 = x.astype(np.float64)
    return x64[:, 1:] - x64[:, :-1], x64[:, :, 1:] - x64[:, :, :-1]  # vertical, horizontal differences


def _total_variation_mistakes(x, J):
    dv, dh = _tv_parts(x)
    return [
        Mistake("not divided by x.size", "J_tv is divided by the number of values, x.size, so that one weight "
                "works at every image size", J * x.size),
        Mistake("one direction only", "J_tv sums the squared differences of vertical AND horizontal neighbours",
                float(np.sum(dv * dv) / x.size)),
        Mistake("absolute values", "J_tv sums squares (as CS231n's), not absolute differences",
                float((np.sum(np.abs(dv)) + np.sum(np.abs(dh))) / x.size)),
    ]


def total_variation_cost_cases(ref, rng, use_torch):
    C = ref.costs
    cases = []
    for shape in ((1, 4, 5, 3), (2, 6, 3, 1)):
        x = randn(rng, *shape)
        J = C.compute_total_variation_cost(x)
        cases.append(Case(f"x of shape {shape}", (x,), J, mistakes=_total_variation_mistakes(x, J)))
    (x,) = as_float32(100 * randn(rng, 1, 32, 32, 3))
    J = C.compute_total_variation_cost(x)
    cases.append(Case("float32 pixels 1x32x32x3: summed in float64", (x,), J, tol=COST_SUM_TOL, dtype=np.float64,
                      mistakes=_total_variation_mistakes(x, J) + [Mistake("summed in float32", _FLOAT32_SUM, J,
                                                                          tol=1e-5)]))
    return cases


def _total_variation_backward_mistakes(x, dx):
    dv, dh = _tv_parts(x)
    one_side = np.zeros_like(dx, dtype=np.float64)
    one_side[:, 1:] += 2 * dv / x.size
    one_side[:, :, 1:] += 2 * dh / x.size
    return [
        Mistake("sign flipped", "dJ/dx points uphill: each difference d = x[p+1] - x[p] adds 2 d / x.size to "
                "x[p+1] and subtracts it from x[p]", -dx),
        Mistake("the 2 of the square forgotten", "differentiating d ** 2 brings a factor 2", dx / 2),
        Mistake("only the later pixel of each difference", "a difference x[p+1] - x[p] depends on both pixels: "
                "x[p] gets minus what x[p+1] gets", one_side),
    ]


def total_variation_cost_backward_cases(ref, rng, use_torch):
    C = ref.costs
    x = randn(rng, 1, 4, 5, 3)
    dx = C.total_variation_cost_backward(x)
    cases = [Case("x of shape (1, 4, 5, 3)", (x,), dx, mistakes=_total_variation_backward_mistakes(x, dx))]
    x = randn(rng, 2, 3, 4, 2)
    numeric = numeric_gradient(ref, lambda v: C.compute_total_variation_cost(v), x, 1.0, h=1e-3)  # quadratic
    cases.append(Case("against finite differences of compute_total_variation_cost", (x,), numeric,
                      tol=ref.gradcheck.NUMERIC_TOL, normwise=True,
                      mistakes=_total_variation_backward_mistakes(x, numeric)))
    (x,) = as_float32(randn(rng, 1, 5, 4, 3))
    cases.append(Case("float32 in, float32 out", (x,), C.total_variation_cost_backward(x), tol=FLOAT32_TOL,
                      normwise=True, dtype=np.float32))
    x = randn(rng, 1, 128, 128, 8)
    cases.append(at_scale("x of shape (1, 128, 128, 8)", (x,), C.total_variation_cost_backward(x)))
    return cases

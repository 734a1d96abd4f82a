"""The costs of neural style transfer, as the deep-learning course defines them, with their gradients.

Every cost comes with a hand-derived backward function that returns dJ/da for the generated
image's activations a_G (or dJ/dx for the image itself, in the total variation cost). The
transfer loop hands those gradients to the network's backward pass, which carries them down to
the pixels.

Shapes follow the course: one image's activations at a layer are a (1, nH, nW, nC) array
(channels last, the course's (m, n_H, n_W, n_C) with m = 1).

Precision: costs are sums over hundreds of thousands of terms whose differences matter near
convergence, so every cost is summed in float64 even when the activations are float32 (the
run path). Gradients come back in the dtype of the activations they belong to, so the float32
network stays float32. No function writes into its inputs.

The course's functions (compute_layer_style_cost, layer_style_cost_backward, ...) are written to
be read and checked; `style_target` and `layer_style_cost_from_target` compute the same layer
style cost and gradient the way the optimisation loop needs them, fast (tests prove them equal).

Course check numbers (the published test values of the course's assignments, TF2 and TF1):
    total_cost(0.2, 0.8) == 34;  total_cost(0.3, 0.5, alpha=3, beta=8) ~ 4.9 (up to rounding)
    np.random.seed(3); total_cost(np.random.randn(), np.random.randn()) == 35.34667875478276
"""

from collections.abc import Mapping

import numpy as np

from scratchnst import arguments

# The course's style layers (TF2 assignment, Keras VGG-19 names), 0.2 each: low layers give the
# colours and fine texture, high layers the larger strokes and motifs.
COURSE_STYLE_LAYERS = (
    ("block1_conv1", 0.2),
    ("block2_conv1", 0.2),
    ("block3_conv1", 0.2),
    ("block4_conv1", 0.2),
    ("block5_conv1", 0.2),
)


def _check_activation(a, name):
    """Raise ValueError unless `a` is one image's activations (1, nH, nW, nC)."""
    if a.ndim != 4 or a.shape[0] != 1:
        raise ValueError(f"{name} must have shape (1, nH, nW, nC), got {a.shape}")
    if 0 in a.shape:   # the costs divide by nH * nW * nC (or nC**2 and nH * nW): 0 / 0
        raise ValueError(f"{name} has no values (shape {a.shape}): nH, nW and nC must be at least 1")


def _check_unrolled(A, function):
    """Raise ValueError unless A is a matrix (nC, nH*nW) of unrolled activations."""
    if A.ndim != 2:
        raise ValueError(f"{function}: A has shape {A.shape}; give unrolled activations (nC, nH*nW): unroll(a)")


def _check_same_shape(a, b, names):
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")


def _check_layer_dicts(function, a_S, a_G, style_layers):
    """TypeError or ValueError, in one line, unless a_S and a_G map every layer of style_layers.

    The course's TF2 code passes lists of a model's outputs instead, and a plain list of names is
    an easy slip for style_layers: either would otherwise fail deep inside, naming no argument.
    """
    for name, given in (("a_S", a_S), ("a_G", a_G)):
        if not isinstance(given, Mapping):
            raise TypeError(f"{function}: {name} is a {type(given).__name__}; give a dict "
                            "{layer name: (1, nH, nW, nC) activations}")
    for item in style_layers:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"{function}: style_layers holds {item!r}; give (layer name, weight) pairs, "
                            "e.g. (('block1_conv1', 0.2), ...)")
    for name, given in (("a_S", a_S), ("a_G", a_G)):
        missing = [layer for layer, _ in style_layers if layer not in given]
        if missing:
            raise ValueError(f"{function}: {name} has no activations of {', '.join(map(repr, missing))} "
                           f"(it has {', '.join(map(repr, given)) or 'none'})")


# ----------------------------------------------------------------------------- content cost
def compute_content_cost(a_C, a_G):
    """Content cost: how far the generated image's activations are from the content image's.

    Args:
        a_C: (1, nH, nW, nC) activations of the content image C at the content layer l.
        a_G: (1, nH, nW, nC) activations of the generated image G at the same layer.

    Returns:
        J_content, a Python float, summed in float64.

    Formula:
        J_content(C, G) = 1 / (4 * nH * nW * nC) * sum((a[l](C) - a[l](G)) ** 2)

    Some printings of the course notes write the term as a[l](C) - a[l](C), which is always 0;
    the intended term is a[l](C) - a[l](G), the difference between the content image's and the
    generated image's activations.
    """
    arguments.check_floats("compute_content_cost", a_C=a_C, a_G=a_G)
    _check_activation(a_G, "a_G")
    _check_same_shape(a_C, a_G, ("a_C", "a_G"))
    # BEGIN SOLUTION
    # HINT: work in float64 (cast before subtracting: float32 differences lose digits), then the docstring's
    # HINT: formula; return a Python float
    _, n_H, n_W, n_C = a_G.shape
    # dtype=: both cast to float64 as they are read, no float64 copies of a_C and a_G made first
    diff = np.subtract(a_C, a_G, dtype=np.float64).reshape(-1)
    J_content = np.dot(diff, diff) / (4 * n_H * n_W * n_C)  # the sum of squares in one pass
    return float(J_content)
    # END SOLUTION


def content_cost_backward(a_C, a_G):
    """Gradient of the content cost with respect to the generated image's activations.

    Args:
        a_C: (1, nH, nW, nC) activations of the content image.
        a_G: (1, nH, nW, nC) activations of the generated image.

    Returns:
        dJ/da_G, shape (1, nH, nW, nC), dtype of a_G.

    Formula (differentiate the square, the 2 cancels half of the 4):
        dJ_content / da_G = (a_G - a_C) / (2 * nH * nW * nC)
    """
    arguments.check_floats("content_cost_backward", a_C=a_C, a_G=a_G)
    _check_activation(a_G, "a_G")
    _check_same_shape(a_C, a_G, ("a_C", "a_G"))
    # BEGIN SOLUTION
    # HINT: differentiate the cost's formula with respect to a_G (mind the sign, and what the square
    # HINT: brings down); return an array of a_G's dtype
    _, n_H, n_W, n_C = a_G.shape
    # float16 in float32: its difference overflows (40000 - (-40000)) where the gradient itself does not
    da_G = np.subtract(a_G, a_C, dtype=np.promote_types(a_G.dtype, np.float32)) / (2 * n_H * n_W * n_C)
    return da_G.astype(a_G.dtype, copy=False)
    # END SOLUTION


# ------------------------------------------------------------------------------- Gram matrix
def unroll(a):
    """Unroll one image's activations to the course's (nC, nH*nW) matrix: one row per channel.

    Args:
        a: (1, nH, nW, nC) activations.

    Returns:
        A: (nC, nH*nW), a view of `a` (no copy; activations are contiguous).

    A plain a.reshape(nC, nH*nW) would mix channels and positions, because the channels are
    the fastest-varying axis in memory: reshape to (nH*nW, nC) first (each row one position),
    then transpose, as the course does.
    """
    _check_activation(a, "a")
    _, n_H, n_W, n_C = a.shape
    return a.reshape(n_H * n_W, n_C).T  # (nH*nW, nC) -> (nC, nH*nW)


def gram_matrix(A):
    """Gram matrix of unrolled activations: how strongly every pair of channels fires together.

    Args:
        A: (nC, nH*nW) unrolled activations (see `unroll`).

    Returns:
        G: (nC, nC), dtype of A; G[i, j] = sum over positions p of A[i, p] * A[j, p].

    Formula:
        G_A = A @ A.T
    """
    arguments.check_floats("gram_matrix", A=A)
    _check_unrolled(A, "gram_matrix")
    # BEGIN SOLUTION
    # HINT: G[i, j] is the dot product of rows i and j of A: a single matrix product gives all of them
    G = A @ A.T
    return G
    # END SOLUTION


def gram_matrix_backward(A, dG):
    """Gradient of the Gram matrix with respect to the unrolled activations.

    Args:
        A: (nC, M) unrolled activations, M = nH*nW positions.
        dG: (nC, nC) upstream gradient dJ/dG for some cost J of G = gram_matrix(A).

    Returns:
        dJ/dA, (nC, M), dtype of A.

    Formula: G[i, j] = sum_p A[i, p] A[j, p], so A[k, p] appears in row k and in column k of G:
        dJ/dA[k, p] = sum_j dG[k, j] A[j, p] + sum_i dG[i, k] A[i, p],   that is
        dJ/dA = (dG + dG^T) @ A
    (2 dG @ A when dG is symmetric, as every cost of G that treats G[i, j] and G[j, i] alike has.)
    """
    arguments.check_floats("gram_matrix_backward", A=A, dG=dG)
    _check_unrolled(A, "gram_matrix_backward")
    if dG.shape != (A.shape[0], A.shape[0]):
        raise ValueError(f"gram_matrix_backward: dG has shape {dG.shape}, the Gram matrix of A {(A.shape[0],) * 2}")
    # BEGIN SOLUTION
    # HINT: each entry of A appears in one row and one column of G: differentiate both appearances
    # HINT: (do not assume dG is symmetric)
    dA = (dG + dG.T) @ A
    return dA.astype(A.dtype, copy=False)
    # END SOLUTION


# ------------------------------------------------------------------------- layer style cost
def compute_layer_style_cost(a_S, a_G):
    """Style cost at one layer: the distance between the style image's and generated image's Grams.

    Args:
        a_S: (1, nH_S, nW_S, nC) activations of the style image S at layer l.
        a_G: (1, nH, nW, nC) activations of the generated image G at the same layer.

    Returns:
        J_style_layer, a Python float, summed in float64.

    Formula (the course's, when both images have M = nH * nW positions):
        J = 1 / (4 * nC**2 * M**2) * sum((G_S - G_G) ** 2)
    The style image may have another size than the generated image (a style scale, another
    aspect ratio). Then each Gram is divided by its own number of positions, M_S = nH_S * nW_S
    and M_G = nH * nW, so that the two measure the same thing (an average over positions):
        J = 1 / (4 * nC**2) * sum((G_S / M_S - G_G / M_G) ** 2)
    which is exactly the course's formula when M_S == M_G.
    """
    arguments.check_floats("compute_layer_style_cost", a_S=a_S, a_G=a_G)
    _check_activation(a_S, "a_S")
    _check_activation(a_G, "a_G")
    if a_S.shape[3] != a_G.shape[3]:
        raise ValueError(f"a_S and a_G must have the same number of channels, got {a_S.shape} and {a_G.shape}")
    # BEGIN SOLUTION
    # HINT: unroll each image's activations (in float64) and take their Grams with your gram_matrix;
    # HINT: scale each Gram by its own image's number of positions before comparing them (see the formula)
    n_C = a_G.shape[3]
    A_S = unroll(a_S.astype(np.float64))  # (nC, M_S)
    A_G = unroll(a_G.astype(np.float64))  # (nC, M_G)
    G_S = gram_matrix(A_S) / A_S.shape[1]  # (nC, nC)
    G_G = gram_matrix(A_G) / A_G.shape[1]  # (nC, nC)
    J_style_layer = np.sum((G_S - G_G) ** 2) / (4 * n_C**2)
    return float(J_style_layer)
    # END SOLUTION


def layer_style_cost_backward(a_S, a_G):
    """Gradient of the layer style cost with respect to the generated image's activations.

    Args:
        a_S: (1, nH_S, nW_S, nC) activations of the style image.
        a_G: (1, nH, nW, nC) activations of the generated image.

    Returns:
        dJ/da_G, shape (1, nH, nW, nC), dtype of a_G (computed in float64).

    Formula (course, M = nH * nW positions in both images):
        dJ/dA_G = 1 / (nC**2 * M**2) * (G_G - G_S) @ A_G          (nC, M)
    and in general, with each Gram divided by its own M:
        dJ/dA_G = 1 / (nC**2 * M_G) * (G_G / M_G - G_S / M_S) @ A_G
    Derivation: J = 1/(4 nC^2) * sum(D ** 2) with D = G_G/M_G - G_S/M_S, so dJ/dG_G = D / (2 nC^2 M_G);
    G_G = A_G A_G^T gives dJ/dA_G = (dJ/dG_G + dJ/dG_G^T) A_G = 2 dJ/dG_G A_G (D is symmetric).
    The factor on the right is A_G, the generated image's features: the style image's A_S only
    enters through its fixed Gram G_S.
    """
    arguments.check_floats("layer_style_cost_backward", a_S=a_S, a_G=a_G)
    _check_activation(a_S, "a_S")
    _check_activation(a_G, "a_G")
    if a_S.shape[3] != a_G.shape[3]:
        raise ValueError(f"a_S and a_G must have the same number of channels, got {a_S.shape} and {a_G.shape}")
    # BEGIN SOLUTION
    # HINT: start as compute_layer_style_cost does, then apply the gradient formula; it comes out as
    # HINT: (nC, nH*nW): undo unroll (mind the order of the axes) and return a_G's dtype
    n_C = a_G.shape[3]
    A_S = unroll(a_S.astype(np.float64))  # (nC, M_S)
    A_G = unroll(a_G.astype(np.float64))  # (nC, M_G)
    M_S, M_G = A_S.shape[1], A_G.shape[1]
    D = gram_matrix(A_G) / M_G - gram_matrix(A_S) / M_S  # (nC, nC)
    dA_G = D @ A_G / (n_C**2 * M_G)  # (nC, M_G)
    da_G = dA_G.T.reshape(a_G.shape)  # undo unroll: (nC, M_G) -> (M_G, nC) -> (1, nH, nW, nC)
    return da_G.astype(a_G.dtype)
    # END SOLUTION


# ------------------------------------------------- the layer style cost, fast, for the loop
def style_target(a_S):
    """The style image's part of the layer style cost, computed once: its Gram per position.

    Args:
        a_S: (1, nH_S, nW_S, nC) activations of the style image.

    Returns:
        G_S / M_S, (nC, nC) float64, with M_S = nH_S * nW_S.

    Targets of several style images can be blended by a weighted average (see `transfer`).
    """
    arguments.check_floats("style_target", a_S=a_S)
    # BEGIN SOLUTION
    # HINT: the style image's half of compute_layer_style_cost (reuse what you wrote there); the
    # HINT: target stays float64 even when the activations are float32
    A_S = unroll(a_S.astype(np.float64))  # (nC, M_S)
    return gram_matrix(A_S) / A_S.shape[1]
    # END SOLUTION


def layer_style_cost_from_target(target, a_G):
    """Layer style cost and its gradient at once, from a precomputed `style_target`.

    Args:
        target: (nC, nC) float64, style_target(a_S) (or a blend of several).
        a_G: (1, nH, nW, nC) activations of the generated image.

    Returns:
        (J, dJ/da_G): J a float, dJ/da_G (1, nH, nW, nC) in a_G's dtype. For
        target = style_target(a_S) they equal compute_layer_style_cost(a_S, a_G) and
        layer_style_cost_backward(a_S, a_G) (tests check it).

    The same formulas as those two functions, arranged for the optimisation loop, which calls
    this with a fixed style image hundreds of times: the style image's Gram is computed once for
    the whole run instead of twice per call, the generated image's once per call instead of
    twice, and the gradient is formed
    directly in (positions, channels) order, F @ D with F = A_G^T (M, nC), instead of D @ A_G
    followed by a transposing copy (D is symmetric, so (D @ A_G)^T = F @ D):
        D = F^T F / M - target;   J = sum(D**2) / (4 nC^2);   dJ/dF = F @ S / (nC^2 M)
    with S = (D + D^T) / 2, which is D for a target made by style_target or a blend of such
    (symmetric), and keeps the gradient exact for any other (nC, nC) target a caller gives.
    The two products over all M positions run in a_G's dtype, float32 on the run path, as the
    network that made a_G did (a float64 copy of a_G would carry no more of its digits, and cost
    twice the time); D, whose entries cancel as G approaches the target, and J are float64.
    """
    arguments.check_floats("layer_style_cost_from_target", target=target, a_G=a_G)
    _check_activation(a_G, "a_G")
    _, n_H, n_W, n_C = a_G.shape
    if target.shape != (n_C, n_C):
        raise ValueError(f"target must be ({n_C}, {n_C}) for a_G of shape {a_G.shape}, got {target.shape}")
    # BEGIN SOLUTION
    # HINT: compute_layer_style_cost and layer_style_cost_backward in one, with target in place of the style
    # HINT: image's Gram per position: the two large products in a_G's dtype, the small (nC, nC) difference
    # HINT: and the sum in float64; give the gradient a_G's shape and dtype (with a target that is
    # HINT: not symmetric, the gradient needs (D + D^T) / 2 where D appears)
    M = n_H * n_W
    # (M, nC): row p is position p's channels; float16 in float32, whose Gram would overflow 65504
    F = a_G.reshape(M, n_C).astype(np.promote_types(a_G.dtype, np.float32), copy=False)
    D = (F.T @ F).astype(np.float64) / M - target  # (nC, nC)
    J = float(np.sum(D * D)) / (4 * n_C**2)
    dF = F @ ((D + D.T) / (2 * n_C**2 * M)).astype(F.dtype)  # (M, nC)
    return J, dF.reshape(a_G.shape).astype(a_G.dtype, copy=False)
    # END SOLUTION


# ------------------------------------------------------------------------------- style cost
def compute_style_cost(a_S, a_G, style_layers=COURSE_STYLE_LAYERS):
    """Style cost over several layers: the weighted sum of the layer style costs.

    Args:
        a_S: dict {layer name: (1, nH_S, nW_S, nC) activations of the style image}.
        a_G: dict {layer name: (1, nH, nW, nC) activations of the generated image}.
        style_layers: sequence of (layer name, weight lambda[l]) pairs;
            the course's default is five VGG-19 layers, 0.2 each.

    Returns:
        J_style, a Python float.

    Formula:
        J_style(S, G) = sum over l of lambda[l] * J_style_layer[l](S, G)
    """
    _check_layer_dicts("compute_style_cost", a_S, a_G, style_layers)
    J_style = 0.0  # Python floats are float64
    for name, weight in style_layers:
        J_style += weight * compute_layer_style_cost(a_S[name], a_G[name])
    return J_style


def style_cost_backward(a_S, a_G, style_layers=COURSE_STYLE_LAYERS):
    """Gradient of the style cost with respect to each style layer's generated activations.

    Args:
        a_S, a_G, style_layers: as in `compute_style_cost`.

    Returns:
        dict {layer name: dJ_style/da_G[l], shape and dtype of a_G[name]}.

    Formula:
        dJ_style / da_G[l] = lambda[l] * dJ_style_layer[l] / da_G[l]
    A layer listed twice gets the sum of both terms.
    """
    _check_layer_dicts("style_cost_backward", a_S, a_G, style_layers)
    grads = {}
    for name, weight in style_layers:
        # Cast the weight: a NumPy float64 weight would silently promote float32 gradients.
        g = layer_style_cost_backward(a_S[name], a_G[name]) * np.asarray(weight, a_G[name].dtype)
        grads[name] = grads[name] + g if name in grads else g
    return grads


# ------------------------------------------------------------------------------- total cost
def total_cost(J_content, J_style, alpha=10, beta=40):
    """Total cost: the weighted sum of the content and the style cost.

    Args:
        J_content: content cost (a number).
        J_style: style cost (a number).
        alpha: weight of the content cost (course: 10).
        beta: weight of the style cost (course: 40).

    Returns:
        J = alpha * J_content + beta * J_style
    (its gradients are dJ/dJ_content = alpha and dJ/dJ_style = beta).
    """
    # BEGIN SOLUTION
    # HINT: a weighted sum of the two costs: check which weight belongs to which cost
    J = alpha * J_content + beta * J_style
    return J
    # END SOLUTION


# ---------------------------------------------------------------------- total variation cost
def compute_total_variation_cost(x):
    """Total variation cost: how much neighbouring pixels differ (penalises high-frequency noise).

    Args:
        x: (N, H, W, C) images.

    Returns:
        J_tv, a Python float, summed in float64.

    Formula (squared differences, as in CS231n; divided by the number of values so that one
    tv weight works at every image size):
        J_tv = (sum((x[:, i+1, j] - x[:, i, j]) ** 2) + sum((x[:, i, j+1] - x[:, i, j]) ** 2)) / x.size
    """
    arguments.check_floats("compute_total_variation_cost", x=x)
    arguments.check_images("compute_total_variation_cost", x=x)
    # BEGIN SOLUTION
    # HINT: the differences between each pixel and the one below it, and the one to its right (slices
    # HINT: of x, in float64); sum both sets of squares and divide by the number of values
    x64 = x.astype(np.float64)
    dv = x64[:, 1:, :, :] - x64[:, :-1, :, :]  # (N, H-1, W, C) vertical neighbours
    dh = x64[:, :, 1:, :] - x64[:, :, :-1, :]  # (N, H, W-1, C) horizontal neighbours
    return float((np.sum(dv * dv) + np.sum(dh * dh)) / x.size)
    # END SOLUTION


def total_variation_cost_backward(x):
    """Gradient of the total variation cost with respect to the pixels.

    Args:
        x: (N, H, W, C) images.

    Returns:
        dJ_tv/dx, shape (N, H, W, C), dtype of x.

    Formula: every difference d = x[p+1] - x[p] adds 2 d / x.size to pixel p+1 and subtracts it
    from pixel p.
    """
    arguments.check_floats("total_variation_cost_backward", x=x)
    arguments.check_images("total_variation_cost_backward", x=x)
    # BEGIN SOLUTION
    # HINT: every pixel is in up to four differences (above, below, left, right): add what each
    # HINT: difference contributes to both its pixels, with the sign it has there; return x's dtype
    x64 = x.astype(np.float64)
    dv = 2 * (x64[:, 1:, :, :] - x64[:, :-1, :, :]) / x.size  # (N, H-1, W, C)
    dh = 2 * (x64[:, :, 1:, :] - x64[:, :, :-1, :]) / x.size  # (N, H, W-1, C)
    dx = np.zeros_like(x64)
    dx[:, 1:, :, :] += dv
    dx[:, :-1, :, :] -= dv
    dx[:, :, 1:, :] += dh
    dx[:, :, :-1, :] -= dh
    return dx.astype(x.dtype)
    # END SOLUTION

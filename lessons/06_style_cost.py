"""Lesson 6: the Gram matrix and the style cost; texture synthesis from noise with the style cost alone.

Run it:   python lessons/06_style_cost.py         (about a minute; pictures go to lessons/out/)
Makes:    06_gram.png      Gram matrices of the style image and of the content photo at one layer
          06_texture.png   the style image, and textures grown from noise by the style cost alone,
                           with the shallow style layers only and with all of them
          06_style_costs.png   the style cost against the iteration (needs matplotlib)
Needs:    pretrained weights for the pictures; the gradient checks run without them.
"""

# %%
import numpy as np

import _lesson
from scratchnst import costs, image, optim, torch_ref, transfer
from scratchnst.gradcheck import NUMERIC_TOL, eval_numerical_gradient_array, rel_error

args = _lesson.parse_args(__doc__, size=144, iters=100)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Style is texture: which colours and strokes occur together, wherever they are in the picture.
# The course measures it with Gram matrices of the activations, compared at several layers. By
# the end of the lesson you can compute a Gram matrix, the style cost and its gradient, check
# them, and grow a texture from noise with the style cost alone.
#
# ## The Gram matrix
#
# Unroll one image's activations a (1, nH, nW, nC) into A `(nC, nH*nW)`: one row per channel,
# one column per position. Then
#
#     G = A @ A.T          (nC, nC),   G[i, j] = sum over positions of A[i, p] * A[j, p]
#
# G[i, j] is large when channels i and j fire at the same places: "these two features occur
# together". The sum over positions forgets WHERE: shuffle the positions and G does not change.
#
# Careful with the unrolling: the channels are the fastest axis in memory, so reshape to
# `(nH*nW, nC)` first and then transpose. A direct `a.reshape(nC, nH*nW)` mixes channels and
# positions.

# %%
_lesson.section("Gram matrix: by hand, the package, and what it forgets")
a = rng.standard_normal((1, 4, 5, 3))
A = a.reshape(4 * 5, 3).T  # (nC, nH*nW): reshape to (positions, channels), then transpose
G = A @ A.T
print(f"a {a.shape} -> A {A.shape} -> G {G.shape}; rel_error vs costs.gram_matrix(costs.unroll(a)) "
      f"{rel_error(G, costs.gram_matrix(costs.unroll(a))):.1e}")
wrong = a.reshape(3, 20)  # the classic mistake
print(f"a.reshape(nC, nH*nW) instead: G differs by {rel_error(wrong @ wrong.T, G):.1f} (rel_error): wrong")
shuffled = A[:, rng.permutation(A.shape[1])]  # the same activations at shuffled positions
print(f"positions shuffled: Gram rel_error {rel_error(shuffled @ shuffled.T, G):.1e} (unchanged), "
      f"content cost {costs.compute_content_cost(a, shuffled.T.reshape(a.shape)):.2f} (not 0)")

# %% [markdown]
# ## The style cost at one layer
#
# With nC channels and M = nH * nW positions, the course compares the two Gram matrices:
#
#     J_style_layer(S, G) = 1 / (4 * nC**2 * M**2) * sum((G_S - G_G) ** 2)
#
# The factor is again a normalisation: G grows with M (a sum over positions) and there are `nC**2`
# entries, so `1/(nC**2 M**2)` turns the sum into a size-free mean; the 4 sets the gradient's
# constant. (scratchnst also lets the style image have another size than G: then each Gram is
# divided by its own M first. With equal sizes it is exactly the course's formula.)
#
# Its gradient with respect to the generated image's unrolled activations:
#
#     dJ / dA_G = 1 / (nC**2 * M**2) * (G_G - G_S) @ A_G          (nC, M)
#
# then rolled back to (1, nH, nW, nC). The factor on the right is A_G, the GENERATED image's
# features: writing A_S there is the classic mistake, and a gradient check catches it at once.

# %%
def layer_style_cost(a_S, a_G):
    """The course's J_style_layer for images of the same size."""
    _, nH, nW, nC = a_G.shape
    A_S, A_G = a_S.reshape(nH * nW, nC).T, a_G.reshape(nH * nW, nC).T
    G_S, G_G = A_S @ A_S.T, A_G @ A_G.T
    return np.sum((G_S - G_G) ** 2) / (4 * nC**2 * (nH * nW) ** 2)


def layer_style_gradient(a_S, a_G, use_style_features=False):
    """dJ_style_layer / da_G; use_style_features=True plants the classic bug."""
    _, nH, nW, nC = a_G.shape
    A_S, A_G = a_S.reshape(nH * nW, nC).T, a_G.reshape(nH * nW, nC).T
    G_S, G_G = A_S @ A_S.T, A_G @ A_G.T
    dA = (G_G - G_S) @ (A_S if use_style_features else A_G) / (nC**2 * (nH * nW) ** 2)  # (nC, M)
    return dA.T.reshape(a_G.shape)  # unroll backwards: (nC, M) -> (M, nC) -> (1, nH, nW, nC)


_lesson.section("Style cost and its gradient, checked (random activations, float64)")
torch = _lesson.torch_or_note()
for shape in [(1, 4, 5, 3), (1, 6, 3, 7)]:
    a_S, a_G = rng.standard_normal(shape), rng.standard_normal(shape)
    numeric = eval_numerical_gradient_array(lambda v: np.array(costs.compute_layer_style_cost(a_S, v)),
                                            a_G, np.array(1.0))
    package = costs.layer_style_cost_backward(a_S, a_G)
    line = (f"{shape}: J mine {layer_style_cost(a_S, a_G):.6f} package {costs.compute_layer_style_cost(a_S, a_G):.6f}; "
            f"gradient rel_error mine {rel_error(layer_style_gradient(a_S, a_G), package):.1e}, "
            f"vs finite differences {rel_error(package, numeric):.1e}")
    if torch is not None:
        nC, M = shape[3], shape[1] * shape[2]
        A_St = torch_ref.to_torch(a_S).reshape(M, nC).T
        a_Gt = torch_ref.to_torch(a_G, requires_grad=True)
        A_Gt = a_Gt.reshape(M, nC).T
        ((A_St @ A_St.T - A_Gt @ A_Gt.T) ** 2).sum().div(4 * nC**2 * M**2).backward()
        line += f", vs PyTorch {rel_error(package, torch_ref.to_numpy(a_Gt.grad)):.1e}"
    print(line, "-> right" if rel_error(package, numeric) < NUMERIC_TOL else "-> WRONG")
    bug = layer_style_gradient(a_S, a_G, use_style_features=True)
    missed = rel_error(bug, numeric) < NUMERIC_TOL   # the bug changes nothing where A_S = A_G
    print(f"    with A_S instead of A_G on the right: rel_error vs finite differences "
          f"{rel_error(bug, numeric):.1e} -> {'NOT caught' if missed else 'caught'}")

# %% [markdown]
# ## The style cost over several layers
#
#     J_style(S, G) = sum over layers l of lambda[l] * J_style_layer[l](S, G)
#
# The course takes five layers, one per block of VGG-19, lambda = 0.2 each: shallow layers
# describe colours and fine grain, deep layers larger strokes and motifs. Its gradient is one
# gradient per layer, lambda[l] * dJ_style_layer[l] / da_G[l]: the network's backward pass takes
# them all at once and sums what reaches the pixels.

# %%
_lesson.section("The course's style layers")
print("VGG-19 (the course):", ", ".join(f"{name} {w}" for name, w in costs.COURSE_STYLE_LAYERS))
print("SqueezeNet (scratchnst's choice):",
      ", ".join(f"{name} {w}" for name, w in transfer.MODEL_DEFAULTS["squeezenet"].style_layers))

# %% [markdown]
# ## Gram matrices of real images: what to look for
#
# Now the Gram matrices of two style images and of the photo, at the first style layer, with the
# pretrained network. Each is divided by its number of positions M (a mean over positions, so
# that images of different sizes compare) and drawn as a picture, one square per pair of
# channels (i, j), on one grey scale for all three (black 0, white large). The channels are put in
# the same order in all three: by how strongly they fire on the first style image, strongest
# first, so that image's large values gather at the top left.
#
# What to look for:
#
# - the diagonal, G[i, i]: how much of feature i the image holds, anywhere in it. Two images with
#   the same palette and strokes have similar diagonals;
# - off the diagonal, G[i, j]: how often features i and j fire at the same places. Bright rows
#   and blocks are families of features that come together (blue beside yellow, a dark line
#   along a bright edge);
# - the difference of two Grams (red: the pair is stronger in the first image, blue: in the
#   second, white: the same). The style cost at this layer is the mean of its squares: a
#   difference picture that is mostly white means a small style cost.

# %%
_lesson.section("Gram matrices of two styles and of the photo")
# stops here, with the download command, without weights
net = _lesson.load_network(args, pooling="default", layers=_lesson.stylize_layers())
style_layers = [tuple(pair) for pair in transfer.MODEL_DEFAULTS[net.name].style_layers]
names = [name for name, _ in style_layers]
first = names[0]
style = _lesson.load(args.style, args.size)
photo = _lesson.load(args.content, args.size)
other_path = next(p for p in (_lesson.IMAGES / "mosaic.jpg", _lesson.IMAGES / "swirls.jpg")
                  if p.resolve() != args.style.resolve())  # the second style: whichever --style is not
other = _lesson.load(other_path, args.size)
x_S = image.preprocess(style, net.preprocessing)
a_S = {name: a.copy() for name, a in net.forward(x_S, names).items()}


def gram_per_position(picture):
    """The Gram matrix at the first style layer, divided by the number of positions M: (nC, nC)."""
    a = net.forward(image.preprocess(picture, net.preprocessing), [first])[first].astype(np.float64)
    return costs.gram_matrix(costs.unroll(a)) / (a.shape[1] * a.shape[2])


pictures = {args.style.name: style, other_path.name: other, f"{args.content.name} (content)": photo}
grams = {label: gram_per_position(p) for label, p in pictures.items()}
(label_A, G_A), (label_B, G_B), (label_P, G_P) = grams.items()
order = np.argsort(np.diag(G_A))[::-1]  # channels by their energy in the first style, strongest first
grams = {label: G[np.ix_(order, order)] for label, G in grams.items()}
nC = G_A.shape[0]
enlarge = max(1, round(256 / nC))  # one Gram entry -> enlarge x enlarge pixels: about 256 pixels wide
# One scale for all three, so that they compare: white at the 99th percentile of all their entries
# (the few largest would otherwise leave everything else dark).
top = np.percentile(np.concatenate([G.ravel() for G in grams.values()]), 99)
show = lambda G: (np.clip(G / top, 0, 1) * 255).repeat(enlarge, 0).repeat(enlarge, 1)  # noqa: E731
signed = lambda D: _lesson.signed(D.repeat(enlarge, 0).repeat(enlarge, 1))  # noqa: E731
square = np.zeros((nC * enlarge, nC * enlarge, 3))
tiles = [_lesson.like(p, square) for p in pictures.values()]
tiles += [show(G) for G in grams.values()]
tiles += [signed(grams[label_A] - grams[label_B]), signed(grams[label_A] - grams[label_P])]
labels = list(pictures)
labels += [f"its Gram at {first}, {nC}x{nC} (one scale for all three)" for _ in pictures]
labels += [f"{label_A} minus {label_B} (red: more in {label_A})",
           f"{label_A} minus the content (red: more in {label_A})"]
_lesson.save(args, "06_gram.png", _lesson.montage(tiles, labels, cols=3))

distance = lambda G, H: np.sum((G - H) ** 2) / (4 * nC**2)  # noqa: E731  the layer's style cost, per-position Grams
print(f"{first}: {nC} channels. The style cost at this layer (Grams per position):")
print(f"  {label_A} against {label_B}: {distance(G_A, G_B):.4g};  {label_A} against the content: "
      f"{distance(G_A, G_P):.4g};  {label_B} against the content: {distance(G_B, G_P):.4g}")
for label, G in ((label_A, G_A), (label_B, G_B), (label_P, G_P)):
    share = np.trace(G) / np.abs(G).sum()
    print(f"  {label:<22} diagonal holds {share:.0%} of |G|; strongest channels "
          f"{', '.join(map(str, np.argsort(np.diag(G))[::-1][:5]))}")
i, j = np.unravel_index(np.argmax(np.abs(G_A - G_B)), G_A.shape)
print(f"  largest difference between the two styles: channels ({i}, {j}), {G_A[i, j]:.3g} in {label_A} "
      f"against {G_B[i, j]:.3g} in {label_B}")

# %% [markdown]
# With the default images (SqueezeNet's conv1): the swirls' Gram is bright at the top left, where
# its own strongest features are, and so is its diagonal; the mosaic's is darker there and has
# bright rows and columns at the bottom right: features the swirls hardly hold at all, so its
# difference picture is red at the top left and blue along those rows. The photo's Gram is dim
# everywhere (soft, low-contrast features) and the difference from the swirls is red almost
# throughout: that is the large style cost a style transfer starts from.

# %%
_lesson.section("The shuffle test on a real image")
# Cut the style image into tiles and shuffle them. The style
# cost hardly notices; the content cost does. (The style cost compares images of different sizes
# too: each Gram is divided by its own number of positions.)
t = min(32, min(style.shape[:2]) // 2)  # smaller tiles at a small --size: at least 2 x 2 of them
H, W = (style.shape[0] // t) * t, (style.shape[1] // t) * t   # the rows and columns left over stay in place
tiles = style[:H, :W].reshape(H // t, t, W // t, t, 3).transpose(0, 2, 1, 3, 4).reshape(-1, t, t, 3)  # (n, t, t, 3)
tiles = tiles[rng.permutation(len(tiles))]
mixed = style.copy()
mixed[:H, :W] = tiles.reshape(H // t, W // t, t, t, 3).transpose(0, 2, 1, 3, 4).reshape(H, W, 3)
a_style = {k: v.copy() for k, v in net.forward(image.preprocess(style, net.preprocessing), names).items()}
a_mixed = {k: v.copy() for k, v in net.forward(image.preprocess(mixed, net.preprocessing), names).items()}
a_photo = net.forward(image.preprocess(photo, net.preprocessing), names)
deep = names[-1]
print(f"J_style(style, its {t}x{t} tiles shuffled) = {costs.compute_style_cost(a_style, a_mixed, style_layers):.4g}   "
      f"J_style(style, content photo) = {costs.compute_style_cost(a_style, a_photo, style_layers):.4g}")
print(f"J_content at {deep}(style, its tiles shuffled) = "
      f"{costs.compute_content_cost(a_style[deep], a_mixed[deep]):.4g}   "
      "(the content cost sees the shuffle)")

# %% [markdown]
# ## Texture synthesis: the style cost alone, from noise
#
# As lesson 5 rebuilt the photo from its content, we now grow an image whose Gram matrices match
# the style image's, from noise, with the style cost alone (Gatys et al.'s texture synthesis).
# Nothing ties any stroke to a place, so the result is the style's texture, rearranged. With only
# the shallow style layers it has the right colours and grain but no structure; adding the deeper
# layers brings larger strokes and shapes.
#
# The network runs with the pooling `scratchnst stylize` uses for it (`transfer.MODEL_DEFAULTS`:
# average pooling, as Gatys et al. did for texture synthesis; lesson 10 shows max pooling's
# speckle).

# %%
_lesson.section("Texture synthesis from noise")
start = np.clip(128 + rng.uniform(-32, 32, style.shape), 0, 255).astype(np.float32)  # grey + noise, (H, W, 3)


def synthesize(layers_and_weights, start=start):
    """Minimise the style cost alone from `start` (H, W, 3), any size: the style image's Grams are
    divided by its own number of positions. Returns (picture, cost history, seconds, evaluations)."""
    wanted = [name for name, _ in layers_and_weights]
    x0 = image.preprocess(start, net.preprocessing)  # (1, H, W, 3)
    lo = image.preprocess(np.zeros_like(start), net.preprocessing).reshape(-1).astype(np.float64)
    hi = image.preprocess(np.full_like(start, 255), net.preprocessing).reshape(-1).astype(np.float64)

    def cost_and_gradient(v):
        x = v.reshape(x0.shape).astype(net.dtype)
        a_G = net.forward(x, wanted)
        J = costs.compute_style_cost(a_S, a_G, layers_and_weights)
        grads = costs.style_cost_backward(a_S, a_G, layers_and_weights)  # {layer: dJ/da_G[l]}
        return J, net.backward(grads).reshape(-1)

    with _lesson.timed() as t:
        result = optim.minimize(cost_and_gradient, x0.reshape(-1).astype(np.float64), "lbfgs", args.iters,
                                bounds=(lo, hi))
    picture = image.deprocess(result.x.reshape(x0.shape).astype(np.float32), net.preprocessing)
    return picture, result.history, t.seconds, result.n_evals


shallow = [(name, 1.0 / 2) for name in names[:2]]
results, histories = [], {}
for label, chosen in ((f"shallow: {', '.join(n for n, _ in shallow)}", shallow),
                      (f"all {len(style_layers)} style layers", style_layers)):
    texture, history, seconds, evaluations = synthesize(chosen)
    results.append(texture)
    histories[label] = history
    print(f"{label:>32}: J_style {history[0]:.4g} -> {history[-1]:.4g} "
          f"({len(history) - 1} iterations, {evaluations} evaluations, {seconds:.0f} s)")
_lesson.save(args, "06_texture.png", _lesson.montage(
    [style, start] + results, ["style", "start: grey + noise"] + list(histories), cols=4))

_lesson.plot_relative_costs(args, "06_style_costs.png", histories, "J_style / J_style at the start",
                            "Texture synthesis: style cost alone, from noise")

# %% [markdown]
# ## Summary
#
# - Gram matrix: G = A A^T of the unrolled activations (reshape to (M, nC), then transpose):
#   which channels fire together, wherever they fire.
# - Read a Gram matrix by its diagonal (how much of each feature the image holds) and its bright
#   rows and blocks (features that fire together); two styles differ where their difference is
#   far from white, and the layer style cost is the mean square of that difference.
# - Layer style cost: 1/(4 nC^2 M^2) sum((G_S - G_G)^2); gradient 1/(nC^2 M^2) (G_G - G_S) A_G,
#   with the GENERATED image's A_G on the right (A_S is the classic bug; the check catches it).
# - The style cost sums the layer costs with weights lambda; from noise, it alone grows a texture
#   of the style: fine grain from shallow layers, larger structures from deep ones.
#
# ## Exercises
#
# 1. Show from the formula that the Gram matrix is symmetric and positive semi-definite. Why does
#    that make dJ/dG_G symmetric, and where does the derivation use it?
# 2. Synthesize with the deep style layers only. What is missing?
# 3. Grow a texture twice as wide and twice as high as the style image: give `synthesize` a
#    larger start, `synthesize(style_layers, start=np.full((2 * H, 2 * W, 3), 128, np.float32) +
#    rng.uniform(-32, 32, (2 * H, 2 * W, 3)).astype(np.float32))` with `H, W = style.shape[:2]`
#    (the style's Grams are divided by its own number of positions, so the sizes may differ).
#    Does the texture repeat, or does it grow new structure?
# 4. Try the mosaic: `--style lessons/images/mosaic.jpg`. Which features of stained glass does
#    the Gram matrix capture, and which (straight lead lines, closed cells) does it lose?
# 5. Gatys et al. normalise by 1/(4 N^2 M^2) and the CS231n assignment by 1/(H W C). How do the
#    two differ for a layer with nC = 256 and M = 32 * 32, and what would you change in beta?

# %%
_lesson.done()

"""Lesson 7: the total cost, and back-propagation to the pixels through the whole network, checked.

Run it:   python lessons/07_total_cost_and_backprop.py   (under a minute; pictures go to lessons/out/)
Makes:    07_gradients.png   from the course's starting image, a few steps along the gradient of
                             the content term alone, the style term alone, and their sum, with
                             beta chosen so that the two pull equally hard; below, what each changed
Needs:    pretrained weights for the picture; the gradient checks of the whole chain use small
          random networks and run without them.
"""

# %%
import numpy as np

import _lesson
from scratchnst import costs, image, networks, optim, torch_ref, transfer
from scratchnst.gradcheck import rel_error

args = _lesson.parse_args(__doc__, size=192, iters=30, extra=lambda parser: parser.add_argument(
    "--check-pixels", type=int, default=40,
    help="pixels sampled by the finite-difference check of the whole chain (VGG-19 gets a sixth of them)"))
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Lessons 5 and 6 gave two costs and their gradients at some layers. Style transfer adds them,
#
#     J(G) = alpha * J_content(C, G) + beta * J_style(S, G)          (course: alpha = 10, beta = 40)
#
# and needs ONE gradient: dJ/dx with respect to the pixels of G. This lesson builds that chain,
# layer gradients -> one backward pass through the network -> pixels, and checks the whole of it
# at once, against finite differences and against PyTorch.
#
# ## The total cost, and the course's test numbers
#
# The course's assignment checks total_cost with three public numbers; the last one uses NumPy's
# legacy global generator, seeded with 3.

# %%
_lesson.section("total_cost against the course's public test values")
print(f"total_cost(0.2, 0.8)                 = {costs.total_cost(0.2, 0.8)}   (course: 34)")
print(f"total_cost(0.3, 0.5, alpha=3, beta=8) = {costs.total_cost(0.3, 0.5, alpha=3, beta=8):.10g}   (course: 4.9)")
np.random.seed(3)  # the course's legacy generator, only to reproduce its number
J_content, J_style = np.random.randn(), np.random.randn()
print(f"np.random.seed(3); total_cost(randn(), randn()) = {costs.total_cost(J_content, J_style)!r}   "
      "(course: 35.34667875478276)")

# %% [markdown]
# ## The chain
#
# One forward pass of G computes every layer the costs need (the content layer and the style
# layers). The costs give their gradients there:
#
#     content layer l_c:   alpha * (a_G - a_C) / (2 nH nW nC)
#     style layer l:       beta * lambda[l] * (G_G - G_S) A_G / (nC^2 M^2)      (rolled back)
#
# `network.backward` takes them all as one dict and walks the layers from the deepest one down:
# at every layer the gradient coming from above is added to the one given there (a layer that is
# both a content and a style layer gets both). What reaches the input is dJ/dx for the
# PREPROCESSED image x = BGR pixels minus the means. Preprocessing is affine, so the pixels' own
# gradient is the same numbers with the channels put back in RGB order:
#
#     dJ/d(RGB pixels) = dJ/dx[..., ::-1]
#
# `transfer.make_cost_function` wires this up; `scratchnst stylize` optimises exactly this
# function. We check it end to end.

# %% [markdown]
# ## Checking the whole chain: small random networks, float64
#
# A check of the whole chain must not depend on downloaded weights, and must run in float64. So
# we build each architecture with random weights (He initialisation keeps the activations of a
# sensible size) in float64, on small random images, with the network's own content and style
# layers. Finite differences need two evaluations of J per pixel, so we check a random sample
# of pixels (all pixels of a 16x16 image would take thousands of passes).
#
# The step h: the preprocessed pixels are numbers of size ~100 and J (random weights, beta = 40)
# is ~1e8, so the round-off of J(x + h) - J(x - h), about 1e-16 * J, is large for a tiny h.
# h = 1e-2 (a hundredth of a grey level) keeps it small. ReLU and max pooling have kinks: if a
# nudge crosses one, that pixel's finite difference is off. It is rare at this h; if one sampled
# pixel ever disagrees, look at it before blaming the backward pass.

# %%
def random_network(name, dtype=np.float64):
    """A network of the given architecture with random He-initialised weights (no download needed)."""
    params = {}
    for layer, (kernel_shape, bias_shape) in networks.ARCHITECTURES[name].weight_shapes.items():
        fan_in = np.prod(kernel_shape[:3])
        params[layer] = (rng.standard_normal(kernel_shape) * np.sqrt(2 / fan_in), 0.1 * rng.standard_normal(bias_shape))
    return networks.Network(name, params, dtype=dtype)


def chain_for(net, size):
    """The total cost of transfer.make_cost_function on random images, with the network's defaults."""
    d = transfer.MODEL_DEFAULTS[net.name]
    content_layer = net.arch.resolve(d.content_layer)
    style_layers = [(net.arch.resolve(name), w) for name, w in d.style_layers]
    pixels = lambda h, w: rng.uniform(0, 255, (h, w, 3))  # noqa: E731
    x_C = image.preprocess(pixels(size, size), net.preprocessing)
    x_S = image.preprocess(pixels(size + 4, size + 2), net.preprocessing)  # a style image of another size
    x_G = image.preprocess(pixels(size, size), net.preprocessing)
    cost = transfer.make_cost_function(net, x_C, [x_S], content_layer, style_layers, [1.0], d.alpha, d.beta, 0.0)
    return cost, x_G, (x_C, x_S, content_layer, style_layers, d.alpha, d.beta)


_lesson.section("dJ/dx of the whole chain against finite differences (random networks, float64)")
checks = {}
for name in ("squeezenet", "vgg19"):
    net = random_network(name)
    need = net.min_input_size_for([transfer.MODEL_DEFAULTS[name].content_layer]
                                  + [n for n, _ in transfer.MODEL_DEFAULTS[name].style_layers])
    cost, x_G, setup = chain_for(net, need)
    checks[name] = (net, cost, x_G, setup)
    with _lesson.timed() as t:
        J, dx, parts = cost(x_G)
    # VGG-19's evaluation is ~50 times slower here (tiny images, large kernels): fewer pixels
    n_pixels = args.check_pixels if name == "squeezenet" else max(1, args.check_pixels // 6)
    sample = [tuple(rng.integers(0, n) for n in x_G.shape) for _ in range(n_pixels)]
    analytic, numeric = [], []
    h = 1e-2
    for k in sample:
        plus, minus = x_G.copy(), x_G.copy()
        plus[k] += h
        minus[k] -= h
        analytic.append(dx[k])
        numeric.append((cost(plus)[0] - cost(minus)[0]) / (2 * h))
    err = rel_error(np.array(analytic), np.array(numeric))
    print(f"{name:>10} ({len(net.arch.steps)} steps), image {x_G.shape[1]}x{x_G.shape[2]}: J = {J:.4g} "
          f"(content {parts['J_content']:.3g}, style {parts['J_style']:.3g}); "
          f"{n_pixels} random pixels: rel_error {err:.1e} -> {'right' if err < 1e-5 else 'WRONG'}  "
          f"[one evaluation {t.seconds * 1000:.0f} ms]")

# %% [markdown]
# A threshold of 1e-5 rather than the 1e-7 of single layers: J here is a sum over hundreds of
# thousands of terms of very different sizes, and each finite difference inherits their
# round-off. A wrong gradient (a dropped term, a layer's gradient given to the wrong place, A_S
# instead of A_G) gives 1e-2 to 1.
#
# ## Against PyTorch: the same chain, all pixels
#
# PyTorch can check every pixel at the price of one backward pass. We run the same architecture
# in PyTorch from the network's own step list and weights (each step is a conv + ReLU, a pool or
# a concatenation), write the two costs in a few lines of torch, and let autograd give dJ/dx.

# %%
def torch_total_cost(net, x, x_C, x_S, content_layer, style_layers, alpha, beta):
    """J of the same chain in PyTorch; x, x_C, x_S are torch tensors (1, H, W, 3)."""
    torch = _lesson.torch_or_note()

    deepest = max([content_layer] + [name for name, _ in style_layers], key=net.arch.index.get)

    def activations(inp):
        acts = {"input": inp}
        for step in net.arch.steps[:net.arch.index[deepest] + 1]:  # only as deep as the costs need
            ins = [acts[s] for s in step.inputs]
            if step.op == "conv":
                kernel, bias = (torch_ref.to_torch(a) for a in net.params[step.name])
                z = torch_ref.conv2d(ins[0], kernel, bias, step.spec.stride, step.spec.padding)
                acts[step.name] = torch.relu(z)
            elif step.op == "pool":
                pool = torch_ref.max_pool if net.pooling == "max" else torch_ref.avg_pool
                acts[step.name] = pool(ins[0], step.spec.size, step.spec.stride, step.spec.padding)
            else:
                acts[step.name] = torch_ref.concat(ins)
        return acts

    def gram(a):  # (1, H, W, C) -> (C, C), divided by the number of positions H*W
        A = a.reshape(-1, a.shape[-1]).T
        return A @ A.T / A.shape[1]

    a_G, a_C, a_S = activations(x), activations(x_C), activations(x_S)
    J_content = ((a_C[content_layer] - a_G[content_layer]) ** 2).sum() / (4 * a_G[content_layer].numel())
    J_style = sum(w * ((gram(a_S[l]) - gram(a_G[l])) ** 2).sum() / (4 * a_G[l].shape[-1] ** 2) for l, w in style_layers)
    return alpha * J_content + beta * J_style


_lesson.section("dJ/dx of the whole chain against PyTorch, every pixel (float64)")
torch = _lesson.torch_or_note()
if torch is not None:
    for name, (net, cost, x_G, (x_C, x_S, content_layer, style_layers, alpha, beta)) in checks.items():
        J, dx, _ = cost(x_G)
        xt = torch_ref.to_torch(x_G, requires_grad=True)
        Jt = torch_total_cost(net, xt, torch_ref.to_torch(x_C), torch_ref.to_torch(x_S),
                              content_layer, style_layers, alpha, beta)
        Jt.backward()
        print(f"{name:>10}: J {J:.10g} vs PyTorch {Jt.item():.10g}; dJ/dx rel_error over all "
              f"{dx.size} values {rel_error(dx, torch_ref.to_numpy(xt.grad)):.1e}")

# %% [markdown]
# ## The real network: what each cost asks of the pixels
#
# With the pretrained weights, start from the course's initial image (the photo plus uniform
# noise of +-0.25 in [0, 1] units, i.e. +-64 of 255) and follow each gradient for a few steps
# (Adam, as the course; lesson 8 compares optimisers): the content term alone, the style term
# alone, and their sum. A single gradient is hard to read as a picture (at a noisy start it is
# mostly speckle), so we look at where a few steps take the image, and at what they changed.
#
# First, how strong is each pull at the start? The image IS the photo (plus noise), so the
# content term is nearly satisfied and its gradient is small, while the style term is far from
# its target. With the network's default alpha : beta the style gradient is hundreds of times
# the content gradient, and Adam follows the direction of the sum: "total" would be the
# style-only picture, pixel for pixel. The weights decide the balance, so for this picture we
# choose beta such that both pulls are EQUALLY strong at the start,
#
#     beta = alpha * |dJ_content/dx| / |dJ_style/dx|      (both gradients at the start image)
#
# and keep alpha. Then what you should see:
#
# - content only: the noise goes away and the photo comes back (its change is the noise, negated);
# - style only: strokes and colours of the style painted over everything (its change is texture);
# - total: the photo's colours and layout with some of the style's strokes: neither of the two,
#   between them. Its change holds some of each.
#
# The costs after the steps say the same in numbers: the total's content cost lies between the
# two single-term runs', and so does its style cost.

# %%
_lesson.section("The real network: how strong each pull is at the start")
# stops here, with the download command, without weights
net = _lesson.load_network(args, pooling="default", layers=_lesson.stylize_layers())
d = transfer.MODEL_DEFAULTS[net.name]
content_layer, style_layers = net.arch.resolve(d.content_layer), [(net.arch.resolve(n), w) for n, w in d.style_layers]
photo = _lesson.load(args.content, args.size)
style = _lesson.load(args.style, args.size)
noise = rng.uniform(-transfer.COURSE_NOISE, transfer.COURSE_NOISE, photo.shape)  # the course's +-0.25 of 255
start = np.clip(photo + noise, 0, 255).astype(np.float32)
x_C, x_S, x_G = (image.preprocess(p, net.preprocessing) for p in (photo, style, start))
lo = image.preprocess(np.zeros_like(photo), net.preprocessing).reshape(-1).astype(np.float64)
hi = image.preprocess(np.full_like(photo, 255), net.preprocessing).reshape(-1).astype(np.float64)


def cost_with(alpha, beta):
    return transfer.make_cost_function(net, x_C, [x_S], content_layer, style_layers, [1.0], alpha, beta, 0.0)


_, g_content, parts = cost_with(1.0, 0.0)(x_G)  # dJ_content/dx and dJ_style/dx, unweighted
_, g_style, _ = cost_with(0.0, 1.0)(x_G)
J_content0, J_style0 = parts["J_content"], parts["J_style"]
alpha = d.alpha
ratio = d.beta * np.linalg.norm(g_style) / (alpha * np.linalg.norm(g_content))
beta = alpha * np.linalg.norm(g_content) / np.linalg.norm(g_style)
print(f"at the start: alpha*J_content {alpha * J_content0:.4g}, beta*J_style {d.beta * J_style0:.4g} "
      f"(alpha {alpha:g}, beta {d.beta:g}, {net.name}'s defaults)")
print(f"with these weights the style gradient is {ratio:.0f} times as large as the content gradient")
print(f"for the picture: alpha {alpha:g}, beta {beta:.3g}, so that |alpha dJ_content/dx| = |beta dJ_style/dx|")
g_total = alpha * g_content + beta * g_style
cosine = lambda u, v: float(np.sum(u * v) / (np.linalg.norm(u) * np.linalg.norm(v)))  # noqa: E731
print(f"cosine of the total gradient with the content gradient {cosine(g_total, g_content):.2f}, "
      f"with the style gradient {cosine(g_total, g_style):.2f}; of content with style "
      f"{cosine(g_content, g_style):.2f} (0 = at right angles: two different directions)")

# %%
_lesson.section(f"The real network: {args.iters} Adam steps along each gradient")
steps = args.iters
runs = {}
for label, a, b in (("content only", alpha, 0.0), ("style only", 0.0, beta), ("total", alpha, beta)):
    cost = cost_with(a, b)

    def cost_and_gradient(v, cost=cost):
        J, dx, _ = cost(v.reshape(x_G.shape).astype(net.dtype))
        return J, dx.reshape(-1)

    result = optim.adam(cost_and_gradient, x_G.reshape(-1).astype(np.float64), steps, lr=d.lr, bounds=(lo, hi))
    x_end = result.x.reshape(x_G.shape).astype(net.dtype)
    _, _, end = cost_with(1.0, 1.0)(x_end)  # both costs of the end image, unweighted
    runs[label] = np.clip(image.deprocess(x_end, net.preprocessing), 0, 255)
    print(f"{label:>13} (alpha {a:g}, beta {b:.3g}): J_content {J_content0:.3g} -> {end['J_content']:.3g}, "
          f"J_style {J_style0:.3g} -> {end['J_style']:.3g}")

mad = lambda p, q: float(np.abs(p - q).mean())  # noqa: E731  mean absolute difference, grey levels
print(f"mean absolute difference (of 255): style only vs total {mad(runs['style only'], runs['total']):.1f}, "
      f"content only vs total {mad(runs['content only'], runs['total']):.1f}, "
      f"content only vs style only {mad(runs['content only'], runs['style only']):.1f}")
change = lambda p: np.clip(128 + (p - start), 0, 255)  # noqa: E731  what the steps changed, on mid-grey
tiles = [start] + list(runs.values()) + [photo] + [change(p) for p in runs.values()]
labels = ["start: content + noise"] + [f"{steps} steps: {label}" for label in runs]
labels += ["content (the photo)"] + [f"what {label} changed (grey = nothing)" for label in runs]
_lesson.save(args, "07_gradients.png", _lesson.montage(tiles, labels, cols=4))

# %% [markdown]
# The same gradient computed by the float32 network (the run path) and by a float64 copy of it
# differ only at the level of float32 round-off:

# %%
net64 = networks.Network(net.name, net.params, pooling=net.pooling, dtype=np.float64, preprocessing=net.preprocessing)
cost32 = cost_with(d.alpha, d.beta)
cost64 = transfer.make_cost_function(net64, x_C.astype(np.float64), [x_S.astype(np.float64)], content_layer,
                                     style_layers, [1.0], d.alpha, d.beta, 0.0)
dx32, dx64 = cost32(x_G)[1], cost64(x_G.astype(np.float64))[1]
print(f"float32 network against float64 at the start: |difference| / |gradient| = "
      f"{np.linalg.norm(dx32 - dx64) / np.linalg.norm(dx64):.1e}")

# %% [markdown]
# ## Summary
#
# - J = alpha J_content + beta J_style; the course's public numbers (34, 4.9, 35.3466...) check.
# - One forward pass to the deepest layer needed, the costs' gradients at their layers, one
#   backward pass that sums them on the way down: dJ/dx for the preprocessed image, and the same
#   numbers in RGB order for the pixels.
# - The whole chain agrees with finite differences on sampled pixels and with PyTorch on all of
#   them, for both architectures.
# - alpha and beta set how hard each term pulls. At the course's start the style gradient is
#   hundreds of times the content gradient; with the two pulls made equal, the content term
#   removes the noise, the style term paints, and the total lands between them, in the picture
#   and in both costs.
#
# ## Exercises
#
# 1. Make the content layer also a style layer and check that `network.backward` adds both
#    gradients (compare with two separate backward passes).
# 2. Plant a bug: write the cost yourself with `net.forward` and `net.backward` (as lesson 5's
#    `reconstruct` does, plus the style terms of lesson 6), but give the content gradient to the
#    layer below the content layer (the one before it in `net.layer_names`). Run the
#    finite-difference check above on your function: what rel_error does it report?
# 3. How does rel_error of the sampled finite differences change with h (1e-3 ... 1e-8)? Compare
#    with lesson 2's curve for a single layer.
# 4. In the float32 network, how large is the round-off of J itself? (Evaluate J at the same x
#    twice in different orders of the style layers.) Why does scratchnst sum costs in float64?
# 5. Show that blending two style images with weights w and 1 - w has the gradient of one style
#    cost whose target Gram is the weighted average of theirs.
# 6. Make the picture again with beta 10 times larger and 10 times smaller than the balanced one
#    (change the line `beta = ...`), and with the network's default `d.beta`. Which panel does
#    "total" move towards, and what do the mean absolute differences say?

# %%
_lesson.done()

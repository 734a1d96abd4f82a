"""The rows of `scratchnst gradcheck` and the run of the table: every layer, every cost, and the chain
from a cost to the pixels.

Four groups, in the order a student meets them:

    layers  convolution (the readable one and the fast one the networks run), ReLU, max and
            average pooling, concatenation: every configuration the networks use, and odd ones;
    costs   content cost, Gram matrix, layer style cost (the course's and the loop's fast one),
            weighted style cost, total cost with alpha and beta, total variation;
    transformer  the real-time style network's layers (reflection padding, instance
            normalisation, nearest upsampling, residual sum, scaled tanh), its kernel gradient,
            its upsampling layers computed at the low resolution (upsample_conv), and a whole
            small network's parameter gradients;
    chain   dJ/dx through a real pretrained network, float64: the content cost, the style cost
            and the total that `stylize` minimises, for SqueezeNet and for VGG-19 when their
            weights are installed.

Each row is a `gradcheck.Check` whose Case is built only when the row runs, and whose functions
are looked up in their modules at call time: a student copy's unwritten exercise then shows as
NOT DONE in its own row, and a test can plant a mistake with monkeypatch. The costs are called
through gradcheck.call, which checks what each returns (a number, an array of the shape the course
gives): a student's list or transposed Gram matrix is then named in the course's terms, not met
as NumPy's error a few calls later.

Every cost is made a function of its differentiable inputs with everything else held fixed (the
content image's activations, the style image's, the weights): its "output" is the number J and
the upstream gradient dJ/dJ a random scalar, so the same engine checks layers and costs.
"""

import sys
import time

import numpy as np

from scratchnst import costs, fast_conv, gradcheck, json_text, layers, torch_ref, transformer_net, upsample_conv
from scratchnst import transformer_layers as tl
from scratchnst.errors import UsageError
from scratchnst.gradcheck import Case, Check, Skip, Unusable, call, returned

GROUPS = ("layers", "costs", "transformer", "chain")
CHAIN_MODELS = ("squeezenet", "vgg19")
# The tolerance against finite differences of the rows through a whole network (see "chain" below).
CHAIN_NUMERIC_TOL = 1e-6


# ------------------------------------------------------------------------------------ layers
def _conv_case(rng, shape, kernel, c_out, stride, padding, module=layers):
    """A convolution's case; module: `layers` (the readable one) or `fast_conv` (the one networks run)."""
    N, H, W, C_in = shape
    inputs = {
        "x": rng.standard_normal(shape),
        "w": rng.standard_normal((kernel, kernel, C_in, c_out)),
        "b": rng.standard_normal(c_out),
    }
    return Case(
        "conv2d" if module is layers else "conv2d_fast",
        f"{kernel}x{kernel} s{stride} {padding} {H}x{W}x{C_in}->{c_out} N={N}",
        inputs,
        lambda x, w, b: module.conv2d_forward(x, w, b, stride, padding),
        lambda dout, cache: module.conv2d_backward(dout, cache),
        lambda x, w, b: torch_ref.conv2d(x, w, b, stride, padding),
        # Convolution is linear in each of x, w and b, so centred differences have no truncation
        # error at any step; a larger step shrinks the round-off, which otherwise dominates for
        # gradient elements that are small sums of large terms (border pixels of a 7x7 kernel).
        h=1e-3,
    )


def _pool_case(kind, rng, shape, size, stride, padding):
    N, H, W, C = shape

    def forward(x):
        return getattr(layers, f"{kind}_pool_forward")(x, size, stride, padding)

    return Case(
        f"{kind}_pool",
        f"{size}x{size} s{stride} {padding} {H}x{W}x{C} N={N}",
        {"x": rng.standard_normal(shape)},
        forward,
        lambda dout, cache: (getattr(layers, f"{kind}_pool_backward")(dout, cache),),
        lambda x: getattr(torch_ref, f"{kind}_pool")(x, size, stride, padding),
    )


def layer_cases(seed=0):
    """Every layer as the networks use it, and odd configurations; built at once (all are cheap)."""
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
        "relu", "5x7x3 N=2", {"x": x_relu}, lambda x: layers.relu_forward(x),
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


# ------------------------------------------------------------------------------------- costs
def _scalar(J):
    """A cost as the engine's output: a 0-d float64 array."""
    return np.asarray(J, dtype=np.float64)


def _cost_case(*args, **kwargs):
    """A cost's Case: its gradient's error measured against its largest element (see rel_error_normwise)."""
    return Case(*args, normwise=True, **kwargs)


def _shape(a):
    return "x".join(str(n) for n in a.shape[1:])


def _like(a, name):
    """`call`'s expectation of a gradient: an array of the shape of the input `name`, a."""
    return a.shape, f"{name}'s shape"


def _content_case(rng):
    a_C, a_G = rng.standard_normal((1, 5, 7, 3)), rng.standard_normal((1, 5, 7, 3))
    return _cost_case(
        "content_cost", f"a_C, a_G 1x{_shape(a_G)}", {"a_G": a_G},
        lambda a_G: (_scalar(call(costs.compute_content_cost, a_C, a_G, expect="number")), a_G),
        lambda dJ, a_G: (dJ * call(costs.content_cost_backward, a_C, a_G, expect=_like(a_G, "a_G")),),
        lambda a_G: torch_ref.content_cost(torch_ref.to_torch(a_C), a_G),
        h=1e-3,  # a quadratic: centred differences are exact, a larger step has less round-off
    )


def _gram_case(rng):
    A = rng.standard_normal((5, 11))
    slips = {(11, 11): "A.T @ A instead of A @ A.T?"}
    return _cost_case(
        "gram_matrix", "A 5x11 = (nC, nH*nW), dG not symmetric", {"A": A},
        lambda A: (call(costs.gram_matrix, A, expect=((5, 5), "(nC, nC)"), hints=slips), A),
        lambda dG, A: (call(costs.gram_matrix_backward, A, dG, expect=_like(A, "A")),),
        torch_ref.gram_matrix,
        h=1e-3,
    )


def _layer_style_case(rng):
    a_S, a_G = rng.standard_normal((1, 6, 4, 3)), rng.standard_normal((1, 5, 7, 3))
    return _cost_case(
        "layer_style_cost", f"a_S 1x{_shape(a_S)}, a_G 1x{_shape(a_G)} (other sizes)", {"a_G": a_G},
        lambda a_G: (_scalar(call(costs.compute_layer_style_cost, a_S, a_G, expect="number")), a_G),
        lambda dJ, a_G: (dJ * call(costs.layer_style_cost_backward, a_S, a_G, expect=_like(a_G, "a_G")),),
        lambda a_G: torch_ref.layer_style_cost(torch_ref.to_torch(a_S), a_G),
    )


def _layer_style_fast_case(rng):
    a_S, a_G = rng.standard_normal((1, 4, 9, 5)), rng.standard_normal((1, 7, 3, 5))

    def forward(a_G):
        n_C = a_S.shape[-1]
        target = call(costs.style_target, a_S, expect=((n_C, n_C), "(nC, nC)"))
        J, da = costs.layer_style_cost_from_target(target, a_G)
        return _scalar(returned(costs.layer_style_cost_from_target, J, "number")), da

    return _cost_case(
        "layer_style_cost_fast", f"style_target of 1x{_shape(a_S)}, a_G 1x{_shape(a_G)}", {"a_G": a_G},
        forward, lambda dJ, da: (dJ * da,),
        lambda a_G: torch_ref.layer_style_cost(torch_ref.to_torch(a_S), a_G),
    )


_STYLE_LAYERS = (("conv1", 0.3), ("fire2", 0.7))


def _style_inputs(rng):
    a_S = {"conv1": rng.standard_normal((1, 6, 5, 3)), "fire2": rng.standard_normal((1, 3, 4, 4))}
    a_G = {"conv1": rng.standard_normal((1, 5, 7, 3)), "fire2": rng.standard_normal((1, 3, 3, 4))}
    return a_S, a_G


def _torch_style_cost(a_S, a_G_tensors):
    return sum(lam * torch_ref.layer_style_cost(torch_ref.to_torch(a_S[name]), a_G_tensors[name])
               for name, lam in _STYLE_LAYERS)


def _style_case(rng):
    a_S, a_G = _style_inputs(rng)
    return _cost_case(
        "style_cost", "2 layers, lambda 0.3 and 0.7, style and generated of other sizes", dict(a_G),
        lambda **a_G: (_scalar(call(costs.compute_style_cost, a_S, a_G, _STYLE_LAYERS, expect="number")), a_G),
        lambda dJ, a_G: tuple(dJ * g for g in costs.style_cost_backward(a_S, a_G, _STYLE_LAYERS).values()),
        lambda **a_G: _torch_style_cost(a_S, a_G),
    )


def _total_case(rng):
    """alpha J_content + beta J_style, the content layer also a style layer: their gradients add there."""
    a_S, a_G = _style_inputs(rng)
    content_layer, alpha, beta = "fire2", 7.0, 3.0
    a_C = rng.standard_normal(a_G[content_layer].shape)

    def forward(**a_G):
        J_content = call(costs.compute_content_cost, a_C, a_G[content_layer], expect="number")
        J_style = call(costs.compute_style_cost, a_S, a_G, _STYLE_LAYERS, expect="number")
        return _scalar(call(costs.total_cost, J_content, J_style, alpha=alpha, beta=beta, expect="number")), a_G

    def backward(dJ, a_G):
        grads = {name: beta * g for name, g in costs.style_cost_backward(a_S, a_G, _STYLE_LAYERS).items()}
        grads[content_layer] = grads[content_layer] + alpha * call(
            costs.content_cost_backward, a_C, a_G[content_layer], expect=_like(a_G[content_layer], "a_G"))
        return tuple(dJ * grads[name] for name in a_G)

    def torch_forward(**a_G):
        J_content = torch_ref.content_cost(torch_ref.to_torch(a_C), a_G[content_layer])
        return alpha * J_content + beta * _torch_style_cost(a_S, a_G)

    return _cost_case("total_cost", f"alpha {alpha:g}, beta {beta:g}; content at fire2, also a style layer",
                      dict(a_G), forward, backward, torch_forward)


def _total_variation_case(rng):
    x = rng.standard_normal((2, 5, 6, 3))
    return _cost_case(
        "total_variation", f"x {x.shape[1]}x{x.shape[2]}x{x.shape[3]} N=2", {"x": x},
        lambda x: (_scalar(call(costs.compute_total_variation_cost, x, expect="number")), x),
        lambda dJ, x: (dJ * call(costs.total_variation_cost_backward, x, expect=_like(x, "x")),),
        torch_ref.total_variation_cost,
        h=1e-3,  # a quadratic
    )


_COST_CASES = {
    "content_cost": _content_case, "gram_matrix": _gram_case, "layer_style_cost": _layer_style_case,
    "layer_style_cost_fast": _layer_style_fast_case, "style_cost": _style_case, "total_cost": _total_case,
    "total_variation": _total_variation_case,
}


# ------------------------------------------------------------------------------- transformer
def _copying_layer_case(name, label, x, amount, forward, backward, torch_forward):
    """A row for a layer that only copies x's values (padding, upsampling) by `amount`; x (N, H, W, C)."""
    N, H, W, C = x.shape
    return Case(
        name, f"{label} {H}x{W}x{C} N={N}", {"x": x},
        lambda x: forward(x, amount), lambda dout, cache: (backward(dout, cache),),
        lambda x: torch_forward(x, amount),
        h=1e-3,  # linear in x: no truncation error at any step
    )


def transformer_cases(seed=0):
    """The real-time style network's layers on odd shapes, and a small whole network's gradients."""
    rng = np.random.default_rng([seed, 200])
    cases = []
    for shape, pad in (((2, 5, 7, 3), 2), ((1, 6, 4, 2), 3), ((1, 3, 3, 2), 1)):
        cases.append(_copying_layer_case("reflection_pad", f"p{pad}", rng.standard_normal(shape), pad,
                                         tl.reflection_pad_forward, tl.reflection_pad_backward,
                                         torch_ref.reflection_pad))
    for shape in ((2, 5, 7, 3), (1, 3, 4, 5)):
        N, H, W, C = shape
        cases.append(Case(
            "instance_norm", f"{H}x{W}x{C} N={N}, gamma and beta",
            {"x": rng.standard_normal(shape), "gamma": rng.standard_normal(C), "beta": rng.standard_normal(C)},
            lambda x, gamma, beta: tl.instance_norm_forward(x, gamma, beta),
            lambda dout, cache: tl.instance_norm_backward(dout, cache), torch_ref.instance_norm,
        ))
    for shape, factor in (((2, 3, 5, 2), 2), ((1, 2, 3, 3), 3)):
        cases.append(_copying_layer_case("upsample_nearest", f"x{factor}", rng.standard_normal(shape), factor,
                                         tl.upsample_nearest_forward, tl.upsample_nearest_backward,
                                         torch_ref.upsample_nearest))
    cases.append(Case(
        "residual", "5x7x3 N=2", {"x": rng.standard_normal((2, 5, 7, 3)), "fx": rng.standard_normal((2, 5, 7, 3))},
        lambda x, fx: tl.residual_forward(x, fx), lambda dout, cache: tl.residual_backward(dout, cache),
        torch_ref.residual, h=1e-3,
    ))
    scale, offset = np.array([127.5, 100.0, 50.0]), np.array([23.5, 10.7, -3.8])
    cases.append(Case(
        "scaled_tanh", "per-channel 5x7x3 N=2", {"x": rng.standard_normal((2, 5, 7, 3))},
        lambda x: tl.scaled_tanh_forward(x, scale, offset),
        lambda dout, cache: (tl.scaled_tanh_backward(dout, cache),),
        lambda x: torch_ref.scaled_tanh(x, scale, offset),
    ))
    x = rng.standard_normal((2, 7, 6, 3))
    cases.append(Case(
        "conv2d_weight_gradient", "3x3 valid 7x6x3->4 N=2 (the training's kernel gradient)",
        {"w": rng.standard_normal((3, 3, 3, 4))},
        lambda w: (fast_conv.conv2d_forward(x, w, np.zeros(4), 1, "valid")[0], None),
        lambda d, cache: (tl.conv2d_weight_gradient(x, d, 3, 3),),
        lambda w: torch_ref.conv2d(torch_ref.to_torch(x), w, torch_ref.to_torch(np.zeros(4)), 1, "valid"),
        h=1e-3,
    ))
    up = np.random.default_rng([seed, 201])
    cases.append(Case(
        "upsample_conv", "x2, reflection pad 1, 3x3 valid, 3x4x3->2 N=2 (up1 and up2's three layers at once)",
        {"x": up.standard_normal((2, 3, 4, 3)), "w": up.standard_normal((3, 3, 3, 2))},
        lambda x, w: upsample_conv.upsample_conv_forward(x, w, 2),
        lambda dout, cache: upsample_conv.upsample_conv_backward(dout, cache),
        lambda x, w: torch_ref.conv2d(torch_ref.reflection_pad(torch_ref.upsample_nearest(x, 2), 1), w, None, 1,
                                      "valid"),
        h=1e-3,  # linear in x and in w: no truncation error at any step
    ))
    cases.append(_transformer_net_case(rng))
    return cases


def _transformer_net_case(rng):
    """Every parameter's gradient of a small whole network, and the input's, for sum(out * dout)."""
    widths, blocks, noise_channels = (3, 4, 5), 1, 1
    params = transformer_net.init_params(rng, widths=widths, residual_blocks=blocks, noise_channels=noise_channels,
                                         dtype=np.float64)
    # biases and shifts away from 0, so that no gradient is checked only where it is trivially small
    params = {name: p + 0.1 * rng.standard_normal(p.shape) if not name.endswith("/kernel") else p
              for name, p in params.items()}
    names = list(params)
    scale, offset = transformer_net.output_range("caffe", np.float64)

    def forward(x, **ps):
        return transformer_net.forward(ps, x)

    def backward(dout, cache):
        dx, grads = transformer_net.backward(dout, cache)
        return (dx, *(grads[name] for name in names))

    def torch_forward(x, **ps):
        # the same noise planes forward draws from its fixed seed, beside the photo (they are input, not learnt)
        planes = transformer_net.noise_planes(tuple(x.shape[:3]) + (noise_channels,), "caffe", np.float64)
        return torch_ref.transformer_net(ps, x, torch_ref.to_torch(scale), torch_ref.to_torch(offset), noise=planes)

    return Case(
        "transformer_net", f"widths {widths}, {blocks} residual block, {noise_channels} noise plane, 1x8x12x3: x and "
        f"all {len(names)} parameters",
        {"x": 60 * rng.standard_normal((1, 8, 12, 3)), **params}, forward, backward, torch_forward,
        # a whole network's sums: the quotients' round-off reaches 1e-8 of the largest element (a
        # missing factor or sign gives 1e-1 or more); the chain rows' tolerance
        h=1e-5, samples=12, normwise=True, numeric_tol=CHAIN_NUMERIC_TOL,
    )


# ------------------------------------------------------------------------------------- chain
# The whole network in float64: what one pixel does to the cost passes through a dozen layers,
# ReLU kinks and pooling windows. A sample of pixels is differentiated numerically (two forward
# passes each; where a kink spoils a quotient, gradcheck takes it again with smaller steps). With
# the step h = 1e-3 (pixels are in units of 0..255) the sampled errors are about 1e-9 relative to
# the largest element; a missing factor, a sign or an unflipped kernel gives 1e-1 or more.
# PyTorch computes every pixel's gradient through the same weights: round-off apart (1e-15 here),
# the same numbers, so its tolerance is the layers' one. Hence CHAIN_NUMERIC_TOL, 1e-6.

# (content layer, style layers, size of the generated image, of the two style images, how many
# pixels to differentiate numerically: each costs two forward passes, VGG-19's ten times SqueezeNet's)
_CHAIN_PROBLEMS = {
    "squeezenet": ("fire3", (("conv1", 0.2), ("fire2", 0.2), ("fire3", 0.2), ("fire4", 0.2), ("fire5", 0.2)),
                   (43, 37), ((51, 45), (39, 47)), 40),
    "vgg19": ("block4_conv2", (("block1_conv1", 0.2), ("block2_conv1", 0.2), ("block3_conv1", 0.2),
                               ("block4_conv1", 0.2), ("block5_conv1", 0.2)),
              (27, 23), ((29, 25), (23, 31)), 16),
}


def _picture(rng, H, W):
    """A made-up photo (H, W, 3) in 0..255, float64: smooth colour waves and some grain."""
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    img = np.empty((H, W, 3))
    for c in range(3):
        fy, fx, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
        img[..., c] = 128 + 80 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255)


class _Networks:
    """The float64 networks of the chain rows, loaded once per (model, pooling) for all its rows."""

    def __init__(self):
        self.loaded = {}

    def get(self, model, pooling):
        from scratchnst import networks
        from scratchnst import weights as weights_io
        from scratchnst.errors import UserError

        key = (model, pooling)
        if key not in self.loaded:
            try:
                # gradcheck has no --weights: the message names the folders searched instead
                path = weights_io.find_weights(model, weights_flag=None)
            except UserError as error:  # not installed: the rows are skipped, as PyTorch's are without torch
                self.loaded[key] = Skip(str(error))
            else:
                try:
                    self.loaded[key] = networks.load(model, weights=path, pooling=pooling, dtype=np.float64)
                except UserError as error:  # installed but broken: each row is an ERROR, not a skip
                    self.loaded[key] = Unusable(str(error))
        if isinstance(self.loaded[key], (Skip, Unusable)):
            raise self.loaded[key]
        return self.loaded[key]


def _chain_case(nets, model, kind, seed):
    """dJ/dx through the network for one cost: "content", "style", or "total" (make_cost_function)."""
    from scratchnst import image, transfer

    pooling = "max" if kind == "total" else "avg"
    network = nets.get(model, pooling)
    content_layer, style_layers, (H, W), style_sizes, samples = _CHAIN_PROBLEMS[model]
    rng = np.random.default_rng([seed, CHAIN_MODELS.index(model), ("content", "style", "total").index(kind)])

    def preprocessed(H, W):
        return image.preprocess(_picture(rng, H, W), network.preprocessing)

    x0, content_x = preprocessed(H, W), preprocessed(H, W)
    style_xs = [preprocessed(*size) for size in style_sizes]
    x0 = x0 + rng.normal(0, 10, x0.shape)  # the generated image: a picture with noise, as stylize starts
    if kind == "content":
        a_C = network.forward(content_x, [content_layer])[content_layer]
        used_style, blend, weights = [], [], {"alpha": 1.0, "beta": 0.0}

        def forward(x):
            a_G = network.forward(x, [content_layer])[content_layer]
            return _scalar(call(costs.compute_content_cost, a_C, a_G, expect="number")), a_G

        def backward(dJ, a_G):
            da = call(costs.content_cost_backward, a_C, a_G, expect=_like(a_G, "a_G"))
            return (dJ * network.backward({content_layer: da}),)

        config = f"{content_layer} -> pixels, 1x{H}x{W}x3"
    elif kind == "style":
        names = [name for name, _ in style_layers]
        a_S = network.forward(style_xs[0], names)
        used_style, blend, weights = style_layers, [1.0], {"alpha": 0.0, "beta": 1.0}

        def forward(x):
            a_G = network.forward(x, names)
            return _scalar(call(costs.compute_style_cost, a_S, a_G, style_layers, expect="number")), a_G

        def backward(dJ, a_G):
            return (dJ * network.backward(costs.style_cost_backward(a_S, a_G, style_layers)),)

        config = f"{names[0]}..{names[-1]} -> pixels, 1x{H}x{W}x3, style {style_sizes[0][0]}x{style_sizes[0][1]}"
    else:
        from scratchnst.settings import MODEL_DEFAULTS

        d = MODEL_DEFAULTS[model]
        used_style, blend = style_layers, [0.6, 0.4]
        weights = {"alpha": d.alpha, "beta": d.beta, "tv_weight": 0.01}
        cost = transfer.make_cost_function(network, content_x, style_xs, content_layer, style_layers, blend,
                                           **weights)

        def forward(x):
            J, dx, _ = cost(x)
            return _scalar(J), dx

        def backward(dJ, dx):
            return (dJ * dx,)

        config = (f"make_cost_function, alpha {d.alpha:g} beta {d.beta:g} tv 0.01, 2 styles 0.6/0.4, "
                  f"1x{H}x{W}x3")

    def torch_forward(x):
        from scratchnst.torch_network import TorchNetwork

        cost = TorchNetwork(network).course_cost(content_x, style_xs[:len(blend)], content_layer, used_style, blend,
                                                 **weights)
        return cost(x.permute(0, 3, 1, 2))  # ours (1, H, W, 3) -> PyTorch's (1, 3, H, W)

    return Case(
        f"{model}_{kind}", f"{config}, {pooling} pool", {"x": x0}, forward, backward, torch_forward,
        h=1e-3, samples=samples, numeric_tol=CHAIN_NUMERIC_TOL, normwise=True,
    )


# ---------------------------------------------------------------------------------- the rows
def default_checks(seed=0):
    """Every row of the table, in order: layers, costs, transformer, chain (each built when it runs)."""
    checks = [Check(case.name, "layers", lambda case=case: case) for case in layer_cases(seed)]
    for i, (name, make) in enumerate(_COST_CASES.items()):
        # each row its own random stream, so that a row's inputs do not depend on the rows selected
        checks.append(Check(name, "costs", lambda make=make, i=i: make(np.random.default_rng([seed, 100 + i]))))
    checks += [Check(case.name, "transformer", lambda case=case: case) for case in transformer_cases(seed)]
    nets = _Networks()
    for model in CHAIN_MODELS:
        for kind in ("content", "style", "total"):
            checks.append(Check(f"{model}_{kind}", "chain", lambda m=model, k=kind: _chain_case(nets, m, k, seed),
                                tags=(model,)))
    return checks


def names(checks):
    """Every name --only accepts for these checks: row names, groups and tags, in table order."""
    seen = dict.fromkeys(GROUPS)
    for check in checks:
        seen.setdefault(check.name)
        for tag in check.tags:
            seen.setdefault(tag)
    return list(seen)


def select(checks, wanted):
    """The checks named by `wanted` (row names, groups like "costs", or a network's name), in table order.

    Raises:
        UsageError: a name that selects nothing; the message lists the names there are.
    """
    known = names(checks)
    for name in wanted:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"gradcheck has no check '{name}'; {hint}give one of: {', '.join(known)}")
    wanted = set(wanted)
    return [c for c in checks if c.name in wanted or c.group in wanted or wanted & set(c.tags)]


def checks_to_run(seed=0, cases=None, only=None):
    """The Checks a run makes: default_checks(seed), or the given Case or Check list, narrowed by `only`."""
    checks = default_checks(seed) if cases is None else [
        c if isinstance(c, Check) else Check(c.name, "layers", lambda c=c: c) for c in cases]
    return select(checks, only) if only else checks


def run_gradcheck(seed=0, use_torch=True, cases=None, stream=None, only=None, as_json=False, on_start=None,
                  about=None):
    """Check every case (or the given ones), print the table (or JSON), return the exit status.

    Args:
        seed: seed of the random inputs and upstream gradients.
        use_torch: False skips the PyTorch column even where torch is installed.
        cases: a list of Case or Check to run instead of default_checks(seed).
        stream: where the table goes (stdout).
        only: names or groups to select (see select).
        as_json: print `report(...)` as JSON instead of the table.
        on_start: progress callback, see gradcheck.run_checks.
        about: dict of what else --json reports (the package checked).
    """
    stream = stream or sys.stdout
    have_torch = use_torch and torch_ref.available()
    checks = checks_to_run(seed, cases, only)
    start = time.perf_counter()
    rows, skipped = gradcheck.run_checks(checks, use_torch=have_torch, seed=seed, on_start=on_start)
    seconds = time.perf_counter() - start
    note = None if have_torch else ("not installed" if use_torch else "skipped")
    print_results(rows, skipped, note, seconds, as_json, stream, about)
    return gradcheck.exit_status(rows)


def print_results(rows, skipped, torch_note, seconds, as_json=False, stream=None, about=None):
    """The table (or with as_json the report, `about` first) on stream (stdout)."""
    if as_json:
        print(json_text.dumps({**(about or {}), **gradcheck.report(rows, skipped, torch_note, seconds)}, indent=1),
              file=stream or sys.stdout)
    else:
        print(gradcheck.format_table(rows, skipped, torch_note, seconds), file=stream or sys.stdout)

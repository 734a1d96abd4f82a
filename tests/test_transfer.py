"""Tests of scratchnst.transfer: the total cost's gradient through the real SqueezeNet vs PyTorch,
the optimisation it drives, reproducibility, and every option of `stylize`."""

import threading
import time

import numpy as np
import pytest

from network_helpers import max_rel_error, random_params, torch_params, torch_squeezenet, write_keras_weights
from scratchnst import image, networks, settings, transfer
from scratchnst.errors import UserError
from scratchnst.gradcheck import rel_error, rel_error_normwise


@pytest.fixture(scope="module")
def images(shared_image):
    """Small real images: content 64x48, two styles of other sizes and aspect ratios."""
    return {
        "content": image.load_image(shared_image("tubingen.jpg"), 64),
        "starry": image.load_image(shared_image("starry_night.jpg"), 56),
        "scream": image.load_image(shared_image("the_scream.jpg"), 72),
    }


@pytest.fixture
def run(squeezenet_weights_path, shared_image):
    """stylize(tubingen, starry_night) at 64 px with the shared SqueezeNet weights."""

    def go(style=None, **options):
        options.setdefault("size", 64)
        options.setdefault("iters", 10)
        style = style if style is not None else shared_image("starry_night.jpg")
        return transfer.stylize(shared_image("tubingen.jpg"), style, weights=squeezenet_weights_path, **options)

    return go


# ------------------------------------------------------------------- the gradient vs PyTorch
def torch_gram(a):
    """Gram matrix per position of (1, nH, nW, nC) activations."""
    _, H, W, C = a.shape
    A = a.reshape(H * W, C).T
    return A @ A.T / (H * W)


def helper_name(layer):
    """network_helpers keys a fire module's output by the module's name: fire3/concat -> fire3."""
    return layer[: -len("/concat")] if layer.endswith("/concat") else layer


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize(
    "content_layer, style_layers, tv_weight",
    [
        ("fire3", [("conv1", 0.2), ("fire2", 0.2), ("fire3", 0.2), ("fire4", 0.2), ("fire5", 0.2)], 0.0),
        ("fire2", [("conv1", 0.7), ("fire6", 0.3)], 2.5),
    ],
)
def test_total_cost_gradient_matches_pytorch_through_squeezenet(
    squeezenet_weights_path, images, torch, pooling, content_layer, style_layers, tv_weight
):
    net = networks.load("squeezenet", weights=squeezenet_weights_path, pooling=pooling, dtype=np.float64)
    arch = networks.ARCHITECTURES["squeezenet"]
    content_layer = arch.resolve(content_layer)
    style_layers = [(arch.resolve(name), w) for name, w in style_layers]
    prep = lambda img: image.preprocess(img.astype(np.float64))  # noqa: E731
    rng = np.random.default_rng(0)
    generated = np.clip(images["content"] + rng.uniform(-60, 60, images["content"].shape), 0, 255)
    x = prep(generated)
    blend = [0.3, 0.7]
    alpha, beta = 10.0, 40.0
    cost = transfer.make_cost_function(
        net, prep(images["content"]), [prep(images["starry"]), prep(images["scream"])],
        content_layer, style_layers, blend, alpha, beta, tv_weight,
    )
    J, dx, parts = cost(x)

    params = torch_params(net.params)
    acts = lambda img: torch_squeezenet(torch.tensor(img), params, pooling)  # noqa: E731
    a_C = acts(prep(images["content"]))[helper_name(content_layer)]
    a_S = [acts(prep(images[k])) for k in ("starry", "scream")]
    xt = torch.tensor(x, requires_grad=True)
    a_G = torch_squeezenet(xt, params, pooling)
    _, H, W, C = a_C.shape
    J_content = ((a_C - a_G[helper_name(content_layer)]) ** 2).sum() / (4 * H * W * C)
    # Several styles: the distance to the blend (weighted average) of their Gram matrices.
    J_style = 0
    for n, w in style_layers:
        target = sum(b * torch_gram(s[helper_name(n)]) for b, s in zip(blend, a_S))
        J_style = J_style + w * ((target - torch_gram(a_G[helper_name(n)])) ** 2).sum() / (4 * target.shape[0] ** 2)
    J_tv = (((xt[:, 1:] - xt[:, :-1]) ** 2).sum() + ((xt[:, :, 1:] - xt[:, :, :-1]) ** 2).sum()) / xt.numel()
    J_torch = alpha * J_content + beta * J_style + tv_weight * J_tv
    J_torch.backward()

    assert dx.dtype == np.float64 and dx.shape == x.shape
    assert rel_error(J, J_torch.item()) < 1e-10
    assert rel_error(parts["J_content"], J_content.item()) < 1e-10
    assert rel_error(parts["J_style"], J_style.item()) < 1e-10
    # The issue asks for a relative error below 1e-6; the two differ by round-off only (~1e-12).
    assert rel_error(dx, xt.grad.numpy()) < 1e-6
    assert max_rel_error(dx, xt.grad.numpy()) < 1e-12


def test_blending_one_style_twice_is_that_style(squeezenet_weights_path, images):
    net = networks.load("squeezenet", weights=squeezenet_weights_path, dtype=np.float64)
    layers = [("conv1", 0.5), ("fire3/concat", 0.5)]
    c, s = image.preprocess(images["content"]), image.preprocess(images["starry"])
    x = image.preprocess(np.full(images["content"].shape, 100.0, np.float32))
    cast = lambda a: a.astype(np.float64)  # noqa: E731
    one = transfer.make_cost_function(net, cast(c), [cast(s)], "fire2/concat", layers, [1.0], 10.0, 40.0, 0.0)
    two = transfer.make_cost_function(net, cast(c), [cast(s), cast(s)], "fire2/concat", layers, [0.25, 0.75],
                                      10.0, 40.0, 0.0)
    J1, dx1, _ = one(cast(x))
    J2, dx2, _ = two(cast(x))
    assert J2 == pytest.approx(J1, rel=1e-12)
    np.testing.assert_allclose(dx2, dx1, rtol=1e-10, atol=1e-12 * np.abs(dx1).max())


@pytest.mark.parametrize("alpha, style_weights, dtype, expected", [
    (10.0, [0.8] * 5, np.float32, 0.8),          # the course's: beta 4, lambda 0.2 each
    (10.0, [0.8] * 5, np.float64, 0.8),
    (10.0, [0.8] * 5, np.float16, 1.0),          # float16's range is too short for any ratio
    (0.0, [0.8, 0.8], np.float32, 0.8),          # no content cost
    (10.0, [0.7 * 4, 0.3 * 4], np.float32, 1.0),  # unequal weights: each layer's own
    (10.0, [], np.float32, 1.0),                 # no style layer
    (10.0, [0.0, 0.0], np.float32, 1.0),         # beta 0
    (1e30, [0.8] * 5, np.float32, 1.0),          # the content's gradient times 1e30 / 0.8 could overflow
    (1e-30, [0.8] * 5, np.float32, 1.0),
    (10.0, [float("inf")] * 2, np.float32, 1.0),
])
def test_the_common_factor_of_the_style_gradients(alpha, style_weights, dtype, expected):
    assert transfer._common_factor(alpha, style_weights, dtype) == expected


@pytest.mark.parametrize("content_layer, layers, alpha, beta", [
    ("fire2/concat", [("conv1", 0.2), ("fire2/concat", 0.2), ("fire3/concat", 0.2)], 10.0, 4.0),  # the content
    ("fire3/concat", [("conv1", 0.5), ("fire2/concat", 0.5)], 4e4, 0.1),   # alpha / factor 8e5, just inside 1e6
    ("fire3/concat", [("conv1", 0.5), ("fire2/concat", 0.5)], 6e-8, 0.1),  # 1.2e-6, just inside 1e-6
    ("fire3/concat", [("conv1", 0.5), ("fire2/concat", 0.5)], 0.0, 4.0),   # no content cost
])
def test_the_gradient_is_the_plain_sum_when_a_factor_is_taken_out(
        squeezenet_weights_path, images, monkeypatch, content_layer, layers, alpha, beta):
    """backward(c g) = c backward(g) up to rounding: the float32 gradient agrees with the plain one (to
    float32's rounding of the largest entry: an entry near 0 is a difference of large sums)."""
    net = networks.load("squeezenet", weights=squeezenet_weights_path, dtype=np.float32)
    c, s = image.preprocess(images["content"]), image.preprocess(images["starry"])
    x = c + np.random.default_rng(8).uniform(-40, 40, c.shape).astype(np.float32)
    assert transfer._common_factor(alpha, [beta * lam for _, lam in layers], np.float32) == beta * layers[0][1]
    factored = transfer.make_cost_function(net, c, [s], content_layer, layers, [1.0], alpha, beta, 0.5)
    J, dx, parts = factored(x)
    monkeypatch.setattr(transfer, "_common_factor", lambda *args: 1.0)
    plain = transfer.make_cost_function(net, c, [s], content_layer, layers, [1.0], alpha, beta, 0.5)
    J_plain, dx_plain, parts_plain = plain(x)
    assert J == J_plain and parts == parts_plain  # the costs are not scaled: only the gradients' order of work
    assert dx.dtype == np.float32 and np.isfinite(dx).all()
    assert rel_error_normwise(dx, dx_plain) < 1e-6


@pytest.mark.parametrize("content_layer, layers", [
    ("fire3/concat", [("conv1", 0.2), ("fire2/concat", 0.2), ("fire3/concat", 0.2), ("fire4/concat", 0.2),
                      ("fire5/concat", 0.2)]),                                       # stylize's defaults
    ("fire3", [("fire3/concat", 0.5), ("conv1", 1.0), ("fire3/concat", 0.25)]),      # a layer twice, an alias
    # three terms at one layer, a weight given as np.float64: its term is float64, and the sum must stay
    # float64 until the end (added into the float32 first term, it was rounded at each step)
    ("fire3/concat", [("fire3/concat", 0.2), ("fire3/concat", np.float64(0.3)), ("conv1", 0.2)]),
])
def test_the_cost_is_the_same_whoever_computes_its_terms_and_however_late(
        squeezenet_weights_path, images, monkeypatch, content_layer, layers):
    """With two workers the style and content terms run on the other core while the backward pass goes
    down (parallel.ahead). J and dx must be those of the terms computed first and given to backward as
    arrays, bit for bit, even when that core is slow: the layers the pass cuts into bands meanwhile
    are cut as they would be otherwise, one band after another."""
    from scratchnst import costs, fast_conv, parallel

    net = networks.load("squeezenet", weights=squeezenet_weights_path, dtype=np.float32)
    c, s = image.preprocess(images["content"]), image.preprocess(images["starry"])
    x = c + np.random.default_rng(9).uniform(-40, 40, c.shape).astype(np.float32)
    previous = parallel.set_workers(2)
    monkeypatch.setattr(fast_conv, "_SPLIT_LEAST_WORK", 1)  # every layer cut, the first one's gradient too
    try:
        cost = transfer.make_cost_function(net, c, [s], content_layer, layers, [1.0], 10.0, 4.0, 0.0)
        # outside hold() (BLAS as it was set), the calling thread held up after the start: the other
        # core then takes every term (the content's float64 dot products round by BLAS's thread count)
        J_free, dx_free, parts_free = cost(x)
        real_ahead = parallel.ahead

        def late_caller(functions):
            queue = real_ahead(functions)
            time.sleep(0.03)
            return queue

        monkeypatch.setattr(parallel, "ahead", late_caller)
        J_late, dx_late, parts_late = cost(x)
        monkeypatch.setattr(parallel, "ahead", real_ahead)
        assert (J_late, parts_late) == (J_free, parts_free)
        np.testing.assert_array_equal(dx_late, dx_free)
        with parallel.hold():
            J, dx, parts = cost(x)
            slow_style = transfer.layer_style_cost_from_target

            def slowly(*args):  # the other core takes 30 ms a term: the pass reaches conv1 before it is free
                if threading.current_thread() is not threading.main_thread():
                    time.sleep(0.03)
                return slow_style(*args)

            monkeypatch.setattr(transfer, "layer_style_cost_from_target", slowly)
            J_slow, dx_slow, parts_slow = cost(x)
            monkeypatch.setattr(transfer, "layer_style_cost_from_target", slow_style)
            # the terms made first, in the calling thread, then the pass
            a_C = net.forward(c, [content_layer])[content_layer].copy()
            a_S = {name: a.copy() for name, a in net.forward(s, [name for name, _ in layers]).items()}
            a_G = net.forward(x, [content_layer] + [name for name, _ in layers])  # last: backward's caches
            common = transfer._common_factor(10.0, [4.0 * lam for _, lam in layers], np.float32)
            grads, J_style = {}, 0.0
            for name, lam in layers:
                J_layer, da = costs.layer_style_cost_from_target(costs.style_target(a_S[name]), a_G[name])
                J_style += lam * J_layer
                da = da if 4.0 * lam == common else (4.0 * lam / common) * da
                grads[name] = grads[name] + da if name in grads else da
            g = (10.0 / common) * costs.content_cost_backward(a_C, a_G[content_layer])
            grads[content_layer] = grads[content_layer] + g if content_layer in grads else g
            dx_first = net.backward({name: grad.astype(np.float32) for name, grad in grads.items()})
            dx_first = dx_first if common == 1.0 else common * dx_first
    finally:
        parallel.set_workers(previous)
    assert J_slow == J and parts_slow == parts
    np.testing.assert_array_equal(dx_slow, dx)
    assert parts["J_style"] == pytest.approx(J_style, rel=1e-12)
    np.testing.assert_array_equal(dx, dx_first)


# ---------------------------------------------------------------------- the optimisation
def test_lbfgs_lowers_the_total_cost_of_a_64_pixel_stylisation_by_90_percent(run):
    result = run(size=64, iters=50, optimizer="lbfgs")
    costs = [h["J"] for h in result.history]
    assert result.image.shape == (48, 64, 3)
    assert costs[-1] <= 0.1 * costs[0], f"J fell from {costs[0]:.4g} to {costs[-1]:.4g} only"
    assert all(b <= a for a, b in zip(costs, costs[1:])), "L-BFGS never accepts a higher cost"


def test_adam_lowers_the_total_cost_too(run):
    result = run(size=64, iters=30, optimizer="adam", lr=5.0)
    assert result.history[-1]["J"] < 0.5 * result.history[0]["J"]
    assert result.settings["lr"] == 5.0


def test_the_same_seed_gives_a_bit_identical_image(run):
    first = run(seed=7, iters=8)
    again = run(seed=7, iters=8)
    other = run(seed=8, iters=8)
    np.testing.assert_array_equal(first.image, again.image)
    assert [h["J"] for h in first.history] == [h["J"] for h in again.history]
    assert not np.array_equal(first.image, other.image)


def test_pixels_stay_in_range_and_the_result_is_float32(run):
    result = run(iters=15)
    assert result.image.dtype == np.float32
    assert result.image.min() >= 0 and result.image.max() <= 255
    assert result.image.max() - result.image.min() > 100, "a real picture, not a flat one"


# --------------------------------------------------------------------------- the options
@pytest.fixture(scope="module")
def content64(shared_image):
    """tubingen.jpg as stylize sees it at size 64: (48, 64, 3), decoded at the size it is needed at."""
    return image.load_image(shared_image("tubingen.jpg"), long_side=64)


def test_content_init_with_no_style_weight_is_already_optimal(run, content64):
    # At the content image with beta = 0: J = 0 and dJ/dx = 0, so L-BFGS stops at once.
    result = run(init="content", beta=0.0, iters=5)
    assert result.history[0]["J"] == 0.0 and result.iterations == 0
    np.testing.assert_allclose(result.image, content64, atol=1e-3)


def test_inits_start_where_they_say(run, content64, tmp_path):
    def first_image(init):
        seen = []
        run(init=init, iters=1, callback=lambda p: seen.append(p.image()) if p.iteration == 0 else None)
        return seen[0]

    gray = tmp_path / "gray.png"
    image.save_image(gray, np.full((10, 20, 3), 77, np.uint8))
    np.testing.assert_allclose(first_image("content"), content64, atol=1e-3)
    noise = first_image("content+noise") - content64
    assert 20 < np.abs(noise).mean() < 40 and np.abs(noise).max() <= transfer.COURSE_NOISE + 1e-3
    white_noise = first_image("noise")
    assert abs(white_noise.mean() - 127.5) < 10
    assert abs(np.corrcoef(white_noise.ravel(), content64.ravel())[0, 1]) < 0.1
    np.testing.assert_allclose(first_image(str(gray)), 77, atol=1e-3)
    np.testing.assert_allclose(first_image(np.full((5, 7, 3), 200.0)), 200, atol=1e-3)  # an array, resized


def test_progress_reports_every_iteration_of_every_scale(run):
    seen = []
    result = run(iters=4, scales=2, callback=seen.append)
    assert [(p.scale, p.iteration) for p in seen] == [(s, i) for s in (1, 2) for i in range(5)]
    assert [p.shape for p in seen] == [(24, 32)] * 5 + [(48, 64)] * 5
    assert [p.step for p in seen] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8] and seen[0].total_steps == 8
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == pytest.approx(1.0) and done[4] == pytest.approx(0.2)
    assert all(set(p.costs) == {"J", "J_content", "J_style", "J_tv"} for p in seen)
    assert seen[-1].image().shape == (48, 64, 3)
    assert [(h["scale"], h["iteration"]) for h in result.history] == [(p.scale, p.iteration) for p in seen]
    assert [h["J"] for h in result.history] == [p.costs["J"] for p in seen]
    assert result.iterations == 8 and result.seconds_per_iteration > 0


def test_coarse_to_fine_starts_each_scale_from_the_last_result(run):
    ends, starts = {}, {}

    def watch(p):
        if p.iteration == 0:
            starts[p.scale] = p.image()
        ends[p.scale] = p.image()

    result = run(iters=4, scales=2, callback=watch)
    assert ends[1].shape == (24, 32, 3) and starts[2].shape == (48, 64, 3)
    np.testing.assert_allclose(starts[2], image.resize_to(ends[1], 48, 64), atol=1e-3)
    np.testing.assert_array_equal(result.image, ends[2])


def test_preserve_colors_keeps_the_content_chroma(run, content64):
    plain = run(iters=6)
    kept = run(iters=6, preserve_colors=True)
    to_ycc = lambda img: img.astype(np.float64) @ transfer._RGB_TO_YCBCR.T  # noqa: E731
    inside = np.all((kept.image > 1) & (kept.image < 254), axis=-1)  # where clipping did not act
    assert inside.mean() > 0.5
    np.testing.assert_allclose(to_ycc(kept.image)[inside][:, 1:], to_ycc(content64)[inside][:, 1:], atol=0.05)
    np.testing.assert_allclose(to_ycc(kept.image)[inside][:, 0], to_ycc(plain.image)[inside][:, 0], atol=0.05)
    assert np.abs(to_ycc(plain.image)[..., 1:] - to_ycc(content64)[..., 1:]).mean() > 5


def test_preserve_content_colors_swaps_chroma_exactly():
    rng = np.random.default_rng(0)
    # Values near mid-grey, so that no swapped pixel leaves 0..255 and gets clipped.
    stylized = rng.uniform(110, 150, (5, 6, 3)).astype(np.float32)
    content = rng.uniform(110, 150, (5, 6, 3)).astype(np.float32)
    out = transfer.preserve_content_colors(stylized, content)
    ycc = lambda img: img.astype(np.float64) @ transfer._RGB_TO_YCBCR.T  # noqa: E731
    assert out.dtype == np.float32
    np.testing.assert_allclose(ycc(out)[..., 0], ycc(stylized)[..., 0], atol=1e-4)
    np.testing.assert_allclose(ycc(out)[..., 1:], ycc(content)[..., 1:], atol=1e-4)
    np.testing.assert_allclose(transfer.preserve_content_colors(content, content), content, atol=1e-4)


def test_style_scale_and_several_styles_change_the_result(run, shared_image):
    base = run(iters=5)
    scaled = run(iters=5, style_scale=1.5)
    blended = run(style=[shared_image("starry_night.jpg"), shared_image("the_scream.jpg")], style_blend=[3, 1], iters=5)
    assert blended.settings["style_blend"] == [0.75, 0.25]
    assert not np.array_equal(base.image, scaled.image)
    assert not np.array_equal(base.image, blended.image)
    with pytest.raises(UserError, match="style-scale"):
        run(iters=1, style_scale=0.1)  # a 6-pixel style image is below SqueezeNet's minimum


def test_max_and_average_pooling_give_different_images(run):
    assert not np.array_equal(run(iters=3, pool="max").image, run(iters=3, pool="avg").image)


# ------------------------------------------------------------------------------ settings
def test_resolve_settings_fills_the_model_defaults_and_is_idempotent(squeezenet_weights_path):
    settings = transfer.resolve_settings(weights=squeezenet_weights_path)
    d = transfer.MODEL_DEFAULTS["squeezenet"]
    assert settings["content_layer"] == networks.ARCHITECTURES["squeezenet"].resolve(d.content_layer)
    assert [w for _, w in settings["style_layers"]] == [w for _, w in d.style_layers]
    assert (settings["alpha"], settings["beta"], settings["tv_weight"]) == (d.alpha, d.beta, d.tv_weight)
    assert settings["lr"] is None and settings["style_blend"] == [1.0]
    assert transfer.resolve_settings(**settings) == settings


def test_resolve_settings_for_vgg19_uses_the_course_layers(tmp_path):
    fake = tmp_path / "vgg19.h5"
    fake.write_bytes(b"only its existence is checked here")
    settings = transfer.resolve_settings(model="vgg19", weights=fake, optimizer="adam")
    assert settings["content_layer"] == "block4_conv2"
    assert settings["style_layers"] == [[f"block{i}_conv1", 0.2] for i in range(1, 6)]
    assert (settings["alpha"], settings["beta"], settings["lr"]) == (10.0, 40.0, 2.0)
    short = transfer.resolve_settings(model="vgg19", weights=fake, content_layer="conv4_2",
                                      style_layers=["conv1_1", "conv2_1"])
    assert short["content_layer"] == "block4_conv2"
    assert short["style_layers"] == [["block1_conv1", 0.5], ["block2_conv1", 0.5]]


def test_the_layers_used_are_each_taken_once_content_layer_first():
    style = [("conv1", 0.25), ("fire3", 0.25), ("fire2", 0.25), ("conv1", 0.25)]
    assert settings.layers_used("fire3", style) == ["fire3", "conv1", "fire2"]
    assert settings.layers_used("fire9", [["fire2", 1.0]]) == ["fire9", "fire2"]


def test_stylize_with_vgg19_runs_on_random_weights(tmp_path):
    # VGG-19's real weights cannot be fetched here: random ones in the Keras layout exercise the
    # path (course layer names, five pools) at a small size.
    path = write_keras_weights(tmp_path / "vgg19.h5", "vgg19", random_params("vgg19", np.random.default_rng(0)))
    rng = np.random.default_rng(1)
    content = rng.uniform(0, 255, (24, 32, 3))
    style = rng.uniform(0, 255, (32, 24, 3))
    result = transfer.stylize(content, style, model="vgg19", weights=path, size=32, iters=2)
    assert result.image.shape == (24, 32, 3)
    assert result.settings["content_layer"] == "block4_conv2" and result.settings["pool"] == "avg"
    assert result.history[-1]["J"] < result.history[0]["J"]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(model="resnet"), "unknown model"),
        (dict(content_layer="conv9"), "no layer"),
        (dict(style_layers=[("conv1", -1.0)]), "style layer weights"),
        (dict(optimizer="sgd"), "unknown optimizer"),
        (dict(lr=0.1), "learning rate"),
        (dict(optimizer="adam", lr=0.0), "--lr must be a number > 0"),
        (dict(pool="median"), "pooling"),
        (dict(init="no-such-file.png"), "--init"),
        (dict(style_blend=[1.0, 2.0]), "style-blend"),
        (dict(style_blend=[0.0]), "blend"),
        (dict(alpha=-1.0), ">= 0"),
        (dict(iters=0), "at least 1"),
        (dict(style_scale=0.0), "style-scale"),
    ],
)
def test_resolve_settings_names_the_mistake(squeezenet_weights_path, shared_image, options, message):
    options.setdefault("weights", squeezenet_weights_path)
    with pytest.raises(UserError, match=message):
        transfer.resolve_settings(shared_image("tubingen.jpg"), shared_image("starry_night.jpg"), **options)


def test_missing_images_and_tiny_sizes_are_user_errors(run, tmp_path, shared_image):
    with pytest.raises(UserError, match="no such image"):
        run(style=tmp_path / "missing.jpg")
    with pytest.raises(UserError, match="--size"):
        run(size=18, iters=1)  # 14x18 px: below the 15 px that fire5 needs
    with pytest.raises(UserError, match="--size|--scales"):
        run(size=64, scales=3, iters=1)


def test_scale_sizes_halve_towards_the_coarsest():
    assert settings.scale_sizes(320, 1) == [320]
    assert settings.scale_sizes(320, 3) == [80, 160, 320]
    assert settings.scale_sizes(100, 2) == [50, 100]

"""Tests of scratchnst.training: photo batches, the training loss and its gradient (finite differences
and PyTorch), the loss going down, bit-for-bit resume, and stylising photos of any size."""

import functools
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchnst import checkpoint, image, networks, parallel, training, transformer_net
from scratchnst.errors import UsageError, UserError

from network_helpers import random_params, write_keras_weights

REPO = Path(__file__).resolve().parents[1]
CAT = REPO / "lessons" / "images" / "cat.jpg"
SWIRLS = REPO / "lessons" / "images" / "swirls.jpg"
TINY = dict(size=32, batch=2, widths=(4, 8, 8), residual_blocks=1)   # a step takes a few milliseconds


def write_photo(path, H, W, seed=0):
    """A synthetic photo: smooth colour gradients plus a little noise, (H, W) pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    picture = np.stack([255 * yy / max(1, H - 1), 255 * xx / max(1, W - 1), 128 + 60 * np.sin(xx / 5.0)], axis=-1)
    picture = np.clip(picture + rng.normal(0, 10, picture.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    """A folder of photos: crops of the shipped cat picture and synthetic ones, one in a sub-folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(CAT) as cat:
        cat = cat.convert("RGB")
        cat.crop((0, 0, 160, 120)).save(folder / "cat_left.jpg", quality=95)
        cat.crop((150, 80, 320, 213)).save(folder / "cat_right.png")
    write_photo(folder / "sub" / "gradient.png", 50, 70, seed=1)
    write_photo(folder / "tall.bmp", 90, 40, seed=2)
    (folder / "notes.txt").write_text("not a photo")
    write_photo(folder / ".hidden" / "skip.png", 40, 40)
    return folder


# ----------------------------------------------------------------------------------------- photos
def test_list_photos_is_recursive_sorted_and_skips_other_files(photos):
    names = [p.relative_to(photos).as_posix() for p in training.list_photos(photos)]
    assert names == ["cat_left.jpg", "cat_right.png", "sub/gradient.png", "tall.bmp"]


def test_list_photos_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such folder of photos"):
        training.list_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="no photos in it") as info:
        training.list_photos(tmp_path / "empty")
    assert "\n" not in str(info.value)
    (tmp_path / "file.jpg").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        training.list_photos(tmp_path / "file.jpg")


@pytest.mark.parametrize("H, W, expected", [
    (100, 150, (256, 384)),      # small: enlarged so the short side is 256
    (270, 400, (270, 400)),      # a little larger: as it is
    (3000, 4000, (294, 392)),    # large: short side 256 * 1.15
    (4000, 300, (3920, 294)),     # a long panorama: the short side decides
    (5000, 400, (3675, 294)),
])
def test_crop_source_size(H, W, expected):
    assert training.crop_source_size(H, W, 256) == expected


def test_batches_have_the_crop_shape_and_are_deterministic(photos):
    paths = training.list_photos(photos)
    first = training.PhotoBatches(paths, 32, 3, np.random.default_rng(7))
    again = training.PhotoBatches(paths, 32, 3, np.random.default_rng(7))
    other = training.PhotoBatches(paths, 32, 3, np.random.default_rng(8))
    for _ in range(4):
        a, b, c = first.next_batch(), again.next_batch(), other.next_batch()
        assert a.shape == (3, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 255
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    assert first.epoch >= 2   # 12 photos drawn from 4: every photo is visited once per epoch


def test_small_photos_are_enlarged_and_large_ones_reduced(tmp_path):
    small = write_photo(tmp_path / "p" / "small.png", 20, 30)
    batches = training.PhotoBatches([small], 48, 1, np.random.default_rng(0))
    assert batches.next_batch().shape == (1, 48, 48, 3)
    assert batches._photo(0).shape[:2] == (48, 72)
    big = write_photo(tmp_path / "p" / "big.png", 400, 300)
    batches = training.PhotoBatches([big], 48, 1, np.random.default_rng(0))
    batches.next_batch()
    assert batches._photo(0).shape[:2] == (73, 55)   # short side round(48 * 1.15)


def test_crops_smaller_than_the_scale_are_parts_of_the_photo_at_that_scale(tmp_path):
    """size sets the scale a photo is decoded at, crop the side of the square cut from it."""
    path = write_photo(tmp_path / "p" / "big.png", 400, 300)
    batches = training.PhotoBatches([path], 48, 5, np.random.default_rng(0), crop=20)
    batch = batches.next_batch()
    assert batch.shape == (5, 20, 20, 3) and batch.dtype == np.float32
    picture = batches._photo(0)
    assert picture.shape[:2] == (73, 55)   # as with 48 x 48 crops: the scale does not depend on the crop
    windows = np.lib.stride_tricks.sliding_window_view(picture.astype(np.float32), (20, 20, 3))[..., 0, :, :, :]

    def place(crop):
        """(top, left) of the 20 x 20 window of the decoded photo the crop is, mirrored or not."""
        for candidate in (crop, crop[:, ::-1]):
            found = np.argwhere((windows == candidate).all(axis=(2, 3, 4)))
            if len(found):
                return tuple(found[0])
        return None

    places = [place(crop) for crop in batch]
    assert None not in places and len(set(places)) >= 2   # windows of the photo at that scale, at random places
    with pytest.raises(ValueError, match="crop 60"):
        training.PhotoBatches([path], 48, 1, np.random.default_rng(0), crop=60)


def test_crops_are_flipped_half_the_time(tmp_path):
    """A photo exactly the crop size: every crop is the photo itself or its mirror image."""
    path = write_photo(tmp_path / "one.png", 16, 16)
    picture = image.to_uint8(image.load_image(path)).astype(np.float32)
    batches = training.PhotoBatches([path], 16, 40, np.random.default_rng(0))
    batch = batches.next_batch()
    plain = [np.array_equal(crop, picture) for crop in batch]
    mirrored = [np.array_equal(crop, picture[:, ::-1]) for crop in batch]
    assert all(p or m for p, m in zip(plain, mirrored))
    assert 10 <= sum(mirrored) <= 30


def test_random_crop_stays_inside_the_photo():
    picture = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    rng = np.random.default_rng(3)
    for _ in range(20):
        crop = training.random_crop(picture, 8, rng)
        assert crop.shape == (8, 8, 3)
        windows = [picture[t:t + 8, l:l + 8] for t in range(3) for l in range(5)]
        found = [w for w in windows if np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1])]
        assert found


def test_unreadable_photos_are_skipped_and_counted(photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    paths = training.list_photos(photos)
    batches = training.PhotoBatches(paths, 32, 2, np.random.default_rng(0))
    for _ in range(5):
        assert batches.next_batch().shape == (2, 32, 32, 3)
    assert batches.skipped == 1


def test_no_readable_photo_is_one_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"garbage")
    batches = training.PhotoBatches(training.list_photos(folder), 32, 2, np.random.default_rng(0), folder=folder)
    with pytest.raises(UserError, match="none of the 2 photos in .* could be used") as info:
        batches.next_batch()
    assert "\n" not in str(info.value)


def test_one_colour_photos_and_crops_are_passed_over(tmp_path):
    """A flat crop would make the instance norms' gradients overflow: it is drawn again, and a flat photo skipped."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (60, 50), (255, 255, 255)).save(folder / "white.jpg", quality=90)
    half = np.full((48, 96, 3), 20, np.uint8)   # left half one colour, right half a picture
    half[:, 48:] = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(half).save(folder / "half.png")
    batches = training.PhotoBatches(training.list_photos(folder), 48, 2, np.random.default_rng(0), crop=24)
    for _ in range(20):
        batch = batches.next_batch()
        assert all(not training.is_flat(crop) for crop in batch)
    assert batches.skipped == 1 and "white.jpg is one plain colour" in batches.first_error


def test_a_folder_of_one_colour_photos_is_one_line(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    Image.new("RGB", (60, 50), (0, 0, 0)).save(folder / "black.png")
    Image.new("RGB", (60, 50), (30, 90, 200)).save(folder / "blue.jpg", quality=95)
    batches = training.PhotoBatches(training.list_photos(folder), 48, 2, np.random.default_rng(0), folder=folder)
    with pytest.raises(UserError, match="none of the 2 photos in .* could be used .*one plain colour") as info:
        batches.next_batch()
    assert "\n" not in str(info.value)
    # photos with something in them, but not where any crop of this size lands
    dots = np.zeros((200, 200, 3), np.uint8)
    dots[0, 0] = 255
    Image.fromarray(dots).save(folder / "black.png")
    Image.fromarray(dots[::-1]).save(folder / "blue.jpg".replace("jpg", "png"))
    (folder / "blue.jpg").unlink()
    batches = training.PhotoBatches(training.list_photos(folder), 200, 1, np.random.default_rng(0), crop=32)
    with pytest.raises(UserError, match="every 32 px crop .* was one plain colour"):
        batches.next_batch()


# ------------------------------------------------------------------------------ loss and gradient
def tiny_problem(dtype, seed=0, size=32, batch=2):
    """A random loss network, a tiny transformer, photos and a style image, all of `dtype`."""
    rng = np.random.default_rng(seed)
    net = networks.Network("squeezenet", random_params("squeezenet", rng, dtype), pooling="avg", dtype=dtype)
    params = transformer_net.init_params(rng, (3, 4, 4), 1, dtype=dtype)
    # the network's random start hardly moves a scaled tanh's output: spread gamma and beta for a real test
    for name in params:
        if name.endswith("/gamma") or name.endswith("/beta") or name.endswith("/bias"):
            params[name] = rng.normal(0.5, 0.5, params[name].shape).astype(dtype)
    x = rng.uniform(-100, 100, (batch, size, size, 3)).astype(dtype)
    style_x = rng.uniform(-100, 100, (1, 40, 36, 3)).astype(dtype)
    return net, params, x, style_x


LAYERS = dict(content_layer="fire2", style_layers=[("conv1", 0.5), ("fire2", 0.3), ("fire3", 0.2)])


def test_step_gradient_matches_finite_differences():
    net, params, x, style_x = tiny_problem(np.float64)
    loss = training.make_loss_function(net, style_x, alpha=10.0, beta=4.0, tv_weight=0.5, **LAYERS)
    J, grads, parts = training.loss_and_grads(params, x, loss)
    assert J == pytest.approx(10 * parts["J_content"] + 4 * parts["J_style"] + 0.5 * parts["J_tv"])
    assert list(grads) == list(params)
    rng = np.random.default_rng(1)
    for name in ["conv1/kernel", "conv2/gamma", "res1/conv1/kernel", "res1/conv2/gamma", "up2/beta",
                 "conv_out/kernel", "conv_out/bias"]:
        for _ in range(2):
            index = tuple(int(rng.integers(n)) for n in params[name].shape)
            analytic = grads[name][index]
            # a ReLU kink within the step spoils a quotient (the noise planes' weights see large
            # inputs): then a smaller step, as gradcheck does
            for step in (1e-5, 1e-6):
                h = step * max(1.0, abs(params[name][index]))
                plus, minus = dict(params), dict(params)
                plus[name], minus[name] = params[name].copy(), params[name].copy()
                plus[name][index] += h
                minus[name][index] -= h
                numeric = (training.loss_and_grads(plus, x, loss)[0] - training.loss_and_grads(minus, x, loss)[0]) / (2 * h)
                if abs(numeric - analytic) <= 1e-5 * max(1e-3 * abs(J), abs(numeric), abs(analytic)):
                    break
            else:
                raise AssertionError((name, index, numeric, analytic))


def test_batch_loss_is_the_mean_of_single_image_losses():
    net, params, x, style_x = tiny_problem(np.float64)
    loss = training.make_loss_function(net, style_x, alpha=10.0, beta=4.0, tv_weight=0.5, **LAYERS)
    out = transformer_net.stylize(params, x)
    J, dout, _ = loss(out, x)
    singles = [loss(out[i:i + 1], x[i:i + 1]) for i in range(2)]
    assert J == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-12)
    np.testing.assert_allclose(dout, np.concatenate([s[1] for s in singles]) / 2, rtol=1e-10, atol=1e-12)


@pytest.fixture
def workers():
    """parallel.set_workers for one test, restored after it."""
    previous = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(previous)


@pytest.mark.parametrize("count, batch", [(2, 2), (2, 3), (3, 2), (3, 5)])
def test_a_batch_cut_by_photos_gives_the_whole_batch_step(workers, count, batch):
    """Pieces of whole photos on `count` threads: the batch's mean loss and gradients, to rounding;
    the same bits on every run; and with one worker exactly loss_and_grads."""
    net, params, x, style_x = tiny_problem(np.float64, seed=5, batch=batch)
    settings = (style_x, LAYERS["content_layer"], LAYERS["style_layers"], 10.0, 4.0, 0.5)
    workers(1)   # the layers' own splits round differently with more workers
    J, grads, parts = training.loss_and_grads(params, x, training.make_loss_function(net, *settings))
    workers(count)
    losses = training.make_loss_functions(net, *settings)
    assert len(losses) == count
    J2, grads2, parts2 = training.batch_loss_and_grads(params, x, losses)
    assert J2 == pytest.approx(J, rel=1e-12) and type(J2) is float
    assert parts2 == pytest.approx(parts, rel=1e-12) and list(grads2) == list(grads)
    for name in grads:
        np.testing.assert_allclose(grads2[name], grads[name], rtol=1e-10, atol=1e-12 * np.abs(grads[name]).max())
        assert grads2[name].dtype == np.float64
    again = training.batch_loss_and_grads(params, x, losses)
    assert again[0] == J2 and all(np.array_equal(again[1][n], grads2[n]) for n in grads)
    workers(1)
    one = training.batch_loss_and_grads(params, x, losses[:1])
    assert one[0] == J and all(np.array_equal(one[1][n], grads[n]) for n in grads)


def test_a_batch_cut_by_photos_keeps_float32(workers):
    net, params, x, style_x = tiny_problem(np.float32, seed=6, batch=2)
    workers(2)
    losses = training.make_loss_functions(net, style_x, LAYERS["content_layer"], LAYERS["style_layers"], 10.0, 4.0, 0.0)
    _, grads, _ = training.batch_loss_and_grads(params, x, losses)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_step_gradients_match_pytorch(torch):
    from scratchnst import torch_ref
    from scratchnst.torch_network import TorchNetwork

    net, params, x, style_x = tiny_problem(np.float64, seed=3)
    alpha, beta, tv = 10.0, 4.0, 0.5
    loss = training.make_loss_function(net, style_x, alpha=alpha, beta=beta, tv_weight=tv, **LAYERS)
    J, grads, _ = training.loss_and_grads(params, x, loss)

    tnet = TorchNetwork(net)
    content, style_layers = LAYERS["content_layer"], LAYERS["style_layers"]
    names = [n for n, _ in style_layers]
    tparams = {name: torch.tensor(p, requires_grad=True) for name, p in params.items()}
    scale, offset = (torch.tensor(a) for a in transformer_net.output_range("caffe", np.float64))
    with torch.no_grad():
        x_nchw = torch.tensor(x).permute(0, 3, 1, 2)
        a_C = tnet.forward(x_nchw, [content])[content]
        a_S = tnet.forward(torch.tensor(style_x).permute(0, 3, 1, 2), names)
        targets = {n: torch_ref.style_target(a_S[n], channels_last=False) for n in names}
    planes = transformer_net.noise_planes(x.shape[:3] + (transformer_net.architecture_of(params)[3],), "caffe",
                                          np.float64)   # what forward draws beside the photos
    out = torch_ref.transformer_net(tparams, torch.tensor(x), scale, offset, noise=planes)      # (N, H, W, 3)
    acts = tnet.forward(out.permute(0, 3, 1, 2), list(dict.fromkeys([content] + names)))
    total = 0.0
    for i in range(x.shape[0]):
        one = slice(i, i + 1)
        J_i = alpha * torch_ref.content_cost(a_C[one], acts[content][one])
        for n, lam in style_layers:
            J_i = J_i + beta * lam * torch_ref.layer_style_cost_from_target(targets[n], acts[n][one],
                                                                            channels_last=False)
        J_i = J_i + tv * torch_ref.total_variation_cost(out[one])
        total = total + J_i / x.shape[0]
    total.backward()
    assert float(total.detach()) == pytest.approx(J, rel=1e-9)
    for name, p in tparams.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-6, atol=1e-9 * np.abs(p.grad.numpy()).max(),
                                   err_msg=name)


def test_adam_step_leaves_its_inputs_alone():
    params = {"a": np.ones(3, np.float32), "b": np.zeros((2, 2), np.float32)}
    grads = {"a": np.array([1, -1, 0], np.float32), "b": np.ones((2, 2), np.float32)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    new, m2, v2 = training.adam_step(params, grads, m, v, 1, 0.1)
    np.testing.assert_allclose(new["a"], [0.9, 1.1, 1.0], rtol=1e-6)
    assert np.all(params["a"] == 1) and np.all(m["a"] == 0) and new["a"].dtype == np.float32


# ------------------------------------------------------------------------------------ train()
def run(photos, weights, **options):
    return training.train(SWIRLS, photos, weights=str(weights), **{**TINY, **options})


def test_loss_goes_down(photos, squeezenet_weights_path):
    result = run(photos, squeezenet_weights_path, iters=24, lr=0.02, seed=1)
    J = [h["J"] for h in result.history]
    assert len(J) == 24 and [h["iteration"] for h in result.history] == list(range(1, 25))
    assert np.mean(J[-6:]) < 0.7 * np.mean(J[:6])
    assert all(p.dtype == np.float32 for p in result.params.values())
    assert result.meta["iterations"] == 24 and result.meta["preprocessing"] == "caffe"


class Stop(Exception):
    pass


def stop_at(step):
    def callback(progress):
        if progress.iteration == step:
            raise Stop
    return callback


def test_resume_is_bit_for_bit(photos, squeezenet_weights_path, tmp_path):
    """A run stopped after step 4 (its checkpoint written) and resumed ends as one never stopped,
    its last three steps on whole photos (crops of 32 px, then 48)."""
    plan = dict(iters=7, seed=4, size=48, crop=32, final_steps=3)
    straight = run(photos, squeezenet_weights_path, **plan)
    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(Stop):
        run(photos, squeezenet_weights_path, **plan, checkpoint_path=ckpt, checkpoint_every=2, callback=stop_at(4))
    state = checkpoint.load(ckpt)
    assert state["iteration"] == 4 and len(state["history"]) == 4
    resumed = run(photos, squeezenet_weights_path, **plan, resume=state)
    assert list(resumed.params) == list(straight.params)
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip


def test_raising_iters_on_resume_with_a_constant_rate_is_bit_for_bit(photos, squeezenet_weights_path, tmp_path):
    """With a constant learning rate, 4 steps then 3 more (--iters raised) are 7 steps."""
    straight = run(photos, squeezenet_weights_path, iters=7, seed=4, lr_schedule="constant")
    ckpt = tmp_path / "run.ckpt.npz"
    first = run(photos, squeezenet_weights_path, iters=4, seed=4, checkpoint_path=ckpt, checkpoint_every=2,
                lr_schedule="constant")
    state = checkpoint.load(ckpt)
    assert state["iteration"] == 4
    resumed = run(photos, squeezenet_weights_path, iters=7, seed=4, resume=state, lr_schedule="constant")
    assert list(resumed.params) == list(straight.params)
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert len(first.history) == 4


def test_resume_refuses_other_settings_and_inputs(photos, squeezenet_weights_path, tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    run(photos, squeezenet_weights_path, iters=2, seed=4, checkpoint_path=ckpt)
    state = checkpoint.load(ckpt)
    with pytest.raises(UsageError, match="other settings .*lr"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, lr=0.5, resume=state)
    with pytest.raises(UsageError, match="other settings .*crop"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, size=48, resume=state)
    with pytest.raises(UsageError, match="other settings .*lr_schedule"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, lr_schedule="constant", resume=state)
    write_photo(photos / "new.png", 40, 40)
    with pytest.raises(UsageError, match="photos in the folder differ"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state)
    with pytest.raises(UsageError, match="not from `scratchnst train`"):
        run(photos, squeezenet_weights_path, iters=3, resume={"format": "stylize"})


@pytest.mark.parametrize("edit", ["rng state", "order out of range", "negative position", "history of numbers",
                                  "negative second moments"])
def test_a_hand_edited_checkpoint_is_damaged_not_an_internal_error(photos, squeezenet_weights_path, tmp_path, edit):
    ckpt = tmp_path / "run.ckpt.npz"
    run(photos, squeezenet_weights_path, iters=2, seed=4, checkpoint_path=ckpt)
    state = checkpoint.load(ckpt)
    state = {**state, "batches": dict(state["batches"]), "adam_v": dict(state["adam_v"])}
    if edit == "rng state":
        state["rng"] = {"bit_generator": "PCG64", "state": {"state": "x"}}
    elif edit == "order out of range":
        state["batches"]["order"] = np.array([0, 99])
    elif edit == "negative position":
        state["batches"]["position"] = -1
    elif edit == "history of numbers":
        state["history"] = [1, 2]
    else:
        key = next(iter(state["adam_v"]))
        state["adam_v"][key] = -np.ones_like(state["adam_v"][key])
    with pytest.raises(UserError, match="the checkpoint is damaged"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state)


def test_an_outer_kernel_wider_than_the_crops_is_a_usage_error(photos, squeezenet_weights_path):
    with pytest.raises(UsageError, match=r"--outer-kernel 65 reflects 32 px .* use --outer-kernel 63 or less"):
        run(photos, squeezenet_weights_path, iters=1, outer_kernel=65)   # TINY's crops are 32 px
    assert run(photos, squeezenet_weights_path, iters=1, outer_kernel=63).params["conv1/kernel"].shape[0] == 63


def test_a_checkpoint_from_before_the_outer_kernel_setting_resumes_as_the_9x9_network_it_was(
        photos, squeezenet_weights_path, tmp_path):
    """Checkpoints written before `outer_kernel` was a setting hold 9x9 networks: --outer-kernel 9 resumes them."""
    ckpt = tmp_path / "run.ckpt.npz"
    straight = run(photos, squeezenet_weights_path, iters=3, seed=4, outer_kernel=9, lr_schedule="constant")
    run(photos, squeezenet_weights_path, iters=2, seed=4, outer_kernel=9, checkpoint_path=ckpt, lr_schedule="constant")
    state = checkpoint.load(ckpt)
    del state["settings"]["outer_kernel"]
    with pytest.raises(UsageError, match="other settings .*outer_kernel: checkpoint 9, now 5"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state, lr_schedule="constant")
    resumed = run(photos, squeezenet_weights_path, iters=3, seed=4, outer_kernel=9, resume=state, lr_schedule="constant")
    assert resumed.params["conv1/kernel"].shape[0] == 9
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name


def test_a_checkpoint_from_before_the_noise_setting_resumes_as_the_network_without_noise_it_was(
        photos, squeezenet_weights_path, tmp_path):
    ckpt = tmp_path / "run.ckpt.npz"
    straight = run(photos, squeezenet_weights_path, iters=3, seed=4, noise_channels=0, lr_schedule="constant")
    run(photos, squeezenet_weights_path, iters=2, seed=4, noise_channels=0, checkpoint_path=ckpt,
        lr_schedule="constant")
    state = checkpoint.load(ckpt)
    del state["settings"]["noise_channels"]
    with pytest.raises(UsageError, match="other settings .*noise_channels: checkpoint 0, now 1"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state, lr_schedule="constant")
    resumed = run(photos, squeezenet_weights_path, iters=3, seed=4, noise_channels=0, resume=state,
                  lr_schedule="constant")
    assert resumed.params["conv1/kernel"].shape[2] == 3
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name


def test_a_checkpoint_from_before_adam_beta2_resumes_with_the_beta2_it_was_trained_with(
        photos, squeezenet_weights_path, tmp_path):
    """Such runs were trained with Adam's usual 0.999, the default: they go on, bit for bit; given another
    --adam-beta2, they are refused as any other setting that differs."""
    ckpt = tmp_path / "run.ckpt.npz"
    straight = run(photos, squeezenet_weights_path, iters=3, seed=4, lr_schedule="constant")
    run(photos, squeezenet_weights_path, iters=2, seed=4, checkpoint_path=ckpt, lr_schedule="constant")
    state = checkpoint.load(ckpt)
    del state["settings"]["adam_beta2"]
    resumed = run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state, lr_schedule="constant")
    assert resumed.meta["adam_beta2"] == 0.999
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name
    with pytest.raises(UsageError, match="other settings .*adam_beta2: checkpoint 0.999, now 0.99"):
        run(photos, squeezenet_weights_path, iters=3, seed=4, resume=state, adam_beta2=0.99, lr_schedule="constant")


def test_adam_beta2_changes_the_run_and_is_recorded(photos, squeezenet_weights_path):
    default = run(photos, squeezenet_weights_path, iters=3, seed=4)
    short = run(photos, squeezenet_weights_path, iters=3, seed=4, adam_beta2=0.99)
    assert default.meta["adam_beta2"] == training.DEFAULT_ADAM_BETA2 == 0.999 and short.meta["adam_beta2"] == 0.99
    assert not np.array_equal(default.params["conv1/kernel"], short.params["conv1/kernel"])
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(UsageError, match="--adam-beta2 must be a number from 0 to below 1"):
            training.resolve_train_settings(weights=str(squeezenet_weights_path), adam_beta2=bad)


def test_each_step_draws_new_noise_from_the_runs_generator(photos, squeezenet_weights_path, monkeypatch):
    planes = []
    step = training.batch_loss_and_grads
    monkeypatch.setattr(training, "batch_loss_and_grads",
                        lambda params, x, *a: planes.append(x[..., 3:].copy()) or step(params, x, *a))
    run(photos, squeezenet_weights_path, iters=3, seed=4, noise_channels=2)
    assert [p.shape[-1] for p in planes] == [2, 2, 2]
    assert not np.array_equal(planes[0], planes[1]) and np.std(planes[0]) == pytest.approx(transformer_net.NOISE_STD, rel=0.2)
    again = []
    monkeypatch.setattr(training, "batch_loss_and_grads",
                        lambda params, x, *a: again.append(x[..., 3:].copy()) or step(params, x, *a))
    run(photos, squeezenet_weights_path, iters=3, seed=4, noise_channels=2)
    assert all(np.array_equal(a, b) for a, b in zip(planes, again))   # the run's seed decides them


def test_the_last_steps_train_on_whole_photos_at_their_share_of_the_schedule(photos, squeezenet_weights_path,
                                                                           monkeypatch):
    sides, rates = [], []
    step, adam_step = training.batch_loss_and_grads, training.adam_step
    monkeypatch.setattr(training, "batch_loss_and_grads", lambda params, x, *a: sides.append(x.shape[1:3]) or
                        step(params, x, *a))
    monkeypatch.setattr(training, "adam_step", lambda *a: rates.append(a[5]) or adam_step(*a))
    result = run(photos, squeezenet_weights_path, size=48, crop=32, iters=5, final_steps=2, lr=0.02)
    assert sides == [(32, 32)] * 3 + [(48, 48)] * 2
    assert result.meta["final_steps"] == 2 and result.settings["final_steps"] == 2
    # a 48 px step has (48/32)^2 = 2.25 times a crop's pixels: the cosine runs over 3 + 2 * 2.25 units
    units = [0, 1, 2, 3, 5.25]
    assert rates == pytest.approx([0.02 * (1 + np.cos(np.pi * u / 7.5)) / 2 for u in units], rel=1e-12)
    sides.clear()
    run(photos, squeezenet_weights_path, size=48, crop=32, iters=3, final_steps=0)
    assert sides == [(32, 32)] * 3
    sides.clear()
    run(photos, squeezenet_weights_path, size=48, crop=32, iters=2, final_steps=2)
    assert sides == [(48, 48)] * 2


def test_eta_counts_the_longer_whole_photo_steps(photos, squeezenet_weights_path, monkeypatch):
    """On a clock where a step takes its pixels' time (a 32 px crop 1 s, a 48 px photo 2.25 s), the
    ETA is exact: the work left; seconds per step is that of the steps of the current size."""
    clock = [100.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    step = training.batch_loss_and_grads

    def timed(params, x, *a):
        clock[0] += (x.shape[1] / 32) ** 2
        return step(params, x, *a)

    monkeypatch.setattr(training, "batch_loss_and_grads", timed)
    seen = []
    run(photos, squeezenet_weights_path, size=48, crop=32, iters=5, final_steps=2,
        callback=lambda p: seen.append((p.iteration, p.seconds_per_step, p.eta)))
    assert seen == [(1, 1.0, 6.5), (2, 1.0, 5.5), (3, 1.0, 4.5), (4, 2.25, 2.25), (5, 2.25, 0.0)]


def test_the_default_whole_photo_phase_is_a_twelfth_of_the_steps(squeezenet_weights_path):
    resolve = functools.partial(training.resolve_train_settings, weights=str(squeezenet_weights_path))
    assert resolve()["final_steps"] == training.DEFAULT_PHOTOS // resolve()["batch"] // 12 > 0
    assert resolve(iters=25)["final_steps"] == 2 and resolve(iters=11)["final_steps"] == 0
    assert resolve(iters=25, final_steps=25)["final_steps"] == 25


def test_the_default_batch_is_one_photo_per_core_and_iters_follow_it(squeezenet_weights_path):
    resolve = functools.partial(training.resolve_train_settings, weights=str(squeezenet_weights_path))
    previous = parallel.set_workers(1)
    try:
        one = resolve()
        parallel.set_workers(2)
        two = resolve()
        given = resolve(batch=3, iters=7)
    finally:
        parallel.set_workers(previous)
    assert (one["batch"], one["iters"]) == (1, training.DEFAULT_PHOTOS)
    assert (two["batch"], two["iters"]) == (2, training.DEFAULT_PHOTOS // 2)
    assert (given["batch"], given["iters"]) == (3, 7)
    assert resolve(batch=training.DEFAULT_PHOTOS + 1)["iters"] == 1   # at least one step, not "--iters 0"


def test_the_memory_check_counts_a_loss_network_for_each_helper_process(squeezenet_weights_path, monkeypatch):
    """Batch 2 at 256 px: 150 MB + 262 MB in one process; with a helper, its loss network too (562 MB)."""
    from scratchnst import settings

    monkeypatch.setattr(settings, "available_memory", lambda: 500e6)
    resolve = functools.partial(training.resolve_train_settings, weights=str(squeezenet_weights_path), batch=2)
    previous = parallel.set_workers(1)
    try:
        training.check_train_memory(resolve(), SWIRLS)
        parallel.set_workers(2)
        with pytest.raises(UsageError, match="--size 256 with --batch 2 needs about 0.6 GB"):
            training.check_train_memory(resolve(), SWIRLS)
    finally:
        parallel.set_workers(previous)


def test_a_resumed_run_keeps_its_batch_and_plan_unless_told_otherwise():
    """The default batch follows the thread count: resumed on another, a run goes on as it was planned."""
    resume = {"settings": {"batch": 2, "iters": 10000, "final_steps": 833}}
    none = {"batch": None, "iters": None, "final_steps": None}
    assert training.resumed_options(none, resume) == {"batch": 2, "iters": 10000, "final_steps": 833}
    assert training.resumed_options({**none, "iters": 12000}, resume) == {"batch": 2, "iters": 12000,
                                                                           "final_steps": None}
    assert training.resumed_options({**none, "batch": 1}, resume)["batch"] == 1
    damaged = {"settings": {"batch": True, "iters": -3, "final_steps": "x"}}
    assert training.resumed_options(none, damaged) == none and training.resumed_options(none, {"settings": 7}) == none


def test_step_work_counts_whole_photo_steps_by_their_pixels():
    assert training.step_work(1, 10) == (0.0, 10.0) and training.step_work(11, 10) == (10.0, 10.0)
    assert [training.step_work(k, 5, 2, 4.0)[0] for k in range(1, 7)] == [0, 1, 2, 3, 7, 11]
    assert training.step_work(3, 5, 2, 4.0)[1] == 11.0
    rates = [training.learning_rate(1.0, k, 5, "cosine", 2, 4.0) for k in range(1, 6)]
    assert all(a > b > 0 for a, b in zip(rates, rates[1:]))
    assert rates[4] == pytest.approx((1 + np.cos(np.pi * 7 / 11)) / 2, rel=1e-15)
    assert training.learning_rate(1.0, 4, 5, "constant", 2, 4.0) == 1.0


def test_the_plan_of_steps_may_change_on_resume(photos, squeezenet_weights_path, tmp_path):
    """--final-steps, like --iters, may differ on resume (its default follows --iters); checkpoints
    from before the setting had no whole-photo phase."""
    ckpt = tmp_path / "run.ckpt.npz"
    plan = dict(seed=4, size=48, crop=32, lr_schedule="constant")
    straight = run(photos, squeezenet_weights_path, iters=4, final_steps=1, **plan)
    run(photos, squeezenet_weights_path, iters=2, final_steps=0, checkpoint_path=ckpt, **plan)
    state = checkpoint.load(ckpt)
    del state["settings"]["final_steps"]
    resumed = run(photos, squeezenet_weights_path, iters=4, final_steps=1, resume=state, **plan)
    for name in straight.params:
        assert np.array_equal(resumed.params[name], straight.params[name]), name


def test_fit_steps_is_the_most_steps_that_fit():
    assert training.fit_steps(100.0, 1.0, 4.0, 10, 2) == (10, 2)   # all fit: never more than asked
    assert training.fit_steps(11.0, 1.0, 4.0, 12, 3) == (7, 1)    # 8 steps: 6 crops + 2 whole = 14 s
    assert training.fit_steps(0.5, 1.0, 4.0, 12, 3) == (1, 0)     # not even one: one step, a crop
    assert training.fit_steps(10.0, 1.0, 1.0, 100, 0, snapshot_seconds=5.0, snapshot_every=2) == (3, 0)
    rng = np.random.default_rng(0)
    for _ in range(300):   # against a plain search of every plan
        iters = int(rng.integers(1, 60))
        final = int(rng.integers(0, iters + 1))
        crop, whole, snap = rng.uniform(0.1, 2.0), rng.uniform(0.1, 8.0), rng.uniform(0.0, 3.0)
        every, seconds = int(rng.integers(0, 5)), rng.uniform(0.0, 80.0)

        def cost(n):
            f = final * n // iters
            return (n - f) * crop + f * whole + (n // every if every else 0) * snap

        fitting = [n for n in range(1, iters + 1) if cost(n) <= seconds]
        expected = max(fitting, default=1)
        assert training.fit_steps(seconds, crop, whole, iters, final, snap, every) == (expected, final * expected // iters)


def test_a_time_budget_times_the_steps_then_plans_as_many_as_fit(photos, squeezenet_weights_path, monkeypatch):
    """On a clock where a step takes its pixels' time (a 32 px crop 1 s, a 48 px photo 2.25 s) and
    decoding a photo 0.5 s, the budget's timing (3 photos, 6 crop steps and 3 whole ones, 14.25 s)
    leaves 15.75 s of half a minute, of which BUDGET_SHARE plans 7 of the 20 steps asked for, 3 of
    them on whole photos (their share), and the 4 photos' decoding."""
    clock = [100.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(training, "BUDGET_SHARE", 0.93)
    step, sides, decode = training.batch_loss_and_grads, [], training.PhotoBatches._photo

    def timed(params, x, *a):
        clock[0] += (x.shape[1] / 32) ** 2
        sides.append(x.shape[1])
        return step(params, x, *a)

    def decoding(self, index):
        clock[0] += 0.0 if index in self._cache else 0.5
        return decode(self, index)

    monkeypatch.setattr(training, "batch_loss_and_grads", timed)
    monkeypatch.setattr(training.PhotoBatches, "_photo", decoding)
    plans, seen = [], []
    result = run(photos, squeezenet_weights_path, size=48, crop=32, iters=20, final_steps=10, minutes=0.5,
                 on_plan=plans.append, callback=lambda p: seen.append((p.iteration, p.iters)))
    plan, = plans
    assert (plan.iters, plan.final_steps, plan.asked_iters, plan.asked_final_steps) == (7, 3, 20, 10)
    assert (plan.crop_seconds, plan.whole_seconds, plan.decode_seconds, plan.minutes) == (1.0, 2.25, 0.5, 0.5)
    assert plan.seconds == 4 + 3 * 2.25 + 4 * 0.5 and plan.asked_seconds == 10 + 10 * 2.25 + 4 * 0.5 and plan.fits
    assert sides == [32] * 6 + [48] * 3 + [32] * 4 + [48] * 3
    assert seen == [(k, 7) for k in range(1, 8)] and len(result.history) == 7
    assert result.settings["iters"] == 7 and result.meta["final_steps"] == 3 == result.settings["final_steps"]
    # no whole-photo step planned: none is timed (nor its memory taken); crops of the whole size: timed once
    for options, timed_sides, whole in ((dict(final_steps=0), [32] * 6, 0.0), (dict(crop=48), [48] * 6, 2.25)):
        sides.clear()
        plans.clear()
        run(photos, squeezenet_weights_path, **{**dict(size=48, crop=32, iters=20, final_steps=10), **options},
            minutes=100, on_plan=plans.append)
        assert sides[:len(timed_sides) + 1] == timed_sides + [options.get("crop", 32)], sides
        assert plans[0].whole_seconds == whole and plans[0].iters == 20
    # a budget the timing spends on its own: one step, and the plan says it did not fit
    plans.clear()
    assert len(run(photos, squeezenet_weights_path, size=48, crop=32, iters=20, minutes=0.1,
                   on_plan=plans.append).history) == 1
    assert plans[0].iters == 1 and not plans[0].fits


def _first_plan(seconds, costs):
    iters, final = training.fit_steps(seconds, *costs)
    return training.TrainPlan(iters=iters, final_steps=final, asked_iters=costs[2], asked_final_steps=costs[3],
                              minutes=10.0, crop_seconds=costs[0], whole_seconds=costs[1], decode_seconds=costs[6],
                              seconds=training.plan_seconds(iters, *costs),
                              asked_seconds=training.plan_seconds(costs[2], *costs), costs=costs)


def test_replan_fits_the_steps_left_to_the_budget_at_their_real_pace():
    """A plan of 1 s crop steps and 4 s whole-photo ones (a tenth of them), 0.3 s to decode each of 20
    photos, made for 600 s, is made again after a quarter of its crop steps: at the timed pace it
    keeps about its steps; twice as slow, as many as fit in BUDGET_SHARE of what is left at that
    pace, no more; four times as fast, all 1000 asked for; with too little time even for the crop
    steps done and their share of whole photos, it ends them and trains the whole-photo steps that
    fit. The next plan goes by the pace of the steps since this one, not by the mean since the
    start; in the whole-photo steps a plan only ever keeps or cuts the steps left."""
    costs = (1.0, 4.0, 1000, 100, 0.0, 0, 0.3, 20, 1, True)
    plan = _first_plan(600.0, costs)
    at, count = training.replan_step(plan)
    assert 0 < plan.iters < 1000 and (at, count) == ((plan.iters - plan.final_steps) // 4, 1)
    total = 600.0 / training.BUDGET_SHARE   # the budget the first plan was made for, from the first step
    done = at + 20 * 0.3                    # the timed costs of the steps done: every photo decoded by then
    assert training.timed_seconds(costs, plan.iters - plan.final_steps, at) == pytest.approx(done)

    def time_of(n):   # what the first n steps of the asked plan cost at the timed pace
        return training.plan_seconds(n, *costs)

    same = training.replan(plan, at, done, 0, done, total - done)
    assert (same.at_step, same.since) == (at, 0) and same.pace == pytest.approx(1.0)
    assert plan.iters <= same.iters <= plan.iters * 1.05   # the reserve is now kept on what is left only
    slow = training.replan(plan, at, 2 * done, 0, 2 * done, total - 2 * done)
    assert slow.pace == pytest.approx(2.0) and slow.iters < 0.6 * plan.iters
    assert slow.final_steps == 100 * slow.iters // 1000
    assert 2 * (time_of(slow.iters) - done) <= training.BUDGET_SHARE * (total - 2 * done) \
        < 2 * (time_of(slow.iters + 1) - done)
    assert slow.seconds == pytest.approx(2 * done + 2 * (time_of(slow.iters) - done))
    assert slow.crop_seconds == pytest.approx(2.0) and slow.whole_seconds == pytest.approx(8.0)
    fast = training.replan(plan, at, done / 4, 0, done / 4, total - done / 4)
    assert (fast.iters, fast.final_steps) == (1000, 100)
    # too slow for the crop steps done and their share of whole photos: the crop steps end now, and
    # as many whole-photo steps follow as fit (10 of 4 s in 42 s), or none
    tight = training.replan(plan, at, done, 0, done, 10.5 * 4.0 / training.BUDGET_SHARE)
    assert (tight.iters, tight.final_steps) == (at + 10, 10)
    stuck = training.replan(plan, at, 100 * done, 0, 100 * done, 0.0)
    assert (stuck.iters, stuck.final_steps) == (at, 0)
    # the next quarter, at twice the timed pace since the last plan (1.5 times since the start)
    at2, count2 = training.replan_step(same, count)
    assert (at2, count2) == ((same.iters - same.final_steps) * 2 // 4, 2)
    later = training.replan(same, at2, done + 2 * (at2 - at), at, 2 * (at2 - at), total - done - 2 * (at2 - at))
    assert (later.since, later.pace) == (at, pytest.approx(2.0)) and later.iters < same.iters
    # in the whole-photo steps: those left, or as many as fit now, never more
    C, F = same.iters - same.final_steps, same.final_steps
    at3, count3 = training.replan_step(same, 3)
    assert (at3, count3) == (C + F // 4, 4) and F // 4 >= training.REPLAN_LEAST_WHOLE_STEPS
    window = training.timed_seconds(costs, C, at3) - training.timed_seconds(costs, C, C)   # its whole-photo steps
    r = same.iters - at3
    on_time = training.replan(same, at3, 500.0, C, window, r * 4.0 / training.BUDGET_SHARE)
    assert (on_time.iters, on_time.final_steps) == (same.iters, F)
    behind = training.replan(same, at3, 500.0, C, 2 * window, r * 4.0 / training.BUDGET_SHARE)
    assert behind.pace == pytest.approx(2.0) and (behind.iters, behind.final_steps) == (at3 + r // 2, F - r + r // 2)
    assert behind.since == C
    ahead = training.replan(same, at3, 500.0, C, window / 2, r * 4.0 / training.BUDGET_SHARE)
    assert (ahead.iters, ahead.final_steps) == (same.iters, F)
    assert training.replan_step(ahead, 4)[1] == 5 and training.replan_step(ahead, 6) is None
    # none too short to time steps by; whole-photo steps only: from the whole-photo marks
    assert training.replan_step(_first_plan(60.0, costs)) is None
    assert training.replan_step(_first_plan(150.0, costs)) == (50, 2)   # the first quarter: too few steps
    assert training.replan_step(_first_plan(600.0, (1.0, 1.0, 1000, 1000, 0.0, 0, 0.0, 0, 1, True))) == (150, 4)


@pytest.mark.parametrize("pace", [2.0, 0.5])
def test_a_run_whose_steps_are_slower_or_faster_than_timed_is_planned_again_to_end_in_its_budget(
        photos, squeezenet_weights_path, tmp_path, monkeypatch, pace):
    """On a clock where the timed steps take 1 s (a 32 px crop) and 2.25 s (a 48 px photo), and the
    run's own steps `pace` times as long: the first plan alone would end at pace x its time (past the
    budget at pace 2, far inside it at pace 0.5); made again after each quarter of its crop steps
    and of its whole-photo steps, the run ends inside the budget and near its end, and the
    checkpoint of each re-plan's step carries the new plan."""
    clock = [100.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(training, "REPLAN_LEAST_STEPS", 4)
    step, factor = training.batch_loss_and_grads, [1.0]

    def timed(params, x, *a):
        clock[0] += factor[0] * (x.shape[1] / 32) ** 2
        return step(params, x, *a)

    monkeypatch.setattr(training, "batch_loss_and_grads", timed)
    plans, seen, ckpts, planned_at = [], [], [], []

    def on_plan(plan):
        plans.append(plan)
        planned_at.append(clock[0] - 100.0)
        factor[0] = pace   # the run's steps, after the timing

    def callback(p):
        seen.append(p.iters)
        if p.iteration == plans[-1].at_step:
            ckpts.append(p.checkpoint()["settings"]["iters"])

    budget = 1.0   # minutes
    result = run(photos, squeezenet_weights_path, size=48, crop=32, iters=200, final_steps=20, minutes=budget,
                 on_plan=on_plan, callback=callback)
    first, again = plans[0], plans[1:]
    assert first.at_step == 0 and len(again) >= 2
    upcoming = training.replan_step(first)
    for before, plan in zip(plans, again):   # each made where the one before said, at the run's pace
        crop_steps = before.iters - before.final_steps
        since = before.at_step if plan.at_step <= crop_steps else max(before.at_step, crop_steps)
        assert upcoming is not None and (plan.at_step, plan.since) == (upcoming[0], since)
        assert plan.pace == pytest.approx(pace)
        upcoming = training.replan_step(plan, upcoming[1])
    assert upcoming is None
    last = plans[-1]
    assert (last.iters < first.iters) if pace > 1 else (last.iters > first.iters)
    # without the new plans, the first would have ended past the budget, or far inside it
    alone = planned_at[0] + pace * first.seconds
    assert alone > 60 * budget if pace > 1 else alone < 0.7 * 60 * budget
    changes = [k + 1 for k in range(1, len(seen)) if seen[k] != seen[k - 1]]
    assert set(changes) <= {plan.at_step for plan in again} and seen[-1] == last.iters and seen[0] == first.iters
    assert len(result.history) == last.iters == result.settings["iters"] == result.meta["iterations"]
    assert result.settings["final_steps"] == last.final_steps == result.meta["final_steps"]
    assert ckpts == [plan.iters for plan in again]
    # the steps end inside the budget, and near its end (the run's last step costs at most 2.25 s x pace)
    assert 60 * budget * 0.85 < clock[0] - 100.0 <= 60 * budget, clock[0] - 100.0


def test_whole_photo_steps_slowed_at_the_end_are_cut_to_end_in_the_budget(photos, squeezenet_weights_path,
                                                                           monkeypatch):
    """The same clock, the crop steps at their timed pace but the whole-photo steps 2.5 times theirs
    (a program started beside the run near its end): the plans of the whole-photo phase cut its
    steps, never add any, and the run ends inside its budget, where the crop steps' plans alone
    would have run past it."""
    clock = [100.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(training, "REPLAN_LEAST_STEPS", 4)
    monkeypatch.setattr(training, "REPLAN_LEAST_WHOLE_STEPS", 2)
    step, plans = training.batch_loss_and_grads, []

    def timed(params, x, *a):
        clock[0] += (x.shape[1] / 32) ** 2 * (2.5 if plans and x.shape[1] == 48 else 1.0)
        return step(params, x, *a)

    monkeypatch.setattr(training, "batch_loss_and_grads", timed)
    made_at = []   # the clock when each plan was made

    def on_plan(plan):
        plans.append(plan)
        made_at.append(clock[0] - 100.0)

    result = run(photos, squeezenet_weights_path, size=48, crop=32, iters=400, final_steps=100, minutes=1.0,
                 on_plan=on_plan)
    crop_plans = [p for p in plans if p.at_step < p.iters - p.final_steps]
    whole_plans = [p for p in plans if p.at_step >= p.iters - p.final_steps > 0]
    assert len(crop_plans) >= 2 and whole_plans and plans == crop_plans + whole_plans
    crop_steps = crop_plans[-1].iters - crop_plans[-1].final_steps
    assert all(p.iters - p.final_steps == crop_steps for p in whole_plans)   # the crop steps stay as they were
    assert [p.iters for p in whole_plans] == sorted(p.iters for p in whole_plans)[::-1]   # only ever fewer
    assert whole_plans[-1].iters < crop_plans[-1].iters and all(p.pace > 1 for p in whole_plans)
    assert len(result.history) == whole_plans[-1].iters
    # the last crop steps' plan, its whole-photo steps at 2.5 times their timed 2.25 s, would have
    # ended past the minute; the run ends inside it
    alone = made_at[0] + crop_plans[-1].seconds + 1.5 * 2.25 * crop_plans[-1].final_steps
    assert clock[0] - 100.0 <= 60.0 < alone, (clock[0] - 100.0, alone)


def test_fit_steps_counts_each_photo_decoded_once_when_the_cache_holds_them_all():
    assert training.fit_steps(10.0, 1.0, 1.0, 100, 0, decode_seconds=1.0, photos=3, batch=1) == (7, 0)
    assert training.fit_steps(10.0, 1.0, 1.0, 100, 0, decode_seconds=1.0, photos=3, batch=1, cached=False) == (5, 0)
    assert training.fit_steps(10.0, 1.0, 1.0, 100, 0, decode_seconds=1.0, photos=50, batch=2) == (3, 0)


def test_a_budget_that_fits_every_step_leaves_the_run_as_it_was(photos, squeezenet_weights_path, tmp_path,
                                                                  monkeypatch):
    """The timing draws from a generator of its own and changes no parameter: the run is the same, bit
    for bit, as one not timed; its checkpoint carries the plan, which a resumed run keeps."""
    plan = dict(iters=3, seed=2, size=48, crop=32, final_steps=1)
    straight = run(photos, squeezenet_weights_path, **plan)
    plans = []
    timed = run(photos, squeezenet_weights_path, **plan, minutes=1000, on_plan=plans.append,
                checkpoint_path=tmp_path / "ck.npz")
    assert plans[0].iters == 3 and plans[0].final_steps == 1 and min(plans[0].crop_seconds, plans[0].whole_seconds) > 0
    for name in straight.params:
        assert np.array_equal(timed.params[name], straight.params[name]), name
    ckpt = tmp_path / "stopped.npz"
    # one step planned however fast the machine: no share of the 60 ms is left to fill after the timing
    monkeypatch.setattr(training, "BUDGET_SHARE", 0.0)
    with pytest.raises(Stop):
        run(photos, squeezenet_weights_path, **{**plan, "iters": 40, "final_steps": 4}, minutes=0.001,
            on_plan=plans.append, checkpoint_path=ckpt, checkpoint_every=1, callback=stop_at(1))
    assert plans[-1].iters == 1
    resumed = run(photos, squeezenet_weights_path, seed=2, size=48, crop=32, minutes=5, on_plan=plans.append,
                  resume=checkpoint.load(ckpt))
    assert len(resumed.history) == 1 and len(plans) == 2   # no new plan: the checkpoint's one step, done


@pytest.mark.parametrize("minutes", [-1, float("nan"), float("inf"), "soon"])
def test_a_time_budget_must_be_a_number_of_minutes(minutes):
    with pytest.raises(UsageError, match="--minutes must be a number of minutes >= 0"):
        training.check_minutes(minutes)
    assert training.check_minutes(0) == 0.0 and training.check_minutes("2.5") == 2.5


def test_learning_rate_schedules():
    assert [training.learning_rate(0.01, t, 5, "constant") for t in range(1, 6)] == [0.01] * 5
    cosine = [training.learning_rate(0.01, t, 5, "cosine") for t in range(1, 6)]
    assert cosine[0] == 0.01 and all(a > b > 0 for a, b in zip(cosine, cosine[1:]))
    assert cosine == pytest.approx([0.01 * (1 + np.cos(np.pi * k / 5)) / 2 for k in range(5)], rel=1e-15)
    assert training.learning_rate(1.0, 51, 100, "cosine") == pytest.approx(0.5)
    assert training.learning_rate(1.0, 1, 1, "cosine") == 1.0   # a one-step run takes its whole rate
    assert type(training.learning_rate(0.01, 3, 5, "cosine")) is float   # keeps float32 parameters float32
    with pytest.raises(ValueError, match="schedule"):
        training.learning_rate(0.01, 1, 5, "step")


def test_each_step_takes_its_scheduled_rate(photos, squeezenet_weights_path, monkeypatch):
    rates = []
    adam_step = training.adam_step
    monkeypatch.setattr(training, "adam_step", lambda *a: rates.append(a[5]) or adam_step(*a))
    run(photos, squeezenet_weights_path, iters=4, lr=0.02)
    assert rates == [training.learning_rate(0.02, t, 4, "cosine") for t in range(1, 5)]
    rates.clear()
    run(photos, squeezenet_weights_path, iters=3, lr=0.02, lr_schedule="constant")
    assert rates == [0.02] * 3


def test_training_weighs_the_content_more_than_stylize(squeezenet_weights_path):
    from scratchnst.settings import MODEL_DEFAULTS

    s = training.resolve_train_settings(weights=str(squeezenet_weights_path))
    stylize_defaults = MODEL_DEFAULTS["squeezenet"]
    assert s["alpha"] == stylize_defaults.alpha * training.TRAIN_ALPHA_FACTOR > stylize_defaults.alpha
    assert s["beta"] == stylize_defaults.beta
    assert training.resolve_train_settings(weights=str(squeezenet_weights_path), alpha=10)["alpha"] == 10.0


def test_crop_setting(photos, squeezenet_weights_path):
    resolve = functools.partial(training.resolve_train_settings, weights=str(squeezenet_weights_path))
    assert resolve()["crop"] == training.DEFAULT_CROP and resolve(size=512)["crop"] == training.DEFAULT_CROP
    assert resolve(size=64)["crop"] == 64 and resolve(size=256, crop=200)["crop"] == 200
    result = run(photos, squeezenet_weights_path, size=48, crop=32, iters=1)
    assert result.settings["crop"] == 32 and result.meta["crop"] == 32 and result.meta["lr_schedule"] == "cosine"


def test_bad_settings_are_usage_errors(photos, squeezenet_weights_path):
    for options, message in [({"size": 30}, "multiple of 4"), ({"size": 12}, "too small"), ({"batch": 0}, "--batch"),
                             ({"lr": -1.0}, "--lr"), ({"beta": float("nan")}, "--beta"), ({"iters": -1}, "--iters"),
                             ({"alpha": 0.0, "beta": 0.0}, "nothing to learn"),
                             ({"crop": 30}, "--crop must be a multiple of 4"),
                             ({"crop": 36}, r"--crop must be .* at most --size \(32\)"),
                             ({"size": 64, "crop": 12}, "--crop 12 is too small"),
                             ({"lr_schedule": "step"}, "--lr-schedule must be one of cosine, constant"),
                             ({"final_steps": -1}, r"--final-steps must be an integer from 0 to --iters \(3\)"),
                             ({"final_steps": 4}, r"--final-steps must be an integer from 0 to --iters \(3\), got 4")]:
        with pytest.raises(UsageError, match=message):
            run(photos, squeezenet_weights_path, **{"iters": 3, **options})


def test_style_image_too_small(photos, squeezenet_weights_path, tmp_path):
    thin = write_photo(tmp_path / "thin.png", 8, 200)
    with pytest.raises(UserError, match="style image is 32x1 px"):   # width x height, as everywhere
        training.train(thin, photos, weights=str(squeezenet_weights_path), iters=1, **TINY)


def test_vgg19_loss_network(photos, tmp_path):
    """model="vgg19" trains through VGG-19 (random weights here: the real file may not be on the machine)."""
    weights = write_keras_weights(tmp_path / "vgg19_random.h5", "vgg19", random_params("vgg19", np.random.default_rng(0)))
    result = training.train(SWIRLS, photos, model="vgg19", weights=str(weights), iters=2, **TINY)
    assert result.settings["content_layer"] == "block4_conv2" and len(result.history) == 2
    assert result.meta["model"] == "vgg19" and np.isfinite(result.history[-1]["J"])


def test_snapshots_are_written(photos, squeezenet_weights_path, tmp_path):
    snap = write_photo(tmp_path / "snap.png", 21, 35)
    run(photos, squeezenet_weights_path, iters=4, snapshot=snap, snapshot_every=2, snapshots_dir=tmp_path / "s")
    written = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert written == ["snapshot_00002.png", "snapshot_00004.png"]
    with Image.open(tmp_path / "s" / "snapshot_00004.png") as img:
        assert img.size == (35, 21)


# ------------------------------------------------------------------------------------ stylising
@pytest.mark.parametrize("H, W", [(1, 1), (3, 5), (9, 13), (8, 8), (30, 17)])
def test_pad_to_multiple(H, W):
    x = np.random.default_rng(0).normal(size=(1, H, W, 3))
    padded, size = training.pad_to_multiple(x)
    assert size == (H, W)
    assert padded.shape[1] % 4 == 0 and padded.shape[2] % 4 == 0 and min(padded.shape[1:3]) >= 8
    assert np.array_equal(padded[:, :H, :W], x)
    if H > 1 and W > 1 and padded.shape[1] > H:
        assert np.array_equal(padded[:, H, :W], x[:, H - 2])   # reflected, not repeated


@pytest.mark.parametrize("H, W, outer_kernel", [(37, 51, 5), (64, 64, 5), (5, 3, 5), (5, 3, 9), (6, 30, 21)])
def test_stylize_photo_keeps_the_photo_size(H, W, outer_kernel):
    """Any photo, however small for the outer convolutions' reflection (a 21x21 kernel reflects 10 px)."""
    params = transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0, outer_kernel)
    photo = np.random.default_rng(1).uniform(0, 255, (H, W, 3)).astype(np.float32)
    out = training.stylize_photo(params, {"preprocessing": "caffe"}, photo)
    assert out.shape == (H, W, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
    assert training.stylize_photo(params, {}, photo, size=20).shape[:2] == \
        image.resize_long_side(photo, 20).shape[:2]

"""Lesson 11: from optimising an image to training a network: instance normalisation, and the weights' gradients.

Run it:   python lessons/11_training_a_network.py   (about a minute; pictures go to lessons/out/)
Makes:    11_layers.png      the photo through the network's own layers: reflection padding against
                             zero padding, instance normalisation of a bright and a dark copy
          11_copying.png     an untrained network's output, then the same network after a few dozen
                             Adam steps on the content cost alone: it learns to copy photos
          11_copy_costs.png  the content cost against the training step (needs matplotlib)
Needs:    pretrained weights for the training part; the layers and checks run without them.
"""

# %%
import time

import numpy as np

import _lesson
from scratchnst import costs, image, optim, torch_ref
from scratchnst import transformer_layers as tl
from scratchnst import transformer_net as tn
from scratchnst.gradcheck import NUMERIC_TOL, eval_numerical_gradient_array, rel_error
from scratchnst.gradcheck_cases import run_gradcheck

args = _lesson.parse_args(__doc__, size=128, iters=60)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Lessons 5 to 10 optimise the PIXELS of one image: every new photo starts the optimisation
# again, tens of seconds each. Johnson, Alahi & Fei-Fei (2016, "Perceptual losses for real-time
# style transfer") move the optimisation one level up. A feed-forward network f_W, the
# "transformer", turns a photo p into a picture G = f_W(p); its WEIGHTS W are trained once per
# style, on many photos, to lower the same costs through the same pretrained loss network:
#
#     min over W of  mean over photos p of  alpha J_content(p, f_W(p)) + beta J_style(S, f_W(p))
#
# Afterwards one forward pass stylises any photo. Two things are new to the course:
#
# 1. the transformer's own layers: reflection padding, INSTANCE NORMALISATION, nearest-neighbour
#    upsampling, residual sums, a scaled tanh at the output;
# 2. gradients with respect to WEIGHTS. The course only ever needed dJ/dx (the pixels); here
#    dJ/dG from the loss network flows on through the transformer's backward pass to every
#    kernel, gamma and beta of the transformer.
#
# This lesson builds and checks both, and trains a small network on the content cost alone. Lesson
# 12 adds the style cost and compares the trained network with the optimised images.

# %% [markdown]
# ## Instance normalisation, and its gradient derived
#
# For one image n and one channel c, over the M = H * W pixels of that plane:
#
#     mu = mean(x)        var = mean((x - mu)^2)        xhat = (x - mu) / sqrt(var + eps)
#     y = gamma[c] * xhat + beta[c]
#
# Every plane comes out with mean beta and standard deviation |gamma|, whatever the photo's
# brightness and contrast were (Ulyanov et al. 2016: this is what makes a style network's output
# independent of the photo's contrast; batch normalisation, which averages over the batch too,
# does not give it).
#
# The gradient. dbeta = sum(dy) and dgamma = sum(dy * xhat) are immediate. For dx, write
# g = gamma * dy (the gradient at xhat) and sigma = sqrt(var + eps). xhat depends on x directly
# and through mu and var:
#
#     dxhat_j/dx_i = (delta_ij - 1/M) / sigma - xhat_j xhat_i / (M sigma)
#
# (the second term from d sigma / dx_i = xhat_i / M). Summing g_j times that over j:
#
#     dx = (1 / sigma) * (g - mean(g) - xhat * mean(g * xhat))
#
# Two projections: the gradient loses its mean (the output cannot move the plane's mean) and its
# component along xhat (nor its scale). `transformer_layers.instance_norm_backward` is this line;
# `instance_norm_backward_naive` goes through mu, var and sigma one by one, as autograd would.

# %%
_lesson.section("Instance normalisation: the compact gradient against the step-by-step one, differences, PyTorch")
torch = _lesson.torch_or_note()
x = rng.standard_normal((2, 5, 7, 3)) * 3 + 1
gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
dout = rng.standard_normal(x.shape)
y, cache = tl.instance_norm_forward(x, gamma, beta)
dx, dgamma, dbeta = tl.instance_norm_backward(dout, cache)
dx_naive, dgamma_naive, dbeta_naive = tl.instance_norm_backward_naive(dout, tl.instance_norm_forward_naive(x, gamma,
                                                                                                        beta)[1])
numeric = eval_numerical_gradient_array(lambda v: tl.instance_norm_forward(v, gamma, beta)[0], x, dout)
print(f"each plane of y: mean {y[0, :, :, 0].mean():+.6f} (beta {beta[0]:+.6f}), "
      f"std {y[0, :, :, 0].std():.6f} (|gamma| {abs(gamma[0]):.6f})")
print(f"compact vs step by step: dx {rel_error(dx, dx_naive):.1e}, dgamma {rel_error(dgamma, dgamma_naive):.1e}, "
      f"dbeta {rel_error(dbeta, dbeta_naive):.1e}")
print(f"dx against finite differences: {rel_error(dx, numeric):.1e}",
      "-> right" if rel_error(dx, numeric) < NUMERIC_TOL else "-> WRONG")
if torch is not None:
    xt, gt, bt = (torch_ref.to_torch(a, requires_grad=True) for a in (x, gamma, beta))
    (torch_ref.instance_norm(xt, gt, bt) * torch_ref.to_torch(dout)).sum().backward()
    print(f"against PyTorch's InstanceNorm2d(affine=True): dx {rel_error(dx, torch_ref.to_numpy(xt.grad)):.1e}, "
          f"dgamma {rel_error(dgamma, torch_ref.to_numpy(gt.grad)):.1e}")

# %% [markdown]
# The same checks, and those of the other new layers and of a whole small network's weights, are
# rows of `scratchnst gradcheck` (group `transformer`):

# %%
_lesson.section("scratchnst gradcheck --only transformer")
status = run_gradcheck(only=["transformer"], use_torch=torch is not None)

# %% [markdown]
# ## What the layers do to a photo
#
# Reflection padding continues the picture into its border as a mirror does; zero padding frames
# it in black, and a network trained on zero-padded inputs paints a dark rim. Instance
# normalisation, applied to each colour channel of a bright, flat copy of the photo and of a dark,
# contrasty one, gives back the same picture: the network's later layers never see the difference.

# %%
photo = _lesson.load(args.content, args.size)  # (H, W, 3) RGB 0..255
bright = 0.4 * photo + 140
dark = np.clip(1.6 * (photo - 128) + 60, 0, 255)
pad = max(4, args.size // 8)
reflected = tl.reflection_pad_forward(photo[np.newaxis], pad)[0][0]
zeroed = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)))


def normalised(picture):
    """Instance norm of the picture's three channels, shown with mean 128 and std 48."""
    out, _ = tl.instance_norm_forward(picture[np.newaxis], np.full(3, 48.0), np.full(3, 128.0))
    return np.clip(out[0], 0, 255)


print(f"IN of the bright and of the dark copy differ by {np.abs(normalised(bright) - normalised(dark)).mean():.1f} "
      f"grey levels on average (the copies themselves by {np.abs(bright - dark).mean():.1f})")
_lesson.save(args, "11_layers.png", _lesson.montage(
    [zeroed, reflected, bright, dark, normalised(bright), normalised(dark)],
    ["zero padding", "reflection padding", "bright, flat copy", "dark, contrasty copy", "IN(bright)", "IN(dark)"],
    cols=2))

# %% [markdown]
# ## The network
#
# Downsampling convolutions, residual blocks at a quarter of the resolution, upsampling back;
# widths chosen for a CPU (`transformer_net`'s docstring says why). Its input and output are in the
# loss network's preprocessed space, so that G = f_W(p) goes straight into it; the scaled tanh at
# the end keeps every output pixel inside 0..255. Besides the photo's three channels, conv1 reads
# one plane of Gaussian noise (hence its 4 input channels below): convolutions can only paint a
# flat sky flat, and the style's Gram matrices want texture there too (Ulyanov et al.'s texture
# networks feed noise for the same reason). `transformer_net.network_input` appends it: from a
# fixed seed when a photo is stylised, so that the same photo gives the same picture.

# %%
_lesson.section("The transformer network")
params = tn.init_params(rng)
for name, kernel, c_in, c_out, stride, upsample in tn.layer_specs():
    before = f"x{upsample} nearest upsampling, then " if upsample > 1 else ""
    print(f"  {name:12} {before}{kernel}x{kernel} conv {c_in:2d} -> {c_out:2d}, stride {stride}")
print(f"{tn.count_parameters(params):,} parameters (the paper's widths 32/64/128 would give 1.7 M)")

# %% [markdown]
# ## Gradients with respect to the weights
#
# The course's backward passes return dJ/dx to carry the gradient down; the weights were fixed.
# A convolution's backward pass also gives dJ/dw (each kernel entry meets every window it slides
# over: the correlation of the input with dout) and dJ/db = sum(dout); instance normalisation gives
# dgamma and dbeta. `transformer_net.backward` returns all of them. Check a few against finite
# differences of the whole network, in float64, for a fake loss sum(out * dout):

# %%
_lesson.section("The weights' gradients of a whole (small) network against finite differences")
small = tn.init_params(rng, widths=(3, 4, 5), residual_blocks=1, dtype=np.float64)
x_small = 50 * rng.standard_normal((1, 8, 12, 3))
out, cache = tn.forward(small, x_small)
d_small = rng.standard_normal(out.shape)
_, grads = tn.backward(d_small, cache)
for name in ("conv1/kernel", "res1/conv1/gamma", "up2/beta", "conv_out/bias"):
    def loss_of(value, name=name):
        return tn.forward({**small, name: value}, x_small)[0]

    numeric = eval_numerical_gradient_array(loss_of, small[name], d_small, h=1e-5)
    print(f"  {name:18} {str(small[name].shape):16} rel_error {rel_error(grads[name], numeric):.1e}")

# %% [markdown]
# ## Training a network instead of an image: copying photos
#
# Now the loss network. Take the content cost alone, J(W) = J_content(p, f_W(p)) at one layer:
# the network is asked to make pictures that the loss network sees as the photo itself. One
# training step: the transformer's forward pass, the loss network's forward pass to the content
# layer, the content cost's gradient there, the loss network's backward pass to the picture
# (lesson 7's chain, unchanged), then the transformer's backward pass to its weights, and an Adam
# step on every weight (lesson 8's `adam_update`, on each array). The photos are random crops of
# the lesson's photo and its mirror image, each with a new noise plane (drawn from the lesson's
# generator, as `scratchnst train` draws from its run's: a network trained on one fixed plane could
# learn to rely on that pattern).

# %%
_lesson.section(f"Training on the content cost alone: {args.iters} Adam steps")
layers_of = {"squeezenet": ["fire3"], "vgg19": ["block3_conv1"]}
net = _lesson.load_network(args, layers=layers_of)
layer = layers_of[net.name][0]
crop = max(8, (min(photo.shape[:2]) // 4) * 4)
params = tn.init_params(np.random.default_rng(args.seed))
moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in params.items()}
history = []
start = time.perf_counter()
for step in range(1, args.iters + 1):
    top = rng.integers(0, photo.shape[0] - crop + 1)
    left = rng.integers(0, photo.shape[1] - crop + 1)
    piece = photo[top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        piece = piece[:, ::-1]
    p = image.preprocess(piece.astype(np.float32), net.preprocessing)
    a_C = net.forward(p, [layer])[layer].copy()
    p_noise = tn.network_input(params, p, net.preprocessing, rng)   # the crop and a new noise plane each step
    G, cache = tn.forward(params, p_noise, net.preprocessing)
    a_G = net.forward(G, [layer])[layer]
    history.append(costs.compute_content_cost(a_C, a_G))
    dG = net.backward({layer: costs.content_cost_backward(a_C, a_G)})
    _, grads = tn.backward(dG, cache, input_grad=False)
    for name in params:
        m, v = moments[name]
        params[name], m, v = optim.adam_update(params[name], grads[name], m, v, step, lr=0.003)
        moments[name] = (m, v)
    if step == 1 or step % 10 == 0:
        print(f"  step {step:3d}: J_content {history[-1]:10.2f}  ({time.perf_counter() - start:.1f} s)")

untrained = tn.init_params(np.random.default_rng(args.seed))
H, W = (n - n % 4 for n in photo.shape[:2])
whole = image.preprocess(photo[:H, :W].astype(np.float32), net.preprocessing)
before = image.deprocess(tn.stylize(untrained, whole, net.preprocessing), net.preprocessing)
after = image.deprocess(tn.stylize(params, whole, net.preprocessing), net.preprocessing)
_lesson.save(args, "11_copying.png", _lesson.montage(
    [photo[:H, :W], before, after],
    ["the photo", "untrained network", f"after {args.iters} steps on J_content at {layer}"]))
_lesson.plot_relative_costs(args, "11_copy_costs.png", {"content cost alone": history},
                            "J_content / J_content at step 1", "Training the transformer to copy photos",
                            xlabel="Adam step")

# %% [markdown]
# ## Summary
#
# - A style network replaces the per-picture optimisation of the pixels by a one-off
#   optimisation of weights, on the same costs through the same loss network.
# - Instance normalisation takes each plane to mean beta and deviation gamma; its gradient is the
#   upstream gradient with its mean and its component along xhat removed, over sigma.
# - A layer's backward pass gives its weights' gradients besides dJ/dx; the loss network's dJ/dG is
#   simply carried one network further, to the transformer's weights.
# - With the content cost alone, the network learns to copy the photo as the loss network sees
#   it: the colours and edges come first, the fine texture last.
#
# ## Exercises
#
# 1. Derive dgamma and dbeta of instance normalisation, then check them with
#    `eval_numerical_gradient_array` as above.
# 2. Replace instance normalisation by batch normalisation (statistics over the batch too). Train
#    with a batch of one bright and one dark crop: what does the network now see?
# 3. Use zero padding instead of reflection padding in `transformer_layers` and look at the border
#    of the copied photo.
# 4. Train with the content layer of lesson 5's deep reconstruction. Which details does the
#    network stop copying?

# %%
_lesson.done()

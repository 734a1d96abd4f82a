"""Lesson 1: convolution by hand, first with loops, then vectorised; output sizes, padding and stride.

Run it:   python lessons/01_convolution.py        (a few seconds; pictures go to lessons/out/)
Makes:    01_filters.png   five hand-made kernels applied to the content image by one conv layer
Needs:    no pretrained weights.
"""

# %%
import numpy as np

import _lesson
from scratchnst import fast_conv, layers, torch_ref
from scratchnst.gradcheck import rel_error

args = _lesson.parse_args(__doc__, size=256)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Every layer of the networks that do style transfer (VGG-19, SqueezeNet) is a convolution
# followed by a ReLU. By the end of this lesson you can compute a convolution with four loops,
# predict the size of its output for any padding and stride, and compute it again with one
# matrix product, and you have checked both against scratchnst and PyTorch.
#
# Shapes, channels-last as in the course and in the Keras weight files:
#
#     x    (N, H, W, C_in)          N images, H rows, W columns, C_in channels
#     w    (KH, KW, C_in, C_out)    C_out kernels of KH x KW x C_in weights
#     b    (C_out,)                 one bias per kernel (the course's (1, 1, 1, C_out) is taken too)
#     out  (N, H_out, W_out, C_out)
#
# The whole layer is one formula. Slide the kernel over the (zero-padded) input with steps of
# `stride`; at every position multiply element by element and add:
#
#     out[n, i, j, c] = b[c] + sum over kh, kw, ci of  xpad[n, i*stride + kh, j*stride + kw, ci] * w[kh, kw, ci, c]
#
# (Deep-learning libraries call this convolution; mathematicians call it cross-correlation,
# because the kernel is not flipped. Keras and PyTorch both compute it this way.)

# %% The formula as four loops
def conv_loops(x, w, b, stride=1, pad=0):
    """Convolution with loops: pad zeros on every side, then one dot product per output value."""
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # zeros around H and W only
    H_out = (H + 2 * pad - KH) // stride + 1
    W_out = (W + 2 * pad - KW) // stride + 1
    out = np.zeros((N, H_out, W_out, C_out))
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                window = xpad[n, i * stride:i * stride + KH, j * stride:j * stride + KW, :]  # (KH, KW, C_in)
                for c in range(C_out):
                    out[n, i, j, c] = np.sum(window * w[:, :, :, c]) + b[c]
    return out


_lesson.section("A 6x6 image with a vertical edge, and a kernel that finds vertical edges")
x = np.zeros((1, 6, 6, 1))
x[0, :, 3:, 0] = 1.0  # dark left half, bright right half
edge = np.array([[-1.0, 0.0, 1.0]] * 3)[:, :, None, None]  # (3, 3, 1, 1): right minus left
out = conv_loops(x, edge, np.zeros(1))
print("input:\n", x[0, :, :, 0])
print("output (3x3 kernel, no padding, stride 1): 4x4, large only where the edge is:\n", out[0, :, :, 0])

# %% [markdown]
# ## Output sizes: padding and stride
#
# Along one axis of n pixels, a window of k pixels with step s fits
#
#     valid (no padding):      n_out = floor((n - k) / s) + 1
#     p zeros on both sides:   n_out = floor((n + 2p - k) / s) + 1
#     same (Keras/TF):         n_out = ceil(n / s), padding the total max((n_out - 1)*s + k - n, 0)
#                              split as total // 2 before and the rest AFTER (bottom, right)
#
# 'same' with stride 1 keeps the size, so a network of 3x3 'same' convolutions (VGG-19) only
# shrinks where it pools. When the total padding is odd, TensorFlow puts the extra zero at the
# bottom/right; PyTorch's `padding=1` would put one on both sides. The Keras weights were trained
# with TensorFlow's rule, so scratchnst follows it: `layers.conv_output_size` below.

# %%
_lesson.section("Output sizes: the formulas against layers.conv_output_size")
print(f"{'n':>3} {'k':>2} {'s':>2} {'padding':>8} | {'by formula':>10} {'package':>8}  pad (before, after)")
for n, k, s, padding in [(6, 3, 1, "valid"), (6, 3, 1, "same"), (7, 3, 2, "valid"), (8, 3, 2, "same"),
                         (7, 3, 2, "same"), (224, 7, 2, 3), (400, 3, 1, "same"), (111, 3, 2, "valid")]:
    if padding == "valid":
        by_formula = (n - k) // s + 1
    elif padding == "same":
        by_formula = -(-n // s)  # ceil(n / s) with integers only
    else:
        by_formula = (n + 2 * padding - k) // s + 1
    n_out, before, after = layers.conv_output_size(n, k, s, padding)
    assert n_out == by_formula
    print(f"{n:>3} {k:>2} {s:>2} {padding!s:>8} | {by_formula:>10} {n_out:>8}  ({before}, {after})")
print("8 pixels, 3x3 kernel, stride 2, 'same': 4 outputs need (4-1)*2 + 3 = 9 pixels, so ONE zero is "
      "padded, after the image (bottom/right).")

# %% The extra zero matters: 'same' is not padding=1 when the total is odd
x = rng.standard_normal((1, 8, 8, 1))
w = rng.standard_normal((3, 3, 1, 1))
same, _ = layers.conv2d_forward(x, w, np.zeros(1), stride=2, padding="same")
sym, _ = layers.conv2d_forward(x, w, np.zeros(1), stride=2, padding=1)
print(f"\n'same' and padding=1 both give {same.shape[1]}x{same.shape[2]}, but they differ by up to "
      f"{np.abs(same - sym).max():.2f}: every window is shifted by one pixel.")

# %% [markdown]
# ## Check the loops against the package
#
# `layers.conv2d_forward_naive` is the package's own loop version, kept for reading, and
# `layers.conv2d_forward`, vectorised, is the course's exercise; the networks run neither, but
# `fast_conv`'s, with the ReLU fused in (see below). All three must agree to round-off, for odd
# sizes, several images, strides and paddings. We compare with `rel_error`, the largest of
# |a - b| / (|a| + |b|) over all elements: 1e-12 or less in float64 means "the same sums, added
# in another order" (the largest ratio comes from the elements closest to zero).

# %%
_lesson.section("Loops against scratchnst, float64")
for shape, k, c_out, stride, pad in [((2, 7, 9, 3), 3, 4, 1, 1), ((1, 9, 7, 2), 5, 3, 2, 2),
                                     ((3, 6, 6, 4), 1, 5, 1, 0), ((1, 11, 10, 3), 3, 2, 2, 0)]:
    x = rng.standard_normal(shape)
    w = rng.standard_normal((k, k, shape[3], c_out))
    b = rng.standard_normal(c_out)
    mine = conv_loops(x, w, b, stride, pad)
    fast, _ = layers.conv2d_forward(x, w, b, stride=stride, padding=pad)
    naive, _ = layers.conv2d_forward_naive(x, w, b, stride=stride, padding=pad)
    print(f"x {shape}, {k}x{k} kernel -> {c_out}, stride {stride}, pad {pad}: out {mine.shape}, "
          f"rel_error vs conv2d_forward {rel_error(mine, fast):.1e}, "
          f"vs conv2d_forward_naive {rel_error(mine, naive):.1e}")

# %% [markdown]
# ## Vectorised: one matrix product (im2col)
#
# The loops do H_out * W_out * C_out small dot products in Python: far too slow for a 400x400
# image with 64 channels. The trick: copy every window into a row of a matrix ("image to
# columns"), then ONE matrix product with the kernels, unrolled in the same (kh, kw, ci) order,
# computes every output at once:
#
#     cols  (N*H_out*W_out, KH*KW*C_in)   one unrolled window per row
#     w     reshaped to (KH*KW*C_in, C_out)
#     out = cols @ w + b                  then reshaped to (N, H_out, W_out, C_out)
#
# We build `cols` with one slice per kernel tap (kh, kw), not one per output position: `KH*KW`
# slices instead of `H_out*W_out`, each a strided view of the padded input.

# %%
def conv_im2col(x, w, b, stride=1, pad=0):
    """Convolution as one matrix product of unrolled windows with unrolled kernels."""
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    H_out = (H + 2 * pad - KH) // stride + 1
    W_out = (W + 2 * pad - KW) // stride + 1
    # tap (kh, kw) of every window at once: rows kh, kh+stride, ..., columns kw, kw+stride, ...
    taps = [xpad[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride, :]
            for kh in range(KH) for kw in range(KW)]  # KH*KW arrays (N, H_out, W_out, C_in)
    cols = np.stack(taps, axis=3)  # (N, H_out, W_out, KH*KW, C_in)
    cols = cols.reshape(N * H_out * W_out, KH * KW * C_in)
    out = cols @ w.reshape(KH * KW * C_in, C_out) + b  # (N*H_out*W_out, C_out)
    return out.reshape(N, H_out, W_out, C_out)


_lesson.section("im2col against the loops, and how much faster it is")
x = rng.standard_normal((1, 48, 48, 16))
w = rng.standard_normal((3, 3, 16, 16))
b = rng.standard_normal(16)
with _lesson.timed() as t_loops:   # once: the loops take long enough to time one call
    slow = conv_loops(x, w, b, 1, 1)
# The fast versions take a millisecond or so: a single call would time the first call's set-up (fresh
# memory, buffers kept for the next call) and whatever else the machine was doing. The median of 5
# calls after a first one is what each costs.
quick, t_cols = _lesson.median_time(lambda: conv_im2col(x, w, b, 1, 1))
(pkg, _), t_pkg = _lesson.median_time(lambda: layers.conv2d_forward(x, w, b, stride=1, padding=1))
(fast, _), t_fast = _lesson.median_time(lambda: fast_conv.conv2d_forward(x, w, b, stride=1, padding=1))
print(f"x (1, 48, 48, 16), 16 kernels 3x3: loops {t_loops.seconds * 1000:.0f} ms, "
      f"im2col {t_cols * 1000:.2f} ms, layers (one product per tap) {t_pkg * 1000:.2f} ms, "
      f"fast_conv {t_fast * 1000:.2f} ms (medians of 5)")
print(f"rel_error vs loops: im2col {rel_error(quick, slow):.1e}, layers {rel_error(pkg, slow):.1e}, "
      f"fast_conv {rel_error(fast, slow):.1e}")
print(f"the im2col matrix holds {3 * 3}x the input's values: {x.size} -> {3 * 3 * x.size} "
      "(fast_conv, which the networks run, copies one block of output rows at a time instead)")

# %% [markdown]
# ## Against PyTorch
#
# An independent witness: PyTorch's `conv2d`, fed the same numbers. `scratchnst.torch_ref` moves
# the axes to PyTorch's NCHW / OIHW order and applies TensorFlow's asymmetric 'same' padding with
# an explicit `F.pad`, so the comparison includes the extra bottom/right zero.

# %%
_lesson.section("scratchnst against PyTorch, float64")
torch = _lesson.torch_or_note()
if torch is not None:
    for shape, k, stride, padding in [((2, 7, 9, 3), 3, 1, "same"), ((1, 8, 6, 3), 3, 2, "same"),
                                      ((1, 9, 11, 2), 7, 2, 3), ((1, 9, 9, 3), 3, 2, "valid")]:
        x = rng.standard_normal(shape)
        w = rng.standard_normal((k, k, shape[3], 4))
        b = rng.standard_normal(4)
        ours, _ = layers.conv2d_forward(x, w, b, stride=stride, padding=padding)
        theirs = torch_ref.to_numpy(torch_ref.conv2d(torch_ref.to_torch(x), torch_ref.to_torch(w),
                                                     torch_ref.to_torch(b), stride, padding))
        print(f"x {shape}, {k}x{k}, stride {stride}, padding {padding!r}: rel_error {rel_error(ours, theirs):.1e}")

# %% [markdown]
# ## A picture: five kernels, one layer
#
# A convolution layer with C_out kernels makes C_out "feature maps" at once. Here we design the
# kernels by hand (a trained network learns its own) and run them as ONE layer on the grey
# content image: x (1, H, W, 1), w (5, 5, 1, 5).

# %%
_lesson.section("Hand-made kernels on the content image")
image = _lesson.load(args.content, args.size)  # (H, W, 3) RGB, 0..255
grey = image.mean(axis=-1)[None, :, :, None] / 255  # (1, H, W, 1), 0..1

kernels = np.zeros((5, 5, 1, 5))
kernels[2, 2, 0, 0] = 1.0  # identity: copies the pixel
kernels[:, :, 0, 1] = 1 / 25  # 5x5 box blur: the average of the window
kernels[1:4, 1:4, 0, 2] = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]  # Sobel: vertical edges
kernels[1:4, 1:4, 0, 3] = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]  # Sobel: horizontal edges
kernels[1:4, 1:4, 0, 4] = [[0, -1, 0], [-1, 4, -1], [0, -1, 0]]  # Laplacian: edges in every direction
names = ["identity", "box blur 5x5", "vertical edges", "horizontal edges", "Laplacian"]

maps, _ = layers.conv2d_forward(grey, kernels, np.zeros(5), stride=1, padding="same")  # (1, H, W, 5)
strided, _ = layers.conv2d_forward(grey, kernels[:, :, :, 1:2], np.zeros(1), stride=2, padding="same")
print(f"input {grey.shape} -> 'same', stride 1: {maps.shape};  blur with stride 2: {strided.shape}")

tiles = [maps[0, :, :, 0] * 255, maps[0, :, :, 1] * 255]
tiles += [_lesson.stretch(np.abs(maps[0, :, :, c])) for c in (2, 3, 4)]  # edges: |response|
tiles.append(strided[0, :, :, 0] * 255)
labels = names[:2] + [f"|{n}|" for n in names[2:]] + [f"blur, stride 2: {strided.shape[1]}x{strided.shape[2]}"]
_lesson.save(args, "01_filters.png", _lesson.montage(tiles, labels, cols=3))

# %% [markdown]
# ## Summary
#
# - A convolution is one formula: at every output position, the dot product of a window of the
#   padded input with each kernel, plus the bias.
# - Output size per axis: floor((n + pad_total - k) / s) + 1; 'same' means ceil(n / s), with any
#   odd extra zero at the bottom/right (TensorFlow's rule, which the Keras weights assume).
# - Loops show the formula; im2col turns it into one matrix product, tens of times faster.
#   The package's two versions are faster still, without im2col's 9x copy of the input: `layers`
#   (one product per kernel tap), and `fast_conv` (im2col one block of output rows at a time),
#   which wins on the networks' large float32 layers rather than on this small float64 one.
#   Both agree with scratchnst and PyTorch to round-off (rel_error 1e-12 or less in float64).
#
# ## Exercises
#
# 1. Predict the output shape of a 3x3 convolution with stride 3 and 'valid' padding on a
#    (1, 17, 20, 3) input, then check with `layers.conv2d_forward`.
# 2. Design a 3x3 kernel that responds to diagonal edges and add it to the picture.
# 3. How many values does the im2col matrix of VGG-19's first layer (3x3, 3 -> 64 channels) hold
#    for a 400x400 image? And of its block1_conv2 (64 -> 64)? Why does that favour building the
#    im2col matrix one block of output rows at a time, as `fast_conv._conv_padded` does?
# 4. Add a `dilation` d to `conv_loops` (the window taps are d pixels apart). What is the output
#    size formula now?
# 5. Show that a 1x1 convolution is a matrix product over channels: compare
#    `layers.conv2d_forward(x, w, b)` with `x @ w[0, 0] + b` for w of shape (1, 1, C_in, C_out).

# %%
_lesson.done()

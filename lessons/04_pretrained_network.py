"""Lesson 4: a pretrained network from an HDF5 file: what the file holds, preprocessing, feature maps.

Run it:   python lessons/04_pretrained_network.py   (seconds; pictures go to lessons/out/)
Makes:    04_features.png   the content image and the 16 most active feature maps at a shallow,
                            a middle and a deep layer
Needs:    pretrained weights (SqueezeNet 1.1 or VGG-19): `scratchnst weights download squeezenet`.
"""

# %%
import h5py
import numpy as np

import _lesson
from scratchnst import image, layers, networks, torch_ref, visualize
from scratchnst import weights as weights_io
from scratchnst.gradcheck import rel_error, rel_error_normwise

args = _lesson.parse_args(__doc__, size=256)

# %% [markdown]
# ## Goal
#
# Style transfer does not train a network: it borrows one trained on ImageNet (1.2 million photos,
# 1000 classes) and reads its activations. This lesson opens the weights file with h5py to see
# exactly what it holds, loads it into scratchnst's network, feeds it an image preprocessed the way
# the network was trained, and looks at what its layers respond to.
#
# The course uses VGG-19 (16 convolutions, 80 MB of weights). scratchnst also runs SqueezeNet 1.1
# (25 small convolutions in "fire modules", 3 MB), much faster in NumPy on a CPU. The lesson uses
# whichever weights it finds (VGG-19 first); `--network` chooses.

# %%
_lesson.section("Where are the weights?")
name = _lesson.network_name(args)  # stops here, with the download command, if there are none
path = args.weights or weights_io.find_weights(name)
print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
print("looked in, in order:", "; ".join(f"{what}: {where if where is not None else '(not set)'}"
                                       for what, where in weights_io.search_dirs()))

# %% [markdown]
# ## What the file holds
#
# A Keras weights file is HDF5: a small file system of groups (folders) and datasets (arrays),
# each with attributes. Keras writes:
#
# - a root attribute `layer_names`: every layer in order, including those without weights
#   (input, ReLU, pooling, concatenation);
# - one group per layer, whose attribute `weight_names` lists its datasets in order: for a
#   convolution the kernel (KH, KW, C_in, C_out) then the bias (C_out,).
#
# The dataset paths differ between Keras versions (".../kernel:0", "..._W_1:0", "fire2/squeeze1x1_3/
# kernel:0"), so a reader must take them from `weight_names`, never guess them.

# %%
_lesson.section("The file, read with h5py alone")
with h5py.File(path, "r") as f:
    print("root attributes:", {k: (v if k != "layer_names" else f"{len(v)} names") for k, v in f.attrs.items()})
    layer_names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    print("first layer names:", ", ".join(layer_names[:8]), "...")
    total = 0
    shown = 0
    for layer in layer_names:
        names = [n.decode() if isinstance(n, bytes) else n for n in f[layer].attrs["weight_names"]]
        arrays = [f[layer][n] for n in names]
        total += sum(a.size for a in arrays)
        if names and shown < 4:
            shown += 1
            print(f"  {layer:<20} " + ", ".join(f"{n} {a.shape} {a.dtype}" for n, a in zip(names, arrays)))
        elif not names and shown < 4:
            print(f"  {layer:<20} (no weights)")
    print(f"{total:,} numbers in all ({total * 4 / 1e6:.1f} MB as float32)")
    first_conv = next(layer for layer in layer_names if f[layer].attrs["weight_names"].size)
    wn = f[first_conv].attrs["weight_names"]
    kernel_h5 = f[first_conv][wn[0]][()]

# %% [markdown]
# ## Loaded by scratchnst
#
# `weights.read_weights` does the same walk (and says which layer is missing or damaged, if one
# is); `networks.load` then checks every kernel's shape against the architecture table and
# builds the network. The architecture itself is data: a tuple of rows in `architectures.py`
# (`networks` imports the tables, as `networks.VGG19` and `networks.SQUEEZENET` below).

# %%
_lesson.section("The architecture table and the loaded network")
net = _lesson.load_network(args)
table = networks.VGG19 if net.name == "vgg19" else networks.SQUEEZENET
for row in table[:6]:
    print("  ", row)
print(f"   ... {len(table)} rows, expanded into {len(net.layer_names)} steps of the forward pass")
kernel, bias = net.params[first_conv]
print(f"{first_conv}: kernel {kernel.shape}, bias {bias.shape}; equal to the h5py read: "
      f"{np.array_equal(kernel, kernel_h5)}")

# %% [markdown]
# ## Preprocessing: the input the weights expect
#
# These weights were trained (in Caffe) on images that were
#
#     RGB -> BGR,  pixels 0..255,  minus the mean pixel of ImageNet [103.939, 116.779, 123.68] (B, G, R)
#
# Feed them anything else (RGB order, or pixels in 0..1 as the TF2 course does) and every
# activation is off: the first layer's kernels look for colours that are not where they expect.
# `image.preprocess` is the only place in scratchnst that knows this; `image.deprocess` is its
# exact inverse, used to turn the optimised input back into a picture.

# %%
_lesson.section("Preprocessing one pixel, and what a wrong preprocessing does")
photo = _lesson.load(args.content, args.size)  # (H, W, 3) RGB float32 0..255
x = image.preprocess(photo, net.preprocessing)  # (1, H, W, 3)
print(f"mode {net.preprocessing!r}: {image.PREPROCESSING[net.preprocessing]}")
print(f"pixel [0, 0]: RGB {photo[0, 0]} -> network input {x[0, 0, 0]}")
roundtrip = image.deprocess(x, net.preprocessing)
print(f"deprocess(preprocess(photo)) == photo: largest difference {np.abs(roundtrip - photo).max():.1e}")
middle = {"vgg19": "block3_conv1", "squeezenet": "fire5"}[net.name]
right = net.forward(x, [middle])[middle].copy()
wrong = net.forward((photo / 255)[None].astype(net.dtype), [middle])[middle]  # the TF2 course's [0, 1] RGB
print(f"{middle}: mean activation {right.mean():.2f} with the right input; with [0, 1] RGB pixels instead "
      f"{wrong.mean():.2f}, and {np.mean((right > 0) != (wrong > 0)):.0%} of the units switch on or off")

# %% [markdown]
# ## The forward pass, layer by layer
#
# Each convolution (with its ReLU) keeps the size ('same' padding) or halves it (stride 2); each
# pooling halves it. Deeper layers have more channels and fewer positions: each position sees a
# larger part of the image (its receptive field) and answers a more abstract question.

# %%
_lesson.section("Activation shapes")
acts = net.forward(x, list(net.layer_names))
for layer in net.layer_names:
    if net.name == "squeezenet" and "/" in layer and not layer.endswith("concat"):
        continue  # inside a fire module: show only its output
    print(f"  {layer:<14} {str(acts[layer].shape):<20} {acts[layer].size:>9,} values, "
          f"{np.mean(acts[layer] > 0):.0%} non-zero")

# %% [markdown]
# ## Check the first layer by hand, and against PyTorch
#
# The first activation is relu(conv(x, kernel) + bias) with the file's kernel: one call of
# `layers.conv2d_forward`, and one of PyTorch's conv2d through `torch_ref`.

# %%
_lesson.section("The first layer by hand")
spec = table[0]
by_hand, _ = layers.conv2d_forward(x, kernel, bias, spec.stride, spec.padding)
by_hand = np.maximum(by_hand, 0)
# In float32, the elementwise rel_error of lesson 2 is the wrong yardstick: an activation near 0 (a
# sum of positive and negative products that almost cancel) keeps the absolute round-off of the large
# products, about 1e-7 of the largest activation, and relative to ITSELF that can be 1e-2. The error
# relative to the largest activation (`rel_error_normwise`) is what says whether two float32
# computations agree: about 1e-7. The elementwise one is printed too, to show the difference.
by_hand_error = rel_error_normwise(by_hand, acts[first_conv])
print(f"{first_conv}: largest difference from the network, relative to the largest activation: {by_hand_error:.1e} "
      f"(elementwise rel_error {rel_error(by_hand, acts[first_conv]):.1e}, from activations near 0; float32)")
torch = _lesson.torch_or_note()
if torch is not None:
    ref = torch.relu(torch_ref.conv2d(torch_ref.to_torch(x), torch_ref.to_torch(kernel),
                                      torch_ref.to_torch(bias), spec.stride, spec.padding))
    diff = rel_error_normwise(torch_ref.to_numpy(ref), acts[first_conv])
    print(f"{first_conv}: largest difference from PyTorch, relative to the largest activation: {diff:.1e} "
          "(float32 round-off)")

# %% [markdown]
# ## Feature maps at a shallow, a middle and a deep layer
#
# A layer has 64 to 512 channels; we show 16 of each, the 16 MOST ACTIVE on this image (largest
# mean activation), strongest first, each stretched to its own 0..255 (white = that channel's
# largest value). The first 16 by number would be an arbitrary choice: at deep layers most
# channels are silent on any one image (ReLU outputs exactly 0), and a grid of blank tiles says
# nothing.
#
# What to notice. Shallow channels respond to edges and colours at every position: the photo is
# still recognisable in each tile. Middle channels respond to textures and parts: fur, the eyes,
# the outline. Deep channels are coarse and sparse: a few blobs where something they detect is
# (an eye, the nose, an ear), dark elsewhere. Style transfer uses exactly this: a deep layer for
# WHAT is where (content), the correlations between channels at many layers for the TEXTURE (style).

# %%
_lesson.section("Feature maps: the 16 most active channels of each layer")
depths = {"vgg19": ("block1_conv2", "block3_conv1", "block5_conv1"),
          "squeezenet": ("conv1", "fire3", "fire9")}[net.name]
acts = net.forward(x, list(depths))  # {name as asked: activation}
tiles, labels = [], []
for depth, layer in zip(("shallow", "middle", "deep"), depths):
    a = acts[layer]  # (1, H, W, C)
    mean = a.mean(axis=(0, 1, 2))  # (C,) mean activation per channel
    top = np.argsort(mean)[::-1][:16]  # the 16 most active, strongest first
    silent = int(np.sum(a.max(axis=(0, 1, 2)) == 0))
    scale = max(1, round(acts[depths[0]].shape[1] / a.shape[1]))  # deep maps enlarged to the shallow size
    tiles.append(visualize.activation_grid(a[..., top], k=16, columns=4, gap=2, scale=scale))
    labels.append(f"{depth}: {layer}, {a.shape[1]}x{a.shape[2]}, the 16 most active of {a.shape[3]} channels")
    print(f"{depth:>8}: {layer}, {a.shape[1]}x{a.shape[2]} positions, {a.shape[3]} channels, {silent} of them "
          f"silent (all 0) on this image; shown: channels {', '.join(map(str, top))}")
tiles.insert(0, image.resize_to(photo, *tiles[0].shape[:2]))  # the photo at the size of a grid
labels.insert(0, "content")
_lesson.save(args, "04_features.png", _lesson.montage(tiles, labels, cols=2))

# %% [markdown]
# ## Summary
#
# - A Keras weights file lists its layers in `layer_names` and each layer's arrays in
#   `weight_names`; kernels are (KH, KW, C_in, C_out), channels-last like our layers.
# - The network is a table of rows; `networks.load` checks every shape against it.
# - The weights expect Caffe preprocessing: BGR, 0..255, minus the ImageNet means.
# - Shallow layers keep the pixels' layout; deep layers keep sparse, abstract detections.
#
# ## Exercises
#
# 1. Count the parameters of each layer from `net.params` and find the layer with the most.
#    Where are most of VGG-19's 20 million parameters? (Its shapes need no weights file:
#    `networks.ARCHITECTURES["vgg19"].weight_shapes`.)
# 2. Run the forward pass on the style image (`--content lessons/images/mosaic.jpg`) and compare
#    the fraction of non-zero activations per layer with the photo's.
# 3. Feed the network the photo in RGB order instead of BGR (but with the means subtracted) and
#    measure how much the middle layer changes. Is it more or less than with [0, 1] pixels?
# 4. For one deep channel, find the position of its largest activation and mark the
#    corresponding region of the photo (each position of a layer behind k stride-2 steps covers
#    about `2**k x 2**k` pixels, and sees more than that).
# 5. Load the network with average pooling (`net = _lesson.load_network(args, pooling="avg")`) and
#    compare the deep feature maps with max pooling's.

# %%
_lesson.done()

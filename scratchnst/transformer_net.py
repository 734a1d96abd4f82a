"""A real-time style network (Johnson, Alahi & Fei-Fei 2016): forward, backward, parameters and files.

The "transformer" network turns a photo into its stylised version in one forward pass; it is
trained once per style, with the loss network's content and style costs (`scratchnst.costs`,
`scratchnst.networks`) as its loss. Its layers, in order (H and W multiples of 4):

    input       the photo (N, H, W, 3) and z planes of Gaussian noise: (N, H, W, 3 + z)
    conv1       reflection pad k//2, kxk conv 3 + z -> w1, instance norm, ReLU   (N, H, W, w1)
    conv2       reflection pad 1, 3x3 conv stride 2 w1 -> w2, IN, ReLU            (N, H/2, W/2, w2)
    conv3       reflection pad 1, 3x3 conv stride 2 w2 -> w3, IN, ReLU            (N, H/4, W/4, w3)
    res1..resR  x + IN(conv(ReLU(IN(conv(x))))), each conv 3x3 w3 -> w3, reflection pad 1
    up1         nearest upsampling x2, reflection pad 1, 3x3 conv w3 -> w2, IN, ReLU   (N, H/2, W/2, w2)
    up2         nearest upsampling x2, reflection pad 1, 3x3 conv w2 -> w1, IN, ReLU   (N, H, W, w1)
    conv_out    reflection pad k//2, kxk conv w1 -> 3 with bias, scaled tanh      (N, H, W, 3)

with k the outer kernel (DEFAULT_OUTER_KERNEL = 5; the paper's 9 where a file says so). up1 and
up2 run their three layers at once at the low resolution (`upsample_conv`: four 2x2 convolutions,
one per phase of the output, instead of a 3x3 one on the 4 times larger upsampled image); the
result is the same up to rounding. Measured on a 2-core AMD EPYC (2026-12-04, a training step of
two 128 px crops, the two ways interleaved, medians of 10): up1 and up2 forward and backward took
19.5 ms instead of 41.5 on one thread; the whole step 146 ms instead of 169 on one thread, 90
instead of 98 on two.

This is the network of the paper's supplementary material with the changes most later code
(PyTorch's fast_neural_style example among them) made: instance normalisation instead of batch
normalisation (Ulyanov et al. 2016), reflection padding instead of zero padding (no dark frame),
nearest upsampling + convolution instead of transposed convolutions (no checkerboard artefacts),
no ReLU after the residual sum (Gross & Wilber); and, measured here, 5x5 outer convolutions
instead of 9x9 (below). Convolutions followed by instance normalisation have NO bias: the
normalisation subtracts each channel's mean, so a bias there would change nothing and always
receive a zero gradient.

Size. The paper's widths are 32/64/128 with 5 residual blocks and 9x9 outer convolutions (1.68 M
parameters here); one training step of it (forward + backward, 256x256, batch 4, float32) took
4.2 s on one core of a 2-core Xeon. The layers at full resolution (conv1, up2, conv_out and their
instance normalisations) are most of a step; a residual block runs at H/4 and costs ~5% of it
(3 blocks instead of 5 saved 0.14 s at batch 4), so depth is kept and width is what was cut: the
default halves every width (DEFAULT_WIDTHS 16/32/64) and keeps 5 residual blocks
(DEFAULT_RESIDUAL_BLOCKS). Its outer convolutions are 5x5 (DEFAULT_OUTER_KERNEL), chosen by
training side by side (2026-12-04, 2-core AMD EPYC, one core each: `scratchnst train`'s defaults
otherwise, The Starry Night, 15 photos of scikit-image, scikit-learn and matplotlib, 4000 steps)
and judging as `training`'s notes say, the course cost of the output on three photos it never saw
divided by that of 100 L-BFGS iterations on the same photo:

    outer kernel   cat, Tubingen, cameraman   mean   a step (one core, batch of two 128 px crops)
    9x9 (paper)    1.93  2.72  2.62           2.43   179-195 ms
    7x7            1.81  2.62  2.44           2.29   174-186 ms
    5x5            1.82  2.42  2.30           2.18   166-168 ms
    3x3            2.08  3.30  2.84           2.74   155-163 ms

With 8 of the photos (the natural ones) 9x9 and 5x5 gave 2.36 and 2.30: one run's noise is about
0.1 on the mean. The default network has 418,803 parameters (423,779 with 9x9 and no noise plane).
Where a training step's time goes (2026-12-07, 2-core AMD EPYC, one thread, a 128 px crop, batch
1, another run on the other core, medians of 20): this network's forward 46 ms and backward 83 ms,
the loss network (content forward, forward to fire5, costs, backward) 25 ms. The residual blocks'
convolutions run at 51 GFLOP/s, against 65 for a bare sgemm of the same product; conv1 (4 -> 16
channels) and conv_out (16 -> 3) at 16-18, too thin for the BLAS, but about a tenth of the step:
a faster step needs fewer FLOPs more than faster convolutions.
A third downsampling, the residual blocks at H/8 with twice the width (16/32/64/128, 5 blocks:
about the same FLOPs, twice the receptive field, 1.67 M parameters), did no better: prototyped in
PyTorch (2026-12-07, 2-core AMD EPYC, one core each, side by side, `scratchnst train`'s photos,
crops, schedule and costs, 12-minute plans), it gave 2.07 / 2.49 / 2.28 (mean 2.28) in 3883 steps
and 769 s against this network's 2.15 / 2.50 / 2.23 (2.29) in 3484 steps and 626 s: level, with
23% more time. Three downsamplings would also need sides that are multiples of 8.
Nor did bottleneck residual blocks (He et al. 2016: a 1x1 convolution down to b channels, a 3x3
one at b, a 1x1 one back up, each followed by IN, a ReLU after the first two), tried as a patch of
this module (2026-12-07, 2-core AMD EPYC, one core each, side by side, `scratchnst train`'s
defaults and 19-minute budget otherwise, seed 0, judged by lesson 12; cat / Tubingen / cameraman):
10 blocks 64 -> 32 -> 64 (184k parameters; this network's forward and backward at 128 px 45 ms
instead of 58) trained 10198 steps and gave 1.76 / 2.10 / 1.68; 5 blocks at widths 16/32/128,
128 -> 64 -> 128 (354k, 65 ms), 8765 steps, 1.75 / 2.09 / 1.71; this network at the same seed
1.65 / 2.09 / 1.71 in 8339 steps (README.md). Three networks of 184k to 419k parameters, level:
the blocks are not what holds it back, and cheaper ones buy few steps, since most of a step (86 ms
for the first, 102 for the second, timed by the run) is the full-resolution layers and the loss
network, whatever the blocks.
Widths, blocks, the outer kernel and the noise planes are arguments of init_params, and forward
reads them from the parameters.

Pixel space. The network reads and writes images in the loss network's preprocessed space
(`scratchnst.image.preprocess`, "caffe": BGR, 0..255 minus the BGR means; or "torchvision"), so that
its output goes straight into the loss network, and `image.deprocess` turns it into a picture. The
last layer is scale * tanh(x) + offset with (scale, offset) from `output_range`: exactly the
interval that 0..255 maps to on each channel, so every output is a valid image (no clipping, and
its gradient never dies at a clip).

Parameters are a flat, ordered dict name -> array, "layer/kernel" (KH, KW, C_in, C_out),
"layer/gamma" and "layer/beta" (C_out,) (no beta in "res{k}/conv2": see _shift_is_removed), and
"conv_out/bias" (3,), in network order, e.g.
"conv1/kernel", "conv1/gamma", ..., "res1/conv1/kernel", ... (an optimiser walks it as it is).

Noise. Besides the photo the network reads z planes of Gaussian noise (DEFAULT_NOISE_CHANNELS = 1,
NOISE_STD = 100 grey levels), as Ulyanov et al.'s texture networks (2016) do: a convolutional network
given a flat patch (a sky, a wall) can only paint it flat, while the style's Gram matrices ask for
texture everywhere; noise gives it something to paint texture from. `network_input` appends the
planes: from a fixed seed when a photo is stylised (the same photo gives the same picture), from
the run's generator when training (each step new noise). Measured (2026-12-05, 2-core AMD EPYC,
`scratchnst train`'s defaults otherwise, one core each, two runs side by side; cat, Tubingen and
cameraman, the course cost over that of 100 L-BFGS iterations, as `training`'s notes judge):

    input                        seed 0                        seed 1
    photo alone (z = 0)          1.66 / 2.12 / 1.73  (1.84)    1.76 / 2.14 / 1.69  (1.86)
    photo + 1 plane, std 50      1.62 / 2.06 / 1.60  (1.76)    1.71 / 2.02 / 1.63  (1.79)
    photo + 1 plane, std 100     1.68 / 1.99 / 1.60  (1.76)
    photo + 3 planes, std 50     1.76 / 2.16 / 1.63  (1.85)

(the mean of the three in brackets; one run differs from the next by about 0.07 a photo). The
noise came from a generator of its own there; `scratchnst train` draws it from the run's, and
its own runs are in README.md. With a plane the training cost was lower too (3.68e4
against 3.79e4 over steps 6501-7000 at seed 1); three planes gained nothing; std 100 is the
default for Tubingen's 1.99, though within a run's noise of std 50's 2.06. A step takes no
longer (one more input channel of conv1). As a control, a learnt gate adding the photo itself
to the output before the tanh (zero at first) stayed near zero and changed nothing (1.73 / 2.14
/ 1.73). Nor did noise at coarser scales (2026-12-05, `scratchnst train`'s defaults otherwise, one core
each): a second plane of one value per 4x4 block (the bottleneck's own resolution, from which the
residual blocks could place strokes in a flat sky) gave 1.67 / 2.04 / 1.60, 1.70 / 2.08 / 1.69 and
1.63 / 1.99 / 1.62 at seeds 0, 1 and 2 (mean 1.78, against 1.80 for the default at the same seeds,
README.md), and with a third of one value per 8x8 block, seed 0, 1.68 / 2.12 / 1.63: within a run's
noise. Files of format 1 and 2 have no noise planes (z = 0) and run as they were trained.

Files: `save` and `load`, HDF5, one group per layer (see `save` for the layout).
"""

import math
from pathlib import Path

import h5py
import numpy as np

from scratchnst import fast_conv, layers, upsample_conv
from scratchnst import transformer_layers as tl
from scratchnst.atomic import reason, write_hdf5
from scratchnst.errors import UserError
from scratchnst.image import CAFFE_BGR_MEANS, PREPROCESSING, TORCHVISION_MEAN, TORCHVISION_STD
from scratchnst.weights import check_input_file

DEFAULT_WIDTHS = (16, 32, 64)
DEFAULT_RESIDUAL_BLOCKS = 5
DEFAULT_OUTER_KERNEL = 5    # conv1's and conv_out's kernel size (the paper's 9: see the module docstring)
DEFAULT_NOISE_CHANNELS = 1  # planes of Gaussian noise the network reads beside the photo (see the docstring)
NOISE_STD = 100.0           # their standard deviation, in grey levels (0..255), whatever the pixel space
NOISE_SEED = 0              # the generator of the noise when a photo is stylised: the same picture each time
MAX_NOISE_CHANNELS = 64
# Bounds of the network's size, far beyond what a CPU trains (the defaults: 16/32/64, 5 blocks):
# training refuses settings beyond them, and load refuses a file that declares more (a hand-edited
# header would otherwise have each kernel allocated at its declared size, gigabytes, before any check).
MAX_WIDTH = 1024
MAX_RESIDUAL_BLOCKS = 64
FORMAT_VERSION = 3          # root attribute `scratchnst_transformer_format` of files written by `save`
PAPER_OUTER_KERNEL = 9      # format 1 stored no outer kernel: every such file has the paper's 9x9
ARCHITECTURE = "johnson2016-transformer"
IMAGE_CHANNELS = 3
SIZE_MULTIPLE = 4           # two stride-2 convolutions down, two x2 upsamplings up
MIN_SIZE = 8                # the smallest multiple of 4 whose H/4 (2) still allows reflection padding 1


# ------------------------------------------------------------------------------- architecture
def layer_specs(widths=DEFAULT_WIDTHS, residual_blocks=DEFAULT_RESIDUAL_BLOCKS, outer_kernel=DEFAULT_OUTER_KERNEL,
                noise_channels=DEFAULT_NOISE_CHANNELS):
    """The network's convolutions as a table, in order.

    Args:
        widths: (w1, w2, w3), the channels at full, half and quarter resolution.
        residual_blocks: R >= 0.
        outer_kernel: odd k >= 1, the kernel size of conv1 and conv_out (k x k).
        noise_channels: z >= 0, the planes of noise read beside the photo (conv1 takes 3 + z channels).

    Returns:
        list of (name, kernel, C_in, C_out, stride, upsample) for every convolution, with
        name "conv1", "conv2", "conv3", "res{k}/conv1", "res{k}/conv2" (k = 1..R), "up1", "up2",
        "conv_out"; upsample is the nearest-upsampling factor applied before it (1: none).
    """
    w1, w2, w3 = (int(w) for w in widths)
    outer = int(outer_kernel)
    if outer < 1 or outer % 2 == 0:
        raise ValueError(f"outer_kernel must be odd and at least 1 (the reflection pads k // 2 on each side), got {outer}")
    z = int(noise_channels)
    if not 0 <= z <= MAX_NOISE_CHANNELS:
        raise ValueError(f"noise_channels must be 0 to {MAX_NOISE_CHANNELS}, got {z}")
    specs = [("conv1", outer, IMAGE_CHANNELS + z, w1, 1, 1), ("conv2", 3, w1, w2, 2, 1), ("conv3", 3, w2, w3, 2, 1)]
    for k in range(1, int(residual_blocks) + 1):
        specs += [(f"res{k}/conv1", 3, w3, w3, 1, 1), (f"res{k}/conv2", 3, w3, w3, 1, 1)]
    specs += [("up1", 3, w3, w2, 1, 2), ("up2", 3, w2, w1, 1, 2), ("conv_out", outer, w1, IMAGE_CHANNELS, 1, 1)]
    return specs


def parameter_shapes(widths=DEFAULT_WIDTHS, residual_blocks=DEFAULT_RESIDUAL_BLOCKS, outer_kernel=DEFAULT_OUTER_KERNEL,
                     noise_channels=DEFAULT_NOISE_CHANNELS):
    """{name: shape} of every parameter, in network order (the order of init_params's dict)."""
    shapes = {}
    for name, k, c_in, c_out, _, _ in layer_specs(widths, residual_blocks, outer_kernel, noise_channels):
        shapes[f"{name}/kernel"] = (k, k, c_in, c_out)
        if name == "conv_out":
            shapes[f"{name}/bias"] = (c_out,)
        else:
            shapes[f"{name}/gamma"] = (c_out,)
            if not _shift_is_removed(name):
                shapes[f"{name}/beta"] = (c_out,)
    return shapes


def _shift_is_removed(name):
    """True for the second normalisation of a residual block, which has no beta.

    Its output joins the trunk at H/4 by the residual sum, and every path out of the trunk goes
    through a convolution followed by instance normalisation (the next block's first one, or up1's),
    which subtracts each channel's mean: a per-channel shift there changes nothing downstream, its
    gradient is exactly zero (round-off in practice, which Adam would turn into random steps).
    """
    return name.startswith("res") and name.endswith("/conv2")


def architecture_of(params):
    """(widths, residual_blocks, outer_kernel, noise_channels) of a params dict, read from its kernels'
    shapes and names: the arguments of layer_specs, parameter_shapes and init_params, in their order."""
    widths = tuple(int(params[f"conv{i}/kernel"].shape[3]) for i in (1, 2, 3))
    residual_blocks = sum(1 for name in params if name.startswith("res") and name.endswith("/conv1/kernel"))
    conv1 = params["conv1/kernel"].shape
    return widths, residual_blocks, int(conv1[0]), int(conv1[2]) - IMAGE_CHANNELS


def count_parameters(params):
    """The number of scalars in params."""
    return int(sum(p.size for p in params.values()))


def init_params(rng, widths=DEFAULT_WIDTHS, residual_blocks=DEFAULT_RESIDUAL_BLOCKS, outer_kernel=DEFAULT_OUTER_KERNEL,
                noise_channels=DEFAULT_NOISE_CHANNELS, dtype=np.float32):
    """Fresh parameters for training.

    Args:
        rng: np.random.Generator.
        widths, residual_blocks, outer_kernel, noise_channels: see layer_specs.
        dtype: float32 to train, float64 to check gradients.

    Returns:
        dict name -> array in network order (see parameter_shapes):
            kernels   normal, std sqrt(2 / fan_in), fan_in = KH*KW*C_in (He et al. 2015: keeps the
                      variance through a ReLU); conv_out's kernel std sqrt(1 / fan_in) instead,
                      as no ReLU follows it and the tanh should start away from saturation
            gamma 1, beta 0 (the normalisation starts as a plain standardisation, as PyTorch)
            conv_out/bias 0 (the output starts around mid-grey)
    """
    params = {}
    for name, shape in parameter_shapes(widths, residual_blocks, outer_kernel, noise_channels).items():
        if name.endswith("/kernel"):
            fan_in = shape[0] * shape[1] * shape[2]
            gain = 1.0 if name.startswith("conv_out") else 2.0
            params[name] = (rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(dtype)
        elif name.endswith("/gamma"):
            params[name] = np.ones(shape, dtype=dtype)
        else:
            params[name] = np.zeros(shape, dtype=dtype)
    return params


def output_range(preprocessing="caffe", dtype=np.float32):
    """(scale, offset), each (3,): the output layer's scale * tanh + offset spans pixels 0..255 exactly.

    caffe:        pixel p in 0..255 is p - mean_c (BGR): scale 127.5, offset 127.5 - mean_c
    torchvision:  pixel p is (p / 255 - mean_c) / std_c: scale 0.5 / std_c, offset (0.5 - mean_c) / std_c
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
    if preprocessing == "caffe":
        scale = np.full(3, 127.5)
        offset = 127.5 - np.asarray(CAFFE_BGR_MEANS)
    else:
        std, mean = np.asarray(TORCHVISION_STD), np.asarray(TORCHVISION_MEAN)
        scale, offset = 0.5 / std, (0.5 - mean) / std
    return scale.astype(dtype), offset.astype(dtype)


def min_input_size(outer_kernel=DEFAULT_OUTER_KERNEL):
    """The smallest H and W the network takes: a multiple of 4, at least MIN_SIZE, and longer than
    the k // 2 pixels that the outer convolutions' reflection padding mirrors at each border."""
    least = max(MIN_SIZE, int(outer_kernel) // 2 + 1)
    return least + (-least) % SIZE_MULTIPLE


def check_input(x, least=MIN_SIZE, noise_channels=0):
    """ValueError unless x is (N, H, W, 3), or (N, H, W, 3 + noise_channels) with its noise planes
    (network_input), with H and W multiples of 4, at least `least` (min_input_size).

    Two stride-2 convolutions and two x2 upsamplings give back H only when 4 divides it (a 255-row
    input would come out with 256 rows); rather than crop or pad silently, the caller decides.
    """
    if x.ndim != 4 or x.shape[3] not in (IMAGE_CHANNELS, IMAGE_CHANNELS + noise_channels):
        planes = f" or (N, H, W, {IMAGE_CHANNELS + noise_channels}) with its noise planes" if noise_channels else ""
        raise ValueError(f"input must be (N, H, W, 3){planes}, got {x.shape}")
    _, H, W, _ = x.shape
    if H % SIZE_MULTIPLE or W % SIZE_MULTIPLE or H < least or W < least:
        fit_h, fit_w = (max(least, n - n % SIZE_MULTIPLE) for n in (H, W))
        raise ValueError(f"the transformer network needs H and W multiples of {SIZE_MULTIPLE}, at least "
                         f"{least}; got {H}x{W}: crop or resize to {fit_h}x{fit_w}")


def noise_planes(shape, preprocessing="caffe", dtype=np.float32, rng=None):
    """Gaussian noise of NOISE_STD grey levels in the pixel space `preprocessing`: (N, H, W, z) of dtype.

    Args:
        shape: (N, H, W, z).
        rng: np.random.Generator, each photo its own planes (training); None: a new one seeded with
            NOISE_SEED, whose planes every photo of the batch shares, so that a photo is painted the
            same alone or in a batch, wherever it stands in it.
    """
    grey_level = float(np.mean(output_range(preprocessing, np.float64)[0])) / 127.5   # caffe 1, torchvision ~1/58
    if rng is None:
        one = np.random.default_rng(NOISE_SEED).standard_normal((1, *shape[1:])) * (NOISE_STD * grey_level)
        return np.repeat(one.astype(dtype), shape[0], axis=0)
    return (rng.standard_normal(shape) * (NOISE_STD * grey_level)).astype(dtype)


def network_input(params, x, preprocessing="caffe", rng=None):
    """x with the network's noise planes appended: (N, H, W, 3) -> (N, H, W, 3 + z), x's dtype.

    x as it is when the network reads no noise (z = 0) or x already holds its planes. The noise
    comes from rng (training: the run's generator), or with rng None from NOISE_SEED, so that
    stylising a photo twice gives the same picture.
    """
    z = architecture_of(params)[3]
    if z == 0 or x.shape[-1] == IMAGE_CHANNELS + z:
        return x
    check_input(x, 1, z)
    return np.concatenate([x, noise_planes(x.shape[:3] + (z,), preprocessing, x.dtype, rng)], axis=3)


# ------------------------------------------------------------------------------------ forward
def _conv_forward(h, params, name, stride, upsample):
    """[upsample] -> reflection pad -> conv (valid): (out, cache). conv_out has a bias, the others none."""
    caches = {}
    w = params[f"{name}/kernel"]
    if upsample > 1 and stride == 1 and f"{name}/bias" not in params and upsample_conv.fits(w.shape[0], upsample):
        # the three at once at the low resolution (upsample_conv): the same result, ~2x faster
        out, caches["upsample_conv"] = upsample_conv.upsample_conv_forward(h, w, upsample)
        return out, caches
    if upsample > 1:
        h, caches["up"] = tl.upsample_nearest_forward(h, upsample)
    h, caches["pad"] = tl.reflection_pad_forward(h, w.shape[0] // 2)
    b = params.get(f"{name}/bias")
    if b is None:
        b = np.zeros(w.shape[3], dtype=h.dtype)  # see the module docstring: IN makes a bias useless
    out, caches["conv"] = fast_conv.conv2d_forward(h, w, b, stride, "valid")
    return out, caches


def _conv_in_forward(h, params, name, stride=1, upsample=1, relu=True, squares=None):
    """_conv_forward, instance norm, [ReLU]: (out, cache).

    squares: None to keep the cache; to stylise only, a function giving scratch memory of a shape
    (forward's): then the layer is normalised where the convolution wrote it, the cache None.
    """
    z, caches = _conv_forward(h, params, name, stride, upsample)
    gamma = params[f"{name}/gamma"]
    beta = params[f"{name}/beta"] if not _shift_is_removed(name) else np.zeros_like(gamma)
    if squares is not None:   # z is this layer's own: nothing else holds it
        return tl.instance_norm_forward_in_place(z, gamma, beta, relu=relu, squares=squares(z.shape, z.dtype)), None
    out, caches["norm"] = tl.instance_norm_forward(z, gamma, beta)
    if relu:
        out, caches["relu"] = layers.relu_forward(out)
    return out, caches


class _Scratch:
    """Scratch memory for forward's instance norms when stylising: one array, as large as the largest
    layer that asked, viewed in each shape asked for; it goes with the forward pass."""

    def __init__(self):
        self._memory = None

    def __call__(self, shape, dtype):
        size = math.prod(shape)
        if self._memory is None or self._memory.size < size or self._memory.dtype != dtype:
            self._memory = np.empty(size, dtype=dtype)
        return self._memory[:size].reshape(shape)


def forward(params, x, preprocessing="caffe", keep_cache=True):
    """Stylise a batch: the transformer network's output.

    Args:
        params: dict from init_params or load (any widths and number of residual blocks).
        x: (N, H, W, 3) in the preprocessed space, H and W multiples of 4 (check_input), the
            dtype of params (float32 to train and stylise, float64 to check); or (N, H, W, 3 + z)
            with the network's z noise planes already appended (network_input: training draws
            them), else they are drawn from NOISE_SEED.
        preprocessing: the space of x and of the output, "caffe" or "torchvision" (output_range).
        keep_cache: False to stylise only: no cache is kept, and each instance norm runs where its
            convolution wrote, so that a large photo needs the memory of two layers' activations
            (and one scratch array as large as the largest), not all.

    Returns:
        out: (N, H, W, 3), in the same space, each channel inside the image of pixels 0..255.
        cache: what backward needs, one entry per layer, in order (None if not keep_cache).
    """
    architecture = architecture_of(params)
    check_input(x, min_input_size(architecture[2]), architecture[3])
    given = x.shape[3]   # backward's dx is of what the caller gave: the photo, or the photo and its planes
    cache = []
    # Stylising only, each instance norm (and the ReLU after it) is computed where its convolution
    # wrote, the squared deviations in one scratch array for all: the same numbers, bit for bit, in
    # a third of the new memory (instance_norm_forward_in_place). A 512x512 photo on one thread took
    # 0.83 s against 0.93, the first of a process 1.02 against 1.18 (medians of six processes each,
    # alternated, on a slow afternoon of the 2-core AMD EPYC, 2026-12-07).
    squares = None if keep_cache else _Scratch()
    h = network_input(params, x, preprocessing)
    for name, _, _, _, stride, upsample in layer_specs(*architecture):
        if name.startswith("res") and name.endswith("/conv1"):
            skip = h
            h, c = _conv_in_forward(h, params, name, squares=squares)
        elif name.startswith("res"):
            h, c = _conv_in_forward(h, params, name, relu=False, squares=squares)
            if keep_cache:
                h, c["residual"] = tl.residual_forward(skip, h)
            else:   # h is the layer's own; h + skip is skip + h to the last bit
                h += skip
        elif name == "conv_out":
            h, c = _conv_forward(h, params, name, stride, upsample)
            h, c["tanh"] = tl.scaled_tanh_forward(h, *output_range(preprocessing, h.dtype))
        else:
            h, c = _conv_in_forward(h, params, name, stride, upsample, squares=squares)
            if name == "conv1" and keep_cache:
                c["given_channels"] = given
        if keep_cache:
            cache.append((name, c))
    return h, (cache if keep_cache else None)


# ----------------------------------------------------------------------------------- backward
def _conv_backward(dout, caches, name, grads, input_grad=True):
    """Backward of _conv_forward: dJ/d(its input) (None if not input_grad); the kernel's (and bias's)
    gradient into grads."""
    if "upsample_conv" in caches:
        dh, grads[f"{name}/kernel"] = upsample_conv.upsample_conv_backward(dout, caches["upsample_conv"], input_grad)
        return dh
    x_padded, w, _, stride, _ = caches["conv"]
    if stride == 1:
        # the kernel gradient by transformer_layers' routine, several times faster here (see there)
        grads[f"{name}/kernel"] = tl.conv2d_weight_gradient(x_padded, dout, w.shape[0], w.shape[1])
        dh = fast_conv.conv2d_backward(dout, caches["conv"], weight_grads=False)[0] if input_grad else None
    else:
        dh, grads[f"{name}/kernel"], _ = fast_conv.conv2d_backward(dout, caches["conv"])
    if name == "conv_out":
        grads[f"{name}/bias"] = dout.sum(axis=(0, 1, 2), dtype=np.float64).astype(dout.dtype)  # as layers' db
    if dh is None:
        return None
    dh = tl.reflection_pad_backward(dh, caches["pad"])
    if "up" in caches:
        dh = tl.upsample_nearest_backward(dh, caches["up"])
    return dh


def _conv_in_backward(dout, caches, name, grads, input_grad=True):
    """Backward of _conv_in_forward."""
    if "relu" in caches:
        dout = layers.relu_backward(dout, caches["relu"])
    dz, grads[f"{name}/gamma"], dbeta = tl.instance_norm_backward(dout, caches["norm"])
    if not _shift_is_removed(name):
        grads[f"{name}/beta"] = dbeta
    return _conv_backward(dz, caches, name, grads, input_grad)


def backward(dout, cache, input_grad=True):
    """Every gradient of the transformer network, by hand.

    Args:
        dout: dJ/d(out) (N, H, W, 3).
        cache: from forward.
        input_grad: False to skip dJ/dx, which training does not need (the input is data), and
            with it the first convolution's input gradient (~7% of a step at 256x256).

    Returns:
        dx: dJ/dx, of x's shape as forward was given it, (N, H, W, 3) or with its noise planes
            (None if not input_grad); it checks the chain end to end.
        grads: dict name -> array, the same names, shapes and order as params.

    The layers run backwards; a residual block's input receives the gradient twice, through the
    skip and through the block's first convolution, and the two are added.
    """
    grads = {}
    dh = dout
    for name, c in reversed(cache):
        if name == "conv_out":
            dh = _conv_backward(tl.scaled_tanh_backward(dh, c["tanh"]), c, name, grads)
        elif name.startswith("res") and name.endswith("/conv2"):
            dskip, dh = tl.residual_backward(dh, c["residual"])
            dh = _conv_in_backward(dh, c, name, grads)
        elif name.startswith("res"):
            dh = _conv_in_backward(dh, c, name, grads)
            dh += dskip  # the skip's share (dh is a fresh array of ours)
        else:
            dh = _conv_in_backward(dh, c, name, grads, input_grad or name != "conv1")
    given = cache[0][1]["given_channels"]   # cache[0] is conv1's: forward noted there what x it was given
    if dh is not None and dh.shape[3] != given:   # the noise planes forward drew itself: not the caller's input
        dh = np.ascontiguousarray(dh[..., :given])
    # in network order, as params (parameter_shapes's order): an optimiser can zip the two
    order = [f"{name}/{p}" for name, _ in cache
             for p in (("kernel", "bias") if name == "conv_out" else ("kernel", "gamma", "beta"))]
    return dh, {name: grads[name] for name in order if name in grads}


def stylize(params, x, preprocessing="caffe"):
    """The output of forward alone (no cache kept)."""
    return forward(params, x, preprocessing, keep_cache=False)[0]


# -------------------------------------------------------------------------------------- files
def save(path, params, meta=None):
    """Write a transformer network to an HDF5 file, atomically (a temporary file, then a rename).

    Args:
        path: the .h5 file; an existing file is replaced only by a complete new one.
        params: dict from init_params (any float dtype, stored as it is; load reads it as float32,
            so a float32 network, as training's, comes back bit for bit).
        meta: dict of free-form facts, str -> str, int, float or bool (the style image's name, the
            weights of the content and style costs, the number of steps...). "preprocessing"
            ("caffe" by default) is the pixel space the network was trained in; forward needs it.

    Returns:
        Path of the written file.

    Layout (format 3):
        /                     attributes
            scratchnst_transformer_format   3
            architecture                    "johnson2016-transformer"
            widths                          int array (w1, w2, w3)
            residual_blocks                 int
            outer_kernel                    int, conv1's and conv_out's kernel size (format 1 had
                                            none: its networks are all 9x9, and load reads them)
            noise_channels                  int z, the noise planes conv1 reads beside the photo
            noise_std                       float, their standard deviation in grey levels
                                            (formats 1 and 2 had neither: z = 0)
            layer_names                     the layer groups in network order (bytes)
            preprocessing                   "caffe" or "torchvision"
        /conv1, /conv2, /conv3, /res1/conv1, /res1/conv2, ..., /up1, /up2, /conv_out
                              one group per convolution layer ("res1/conv1" nests in "res1")
            kernel            (KH, KW, C_in, C_out)
            gamma, beta       (C_out,)  instance normalisation (no beta in res{k}/conv2)
            bias              (3,)      conv_out only
        /meta                 a group whose attributes are `meta`, minus preprocessing

    Raises:
        UserError: the file cannot be written (atomic.write_hdf5); nothing is left behind.
        ValueError: params is not a transformer network's, or a meta value is not str/int/float/bool.
    """
    meta = dict(meta or {})
    preprocessing = meta.pop("preprocessing", "caffe")
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"meta['preprocessing'] must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool, np.integer, np.floating)):
            raise ValueError(f"meta must map str to str, int, float or bool; got {key!r}: {value!r}")
    architecture = architecture_of(params)
    widths, residual_blocks, outer_kernel, noise_channels = architecture
    problem = _shape_problem(params, *architecture)
    if problem:
        raise ValueError(f"params is not a transformer network's: {problem}")
    layer_names = [spec[0] for spec in layer_specs(*architecture)]
    def fill(f):
        f.attrs["scratchnst_transformer_format"] = FORMAT_VERSION
        f.attrs["architecture"] = ARCHITECTURE
        f.attrs["widths"] = np.asarray(widths, dtype=np.int64)
        f.attrs["residual_blocks"] = int(residual_blocks)
        f.attrs["outer_kernel"] = int(outer_kernel)
        f.attrs["noise_channels"] = int(noise_channels)
        f.attrs["noise_std"] = float(NOISE_STD)
        f.attrs["layer_names"] = np.array([name.encode("utf8") for name in layer_names])
        f.attrs["preprocessing"] = preprocessing
        for name, value in params.items():
            f.create_dataset(name, data=value)  # "conv1/kernel": group conv1, dataset kernel
        group = f.create_group("meta")
        for key, value in meta.items():
            group.attrs[key] = value

    return write_hdf5(path, fill, "transformer network")


def _shape_problem(params, widths, residual_blocks, outer_kernel, noise_channels):
    """What is wrong with params for this architecture (missing, extra, misshapen), or None."""
    try:
        expected = parameter_shapes(widths, residual_blocks, outer_kernel, noise_channels)
    except ValueError as error:  # an even outer kernel, too many noise planes
        return str(error)
    missing = [name for name in expected if name not in params]
    extra = [name for name in params if name not in expected]
    if missing or extra:
        return f"missing {missing}" if missing else f"unexpected {extra}"
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            return f"{name} has shape {tuple(params[name].shape)}, expected {shape}"
    return None


def load(path):
    """Read a transformer network written by `save`, every value checked (`_read`).

    Args:
        path: the .h5 file.

    Returns:
        (params, meta): params with the saved names and order, in float32, the dtype the network
        runs in (a float32 file, as training writes, comes back bit for bit; float16 and float64
        are cast); meta the free-form dict given to save, with "preprocessing" always present
        (str, int, float, bool values come back as Python values).

    Raises:
        UserError: one line naming the file and saying what to do, when it is missing, a folder,
            not an HDF5 file, an HDF5 file that is not a transformer network (e.g. a loss
            network's weights), of a newer format, or damaged: a header value no version of save
            wrote, a layer or dataset missing, a dataset that is not floating point or does not
            fit the declared architecture, weights that are NaN or inf.
    """
    label = str(path)
    give = "give a transformer network saved by scratchnst (transformer_net.save)"
    check_input_file(path, label, "transformer network file", "a transformer network saved by scratchnst",
                     f"check the path, or {give}")
    try:
        is_hdf5 = h5py.is_hdf5(path)   # it opens the file: one the user may not read fails here
    except OSError as error:
        raise UserError(f"{label}: cannot be read ({reason(error)}); check its permissions") from None
    if not is_hdf5:
        raise UserError(f"{label}: not an HDF5 file; {give}")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, label, give)
    except UserError:
        raise
    # RuntimeError too: h5py's for a soft link that loops ("Special link traversal failed")
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        first = " ".join(str(error).split())[:120]
        raise UserError(f"{label}: the file is damaged or truncated ({first}); {give}") from None


def _plain(value):
    """An HDF5 attribute as a Python value (bytes decoded, NumPy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _integers(f, key, count=None):
    """Root attribute `key` as save writes it: an int (count None) or a tuple of `count` ints; None if not.

    Only an integer dtype passes: 2.5 must not be read as 2, nor True as 1, nor "2" as 2.
    """
    value = np.asarray(f.attrs.get(key))  # a missing attribute is None: an object array, refused
    if value.dtype.kind not in "iu" or value.shape != (() if count is None else (count,)):
        return None
    return int(value) if count is None else tuple(int(v) for v in value)


def _read(f, label, give):
    """(params, meta) of an open file (see load).

    The one place that checks a file against what `save` writes, header and datasets, before any
    of it reaches forward: there a wrong value gives a wrong picture (no residual blocks, a black
    image from NaN weights) or an error far from its cause.
    """
    damaged = f"the file is damaged: {give}"

    def bad_header(key, note):
        shown = f"is {' '.join(repr(_plain(f.attrs[key])).split())[:60]}" if key in f.attrs else "is missing"
        return UserError(f"{label}: header attribute {key} {shown} ({note}); {damaged}")

    if "scratchnst_transformer_format" not in f.attrs:
        what = _plain(f.attrs.get("architecture", ""))
        if what == ARCHITECTURE:   # a file of ours that lost its format: damaged, not a loss network
            raise bad_header("scratchnst_transformer_format", "the architecture says a transformer network")
        holds = f" (it holds {what} weights, a loss network)" if isinstance(what, str) and what else \
            " (it holds a loss network's weights)" if "layer_names" in f.attrs else ""
        raise UserError(f"{label}: an HDF5 file but not a transformer network{holds}; {give}")
    version = _integers(f, "scratchnst_transformer_format")
    if version is not None and version > FORMAT_VERSION:
        raise UserError(f"{label}: transformer network format {version}, this version reads formats 1 to "
                        f"{FORMAT_VERSION}; upgrade scratchnst to read it")
    if version is None or version < 1:
        # format 1 was the first save wrote, 2 added outer_kernel, 3 the noise planes: nothing older exists
        raise bad_header("scratchnst_transformer_format",
                         f"no version of scratchnst wrote it: its formats are the integers 1 to {FORMAT_VERSION}")
    widths = _integers(f, "widths", 3)
    if widths is None or min(widths) < 1:
        raise bad_header("widths", "scratchnst writes three integers >= 1")
    if max(widths) > MAX_WIDTH:   # before any dataset is read at the declared shapes
        raise bad_header("widths", f"scratchnst writes at most {MAX_WIDTH}, the bound of training")
    blocks = _integers(f, "residual_blocks")
    if blocks is None or blocks < 0:
        raise bad_header("residual_blocks", "scratchnst writes an integer >= 0")
    if blocks > MAX_RESIDUAL_BLOCKS:
        raise bad_header("residual_blocks", f"scratchnst writes at most {MAX_RESIDUAL_BLOCKS}, the bound of training")
    outer_kernel = _integers(f, "outer_kernel") if version >= 2 else PAPER_OUTER_KERNEL
    if outer_kernel is None or outer_kernel < 1 or outer_kernel % 2 == 0:
        raise bad_header("outer_kernel", "scratchnst writes an odd integer >= 1")
    noise_channels = _integers(f, "noise_channels") if version >= 3 else 0
    if noise_channels is None or not 0 <= noise_channels <= MAX_NOISE_CHANNELS:
        raise bad_header("noise_channels", f"scratchnst writes an integer from 0 to {MAX_NOISE_CHANNELS}")
    if version >= 3:
        noise_std = np.asarray(f.attrs.get("noise_std"))
        if noise_std.dtype.kind != "f" or noise_std.shape != () or not np.isfinite(noise_std) or noise_std < 0:
            raise bad_header("noise_std", "scratchnst writes a float >= 0")
        if noise_channels and float(noise_std) != NOISE_STD:
            raise UserError(f"{label}: the network was trained with input noise of {float(noise_std):g} grey levels, "
                            f"and this version of scratchnst draws {NOISE_STD:g}; use the version that trained it, "
                            "or train it again with this one")
    preprocessing = _plain(f.attrs.get("preprocessing"))
    if not isinstance(preprocessing, str):  # every format wrote it, as a string
        raise bad_header("preprocessing", f"scratchnst writes one of {', '.join(sorted(PREPROCESSING))}")
    if preprocessing not in PREPROCESSING:  # a string: likely a pixel space added by a newer version
        raise UserError(f"{label}: the network works in pixel space {preprocessing!r}, which this version of "
                        f"scratchnst does not know ({', '.join(sorted(PREPROCESSING))}); upgrade scratchnst to "
                        "read it, or train the network again with this version")
    # The file must hold the declared network and nothing less or more: with fewer blocks declared
    # than stored, forward would quietly skip some. Counted before the names are listed, so that a
    # huge declared count is refused here, not built. (Widths are checked by the shapes below.)
    stored = sum(1 for key in f if key.startswith("res") and key[3:].isdigit())
    if stored != blocks:
        raise UserError(f"{label}: the header declares {blocks} residual blocks and the file holds {stored} "
                        f"(groups res1, res2, ...); {damaged}")
    params = {}
    for name, shape in parameter_shapes(widths, blocks, outer_kernel, noise_channels).items():
        dataset = f.get(name)
        if not isinstance(dataset, h5py.Dataset):
            raise UserError(f"{label}: dataset {name!r} is missing; {damaged}")
        if dataset.shape != shape:
            raise UserError(f"{label}: dataset {name!r} has shape {dataset.shape}, the stored architecture "
                            f"(widths {widths}, {blocks} residual blocks, {outer_kernel}x{outer_kernel} "
                            f"outer kernels, {noise_channels} noise planes) needs {shape}; {damaged}")
        if dataset.dtype.kind != "f":
            raise UserError(f"{label}: dataset {name!r} holds {dataset.dtype} values, not floating-point weights; "
                            f"{damaged}")
        if dataset.id.get_storage_size() == 0:
            # declared but never written (save writes every value): reading it would allocate its
            # declared size only to give a network of zeros
            raise UserError(f"{label}: dataset {name!r} holds no stored values (declared, never written); {damaged}")
        # float32, as training writes and apply runs (its memory guard counts 4-byte activations):
        # float16 would overflow in the instance normalisation's squares, float64 would double the
        # memory. float64 beyond float32's range becomes inf here, and is refused just below.
        with np.errstate(over="ignore"):
            params[name] = dataset[()].astype(np.float32, copy=False)
        if not np.isfinite(params[name]).all():
            raise UserError(f"{label}: the network file holds non-finite weights (NaN or inf, in {name!r}): it is "
                            "damaged, or was saved from a run whose loss diverged; train it again")
    meta = {key: _plain(value) for key, value in f["meta"].attrs.items()} if "meta" in f else {}
    meta["preprocessing"] = preprocessing
    return params, meta

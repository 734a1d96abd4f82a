"""Training a real-time style network (Johnson, Alahi & Fei-Fei 2016) from scratch, in NumPy.

`scratchnst.transfer` optimises the pixels of one image; here a whole network (`transformer_net`)
learns to paint any photo in one style, in one forward pass. Its loss is the course's cost,
measured by the fixed pretrained loss network (`networks`) on the network's own output:

    for each photo x of a batch, out = transformer(x):
        J(x) = alpha * J_content(a_C(x), a_G(out)) + beta * sum_l lambda_l J_style_layer(S, out)
               + tv_weight * J_tv(out)
    J = mean of J(x) over the batch

The content activations a_C come from the loss network on the photo itself (the content of the
output should be the photo's); the style targets (each style layer's Gram per position) are
computed once from the style image. The gradient goes back through the loss network to dJ/d(out)
(`Network.backward`, batches included), then through the transformer to its parameters
(`transformer_net.backward`), and Adam (`optim.adam_update`) moves every parameter.

    result = train("starry_night.jpg", "photos/", iters=600)
    transformer_net.save("starry.h5", result.params, result.meta)

Photos: every image file of a folder and its sub-folders, read in a random order (a new one each
epoch), each decoded with its short side at a little more than the training size SIZE (the scale
of the photos the network is for), cropped to CROP x CROP at a random place (CROP <= SIZE: a part
of the photo at that scale) and flipped left-right half the time. The last FINAL_STEPS steps crop
SIZE x SIZE instead: the network ends on whole photos, as it will paint them. All randomness comes
from one np.random.Generator, whose state goes into the checkpoint, so that a resumed run gives the
same parameters, bit for bit, as one never stopped (on the same machine and thread count).
"""

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from scratchnst import (checkpoint, image, memory_pages, networks, optim, parallel, training_processes,
                        transformer_net)
from scratchnst import weights as weights_io
from scratchnst.costs import (compute_content_cost, compute_total_variation_cost, content_cost_backward,
                              layer_style_cost_from_target, style_target, total_variation_cost_backward)
from scratchnst.errors import UsageError, UserError
from scratchnst.settings import MODEL_DEFAULTS, check_seed, layers_used, style_layer_list

# ----------------------------------------------------------------------------------- defaults
# Chosen from measurements on the shared 2-core Xeon this was written on (SqueezeNet loss network,
# float32, The Starry Night). Quality is judged as issue 16 does: the course cost of the network's
# output on three photos it never trained on (the cat, Tubingen, scikit-image's cameraman, 256 px),
# divided by that of 100 L-BFGS iterations of `scratchnst stylize` on the same photo; "mean" is
# the mean of the three ratios.
# - CROP 128 at SIZE 256, and the cosine schedule (2026-12-04; 13 photos of scikit-image, two runs
#   side by side, one core each, 12 minutes of training each; mean after 12 minutes):
#     crop 128, cosine       4.35 (4324 steps)     crop 128, constant lr    4.67
#     crop 160, cosine       4.47 (2601 steps)     crop 96, cosine          5.5  (7000 steps)
#     crop 128, lr 2e-3      5.0                   crop 128, batch 4        5.70 (2005 steps)
#   whole 256 px crops (the former default, constant lr): 7.4 after 21 minutes with 2 threads.
#   A 128 px crop of a photo at the 256 px scale costs a quarter of a 256 px step, so four times
#   the steps fit in the same time, and a crop still holds most of what the style layers see;
#   at 96 px the instance normalisation's statistics over a crop stray too far from a whole
#   photo's. The cost on the training crops was level with the cost on the unseen photos (22k):
#   the network is short of fitting, not of photos, and steps are what it needs. 96 px crops stayed
#   behind with the whole-photo last phase too, which evens the statistics out (2026-12-07, 2-core
#   AMD EPYC, one core each, side by side, --minutes 12, seed 0): 5630 steps, 1.71 / 2.50 / 1.95,
#   against 128 px's 4108 steps, 1.86 / 2.20 / 1.88. Nor did 160 px crops do better at equal time
#   (the same, that afternoon, the machine slower): 2679 steps, 1.96 / 2.32 / 1.97, against 128 px's
#   3509 steps, 1.94 / 2.37 / 1.94;
# - one step (crop 128, batch 2 as it then was, widths 16/32/64) took 0.16 s on one thread and 0.11 s on two
#   (each photo of the batch on its own core: batch_loss_and_grads), idle, on the Xeon with 9x9
#   outer kernels; with today's 5x5 (transformer_net's notes: 2.18 against 2.43 on the mean above
#   at 4000 steps, each step 12% shorter) 0.155 s and 0.097 s on a 2-core AMD EPYC, 0.17 s on one
#   core with another run on the other; 6000 such steps are about 16 minutes on one thread, 10 on
#   two. Two threads were 2-3 times SLOWER than one with another job on the other core (256 px
#   steps, 2026-11), hence one thread unless --threads says otherwise;
# - the network: 4 residual blocks instead of 5 made a step 4% shorter and ended behind at 4000
#   steps (2.25 against 2.18 on the mean above);
# - the photos at the scale of stylize's --size (long side 256, a short side of 170-256, instead
#   of a short side of 256-294) ended behind at 4000 steps: 2.41 against 2.18;
# - the network: half widths (8/16/32) with 3 blocks ran twice the steps but ended behind
#   (256 px, 13:49: 51.2k against 36.5k for the default network), so TRAIN_WIDTHS are
#   transformer_net's defaults;
# - no skip connections around the bottleneck (2026-12-04, 9x9 network, one core each, side by
#   side with the default): adding the photo to the output before the tanh, or conv1's output to
#   up2's, makes the output start near the photo, but the style then came far slower (batch cost
#   2.4e5 against 5.4e4 at step 1500, and 1.45e5 against 6.7e4 at step 700): both stopped.
#   Nor with a gate: conv1's output times a learnt gate per channel, zero at first, added to up2's
#   (2026-12-07, 2-core AMD EPYC, one core each, side by side, 4500 steps, seed 0) gave 1.80 /
#   2.25 / 1.96 against 1.82 / 2.15 / 1.89 without; its 16 gates ended between -0.09 and 0.01;
# - residual blocks that start as the identity (their second normalisation's gamma 0 instead of 1,
#   as Goyal et al. 2017 start ResNets; one core each, 4500 steps, the same day): 1.75 / 2.18 /
#   1.88 at seed 0, against the 1.82 / 2.15 / 1.89 above, and 1.84 / 2.25 / 1.89 at seed 1: no
#   faster to learn;
# - nor the residual blocks at half resolution (one downsampling, not two: conv3 of stride 1,
#   up1 without upsampling, widths 16/32/32, so that the blocks' multiply-adds stay the same
#   while each of Tubingen's small houses spans four times the positions in them; 2026-12-07,
#   one core each, side by side, 4500 steps, seed 0): 2.00 / 2.38 / 2.00, each step 0.16 s
#   against 0.15 s (twice the pixels to normalise, smaller products; 0.107 s against 0.090 s for
#   the transformer alone, idle), the receptive field halved; nor leaky ReLUs (slope 0.2 below
#   zero, in every layer but the blocks' second): 1.90 / 2.32 / 1.86. Both against the 1.82 /
#   2.15 / 1.89 above;
# - batch 1 (2026-12-05; until then 2): at equal time, twice the steps on one crop each beat
#   batch 2 (8000 steps against 4000, the last twelfth on whole photos, lr 2e-3, one core each,
#   two runs side by side, about 14 minutes; the mean above, with cat / Tubingen / cameraman):
#       batch 2, seed 0   1.97 (1.75 / 2.28 / 1.87)     batch 1, seed 0   1.83 (1.56 / 2.21 / 1.70)
#       batch 2, seed 1   1.95 (1.83 / 2.08 / 1.94)     batch 1, seed 1   1.88 (1.71 / 2.16 / 1.77)
#   and at lr 1.4e-3, seed 0, 1.84 (1.71 / 2.01 / 1.78): the rate can stay. Earlier, batch 4 was
#   clearly behind batch 2 (above; and at 128 px, 90 s: 126k against 84k). The network is short of
#   steps, not of photos per step (see crop 128 above). With --threads 2 a batch of one photo is
#   split by layers, not by photos, which gains less: a 128 px step took 72 ms on one core, 63 ms
#   on two (batch 2: 146 and 85 ms);
# - --threads 2 trains on the same 10000 photos in half the time, rather than on twice the photos
#   in the same time (2026-12-05, helper processes, one run each; cat / Tubingen / cameraman):
#   10000 steps of two took 16 min 53 s and gave 1.69 / 2.19 / 1.65 (mean 1.84), no better than
#   one thread's 10000 steps of one in 15 min 27 s (1.66 / 2.12 / 1.73, mean 1.84); 12000 of two
#   (threads, 23 min 24 s) 1.60 / 2.00 / 1.59 (mean 1.73). Within a run's noise of each other:
#   the network learns from steps more than from photos per step;
# - Tubingen stays near 2.1 whatever was tried next (2026-12-05, one core each, two runs side by
#   side, the defaults otherwise, seed 0; cat / Tubingen / cameraman, the defaults 1.66 / 2.12 / 1.73):
#       a 3x3 convolution w1 -> w1 (IN, ReLU) after up2, at full resolution   1.77 / 2.12 / 1.68
#       7 residual blocks                                                     1.69 / 2.22 / 1.70
#       widths 16/32/80                                                       1.67 / 2.31 / 1.78
#       alpha 80 (judged at 80, L-BFGS too)                                   1.56 / 2.13 / 1.61
#   (alpha 80 judged at 40: 1.73 / 2.57 / 1.82; each of the first three made a step 17-22% longer).
#   What does move it is time: the defaults with twice the budget (2026-12-08, seed 0, --iters 30000
#   --minutes 38, one core: 20171 steps in 36 minutes) gave 1.61 / 1.94 / 1.58, against 1.65 / 2.09 /
#   1.71 in 8339 steps (README.md) and 2.02-2.10 on Tubingen in every 19-minute run since 2026-12-06.
#   Then most of the gap was the style cost at fire4 (Tubingen: 5.5e3 against L-BFGS's 0.9e3, of
#   10.8e3 against 2.0e3 over the five layers). With the noise plane, in the terms of the cost
#   (alpha J_content, beta lambda_l J_style_layer; 2026-12-07, README.md's 7020-step run of seed 0),
#   the content is most of it: on Tubingen 17.3e3 against L-BFGS's 9.8e3, the style 6.8e3 against
#   2.0e3 (fire4 3.1e3 against 0.85e3); the cat 20.0e3 and 7.8e3 against 14.0e3 and 2.4e3. The
#   network's content cost is much the same on every photo (17-20e3), while L-BFGS, starting from
#   the photo, keeps Tubingen's best: hence its ratio is the highest. The gap is the network's,
#   not the photos': trained on Tubingen alone it reached 1.79 on Tubingen (and 2.66 / 3.40 on the
#   others), and with Tubingen added to the 15 photos, 1.95. Within 20 minutes on 2 cores this
#   network does not get far below 2 on that photo even when it is all it sees. What moved it a
#   little (stop 31): a plane of noise beside the photo, now the default (transformer_net's notes:
#   1.99-2.06 on Tubingen in three runs with a noise generator of their own; `scratchnst train`'s
#   own runs 2.14 at seed 0, no better than 2.12 without, and 1.98 at seed 1, against 2.14);
# - the last twelfth on whole photos at stylize's scale (long side SIZE, any shape, as the photos are
#   painted and judged: Tubingen 256 x 192) instead of SIZE x SIZE squares of photos with a short
#   side of SIZE * 1.15, did not help either (2026-12-05, the defaults otherwise, one core each, two
#   runs side by side; cat / Tubingen / cameraman at seeds 0 to 3):
#       1.59 / 2.01 / 1.70, 1.68 / 2.01 / 1.63, 1.62 / 2.07 / 1.66, 1.57 / 2.03 / 1.73  (mean 1.78)
#   against the defaults' 1.67 / 2.14 / 1.68, 1.70 / 1.98 / 1.60, 1.73 / 2.07 / 1.61, 1.60 / 2.02 /
#   1.65 (mean 1.79): the cat gained, the cameraman lost, Tubingen stayed at 2.03 on average;
# - scale jitter did not help (2026-12-05, batch 2, 4000 steps, seed 0): each crop taken from a
#   square 0.8 to 1.8 times its side, resized to it, gave 1.96 (1.71 / 2.34 / 1.82) against 1.97;
# - lr 2e-3, twice Johnson et al.'s, since the whole-photo last phase (2026-12-04, 4000 steps with
#   the last 333 on whole photos, one core each, the mean above; one run is about 0.1 from the
#   next, so two seeds):
#       lr         seed 0   seed 1
#       1e-3       2.19     2.05
#       2e-3       1.97     1.95
#       3e-3       2.07     -
#   The last batches' cost agreed (3.11e4 and 3.07e4 at 2e-3, 3.22e4 and 3.28e4 at 1e-3). The
#   defaults (5000 steps) went from 1.94 to 1.90; 8600 steps with 2 threads, one run each, from
#   1.81 to 1.85, within the noise: the longer the run, the less the rate matters. Presumably the
#   cosine lets the first steps be larger than a constant rate could: it has fallen to a sixth of
#   lr when the whole-photo phase starts. Before that phase, crops to the end: 2.40 at 7e-4, 2.18 at 1e-3, 2.22 at
#   1.4e-3; with a constant rate, at 128 px, batch 2, 150 steps, the held-out photo's cost after
#   training was 175k at lr 3e-4, 137k at 6e-4, 118k at 1e-3, 350k at 3e-3, 596k at 1e-2
#   (unstyled photo 421k): larger steps make the network oscillate, smaller ones learn too
#   slowly. (9x9 at 2e-3, in the 12-minute table above: 5.0 against 4.35 at 1e-3.) One rate for
#   all: Adam moves every value by about lr a step, a kernel's values of about 0.06 (He's scale for
#   576 inputs) by 3% but the instance norms' gamma (1 at first) by 0.2%, and conditional instance
#   norm (Dumoulin et al. 2017) paints whole styles with gamma and beta alone; yet 10 or 3 times
#   the rate for every gamma, beta and conv_out's bias (2026-12-07, 2-core AMD EPYC, one core each,
#   side by side, 4500 steps, seed 0) gave 1.79 / 2.20 / 1.81 and 1.90 / 2.23 / 1.85 against the
#   one rate's 1.82 / 2.15 / 1.89 (cat / Tubingen / cameraman): level;
# - no moving average of the parameters (Polyak averaging; 2026-12-04, the runs above, the
#   average kept beside the parameters, so that both were judged on one trajectory): at lr 1e-3
#   and seed 0 a decay of 0.998 gave 2.12 against 2.19 for the last step's network, but at seed 1
#   decays of 0.998 / 0.999 / 0.9995 gave 2.11 / 2.20 / 2.31 against 2.05, and at lr 2e-3
#   2.03 / 2.10 / 2.21 against 1.97. An average reaches back into the crop steps, before the
#   whole-photo phase; the style costs rose most;
# - the network: a wider bottleneck (16/32/96, each step 1.6 times as long) at equal time (2500
#   steps against 4000, one core each, 13 minutes) ended behind: 2.34 against 2.19;
# - the last twelfth of the steps on whole SIZE x SIZE crops (2026-12-04, 5x5 network, one core
#   each, all from the same network after 2000, 3000 or 3500 of 4000 crop steps, the same time after,
#   the cosine going on to 0 over the work): the mean above was 2.20 with crop steps to the end,
#   2.09, 2.07 and 2.12 with the last 12%, 25% and 50% of the time on whole 256 px crops (125, 250,
#   500 steps). The cameraman gained most (2.36 -> 1.98), the cat lost a little (1.77 -> 1.87). A
#   network trained on crops meets whole photos only when it paints them: its instance norms'
#   statistics over a 128 px crop are not those over a photo, and a short last phase on whole
#   photos brings them together. A twelfth of the steps at 4 times the pixels is a quarter of the
#   time. DEFAULT_PHOTOS = 10000: on one core 10000 steps of one photo (9167 + 833), about as long
#   as 5000 of two took; on two cores (--threads 2) 5000 steps of two, one photo on each core.
DEFAULT_SIZE = 256
DEFAULT_CROP = 128
DEFAULT_BATCH = None    # one photo per step for each core in use: parallel.workers() (default_batch)
DEFAULT_PHOTOS = 10000  # the default --iters is this many photos: DEFAULT_PHOTOS // batch steps
FINAL_STEPS_DIVISOR = 12   # the default --final-steps: iters // 12 whole-photo steps at the end
DEFAULT_LR = 2e-3
# Adam's beta2, the decay of its running mean of squared gradients: Kingma & Ba's (and PyTorch's)
# 0.999. 0.99 (a mean over ~100 steps instead of ~1000, which follows the gradients' scale as the
# cosine and the whole-photo phase move it) learnt faster in short runs but not in full ones
# (2026-12-07, 2-core AMD EPYC, one core each, two runs side by side, the defaults otherwise;
# cat / Tubingen / cameraman as above):
#     steps          seed   beta2 0.999                 beta2 0.99
#     2400           0      2.05 / 2.35 / 2.04 (2.15)   1.79 / 2.38 / 1.94 (2.04)
#     2400           1      1.92 / 2.39 / 2.16 (2.16)   1.86 / 2.32 / 2.07 (2.08)
#     7020 (budget)  0      1.69 / 2.04 / 1.68 (1.80)   1.69 / 2.11 / 1.70 (1.83)
#     6712 (budget)  1      1.67 / 2.03 / 1.70 (1.80)   1.68 / 2.14 / 1.73 (1.85)
# (the 0.999 runs of 7020 and 6712 steps are README.md's of 2026-12-06, the plans the 18-minute
# budget made then; the 0.99 ones trained the same plans). --adam-beta2 0.99 is for short runs
# (--iters or --minutes of a third of the defaults' or less). Tried beside it at 2400 steps (seed
# 0, the mean above) and dropped: a warm-up (300 steps, lr rising to 3e-3), 2.24; gradients one
# step late, as two cores taking alternate steps in a pipeline would compute them, 2.68 (2.53 at
# lr 1e-3; 2.37 evaluated at the parameters extrapolated one step ahead), against 2.15 on time:
# a second core cannot double the steps that way. The same at 4500 steps (2026-12-07, one core
# each, seed 0; cat / Tubingen / cameraman, against 1.82 / 2.15 / 1.89): one step late, 2.11 /
# 2.49 / 2.20; the warm-up (300 steps, to lr), 1.92 / 2.40 / 1.93; and Adam's beta1 0.8 instead
# of 0.9, 1.86 / 2.19 / 1.84, level. Nor would the pipeline's halves have run at once: the
# transformer's backward of one step (about 75 ms of a 136 ms step at 128 px, idle) in one thread
# and the next step's forward and loss in another took 157 and 189 ms, against 135 and 183 one
# after the other (two rounds): their thousands of NumPy calls queue for the GIL.
DEFAULT_ADAM_BETA2 = 0.999
LR_SCHEDULES = ("cosine", "constant")
DEFAULT_LR_SCHEDULE = "cosine"
DEFAULT_SEED = 0
TRAIN_WIDTHS = transformer_net.DEFAULT_WIDTHS
TRAIN_RESIDUAL_BLOCKS = transformer_net.DEFAULT_RESIDUAL_BLOCKS
TRAIN_OUTER_KERNEL = transformer_net.DEFAULT_OUTER_KERNEL
TRAIN_NOISE_CHANNELS = transformer_net.DEFAULT_NOISE_CHANNELS
# The costs are the course's, with each network's layers and beta (settings.MODEL_DEFAULTS), and its
# alpha times TRAIN_ALPHA_FACTOR. `scratchnst stylize` starts from the photo, and its content
# weight only has to keep the subject it starts with; a network starts from nothing. With stylize's
# weights (SqueezeNet: alpha 10, beta 4) a network trained 9500 steps learnt to paint The Starry
# Night's stars over the whole frame and drop the subject (the cat, Tubingen's houses, the
# cameraman were gone), because that costs little more in content: at fire3 a grey image is
# 2.4k from the cat's content, the style image 7.0k, stylize's result 4.3k and that network's
# output 6.1k. With 4 times the content weight the subject stays in view, blurred, and on three
# unseen photos the network's cost came to 1.8, 2.6 and 2.3 times that of 100 L-BFGS iterations of
# the same cost (2026-12-04, 9x9 outer kernels, 9500 steps with --threads 2, 17 minutes; with alpha
# 10: 2.6, 4.4 and 4.5; 7 minutes on one core each, side by side: 3.2 against 5.3 on average; with
# today's 5x5 outer kernels and alpha 40, 10000 steps: 1.61, 2.26 and 2.00; and with the last
# 716 of 8600 steps on whole photos, 18 minutes: 1.64, 2.05 and 1.73). Judge a network
# by the cost it was trained on: its file records alpha and beta (`scratchnst stylize --alpha`).
# Total variation: 0, as stylize's defaults (the transformer's output has no pixel noise for it
# to remove).
TRAIN_ALPHA_FACTOR = 4.0
TRAIN_TV_WEIGHT = 0.0
LARGE_PHOTO_MARGIN = 1.15   # large photos are decoded with their short side at SIZE * 1.15, then cropped
# A photo is decoded with its short side at about SIZE, so its decoded size grows with its aspect:
# a strip of 4 x 100000 px became 256 x 6,400,000 (4 GB, and 20 s a step even at --size 64) for
# crops that each see a sliver of it. Photos longer than 8 times their width are skipped as
# unreadable ones are: a decoded photo is then at most 8 times a square one's pixels (2 MB at the
# default size) and check_train_memory can count it, while panoramas (2:1 to 6:1) are still used.
MAX_PHOTO_ASPECT = 8
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
CACHE_BYTES = 512 * 2**20   # decoded photos kept in memory (uint8), so that each is decoded once per run
# A crop of one plain colour (a white wall, an overexposed sky, a letterbox bar) has no variance for
# the instance norms to divide by: each one's backward pass then multiplies the gradient by
# 1/sqrt(eps) = 316, and through the network's dozen norms it overflows float32 at the first step
# (a one-colour photo in the folder ended a run with "the loss became infinite"). Such crops teach
# nothing about painting a photo, so they are drawn again elsewhere in the photo, and a photo that
# is one colour all over is skipped as unreadable ones are. The threshold is in grey levels of
# 0..255: JPEG noise on a flat area is about 0.5.
FLAT_STD = 1.0
# Adam averages each gradient's square: in float32 that overflows above sqrt(3.4e38) = 1.8e19, and
# the parameter's step becomes 0 (a run with --alpha 1e30 hardly trained, and ended as if all went
# well). Such gradients come only from weights far beyond any useful cost (the defaults' are below
# 1e4): the run stops, saying which weights to lower.
GRADIENT_LIMIT = 1e18
# Bounds of the network's size (transformer_net's, which load holds files to), so that a slip of the
# keyboard is told at once rather than after minutes of allocation.
MAX_WIDTH = transformer_net.MAX_WIDTH
MAX_RESIDUAL_BLOCKS = transformer_net.MAX_RESIDUAL_BLOCKS
FLAT_RETRIES = 8   # crops drawn from a photo before it is passed over for this batch
# Steps of a run: far beyond what a CPU trains (a step takes milliseconds at least: 10**9 of them
# are years), and far inside the int64 the checkpoint stores the plan in. Without a bound, --iters
# above 2**64 trained, and the first checkpoint or stop failed to save it (no HDF5 integer holds
# it), losing the network. cli/parser.py has the same bound, written out (NumPy must not load there).
MAX_ITERS = 10**9


# ------------------------------------------------------------------------------------- photos
def list_photos(folder):
    """The image files of a folder and its sub-folders, sorted by their path inside it.

    Files are picked by extension (IMAGE_EXTENSIONS, any case); hidden files and folders (a name
    starting with ".") are skipped. Whether each one decodes is found out when it is read.

    Args:
        folder: path of the folder.

    Returns:
        list of Path, sorted (the order of a run does not depend on the file system's).

    Raises:
        UserError: the folder is missing, is a file, or holds no image file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder of photos; check the path (give a folder of .jpg or .png photos)")
    if not folder.is_dir():
        raise UserError(f"{folder}: is a file, not a folder; give the folder that holds the training photos")
    photos = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                     and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file()),
                    key=lambda p: p.relative_to(folder).as_posix())
    if not photos and not os.access(folder, os.R_OK | os.X_OK):
        # rglob passes over a folder it may not list, and would call it empty
        raise UserError(f"{folder}: cannot be read (Permission denied); check its permissions")
    if not photos:
        raise UserError(f"{folder}: no photos in it (no file ending in {', '.join(IMAGE_EXTENSIONS[:3])}, ... in "
                        "the folder or its sub-folders); put the training photos there")
    return photos


def crop_source_size(H, W, size):
    """(H', W') a photo is decoded at before its random size x size crop.

    Smaller than size on its short side: enlarged so that the short side is size. Larger than
    size * LARGE_PHOTO_MARGIN: reduced so that the short side is about that (decoding a 12-megapixel
    photo to crop 256 pixels of it would take most of a step and show a tiny part of the scene).
    In between: as it is.
    """
    short = min(H, W)
    if short < size:
        target = size
    elif short > round(size * LARGE_PHOTO_MARGIN):
        target = round(size * LARGE_PHOTO_MARGIN)
    else:
        return H, W
    scale = target / short
    return (target, max(target, round(W * scale))) if H <= W else (max(target, round(H * scale)), target)


class PhotoBatches:
    """Random crop x crop squares of a folder's photos (decoded at scale `size`), in batches, from a Generator.

    Photos are visited in a random order, a new permutation each epoch; each is cropped at a
    random place and flipped left-right with probability 1/2. A photo that cannot be read is
    skipped (`skipped` counts them); if none of them can be read, UserError.

    The state (`state()`, `set_state`) is the order, the position in it and the counts; the
    Generator's own state is saved by the caller (it is shared with nothing else here, but the
    caller owns it). Decoded photos are cached as uint8 (up to CACHE_BYTES), and a photo read from
    the file is rounded to uint8 too, so that the cache never changes a batch.
    """

    def __init__(self, photos, size, batch, rng, folder=None, crop=None):
        """photos: list of paths (list_photos); size: the scale photos are decoded at (crop_source_size);
        batch: photos per batch; rng: np.random.Generator; folder: for messages; crop: side of the
        square crops, at most size (None: size)."""
        self.photos = [Path(p) for p in photos]
        self.size, self.batch, self.rng = int(size), int(batch), rng
        self.crop = self.size if crop is None else int(crop)
        if not 1 <= self.crop <= self.size:
            raise ValueError(f"crop {self.crop} must be between 1 and size {self.size}")
        self.folder = folder
        self.order = np.zeros(0, dtype=np.int64)
        self.position = 0
        self.epoch = 0
        self.skipped = 0
        self.bad = set()
        self.first_error = None
        self._cache, self._cached_bytes = {}, 0

    def state(self):
        """What resuming needs: {"order", "position", "epoch", "skipped"}."""
        return {"order": self.order.copy(), "position": int(self.position), "epoch": int(self.epoch),
                "skipped": int(self.skipped)}

    def set_state(self, state):
        """Go on from state(); ValueError if its order is not a list of photo indices."""
        order = np.asarray(state["order"])
        # read one index at a time: a 2-D order passed the range checks, then failed in the step that read it
        if order.ndim != 1 or (order.size and order.dtype.kind not in "iu"):
            raise ValueError(f"the order is a {order.ndim}-D array of {order.dtype}, not a list of indices")
        self.order = order.astype(np.int64)
        self.position, self.epoch, self.skipped = int(state["position"]), int(state["epoch"]), int(state["skipped"])

    def _next_index(self):
        if self.position >= len(self.order):
            self.order = self.rng.permutation(len(self.photos)).astype(np.int64)
            self.position = 0
            self.epoch += 1
        index = int(self.order[self.position])
        self.position += 1
        return index

    def _photo(self, index):
        """The decoded photo (H', W', 3) uint8 at its crop source size, or None if it cannot be read."""
        if index in self._cache:
            return self._cache[index]
        path = self.photos[index]
        try:
            H, W = image.image_size(path)
            if max(H, W) > MAX_PHOTO_ASPECT * min(H, W):
                return self._skip(index, f"{path} is {W}x{H} px, more than {MAX_PHOTO_ASPECT} times as long as it "
                                         "is wide: too elongated to train on")
            H2, W2 = crop_source_size(H, W, self.size)
            if (H2, W2) == (H, W):
                picture = image.load_image(path)
            else:
                picture = image.load_image(path, long_side=max(H2, W2))
                if min(picture.shape[:2]) < self.size:  # rounding of the long side: make sure it fits
                    picture = image.resize_to(picture, max(self.size, picture.shape[0]),
                                              max(self.size, picture.shape[1]))
        except UserError as error:
            return self._skip(index, str(error))
        picture = image.to_uint8(picture)
        if is_flat(picture):
            return self._skip(index, f"{path} is one plain colour, with nothing to learn from")
        if self._cached_bytes + picture.nbytes <= CACHE_BYTES:
            self._cache[index] = picture
            self._cached_bytes += picture.nbytes
        return picture

    def _skip(self, index, reason):
        """None, after marking photo `index` as one never to read again (counted, the first reason kept)."""
        self.bad.add(index)
        self.skipped += 1
        self.first_error = self.first_error or reason
        return None

    def next_batch(self, crop=None):
        """(batch, crop, crop, 3) float32 RGB 0..255: the next photos, randomly cropped and flipped.

        crop: this batch's side (at most size), None for the one given at construction.
        """
        crop = self.crop if crop is None else int(crop)
        if not 1 <= crop <= self.size:
            raise ValueError(f"crop {crop} must be between 1 and size {self.size}")
        out = np.empty((self.batch, crop, crop, 3), dtype=np.float32)
        filled, passed_over = 0, 0
        where = f" in {self.folder}" if self.folder is not None else ""
        while filled < self.batch:
            if len(self.bad) == len(self.photos):
                raise UserError(f"none of the {len(self.photos)} photos{where} could be used (first: "
                                f"{self.first_error}); give a folder of readable .jpg or .png photos")
            index = self._next_index()
            if index in self.bad:
                continue
            picture = self._photo(index)
            if picture is None:
                continue
            for _ in range(FLAT_RETRIES):
                candidate = random_crop(picture, crop, self.rng)
                if not is_flat(candidate):
                    out[filled] = candidate
                    filled += 1
                    break
            else:
                passed_over += 1
                if passed_over > 4 * len(self.photos):   # every photo, several times: not bad luck
                    raise UserError(f"every {crop} px crop drawn from the photos{where} was one plain colour; give "
                                    "photos with something in them (or a smaller --crop)")
        return out


def random_crop(picture, size, rng):
    """A size x size crop of picture (H, W, 3) at a random place, flipped left-right with probability 1/2.

    Draws from rng, in this order: the row, the column, the flip.
    """
    H, W = picture.shape[:2]
    top = int(rng.integers(0, H - size + 1))
    left = int(rng.integers(0, W - size + 1))
    crop = picture[top:top + size, left:left + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop.astype(np.float32)


def is_flat(picture):
    """True if picture (H, W, 3) 0..255 is one plain colour: every channel's standard deviation below FLAT_STD."""
    return float(np.std(picture, axis=(0, 1), dtype=np.float64).max()) < FLAT_STD


def preprocess_batch(photos, mode):
    """(N, H, W, 3) RGB 0..255 -> (N, H, W, 3) in the loss network's space (image.preprocess, per photo)."""
    return np.concatenate([image.preprocess(p, mode) for p in photos], axis=0)


# --------------------------------------------------------------------------------------- loss
def make_loss_function(network, style_x, content_layer, style_layers, alpha, beta, tv_weight, targets=None):
    """The training loss of a batch of outputs and its gradient with respect to them.

    Args:
        network: the loss network (networks.Network); everything below is in its dtype.
        style_x: (1, H_S, W_S, 3) preprocessed style image (unused when targets are given).
        content_layer: layer of the content cost.
        style_layers: [(layer, lambda_l), ...].
        alpha, beta, tv_weight: weights of the three costs.
        targets: None, or the style targets another loss computed ({layer: style_target}, its
            `.targets`): a helper process takes the parent's, so that both compute the same numbers.

    Returns:
        loss(out, x) -> (J, dJ/d(out), parts), with loss.targets the style targets:
            out: (N, H, W, 3) the transformer's outputs, preprocessed space.
            x: (N, H, W, 3) its inputs (the photos), whose content the outputs should keep.
            J: float, the mean over the batch of
                   alpha J_content(a_C(x_i), a_G(out_i)) + beta sum_l lambda_l J_style_layer(S, out_i)
                   + tv_weight J_tv(out_i)
            dJ/d(out): (N, H, W, 3), network dtype.
            parts: {"J", "J_content", "J_style", "J_tv"}, each the batch mean, floats.

    Each image's costs are the course's (costs.py, one image each: the content cost at one layer,
    the layer style cost from a precomputed target); only the loss network runs on the whole batch.
    J_tv of the batch is already the mean of the images' J_tv (it divides by N*H*W*C).
    """
    style_names = [name for name, _ in style_layers]
    wanted = layers_used(content_layer, style_layers)
    if targets is None:
        a_S = network.forward(style_x, style_names)
        targets = {name: style_target(a_S[name]) for name in style_names}
    dtype = network.dtype

    def loss(out, x):
        N = out.shape[0]
        a_C = network.forward(x, [content_layer])[content_layer]   # (N, ...) the photos' content: no gradient
        a_G = network.forward(out, wanted)
        grads = {name: np.zeros(a.shape, dtype) for name, a in a_G.items()}
        J_content = J_style = 0.0
        for i in range(N):
            one = slice(i, i + 1)
            J_content += compute_content_cost(a_C[one], a_G[content_layer][one]) / N
            grads[content_layer][one] += (alpha / N) * content_cost_backward(a_C[one], a_G[content_layer][one])
            for name, lam in style_layers:
                J_layer, da = layer_style_cost_from_target(targets[name], a_G[name][one])
                J_style += lam * J_layer / N
                grads[name][one] += np.asarray(beta * lam / N, dtype) * da
        J_tv = compute_total_variation_cost(out) if tv_weight else 0.0
        J = alpha * J_content + beta * J_style + tv_weight * J_tv
        dout = network.backward(grads)
        if tv_weight:
            dout = dout + np.asarray(tv_weight, dtype) * total_variation_cost_backward(out)
        return float(J), dout.astype(dtype, copy=False), {"J": float(J), "J_content": J_content,
                                                            "J_style": J_style, "J_tv": J_tv}

    loss.targets = targets
    return loss


def make_loss_functions(network, *settings, count=None):
    """`count` make_loss_function(net, *settings), for batch_loss_and_grads: by default one per worker
    of scratchnst.parallel; 1 where helper processes take the other pieces (they make their own).

    The first is on `network`, the others on its siblings (Network.sibling: the same weights, caches
    of their own), so that each thread runs its photos through a loss network of its own; all share
    the first one's style targets.
    """
    first = make_loss_function(network, *settings)
    return [first] + [make_loss_function(network.sibling(), *settings, targets=first.targets)
                      for _ in range((parallel.workers() if count is None else count) - 1)]


def loss_and_grads(params, x, loss, preprocessing="caffe"):
    """One training step's loss and the gradient of every parameter.

    Args:
        params: the transformer's parameters.
        x: (N, H, W, 3) preprocessed photos, or (N, H, W, 3 + z) with the network's noise planes
            (transformer_net.network_input; without them forward draws them from its fixed seed).
        loss: from make_loss_function.

    Returns:
        (J, grads, parts): grads {name: array} like params.
    """
    out, cache = transformer_net.forward(params, x, preprocessing)
    J, dout, parts = loss(out, np.ascontiguousarray(x[..., :transformer_net.IMAGE_CHANNELS]))  # the photos' content
    _, grads = transformer_net.backward(dout, cache, input_grad=False)
    return J, grads, parts


def batch_loss_and_grads(params, x, losses, preprocessing="caffe", helpers=None):
    """loss_and_grads of a batch, its photos cut into pieces that run at once on the cores.

    Args:
        params, x, preprocessing: as loss_and_grads.
        losses: one loss function per worker of scratchnst.parallel (make_loss_functions); with one
            worker, losses[0] takes the whole batch.
        helpers: None, or training_processes.Helpers: then the first piece runs here on losses[0]
            and helper k takes piece k + 1 (helpers.count + 1 pieces), instead of threads.

    Returns:
        (J, grads, parts) as loss_and_grads: each piece's, weighted by its share of the photos.

    Why by photos: at the default 128 px crops a layer's work is a few ms, and splitting every layer
    across the cores (as stylize does) paid a thread's wake-up at each of ~100 layers: a step took
    0.14 s on 2 cores against 0.16 s on one. A piece of whole photos runs the whole step, its own
    layers unsplit (parallel.split runs nested splits whole), and the pieces meet once. The result
    is the batch's mean as before, summed in another order: it differs from one worker's in the
    last bits, and is the same on every run with the same number of workers, threads or helpers.
    """
    N = x.shape[0]
    x = transformer_net.network_input(params, x, preprocessing)   # the batch's noise planes, before it is cut
    if helpers is not None and helpers.count and N > 1:
        ranges = parallel.pieces(N, helpers.count + 1)   # fewer when the batch is smaller
        helpers.send(params, [x[start:stop] for start, stop in ranges[1:]])
        # as a thread's piece: its layers unsplit (the helpers have the other cores), BLAS on one thread
        with parallel.unsplit(), parallel.one_blas_thread():
            first = loss_and_grads(params, x[:ranges[0][1]], losses[0], preprocessing)
        results = [first] + helpers.receive(list(params))
        return _mean_of_pieces([stop - start for start, stop in ranges], results)
    ranges = parallel.pieces(N, len(losses))
    loss_of = {start: losses[k] for k, (start, _) in enumerate(ranges)}

    def piece(start, stop):
        return stop - start, loss_and_grads(params, x[start:stop], loss_of[start], preprocessing)

    pieces = parallel.split(piece, N)
    return _mean_of_pieces([n for n, _ in pieces], [result for _, result in pieces])


def _mean_of_pieces(sizes, results):
    """(J, grads, parts) of a batch from its pieces' [(J, grads, parts)], each weighted by its share of the photos."""
    if len(results) == 1:
        return results[0]
    N = sum(sizes)
    shares = [n / N for n in sizes]
    J = float(sum(share * J_k for share, (J_k, _, _) in zip(shares, results)))
    grads = {}
    for name in results[0][1]:
        total = None
        for share, (_, piece_grads, _) in zip(shares, results):
            g = piece_grads[name]
            term = np.asarray(share, g.dtype) * g
            total = term if total is None else total + term
        grads[name] = total
    parts = {key: float(sum(share * p[key] for share, (_, _, p) in zip(shares, results))) for key in results[0][2]}
    return J, grads, parts


def step_work(step, iters, final_steps=0, growth=1.0):
    """The work of the steps before step `step` (1 for the first), and of the whole run, in plain steps.

    The last `final_steps` of the `iters` steps each weigh `growth` (their pixels over a plain
    step's: (SIZE / CROP) ** 2 for the whole-photo steps of `train`), the others 1.

    Returns:
        (done, total): floats, done = total at step iters + 1.
    """
    plain = iters - final_steps
    before = step - 1
    done = min(before, plain) + growth * max(0, before - plain)
    return float(done), float(plain + growth * final_steps)


def learning_rate(lr, step, iters, schedule, final_steps=0, growth=1.0):
    """Adam's learning rate at step `step` (1 for the first) of a run of `iters` steps.

    "constant": lr at every step. "cosine" (Loshchilov & Hutter 2017, without restarts): from lr
    at the first step down along half a cosine, lr * (1 + cos(pi * done / total)) / 2, to nearly 0
    at the last, where done / total is the share of the run's work before this step (step_work:
    with final_steps = 0, (step - 1) / iters; a whole-photo step of the last phase advances it
    `growth` times as far as a crop's, as it takes that much longer). Large steps early move the
    network fast; small ones late let it settle instead of rattling around the minimum with the
    noise of each batch's gradient.
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        done, total = step_work(step, iters, final_steps, growth)
        # a Python float, not np.float64: NumPy would turn float32 parameters into float64 with it
        return lr * 0.5 * (1.0 + math.cos(math.pi * done / max(total, 1.0)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def adam_step(params, grads, m, v, t, lr, beta2=DEFAULT_ADAM_BETA2):
    """Adam on every parameter (optim.adam_update, beta1 0.9): new (params, m, v) dicts; the old ones stay."""
    new_params, new_m, new_v = {}, {}, {}
    for name, p in params.items():
        new_params[name], new_m[name], new_v[name] = optim.adam_update(p, grads[name], m[name], v[name], t, lr=lr,
                                                                       beta2=beta2)
    return new_params, new_m, new_v


# -------------------------------------------------------------------------------- time budget
# `scratchnst train` without --iters plans its steps to end within DEFAULT_MINUTES. The defaults'
# 10000 steps took 16.5-17.5 minutes on a 2-core AMD EPYC VM on 2026-12-05, and would have taken
# 24-27 (0.12-0.13 s a crop step instead of 0.08) on the same kind of VM on 2026-12-06: the speed of
# a shared machine moves by half from one day to the next, and a run planned by steps alone can
# take any time. So the command times a few steps and photos first (_plan_for_budget) and trains as
# many of its steps as fit (fit_steps): all of them on a fast machine, fewer on a slow one or with
# photos slow to decode (60 camera JPEGs of 4000x3000: 0.13 s a photo, as long as a step). A few
# steps timed at the start can mislead, though: two runs started at the same instant (2026-12-07)
# each timed 0.162 s a step while the other was starting up, then ran at 0.13-0.14 s and ended
# after 14 min 20 s of their 18, about 1000 steps short; and the same day a run alone timed 0.163
# s and 0.506 s (a crop, a whole photo), ran its last crop steps at 0.17-0.18 s and its whole-photo
# steps at 0.59-0.65 s, as the machine slowed, and ended 5 s inside its 18 minutes, its reserve
# spent. So the plan is made again after each quarter of its crop steps and of its whole-photo
# steps (replan): the pace of the steps since the last plan, checkpoints and progress lines
# included, scales the timed costs, and the steps left are fitted to what is left of the budget
# (in the whole-photo phase only ever fewer: a --minutes 4 run with a busy loop started on its core
# after 90 s took 4 min 31 s when only its crop steps were planned again, its 65 whole-photo steps
# running at 2.5 times their timed cost, and 3 min 50-52 s with those planned again too). The plan is
# saved in every checkpoint, so that a resumed run ends as the uninterrupted one would (a resumed
# run plans nothing again); an explicit --iters is trained whole, as asked, unless --minutes is
# given too. What the new plans do not mend is a timing that slowed one kind of step more than the
# other: during the crop steps they scale both by the crop steps' pace. Two runs started together
# (2026-12-07) timed their crop steps at 0.25 and 0.21 s while a third program started beside them,
# and their whole-photo steps after it at 0.57 s; the runs' steps took 0.13 and 0.51-0.53 s, so their
# whole-photo steps were planned again only once they began, and ended a quarter short of their
# share (432 and 476 of 6903 and 6832 steps, not 575 and 569); the runs ended inside the budget.
# Timing the two kinds interleaved, so that a passing slowdown slows both alike, was tried and
# dropped: both were then timed about 1.5 times as long as the run's steps took (0.178 and 0.661 s
# against 0.111 and 0.438 s timed one kind after the other, minutes apart on the same idle VM; the
# runs' paces 0.68-0.80 against 1.01-1.13), presumably as a step after one of the other size is slower.
# The budget was 18 minutes until 2026-12-07: planning again after each quarter, its runs ended
# after 15 min 24 s to 17 min 47 s (README.md's table), none closer to it than 13 s, so a minute
# more still ends inside issue 16's 20 minutes on this machine, and buys about 6% more steps (the
# defaults' ratios fell by about 0.1 from 4500 steps to 6500: README.md and the notes above). The
# first three 19-minute runs (the same day, slow: 0.18-0.22 s a crop step) ended after 18 min 14 s
# to 18 min 27 s, one of them after its last whole-photo steps ran 1.12-1.25 times as long as timed.
DEFAULT_MINUTES = 19.0
# The share of the minutes left that the steps are planned to fill, when planning and again when
# re-planning: the rest absorbs what the timing does not see (checkpoints, progress lines, a
# machine that slows down later).
BUDGET_SHARE = 0.9
REPLANS = 3   # the plan is made again after each quarter of its crop and whole-photo steps but the last ...
REPLAN_LEAST_STEPS = 50         # ... of its crop steps when at least this many steps ran since the last plan
REPLAN_LEAST_WHOLE_STEPS = 8    # ... of its whole-photo steps when at least this many of them did
TIMED_STEPS = {"crop": 5, "whole": 2}   # steps timed of each kind, each after one untimed
TIMED_PHOTOS = 3   # photos decoded to time a photo's decoding


def fit_steps(seconds, crop_seconds, whole_seconds, iters, final_steps, snapshot_seconds=0.0, snapshot_every=0,
              decode_seconds=0.0, photos=0, batch=1, cached=True):
    """The plan of at most `iters` steps that fits in `seconds`: (steps, whole-photo steps).

    Args:
        seconds: time the steps may take.
        crop_seconds, whole_seconds: one crop step's and one whole-photo step's time (photos decoded).
        iters, final_steps: the plan asked for; the whole-photo steps keep their share of it,
            final_steps * steps // iters, at the end.
        snapshot_seconds, snapshot_every: one snapshot's time, and steps between them (0: none).
        decode_seconds, photos, batch, cached: decoding a photo takes decode_seconds; a step takes
            `batch` photos from `photos` distinct ones, each decoded the first time it is drawn if
            they all fit in the cache (`cached`), every time otherwise.

    Returns:
        (steps, final): the most steps, 1 <= steps <= iters, whose crop steps, whole-photo steps,
        snapshots and decoding take at most `seconds` (1 step if even that one does not fit).
    """
    low, high = 1, iters   # the time grows with n: n - final, final, snapshots and decodes never fall as n grows
    while low < high:
        middle = (low + high + 1) // 2
        if plan_seconds(middle, crop_seconds, whole_seconds, iters, final_steps, snapshot_seconds, snapshot_every,
                        decode_seconds, photos, batch, cached) <= seconds:
            low = middle
        else:
            high = middle - 1
    return low, final_steps * low // iters


def plan_seconds(n, crop_seconds, whole_seconds, iters, final_steps, snapshot_seconds=0.0, snapshot_every=0,
                 decode_seconds=0.0, photos=0, batch=1, cached=True):
    """The time of the first n steps of fit_steps's plan (same arguments): its whole-photo steps
    are their share of n, final_steps * n // iters, at the end."""
    costs = (crop_seconds, whole_seconds, iters, final_steps, snapshot_seconds, snapshot_every, decode_seconds, photos,
             batch, cached)
    return timed_seconds(costs, n - final_steps * n // iters, n)


def time_step(params, losses, mode, helpers, make_batch, count, lr, rng):
    """Mean seconds of a training step, over `count` steps after one untimed (a mean, not a median: a
    step slowed by the machine counts, as it will in the run).

    Each step is a real one (a batch from make_batch(), the network's input, loss, gradients and an
    Adam update of copies, all thrown away), with noise from `rng`, a generator of its own: the
    run's parameters, moments and generator are left as they were, so the run that follows is the
    same, bit for bit, as one that was not timed.
    """
    m = {name: np.zeros_like(p) for name, p in params.items()}
    v = {name: np.zeros_like(p) for name, p in params.items()}
    seconds = []
    for k in range(count + 1):
        start = time.perf_counter()
        x = transformer_net.network_input(params, preprocess_batch(make_batch(), mode), mode, rng)
        with np.errstate(over="ignore", invalid="ignore"):
            _, grads, _ = batch_loss_and_grads(params, x, losses, mode, helpers)
        adam_step(params, grads, m, v, 1, lr)
        if k:
            seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds))


def check_minutes(minutes):
    """minutes as a float, or UsageError: a finite number >= 0 (0: no time budget)."""
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        raise UsageError(f"--minutes must be a number of minutes >= 0 (0: no limit), got {minutes!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise UsageError(f"--minutes must be a number of minutes >= 0 (0: no limit), got {minutes:g}")
    return value


@dataclass
class TrainPlan:
    """What `train` planned from its time budget (its `on_plan` sees it before the first step, and again
    when `replan` makes it anew).

    Attributes:
        iters, final_steps: the steps planned, and the whole-photo steps among them.
        asked_iters, asked_final_steps: the plan asked for (iters <= asked_iters).
        minutes: the budget; crop_seconds, whole_seconds (0 when none is planned), decode_seconds: one
            step of each kind and one photo's decoding, as timed here.
        seconds: what the planned steps should take; asked_seconds: what the asked ones would.
        fits: False when even one step does not fit in what the timing left of the budget (one is
            trained all the same).
        at_step: 0 for the plan made before the first step; the step after which replan made this one.
        since: the step after which the steps that gave the pace began: the plan before this one's,
            or the last crop step's (a pace of whole-photo steps alone).
        pace: the real time of the steps since then over what the timed costs predicted (1 at first).
        costs: fit_steps's arguments after `seconds`: the timed costs, the same in every plan of a run.
    """

    iters: int
    final_steps: int
    asked_iters: int
    asked_final_steps: int
    minutes: float
    crop_seconds: float
    whole_seconds: float
    decode_seconds: float
    seconds: float
    asked_seconds: float
    fits: bool = True
    at_step: int = 0
    since: int = 0
    pace: float = 1.0
    costs: tuple = field(default=(), repr=False)


def replan_step(plan, count=0):
    """When to make `plan` again, after `count` re-plans: (step, k) for the next of its marks still
    ahead, the k-th. Marks 1 to REPLANS cut its crop steps in REPLANS + 1 equal parts, each at least
    REPLAN_LEAST_STEPS steps after the plan was made; marks REPLANS + 1 to 2 * REPLANS cut its
    whole-photo steps the same way, each at least REPLAN_LEAST_WHOLE_STEPS of them after the plan
    (or the phase's start). None when no mark is left."""
    crop_steps, final = plan.iters - plan.final_steps, plan.final_steps
    for k in range(count + 1, 2 * REPLANS + 1):
        if k <= REPLANS:
            at = crop_steps * k // (REPLANS + 1)
            if at - plan.at_step >= REPLAN_LEAST_STEPS and at < crop_steps:
                return at, k
        else:
            at = crop_steps + final * (k - REPLANS) // (REPLANS + 1)
            if at - max(plan.at_step, crop_steps) >= REPLAN_LEAST_WHOLE_STEPS and at < plan.iters:
                return at, k
    return None


def timed_seconds(costs, crop_steps, steps):
    """What the timed costs (TrainPlan.costs) predict for the first `steps` steps of a plan whose
    first `crop_steps` are crop steps and the rest whole-photo ones: with the snapshots and the
    decoding of photos among them, each photo decoded once if they all fit in the cache."""
    crop, whole, _, _, snapshot_seconds, snapshot_every, decode_seconds, photos, batch, cached = costs
    snapshots = steps // snapshot_every if snapshot_every else 0
    decodes = min(steps * batch, photos) if cached else steps * batch
    return (min(steps, crop_steps) * crop + max(0, steps - crop_steps) * whole + snapshots * snapshot_seconds
            + decodes * decode_seconds)


def replan(plan, iteration, spent, since, seconds_since, left):
    """The plan made again after `iteration` steps that took `spent` seconds in all, those after
    step `since` (the last plan's, or the last crop step's: a pace of whole-photo steps alone)
    `seconds_since`, with `left` seconds of the budget remaining.

    The timed costs are scaled by the pace of the steps since then (their real time over what the
    costs predict for them: a few steps timed at the start can be slowed by a program starting
    beside them, or the machine can slow down or speed up since), and the steps left are
    fitted to BUDGET_SHARE of `left`. During the crop steps: as many of plan.asked_iters as fit, the
    whole-photo steps keeping their share; if not even the crop steps done fit with their share, the
    crop steps end now and as many whole-photo steps as fit follow (perhaps none). During the
    whole-photo steps: those left of the plan, or fewer if they no longer fit (never more).

    Returns:
        TrainPlan with at_step = iteration, since and that pace.
    """
    costs = plan.costs
    crop, whole, iters, final_steps, snapshot_seconds, snapshot_every = costs[:6]
    crop_steps = plan.iters - plan.final_steps
    done = timed_seconds(costs, crop_steps, iteration)
    predicted = done - timed_seconds(costs, crop_steps, since)
    pace = seconds_since / predicted if predicted > 0 and seconds_since > 0 else 1.0
    room = BUDGET_SHARE * max(left, 0.0) / pace   # the time left, in the timed costs' seconds
    per_whole = whole + (snapshot_seconds / snapshot_every if snapshot_every else 0.0)
    if iteration < crop_steps:
        n, final = fit_steps(done + room, *costs)
        if n - final < iteration:   # too slow for the crop steps done and their share: end them now
            least = iteration
            while least - final_steps * least // iters < iteration:
                least += 1
            final = min(final_steps * least // iters, int(room // per_whole) if per_whole > 0 else 0)
            n = iteration + final
    else:   # the whole-photo steps left, or as many as fit
        n = iteration + min(plan.iters - iteration, int(room // per_whole) if per_whole > 0 else plan.iters)
        final = n - crop_steps
    return TrainPlan(iters=n, final_steps=final, asked_iters=plan.asked_iters, asked_final_steps=plan.asked_final_steps,
                     minutes=plan.minutes, crop_seconds=crop * pace, whole_seconds=whole * pace,
                     decode_seconds=plan.decode_seconds,
                     seconds=spent + pace * (timed_seconds(costs, n - final, n) - done),
                     asked_seconds=spent + pace * (plan_seconds(iters, *costs) - done), fits=plan.fits,
                     at_step=iteration, since=since, pace=pace, costs=costs)


# ----------------------------------------------------------------------------------- settings
def default_batch():
    """Photos per step when --batch is not given: one for each worker of scratchnst.parallel.

    On one core a batch of one photo trains best for the time (the notes above: twice the steps of
    batch 2 beat it); on several, each core takes a photo of the batch (batch_loss_and_grads, the
    others' in helper processes: training_processes), which uses them far better than splitting one
    photo's layers (128 px: 72 ms a step on one core, 63 on two; batch 2 on two: 75 ms, 83 when
    threads took the second photo).
    """
    return parallel.workers()


def resumed_options(options, resume):
    """options, with the batch (and steps) of the checkpoint `resume` where options do not give them.

    The default batch follows the thread count (default_batch), the steps the batch: a run checkpointed
    with --threads 2 and resumed without it goes on with its own batch and plan (its steps, its
    whole-photo steps, so its learning rates) rather than being refused or cut short.
    """
    settings = resume.get("settings", {}) if isinstance(resume, dict) else {}
    if not isinstance(settings, dict):
        return options
    carried = dict(options)

    def whole(value, least=1):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    if options.get("batch") is None and whole(settings.get("batch")):
        carried["batch"] = settings["batch"]
    if options.get("iters") is None and whole(settings.get("iters")):
        carried["iters"] = settings["iters"]
        if options.get("final_steps") is None and whole(settings.get("final_steps"), least=0):
            carried["final_steps"] = settings["final_steps"]
    return carried


def resolve_train_settings(*, model="squeezenet", weights=None, size=DEFAULT_SIZE, crop=None,
                           batch=DEFAULT_BATCH, iters=None, final_steps=None, lr=DEFAULT_LR,
                           lr_schedule=DEFAULT_LR_SCHEDULE, adam_beta2=None, content_layer=None,
                           style_layers=None, alpha=None, beta=None, tv_weight=None, style_size=None,
                           widths=TRAIN_WIDTHS, residual_blocks=TRAIN_RESIDUAL_BLOCKS,
                           outer_kernel=TRAIN_OUTER_KERNEL, noise_channels=TRAIN_NOISE_CHANNELS, seed=DEFAULT_SEED,
                           pool=None):
    """Check every setting of a training run and fill in the defaults (JSON values only).

    Raises:
        UsageError: a number out of range, an unknown model or layer, a size that is not a multiple of 4.
        UserError: the weights file is not found.
    """
    if model not in MODEL_DEFAULTS:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(MODEL_DEFAULTS)}")
    defaults = MODEL_DEFAULTS[model]
    arch = networks.ARCHITECTURES[model]
    weights_path = weights_io.find_weights(model, explicit=weights)
    content_layer = arch.resolve(defaults.content_layer if content_layer is None else content_layer)
    style_layers = [[arch.resolve(n), float(w)] for n, w in
                    style_layer_list(defaults.style_layers if style_layers is None else style_layers)]
    numbers = {"alpha": alpha, "beta": beta, "tv_weight": tv_weight}
    fallback = {"alpha": defaults.alpha * TRAIN_ALPHA_FACTOR, "beta": defaults.beta, "tv_weight": TRAIN_TV_WEIGHT}
    numbers = {k: float(fallback[k] if v is None else v) for k, v in numbers.items()}
    for key, value in numbers.items():
        if not (np.isfinite(value) and value >= 0):
            raise UsageError(f"--{key.replace('_', '-')} must be a finite number >= 0, got {value:g}")
    if numbers["alpha"] == 0 and numbers["beta"] == 0:
        raise UsageError("--alpha and --beta are both 0: there is nothing to learn; give one of them a weight > 0")
    lr = float(lr)
    if not (np.isfinite(lr) and lr > 0):
        raise UsageError(f"--lr must be a number > 0, got {lr:g}")
    adam_beta2 = DEFAULT_ADAM_BETA2 if adam_beta2 is None else float(adam_beta2)
    if not 0 <= adam_beta2 < 1:   # NaN fails too
        raise UsageError(f"--adam-beta2 must be a number from 0 to below 1, got {adam_beta2:g}")
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    batch = default_batch() if batch is None else int(batch)
    iters = max(1, DEFAULT_PHOTOS // max(1, batch)) if iters is None else int(iters)
    size, seed = int(size), int(seed)
    if size < transformer_net.MIN_SIZE or size % transformer_net.SIZE_MULTIPLE:
        fit = max(transformer_net.MIN_SIZE, size - size % transformer_net.SIZE_MULTIPLE)
        raise UsageError(f"--size must be a multiple of {transformer_net.SIZE_MULTIPLE} and at least "
                         f"{transformer_net.MIN_SIZE} (the network halves it twice), got {size}; e.g. --size {fit}")
    need = min_size(model, content_layer, style_layers)
    if size < need:
        raise UsageError(f"--size {size} is too small for {model}'s layers, which need at least {need} px; "
                         f"use --size {need + (-need) % 4} or more")
    crop = min(size, DEFAULT_CROP) if crop is None else int(crop)
    if crop % transformer_net.SIZE_MULTIPLE or crop > size:
        fit = min(size, max(transformer_net.MIN_SIZE, crop - crop % transformer_net.SIZE_MULTIPLE))
        raise UsageError(f"--crop must be a multiple of {transformer_net.SIZE_MULTIPLE} and at most --size ({size}), "
                         f"got {crop}; e.g. --crop {fit}")
    if crop < need:
        raise UsageError(f"--crop {crop} is too small for {model}'s layers, which need at least {need} px; "
                         f"use --crop {need + (-need) % 4} or more")
    style_size = size if style_size is None else int(style_size)
    if style_size < need:
        raise UsageError(f"--style-size {style_size} is too small for {model}'s layers, which need at least {need} px")
    for key, value, least in (("batch", batch, 1), ("iters", iters, 1)):
        if value < least:
            raise UsageError(f"--{key} must be an integer >= {least}, got {value}")
    if iters > MAX_ITERS:
        raise UsageError(f"--iters must be an integer from 1 to {MAX_ITERS:,} (10**9), got {iters}")
    check_seed(seed)
    final_steps = iters // FINAL_STEPS_DIVISOR if final_steps is None else int(final_steps)
    if not 0 <= final_steps <= iters:
        raise UsageError(f"--final-steps must be an integer from 0 to --iters ({iters}), got {final_steps}")
    widths = [int(w) for w in widths]
    if len(widths) != 3 or min(widths) < 1 or max(widths) > MAX_WIDTH:
        raise UsageError(f"--widths must be three integers from 1 to {MAX_WIDTH}, got {','.join(map(str, widths))}")
    if not 0 <= int(residual_blocks) <= MAX_RESIDUAL_BLOCKS:
        raise UsageError(f"--residual-blocks must be an integer from 0 to {MAX_RESIDUAL_BLOCKS}, got {residual_blocks}")
    if int(outer_kernel) < 1 or int(outer_kernel) % 2 == 0:
        raise UsageError(f"--outer-kernel must be an odd integer >= 1 (the image is padded by half of it on each "
                         f"side), got {outer_kernel}")
    if not 0 <= int(noise_channels) <= transformer_net.MAX_NOISE_CHANNELS:
        raise UsageError(f"--noise-channels must be an integer from 0 to {transformer_net.MAX_NOISE_CHANNELS}, "
                         f"got {noise_channels}")
    if crop < transformer_net.min_input_size(outer_kernel):
        raise UsageError(f"--outer-kernel {outer_kernel} reflects {int(outer_kernel) // 2} px at each border, more "
                         f"than a {crop} px crop holds; use --outer-kernel {2 * crop - 1} or less")
    return dict(model=model, weights=str(weights_path), pool=pool or defaults.pool, size=size, crop=crop,
                batch=batch, iters=iters, final_steps=final_steps, lr=lr, lr_schedule=lr_schedule,
                adam_beta2=adam_beta2, content_layer=content_layer, style_layers=style_layers, **numbers,
                style_size=style_size, widths=widths, residual_blocks=int(residual_blocks),
                outer_kernel=int(outer_kernel), noise_channels=int(noise_channels), seed=seed)


# Peak memory of a training step, measured with /usr/bin/time (SqueezeNet, default widths, float32):
# 321 MB at --size 256 --batch 2, 979 MB at 512 batch 2, 573 MB at 512 batch 1, 1107 MB at 768
# batch 1: about 1.65 KB a pixel of the batch's largest step (the whole-photo phase), above about
# 140 MB. With margin, and VGG-19's larger activations by the ratio `stylize` measured:
TRAIN_BYTES_PER_PIXEL = {"squeezenet": 2000, "vgg19": 3500}
# Decoding a photo for the crops (PhotoBatches._photo): load_image's float32 (12 bytes a pixel) and
# to_uint8's rounded and clipped copies of it, 39 bytes a pixel of the decoded photo measured (RSS, a
# 2000 x 16000 decode); with margin:
PHOTO_BYTES_PER_PIXEL = 48


def check_train_memory(s, style):
    """UsageError, before anything is loaded, if --size / --batch / --style-size would not fit in memory.

    Without it a mistyped --size 100000 made NumPy allocate until the kernel killed the process,
    with no message at all (apply and stylize refuse such sizes the same way).

    Args:
        s: resolve_train_settings's dict.
        style: the style image file (only its header is read).
    """
    from scratchnst.settings import MEMORY_FIXED, available_memory, memory_needed

    available = available_memory()
    if available is None:
        return
    model = s["model"]
    side = s["size"] if s["final_steps"] else s["crop"]
    processes = min(parallel.workers(), s["batch"])   # each helper process holds a loss network of its own

    def step_bytes(side):
        return MEMORY_FIXED[model] * processes + TRAIN_BYTES_PER_PIXEL[model] * s["batch"] * side * side

    if step_bytes(side) > available:
        fits = side
        while fits > 16 and step_bytes(fits) > available:
            fits = int(fits * 0.95)
        flag = "--size" if s["final_steps"] else "--crop"
        fits -= fits % transformer_net.SIZE_MULTIPLE
        least = min_size(model, s["content_layer"], s["style_layers"])
        smaller_batch = ", or a smaller --batch" if s["batch"] > 1 else ""
        if fits >= least and step_bytes(fits) <= available:
            advice = f"use {flag} {fits} or less{smaller_batch}"
        elif s["batch"] > 1:
            advice = "use a smaller --batch"
        else:
            advice = "close other programs, or use a machine with more memory"
        raise UsageError(f"{flag} {side} with --batch {s['batch']} needs about {step_bytes(side) / 1e9:,.1f} GB of "
                         f"memory for a training step, and this machine has {available / 1e9:,.1f} GB available; "
                         f"{advice}")
    _check_photo_memory(s, available, step_bytes, side)
    H, W = image.image_size(style)
    scale = s["style_size"] / max(H, W)
    needed = memory_needed(model, max(1, round(H * scale)), max(1, round(W * scale)))
    if needed > available:
        raise UsageError(f"the style image at {s['style_size']} px (--style-size, which is --size unless given) needs "
                         f"about {needed / 1e9:,.1f} GB of memory for {model}, and this machine has "
                         f"{available / 1e9:,.1f} GB available; use a smaller --style-size or --size")


def decoded_photo_bytes(size):
    """Memory to decode a training photo at scale `size`, at most (PhotoBatches._photo).

    Its short side is at most size * LARGE_PHOTO_MARGIN and its long side MAX_PHOTO_ASPECT times
    that (longer photos are skipped), each pixel PHOTO_BYTES_PER_PIXEL.
    """
    short = round(size * LARGE_PHOTO_MARGIN)
    return PHOTO_BYTES_PER_PIXEL * short * MAX_PHOTO_ASPECT * short


def _check_photo_memory(s, available, step_bytes, side):
    """UsageError if a photo decoded at --size would not fit in memory beside the largest training step.

    step_bytes(side): a step's bytes on side x side crops; side: the largest step's (--size, or --crop
    without whole-photo steps). The step's own check counts only those crops: --size 20000 --crop 64
    --final-steps 0 passed it, and then each photo was decoded with a short side of 23000 px.
    """
    def needed(size):   # a smaller --size brings the crops down with it when they would be larger
        return decoded_photo_bytes(size) + step_bytes(min(side, size))

    size = s["size"]
    if needed(size) <= available:
        return
    least = min_size(s["model"], s["content_layer"], s["style_layers"])
    fits = size
    while fits > least and needed(fits) > available:
        fits = int(fits * 0.95)
    fits -= fits % transformer_net.SIZE_MULTIPLE
    if fits >= least and needed(fits) <= available:
        advice = f"use --size {fits} or less" + (f" (and --crop {fits} or less)" if fits < s["crop"] else "")
    else:
        advice = "close other programs, or use a machine with more memory"
    short = round(size * LARGE_PHOTO_MARGIN)
    raise UsageError(f"--size {size} decodes each training photo at a short side of {short} px (up to "
                     f"{MAX_PHOTO_ASPECT * short} px long), which with a training step needs about "
                     f"{needed(size) / 1e9:,.1f} GB of memory, and this machine has {available / 1e9:,.1f} GB "
                     f"available; {advice}")


def min_size(model, content_layer, style_layers):
    """The smallest side the loss network's layers (and the transformer) accept."""
    arch = networks.ARCHITECTURES[model]
    layers_used = [content_layer] + [name for name, _ in style_layers]
    return max(transformer_net.MIN_SIZE, max(arch.min_input_sizes[arch.resolve(n)] for n in layers_used))


# ------------------------------------------------------------------------------------ the loop
@dataclass
class TrainProgress:
    """What a `train` callback sees after every step.

    Attributes:
        iteration, iters: steps done (a resumed run counts on from its checkpoint), and planned.
        costs: {"J", "J_content", "J_style", "J_tv"} of this step's batch.
        seconds_per_step: mean over the steps of this process so far (start-up excluded) on
            this step's crop size (the whole-photo steps of the last phase take longer).
        eta: seconds left at this process's pace so far, per unit of work (step_work).
        elapsed: seconds of training (a resumed run counts on).
        skipped: photos that could not be read so far.
        epoch: passes over the photos begun.
        params: the parameters after this step (do not modify).
        meta: what transformer_net.save records with them (settings, style, steps done).
        history: [{"iteration", "J", "J_content", "J_style", "J_tv", "seconds"}, ...].
    """

    iteration: int
    iters: int
    costs: dict
    seconds_per_step: float
    eta: float
    elapsed: float
    skipped: int
    epoch: int
    params: dict = field(repr=False)
    history: list = field(repr=False)
    meta: dict = field(default=None, repr=False)
    state: Callable = field(default=None, repr=False)

    def checkpoint(self):
        """The whole state of the run after this step: what `train(..., resume=...)` continues from."""
        return self.state()


@dataclass
class TrainResult:
    """What `train` returns: params (the network), history (one dict per step), settings (resolved),
    seconds (of the steps of this process), meta (for transformer_net.save)."""

    params: dict
    history: list
    settings: dict
    seconds: float
    meta: dict


def _key(name):
    return name.replace("/", ":")   # checkpoint keys cannot hold "/" (it nests them)


def _unkey(stored, shapes, dtype=np.float32):
    """A stored {key: array} back to {name: array} in network order, checked against the shapes and dtype."""
    out = {}
    for name, shape in shapes.items():
        value = stored.get(_key(name))
        # the dtype before isfinite (which refuses strings), and exactly the run's: Adam would carry an
        # integer, bool or complex array into a step that fails after the work, and float64 would make
        # a network of another dtype than a run never stopped
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape \
                or not np.isfinite(value).all():
            raise checkpoint.damaged(f"parameter {name}")
        out[name] = np.array(value)   # writable copies
    return out


def photo_list_digest(photos, folder):
    """SHA-256 of the photos' paths inside their folder: a resumed run must read the same photos."""
    # The names' bytes as the file system holds them: a name that is not valid UTF-8 (b"caf\xe9.jpg")
    # comes back from os.fsencode as it was (str.encode refused it), so two such names stay distinct,
    # and a valid name gives the UTF-8 it always gave: older checkpoints' digests still match.
    names = b"\n".join(os.fsencode(Path(p).relative_to(folder).as_posix()) for p in photos)
    return hashlib.sha256(names).hexdigest()


def printable_path(path):
    """str(path) with any byte that is not valid UTF-8 written as \\xNN, so that an HDF5 string (or a
    terminal in UTF-8) can hold it; any other lone surrogate as \\udNNN."""
    # Python keeps such a byte of a file name as a lone surrogate ("\udce9"), which no UTF-8 text can
    # hold: the network file's attribute would fail to be written, and with it the whole training.
    try:
        return os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:   # a surrogate no file name gives
        return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _overflow_advice(parts, s, done):
    """What to lower when a step's loss or gradients overflowed, after `done` Adam steps: a few words.

    The weighted cost term that is largest (or not finite) is the likeliest cause. Before the first
    step the learning rate has not been used yet, so it cannot be the cause; after steps, a rate
    too large makes the network diverge, so it is named first.
    """
    terms = {"--alpha": s["alpha"] * parts["J_content"], "--beta": s["beta"] * parts["J_style"],
             "--tv-weight": s["tv_weight"] * parts["J_tv"]}
    with np.errstate(invalid="ignore"):
        bad = [flag for flag, value in terms.items() if not np.isfinite(value)]
        flag = bad[0] if bad else max(terms, key=lambda key: abs(terms[key]))
    weight = f"lower {flag} ({s[flag[2:].replace('-', '_')]:g})"
    return weight if done == 0 else f"lower --lr ({s['lr']:g}), or {weight[6:]}"


def train(style, photos_dir, *, callback=None, resume=None, checkpoint_path=None, checkpoint_every=100,
          snapshot=None, snapshot_every=0, snapshots_dir=None, writing=contextlib.nullcontext, minutes=None,
          started=None, on_plan=None, **options):
    """Train a transformer network to paint photos in the style of one image.

    Args:
        style: path of the style image (or an (H, W, 3) RGB array 0..255).
        photos_dir: folder of training photos (list_photos).
        callback: None or function(TrainProgress), called after every step.
        resume: None, or a state (TrainProgress.checkpoint(), or checkpoint.load of a file `train`
            wrote): go on from it. The settings and inputs must be the run's (iters may differ).
        checkpoint_path, checkpoint_every: save the state there every this many steps and at the end.
        snapshot, snapshot_every, snapshots_dir: stylise the photo `snapshot` every this many steps
            into snapshots_dir/snapshot_<step>.png (at its size, long side at most 2 * size).
        writing: a context manager factory every file write runs inside (the command passes
            cli.interrupts.holding_stops, so that Ctrl-C waits until the file is whole).
        minutes: None or 0, or a time budget for a new run: a few steps and photos are timed first
            (_plan_for_budget), and the run trains at most as many of `iters` steps as fit in that many
            minutes from `started` (fit_steps, BUDGET_SHARE of what is left), the whole-photo steps
            keeping their share; after each quarter of the crop steps and of the whole-photo steps
            the plan is made again at the steps' real pace (replan). Checkpoints carry the plan: a
            resumed run keeps its checkpoint's, and its `minutes` are not used.
        started: the time.perf_counter() the budget counts from (the command's start); None: the call.
        on_plan: None or function(TrainPlan), called once the budget's plan is made, and again when it
            is made anew (TrainPlan.at_step > 0).
        **options: resolve_train_settings's: model ["squeezenet"], weights, size [256], crop
            [min(size, 128)], batch [default_batch()], iters [DEFAULT_PHOTOS // batch], final_steps [iters //
            FINAL_STEPS_DIVISOR], lr [2e-3], lr_schedule ["cosine"], adam_beta2 [0.999], content_layer, style_layers,
            alpha [model's x TRAIN_ALPHA_FACTOR], beta [model's], tv_weight [0], style_size [size],
            widths [(16, 32, 64)], residual_blocks [5], outer_kernel [5], noise_channels [1], seed [0], pool.

    Returns:
        TrainResult.

    Raises:
        UserError: unreadable style image or no readable photo, images too small, a checkpoint
            from another run; UsageError: bad settings.
    """
    called = time.perf_counter()
    minutes = check_minutes(minutes or 0)
    s = resolve_train_settings(**resumed_options(options, resume))
    photos_dir = Path(photos_dir)
    photos = list_photos(photos_dir)
    style_img = _load_style(style, s["style_size"])
    need = min_size(s["model"], s["content_layer"], s["style_layers"])
    if min(style_img.shape[:2]) < need:
        raise UserError(f"the style image is {style_img.shape[1]}x{style_img.shape[0]} px at --style-size "
                        f"{s['style_size']}, but {s['model']}'s layers need at least {need} px on each side; use a "
                        "larger --style-size or a less elongated style image")
    inputs = {"style": _digest(style), "weights": checkpoint.file_digest(s["weights"]),
              "photos": photo_list_digest(photos, photos_dir)}
    network = networks.load(s["model"], weights=s["weights"], pooling=s["pool"], dtype=np.float32)
    mode = network.preprocessing
    helper_count = min(parallel.workers(), s["batch"]) - 1   # the other pieces of each batch (training_processes)
    losses = make_loss_functions(network, image.preprocess(style_img, mode), s["content_layer"], s["style_layers"],
                                 s["alpha"], s["beta"], s["tv_weight"], count=1 if helper_count > 0 else None)

    rng = np.random.default_rng(s["seed"])
    architecture = (tuple(s["widths"]), s["residual_blocks"], s["outer_kernel"], s["noise_channels"])
    params = transformer_net.init_params(rng, *architecture, dtype=np.float32)
    shapes = transformer_net.parameter_shapes(*architecture)
    m = {name: np.zeros_like(p) for name, p in params.items()}
    v = {name: np.zeros_like(p) for name, p in params.items()}
    batches = PhotoBatches(photos, s["size"], s["batch"], rng, folder=photos_dir, crop=s["crop"])
    iteration, history, elapsed = 0, [], 0.0
    if resume is not None:
        check_resume(resume, s, inputs)
        params, m, v = (_unkey(resume[part], shapes) for part in ("params", "adam_m", "adam_v"))
        if any((a < 0).any() for a in v.values()):   # a mean of squares: a negative one would make NaN steps
            raise checkpoint.damaged("Adam's second moments")
        iteration, elapsed = resume["iteration"], float(resume["elapsed"])
        history = [dict(entry) for entry in resume["history"]]
        try:   # what the file says, checked by the objects it is given to
            rng.bit_generator.state = resume["rng"]
            batches.set_state(resume["batches"])
        except (KeyError, ValueError, TypeError, OverflowError) as error:
            raise checkpoint.damaged(f"the random state or the photo order: {error}") from None
        order = batches.order
        if (order.size and (order.min() < 0 or order.max() >= len(photos))) or not 0 <= batches.position <= order.size:
            raise checkpoint.damaged("the photo order")
    snapshot_x = None
    if snapshot is not None and snapshot_every:
        snap = image.load_image(snapshot, long_side=None) if not isinstance(snapshot, np.ndarray) else snapshot
        if max(snap.shape[:2]) > 2 * s["size"]:
            snap = image.resize_long_side(snap, 2 * s["size"])
        snapshot_x = image.preprocess(snap, mode)
        snapshots_dir = Path(snapshots_dir or ".")
        snapshots_dir.mkdir(parents=True, exist_ok=True)

    meta_base = {"style": printable_path(style) if not isinstance(style, np.ndarray) else "array", "model": s["model"],
                 "content_layer": s["content_layer"], "style_layers": json.dumps(s["style_layers"]),
                 "alpha": s["alpha"], "beta": s["beta"], "tv_weight": s["tv_weight"], "size": s["size"],
                 "crop": s["crop"], "final_steps": s["final_steps"], "batch": s["batch"], "lr": s["lr"],
                 "lr_schedule": s["lr_schedule"], "adam_beta2": s["adam_beta2"], "seed": s["seed"], "pool": s["pool"],
                 "preprocessing": mode}

    def state_of(params, m, v, iteration, history, elapsed, rng_state, batch_state):
        return {"format": "train", "settings": s, "inputs": inputs, "iteration": iteration, "elapsed": elapsed,
                "params": {_key(n): a for n, a in params.items()}, "adam_m": {_key(n): a for n, a in m.items()},
                "adam_v": {_key(n): a for n, a in v.items()}, "rng": rng_state, "batches": batch_state,
                "history": list(history)}

    def adopt(plan):
        """The run's settings (and the checkpoints' meta) take the plan's steps; on_plan sees it."""
        s["iters"], s["final_steps"] = plan.iters, plan.final_steps
        meta_base["final_steps"] = plan.final_steps
        if on_plan is not None:
            on_plan(plan)
        return plan

    growth = (s["size"] / s["crop"]) ** 2   # a whole-photo step's pixels over a crop step's
    with contextlib.ExitStack() as stack:
        stack.enter_context(parallel.hold(pieces=False))  # BLAS on one thread per call, each thread on a core of its own
        helpers = None   # None: no helper processes, the batch's pieces on threads (or one piece)
        if helper_count > 0 and iteration < s["iters"]:
            helpers = stack.enter_context(training_processes.Helpers(
                helper_count, network, losses[0].targets, s["content_layer"], s["style_layers"], s["alpha"], s["beta"],
                s["tv_weight"]))
        next_plan = None   # (step, count) of the next re-plan
        if minutes and resume is None:
            budget_start = called if started is None else started
            plan = adopt(_plan_for_budget(minutes, budget_start, s, photos, params, losses, mode, helpers, snapshot_x,
                                          snapshot_every))
            next_plan = replan_step(plan)
        first_whole = s["iters"] - s["final_steps"] + 1
        work_before_run = step_work(iteration + 1, s["iters"], s["final_steps"], growth)[0]
        start = time.perf_counter()
        phase_crop, phase_start, phase_steps = None, start, 0
        while iteration < s["iters"]:
            crop = s["size"] if iteration + 1 >= first_whole else s["crop"]
            if crop != phase_crop:
                phase_crop, phase_start, phase_steps = crop, time.perf_counter(), 0
                window = (iteration, phase_start)   # the next plan's pace: the steps of this phase since then
            photos_batch = batches.next_batch(crop)
            # the photos and, drawn from the run's generator (so that a resumed run draws the same), the noise planes
            x = transformer_net.network_input(params, preprocess_batch(photos_batch, mode), mode, rng)
            with np.errstate(over="ignore", invalid="ignore"):
                J, grads, parts = batch_loss_and_grads(params, x, losses, mode, helpers)
            if not np.isfinite(J):
                raise UserError(f"the loss became {'NaN' if np.isnan(J) else 'infinite'} at step {iteration + 1}; "
                                + _overflow_advice(parts, s, iteration))
            # NaN if any gradient is (np.max propagates it, where Python's max could drop it)
            largest = float(np.max([np.max(np.abs(g), initial=0.0) for g in grads.values()]))
            if not np.isfinite(largest):
                raise UserError(f"the gradients overflowed at step {iteration + 1} (the loss was {J:.4g}); "
                                + _overflow_advice(parts, s, iteration))
            if largest > GRADIENT_LIMIT:
                raise UserError(f"the gradients reached {largest:.3g} at step {iteration + 1}, too large for Adam in "
                                f"float32 (the loss was {J:.4g}); lower --alpha / --beta / --tv-weight")
            lr = learning_rate(s["lr"], iteration + 1, s["iters"], s["lr_schedule"], s["final_steps"], growth)
            params, m, v = adam_step(params, grads, m, v, iteration + 1, lr, s["adam_beta2"])
            iteration += 1
            phase_steps += 1
            now = time.perf_counter()
            if next_plan is not None and iteration == next_plan[0]:   # before this step's checkpoint, which carries it
                plan = adopt(replan(plan, iteration, now - start, window[0], now - window[1],
                                    minutes * 60.0 - (now - budget_start)))
                window, next_plan = (iteration, now), replan_step(plan, next_plan[1])
                first_whole = s["iters"] - s["final_steps"] + 1
            history.append({"iteration": iteration, **parts, "seconds": elapsed + now - start})
            per_step = (now - phase_start) / phase_steps
            # the time left at this run's pace per unit of work: a whole-photo step counts `growth` units
            done, total = step_work(iteration + 1, s["iters"], s["final_steps"], growth)
            eta = (now - start) / (done - work_before_run) * (total - done)
            state = (lambda p=params, mm=m, vv=v, it=iteration, h=list(history), e=elapsed + now - start,
                     r=rng.bit_generator.state, b=batches.state(): state_of(p, mm, vv, it, h, e, r, b))
            if checkpoint_path is not None and (iteration % checkpoint_every == 0 or iteration == s["iters"]):
                with writing():
                    checkpoint.save(checkpoint_path, state())
            if snapshot_x is not None and iteration % snapshot_every == 0:
                with writing():
                    image.save_image(snapshots_dir / f"snapshot_{iteration:05d}.png",
                                     stylize_array(params, snapshot_x, mode))
            if callback is not None:
                callback(TrainProgress(iteration=iteration, iters=s["iters"], costs=parts, seconds_per_step=per_step,
                                       eta=eta, elapsed=elapsed + now - start,
                                       skipped=batches.skipped, epoch=batches.epoch, params=params, history=history,
                                       meta={**meta_base, "iterations": iteration}, state=state))
    meta = {**meta_base, "iterations": iteration}
    return TrainResult(params=params, history=history, settings=s, seconds=time.perf_counter() - start, meta=meta)


def _plan_for_budget(minutes, started, s, photos, params, losses, mode, helpers, snapshot_x, snapshot_every):
    """train's TrainPlan: its steps and photos timed on this machine, and as many of s's planned steps
    as fit in `minutes` from `started` (time.perf_counter()).

    Everything timed draws from a generator and a PhotoBatches of its own (not the run's: the run
    must not depend on the timing), on the run's photos: decoding them is timed apart, as the run
    decodes each photo once if they all fit in its cache, and every time it is drawn otherwise.
    """
    rng = np.random.default_rng([s["seed"], 1])
    probe = PhotoBatches(photos, s["size"], 1, rng, crop=s["crop"])
    decoded, decode_times, sizes = [], [], []
    for index in rng.permutation(len(photos))[:TIMED_PHOTOS]:
        start = time.perf_counter()
        picture = probe._photo(int(index))
        decode_times.append(time.perf_counter() - start)
        if picture is not None:
            decoded.append(picture)
            sizes.append(picture.nbytes)
    decode_seconds = float(np.mean(decode_times))
    cached = len(photos) * float(np.median(sizes or [0])) <= CACHE_BYTES

    def batch_of(side):
        if not decoded:   # none of the photos timed could be read: the run will say so at its first step
            return lambda: rng.uniform(0.0, 255.0, (s["batch"], side, side, 3)).astype(np.float32)
        return lambda: np.stack([random_crop(decoded[int(rng.integers(len(decoded)))], side, rng)
                                 for _ in range(s["batch"])])

    def timed(side, kind):
        return time_step(params, losses, mode, helpers, batch_of(side), TIMED_STEPS[kind], s["lr"], rng)

    crop_seconds = timed(s["crop"], "crop")
    whole_seconds = 0.0   # no whole-photo step is timed (nor its memory taken) where none will run
    if s["final_steps"]:
        whole_seconds = crop_seconds if s["size"] == s["crop"] else timed(s["size"], "whole")
    snapshot_seconds = 0.0
    if snapshot_x is not None and snapshot_every:
        start = time.perf_counter()
        stylize_array(params, snapshot_x, mode)
        snapshot_seconds = time.perf_counter() - start
    left = minutes * 60.0 - (time.perf_counter() - started)
    costs = (crop_seconds, whole_seconds, s["iters"], s["final_steps"], snapshot_seconds, snapshot_every,
             decode_seconds, len(photos), s["batch"], cached)
    iters, final = fit_steps(BUDGET_SHARE * left, *costs)
    return TrainPlan(iters=iters, final_steps=final, asked_iters=s["iters"], asked_final_steps=s["final_steps"],
                     minutes=minutes, crop_seconds=crop_seconds, whole_seconds=whole_seconds,
                     decode_seconds=decode_seconds, seconds=plan_seconds(iters, *costs),
                     asked_seconds=plan_seconds(s["iters"], *costs),
                     fits=plan_seconds(1, *costs) <= BUDGET_SHARE * left, costs=costs)


def _load_style(style, style_size):
    if isinstance(style, np.ndarray):
        return image.resize_long_side(np.asarray(style, np.float32), style_size)
    return image.load_image(style, long_side=style_size)


def _digest(source):
    if isinstance(source, np.ndarray):
        array = np.ascontiguousarray(source, dtype=np.float32)
        return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()
    return checkpoint.file_digest(source)


def check_resume(state, settings, inputs):
    """UsageError or UserError unless `state` is a `train` checkpoint of a run with these settings and inputs."""
    if not isinstance(state, dict) or state.get("format") != "train":
        raise UsageError("the checkpoint is not from `scratchnst train`; start again without --resume")
    for key, kind in (("settings", dict), ("inputs", dict), ("iteration", int), ("elapsed", (int, float)),
                      ("params", dict), ("adam_m", dict), ("adam_v", dict), ("rng", dict), ("batches", dict),
                      ("history", list)):
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise checkpoint.damaged(f"{key} is missing or of the wrong kind")
    made, now = (json.loads(json.dumps(d)) for d in (state["settings"], settings))
    made.setdefault("outer_kernel", transformer_net.PAPER_OUTER_KERNEL)  # runs before it was a setting were 9x9
    made.setdefault("noise_channels", 0)  # and had no noise planes
    made.setdefault("adam_beta2", 0.999)  # and Adam's usual beta2
    # the plan of steps may change (the default --final-steps follows --iters), the schedule then
    # follows the new plan; the weights file may move (its contents are compared below)
    may_change = ("iters", "final_steps", "weights")
    differ = [k for k in sorted(set(made) | set(now)) if k not in may_change and made.get(k) != now.get(k)]
    if differ:
        shown = "; ".join(f"{k}: checkpoint {made.get(k)!r}, now {now.get(k)!r}" for k in differ[:3])
        raise UsageError(f"the checkpoint was made with other settings ({shown}); give the interrupted run's "
                         "settings (only --iters and --final-steps may change), or start again without --resume")
    for key, label in (("style", "style image differs from the one"), ("weights", "weights file differs from the one"),
                       ("photos", "photos in the folder differ from the ones")):
        if state["inputs"].get(key) != inputs[key]:
            raise UsageError(f"the {label} the checkpoint was made with; give the same files, or start again "
                             "without --resume")
    b = state["batches"]
    if not (isinstance(b.get("order"), np.ndarray) or b.get("order") == []) or not isinstance(b.get("position"), int):
        raise checkpoint.damaged("the photo order")
    if state["iteration"] < 0 or len(state["history"]) != state["iteration"]:
        raise checkpoint.damaged("the step count or the loss history")
    for entry in state["history"]:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), (int, float))
                                                  for key in ("J", "J_content", "J_style", "seconds")):
            raise checkpoint.damaged("the loss history")


# ---------------------------------------------------------------------------------- stylising
def pad_to_multiple(x, multiple=transformer_net.SIZE_MULTIPLE, least=transformer_net.MIN_SIZE):
    """Reflection-pad (N, H, W, C) at the bottom and right to multiples of `multiple` (and >= least).

    Returns:
        (padded, (H, W)): crop padded[:, :H, :W] after the network to get the original size back.
    Reflection (not zeros) keeps the border looking like the photo, so the network sees no edge there.
    """
    N, H, W, C = x.shape
    H2, W2 = max(least, H), max(least, W)
    H2, W2 = H2 + (-H2) % multiple, W2 + (-W2) % multiple
    # NumPy reflects again and again when the padding is longer than the side (a tiny photo);
    # a side of one pixel has nothing to reflect, and is repeated.
    mode = "reflect" if min(H, W) > 1 else "edge"
    padded = np.pad(x, ((0, 0), (0, H2 - H), (0, W2 - W), (0, 0)), mode=mode)
    return padded, (H, W)


def stylize_array(params, x, preprocessing="caffe"):
    """The trained network on one preprocessed photo (1, H, W, 3) of any size: (H, W, 3) RGB 0..255 float32."""
    least = transformer_net.min_input_size(transformer_net.architecture_of(params)[2])
    padded, (H, W) = pad_to_multiple(x.astype(next(iter(params.values())).dtype, copy=False), least=least)
    # Weights too large for float32 (a damaged or diverged file) overflow to inf and NaN, which the
    # clip below would turn into a black picture, written as if all went well: told instead.
    # small pages: its arrays are touched once (see memory_pages)
    with parallel.hold(pieces=False), memory_pages.small_pages(), np.errstate(all="ignore"):
        out = transformer_net.stylize(params, padded, preprocessing)[:, :H, :W]
    if not np.isfinite(out).all():
        raise UserError("the network's output is not finite: the file's weights are too large for float32 (a run "
                        "that diverged, or a damaged file); retrain it, or use another network")
    return np.clip(image.deprocess(out, preprocessing), 0, 255)


def stylize_photo(params, meta, photo, size=None):
    """A photo file or (H, W, 3) RGB array through a trained network: (H', W', 3) RGB float32 0..255.

    size: None (the photo's own size) or the long side to resize it to first.
    """
    picture = image.load_image(photo, long_side=size) if not isinstance(photo, np.ndarray) else \
        (photo if size is None else image.resize_long_side(np.asarray(photo, np.float32), size))
    mode = meta.get("preprocessing", "caffe")
    return stylize_array(params, image.preprocess(picture, mode), mode)

"""The `scratchnst` command: argument parsing only.

Each subcommand has a `_add_<name>(subparsers)` function here that declares its flags and
points `func` at the function in the package that does the work. `main` turns everything that
can go wrong into one line on stderr and an exit status:

    2    wrong usage: a bad option, a value that does not parse, an unknown name (UsageError)
    1    anything else: a missing or broken file, a folder that cannot be written (UserError),
         out of memory, or a bug (which says so)
    130  Ctrl-C
--debug (anywhere on the command line) or SCRATCHNST_DEBUG=1 shows the traceback instead.
"""

import argparse
import os
import re
import sys

from scratchnst import __version__
from scratchnst.cli import interrupts, streams
from scratchnst.cpus import available_cpus
from scratchnst.errors import UserError, debug_requested, os_error_line


_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, and which takes --debug at every level (the lessons use it too).

    argparse's own errors print the whole usage block before the message; a student then has
    to find the one line that matters. Subparsers are made with the parser's class, so every
    subcommand gets both behaviours.
    """

    def __init__(self, *args, **kwargs):
        # The command's help style by default, for the lessons' parsers too: a default that means "not
        # given" (None) is said in the flag's help text, and argparse's own formatter would add "(default: None)".
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand that was not given --debug must not reset the top level's.
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback of an error instead of one line")
        # argparse takes "-1" and "-.5" for values but "-1e-3", "-inf" and "-nan" for unknown options,
        # and then says "--lr: expected one argument" instead of what is wrong with the number. Every
        # number float() reads is a value here (no option of ours looks like one).
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default and keeps the descriptions' line breaks.

    A default of None or False means "not given" and says nothing a user can act on: such a
    flag's help text says in words what happens without it, and no "(default: None)" follows.
    """

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


# --------------------------------------------------------------------------- gradcheck
_GRADCHECK_TIMEOUT = 60.0  # seconds per row of a student copy


# The longest time limit taken: 10**6 s, 11 days, no limit in practice. Beyond about 9e9 s a child's
# watchdog (faulthandler's timer) cannot be set at all, and inf is no number of seconds.
MAX_SECONDS = 10**6


def _seconds_arg(text):
    """A time limit: a number of seconds above 0, at most MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0 and at most {MAX_SECONDS:,} "
                                         "(11 days), e.g. 60")
    return value


def _add_gradcheck(sub):
    p = sub.add_parser(
        "gradcheck",
        help="check every hand-derived gradient: layers, costs, and the network down to the pixels",
        description="Check every backward pass against centred finite differences (float64) and "
        "PyTorch autograd (when torch is installed): the layers, the course's costs (content, Gram, "
        "style, total, total variation), the real-time style network's layers and, on a small one, "
        "every parameter's gradient, and dJ/dx from each cost through the pretrained networks whose weights "
        "are installed. Exit status 1 if any row fails, raises, or is an exercise not written yet.",
        epilog="examples: scratchnst gradcheck --only costs;  scratchnst gradcheck --only content_cost "
        "--only squeezenet;  scratchnst gradcheck --package mycopy (a student copy's own functions)",
        formatter_class=_Formatter,
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random inputs")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns even if torch is installed")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this check, group (layers, costs, transformer, chain) or network "
                   "(squeezenet, vgg19); repeat for several; without it, every check")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--package", type=path_arg, metavar="DIR",
                   help="check the functions of the student copy in DIR (the folder `scratchnst exercises "
                   "make` wrote) instead of this package's")
    # The slowest honest row, a chain through VGG-19, takes about 10 s on a laptop: room for a slow machine.
    p.add_argument("--timeout", metavar="SECONDS", type=_seconds_arg, default=_GRADCHECK_TIMEOUT,
                   help="with --package: stop a row still running after this long (an endless loop in the "
                   "copy) and go on with the next")

    def run(args):
        from scratchnst.cli.gradcheck_command import run

        return run(args)

    p.set_defaults(func=run)


# ----------------------------------------------------------------------- subcommands
# Other subcommands (weights, stylize, bench, exercises) register below.


# ----------------------------------------------------------------------------- weights
def _add_weights(sub):
    p = sub.add_parser(
        "weights",
        help="list, inspect, download and convert pretrained weights files",
        description="Pretrained weights files. Searched in: --weights FILE, $SCRATCHNST_WEIGHTS_DIR, "
        "weights/ of the repository, then the user cache ($XDG_CACHE_HOME/scratchnst or "
        "~/.cache/scratchnst).",
        formatter_class=_Formatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p_list = actions.add_parser("list", help="known networks, their files, and where each was found",
                                formatter_class=_Formatter)

    def run_list(args):
        from scratchnst.cli.weights_commands import print_list

        return print_list()

    p_list.set_defaults(func=run_list)

    p_info = actions.add_parser(
        "info", help="layout, layers, shapes, parameter count and architecture of a weights file",
        description="Describe an HDF5 weights file (Keras 2 or 3, scratchnst's, or a Keras 3 .keras archive). Exit "
                    "status 1 if it matches no known architecture.",
        formatter_class=_Formatter)
    p_info.add_argument("file", help="the .h5 weights file (or .keras archive)")

    def run_info(args):
        from scratchnst.cli.weights_commands import print_info

        return print_info(args.file)

    p_info.set_defaults(func=run_info)

    p_download = actions.add_parser(
        "download", help="download a network's weights, check them, then save them",
        description="Download to a temporary file; save under the known file name only when the "
        "transfer is complete, the MD5 matches (VGG-19) and the layers have the expected shapes.",
        formatter_class=_Formatter)
    p_download.add_argument("name", metavar="NAME", help="vgg19 or squeezenet")
    p_download.add_argument("--url", help="where to download from instead of the publisher's URL: a "
                            "mirror, or file:///path/to/the.h5 for a copy you have offline; the same checks apply")
    p_download.add_argument("--dest", metavar="DIR", help="folder to save into; without it, "
                            "$SCRATCHNST_WEIGHTS_DIR if set, else the user cache")

    def run_download(args):
        from scratchnst.cli.weights_commands import run_download

        return run_download(args.name, dest_dir=args.dest, url=args.url)

    p_download.set_defaults(func=run_download)

    p_convert = actions.add_parser(
        "convert", help="convert torchvision's VGG-19 .pth or MatConvNet's .mat into scratchnst's HDF5 layout",
        description="SRC: torchvision's vgg19-dcbb9e9d.pth (needs torch) or MatConvNet's "
        "imagenet-vgg-verydeep-19.mat (v7.3 read with h5py, older versions need scipy).",
        formatter_class=_Formatter)
    p_convert.add_argument("src", metavar="SRC", help="the .pth or .mat file")
    p_convert.add_argument("-o", "--output", metavar="OUT", required=True, help="the .h5 file to write (required)")

    def run_convert(args):
        from scratchnst.weights import convert

        print(f"wrote {convert(args.src, args.output)}; use it with --weights {args.output}")
        return 0

    p_convert.set_defaults(func=run_convert)


# ----------------------------------------------------------------------------- stylize
class _Default:
    """A flag's default that means "not given": shown in --help as its text, read by `run` as None."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


class _ModelDefault(_Default):
    """The default of a flag whose value depends on --model, shown in --help per model.

    The text is made only when --help is formatted, so that building the parser does not import
    scratchnst.transfer (and NumPy, h5py) for every other command.
    """

    def __init__(self, field, factor=None):
        """factor: None, or a function giving what the model's value is multiplied by (called lazily)."""
        super().__init__(None)
        self.field = field
        self.factor = factor

    def __str__(self):
        from scratchnst.settings import MODEL_DEFAULTS

        def show(value):
            if self.field == "style_layers":
                return ", ".join(f"{name}:{weight:g}" for name, weight in value)
            return f"{value:g}" if isinstance(value, float) else str(value)

        def value(defaults):
            return getattr(defaults, self.field) * (self.factor() if self.factor else 1)

        return "; ".join(f"{model} {show(value(d))}" for model, d in MODEL_DEFAULTS.items())


def _given(value):
    """None for a default that means "not given" (_Default), else the value."""
    return None if isinstance(value, _Default) else value


def _style_layers_arg(text):
    """'conv1:0.2,fire2,fire3:0.5' -> [("conv1", 0.2), ("fire2", 1/3), ("fire3", 0.5)] (no weight: 1/n)."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("give at least one layer, e.g. conv1:0.5,fire2:0.5")
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item; give NAME[:WEIGHT] items separated by "
                                         "single commas, e.g. conv1:0.5,fire2:0.5")
    layers = []
    for item in items:
        name, colon, weight = item.partition(":")
        if colon and not weight.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: the weight after ':' is empty; give a number or drop the ':'")
        try:
            layers.append((name.strip(), float(weight) if colon else 1.0 / len(items)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the weight after ':' must be a number") from None
    return layers


def path_arg(text):
    """A file name that is not empty (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; give a file name")
    return text


def _int_at_least(least, flag, most=None, most_text=None):
    """An argparse type: an integer >= least (and <= most), else one line with an example of the flag."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: give an integer >= {least}, e.g. {flag} {least}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text!r}: give an integer from {least} to {most_text or most}, "
                                             f"e.g. {flag} {least}")
        return value

    return parse


# NumPy's generators take no negative seeds, and a seed is stored as an int64; a thread count is
# from 1 to the CPUs available (_threads_arg); coarse-to-fine passes are bounded. The bounds are
# settings.MAX_SEED and MAX_SCALES, written out (tests/test_errors_commands.py checks they agree):
# settings imports NumPy, which must not load before --threads is read (_set_threads).
MAX_SEED, MAX_SCALES = 2**63 - 1, 16
seed_arg = _int_at_least(0, "--seed", MAX_SEED, "2**63 - 1")


def _threads_arg(text):
    """--threads: from 1 to the CPUs available. More would start a helper process (and in `train` a photo
    of the batch) per thread, hundreds of them for a typo, all fighting for the same cores."""
    value = _int_at_least(1, "--threads")(text)
    cpus = available_cpus()
    if value > cpus:
        raise argparse.ArgumentTypeError(f"{text!r}: more than the {cpus} CPU{'s' if cpus > 1 else ''} this "
                                         f"process may run on; give at most {cpus}, e.g. --threads {cpus}")
    return value


_scales_arg = _int_at_least(1, "--scales", MAX_SCALES)


def _floats_arg(text):
    """'0.7,0.3' -> [0.7, 0.3]."""
    try:
        return [float(item) for item in text.split(",")]  # an empty item is a mistake too: float("") fails
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 0.7,0.3") from None


_THREADS_HELP = ("cores to run on, at most the CPUs this process may use: scratchnst's layers are cut into "
                 "that many pieces run at once, each product on one BLAS thread (see scratchnst/parallel.py); on an idle 2-core machine 2 "
                 "were 1.3-1.8 times faster than 1, and far slower when another job used the other core. "
                 "With 2 or more, a small process at idle priority keeps each of those cores from sleeping "
                 "during the run, and gives way to any other program (SCRATCHNST_SPIN=0: none; see "
                 "scratchnst/awake_cores.py)")


def _add_threads(p):
    """--threads, as stylize, train and apply take it (see _set_threads)."""
    p.add_argument("--threads", type=_threads_arg, default=_Default("1, or OPENBLAS_NUM_THREADS"), help=_THREADS_HELP)


def _add_stylize(sub):
    p = sub.add_parser(
        "stylize",
        help="paint a content image in the style of one or more style images",
        description="Neural style transfer: change the pixels of an image, starting from CONTENT, to lower "
        "J = alpha J_content + beta J_style + tv_weight J_tv through a pretrained network. Prints the "
        "resolved settings, a progress line on stderr, and the time per iteration at the end. It runs on "
        "one core unless --threads (or OPENBLAS_NUM_THREADS, which NumPy's OpenBLAS reads) says otherwise.",
        formatter_class=_Formatter,
    )
    p.add_argument("content", metavar="CONTENT", type=path_arg, help="the content image (a photograph)")
    p.add_argument("styles", metavar="STYLE", nargs="+", type=path_arg, help="the style image(s) (paintings); several are blended")
    p.add_argument("-o", "--output", metavar="OUT", required=True, default=argparse.SUPPRESS, type=path_arg,
                   help="the image to write (.png or .jpg)")
    p.add_argument("--model", choices=["squeezenet", "vgg19"], default="squeezenet", help="the network")
    p.add_argument("--weights", metavar="FILE", default=_Default("searched as `scratchnst weights list` shows"),
                   help="the network's HDF5 weights file (Keras 2 or 3, or a Keras 3 .keras archive)")
    p.add_argument("--size", type=int, default=320, help="long side of the result in pixels")
    p.add_argument("--iters", type=int, default=100, help="iterations (per scale)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="the optimiser")
    p.add_argument("--lr", type=float, default=_ModelDefault("lr"),
                   help="Adam's learning rate, in pixel units (0..255); not for lbfgs")
    p.add_argument("--alpha", type=float, default=_ModelDefault("alpha"), help="weight of the content cost")
    p.add_argument("--beta", type=float, default=_ModelDefault("beta"), help="weight of the style cost")
    p.add_argument("--tv-weight", type=float, default=_ModelDefault("tv_weight"),
                   help="weight of the total variation cost (smooths pixel noise)")
    p.add_argument("--content-layer", metavar="NAME", default=_ModelDefault("content_layer"),
                   help="layer of the content cost (course names such as conv4_2 work)")
    p.add_argument("--style-layers", metavar="NAME[:WEIGHT],...", type=_style_layers_arg,
                   default=_ModelDefault("style_layers"),
                   help="layers of the style cost with their weights (a layer without one gets 1/n)")
    p.add_argument("--init", metavar="{content+noise,content,noise,FILE}", default="content+noise", type=path_arg,
                   help="the starting image: the course's content + uniform noise, the content image, "
                   "noise, or an image file")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise (the same seed gives the same image)")
    p.add_argument("--pool", choices=["max", "avg"], default=_ModelDefault("pool"),
                   help="pooling in the network (max: as it was trained; avg: Gatys et al.'s smoother gradients)")
    p.add_argument("--preserve-colors", action="store_true",
                   help="keep the content image's colours (transfer the luminance only)")
    p.add_argument("--style-blend", metavar="W,...", type=_floats_arg, default=_Default("equal"),
                   help="one weight per STYLE image")
    p.add_argument("--style-scale", type=float, default=1.0,
                   help="style images are resized to STYLE_SCALE * SIZE on their long side")
    p.add_argument("--scales", type=_scales_arg, default=1,
                   help="coarse-to-fine passes: SIZE / 2**(SCALES-1), ..., SIZE / 2, SIZE; each starts "
                   "from the last one's result")
    p.add_argument("--save-every", metavar="N", type=int, default=0,
                   help="save a numbered snapshot OUT_<iteration> every N iterations (0: never)")
    p.add_argument("--log", metavar="FILE", default=_Default("no log"), type=path_arg,
                   help="write the settings, the cost history and the time per iteration to this JSON file")
    p.add_argument("--checkpoint", metavar="FILE", default=_Default("no checkpoints"), type=path_arg,
                   help="save the whole state of the run to FILE (.npz) every --checkpoint-every iterations, "
                   "at the end and on Ctrl-C, so that --resume can continue it")
    p.add_argument("--checkpoint-every", metavar="N", type=int, default=_Default("10"),
                   help="iterations between checkpoints (with --checkpoint or --resume)")
    p.add_argument("--resume", metavar="FILE", default=_Default("a new run"), type=path_arg,
                   help="continue the run saved in this checkpoint: give the same images and settings "
                   "(--iters may be raised when --scales is 1); the end is the image an uninterrupted run "
                   "gives, bit for bit (on the same machine and --threads). Checkpoints go on into "
                   "FILE unless --checkpoint says otherwise")
    _add_threads(p)

    def run(args):
        # One thread unless the user asks for more. On the 2-core machines scratchnst is built on,
        # a second core helps little at 320 px and hurts as soon as other work runs (SqueezeNet's
        # small products ran 2-4 times slower with 2 OpenBLAS threads), and a fixed thread count
        # makes the image for a seed the same on every machine (a product split differently
        # rounds differently). This works only because nothing has imported NumPy yet.
        _set_threads(_given(args.threads))
        from scratchnst.cli.stylize_command import run_stylize

        return run_stylize(
            args.content, args.styles, args.output, save_every=args.save_every, log=_given(args.log),
            checkpoint_file=_given(args.checkpoint), checkpoint_every=_given(args.checkpoint_every),
            resume_file=_given(args.resume),
            model=args.model, weights=_given(args.weights),
            size=args.size, iters=args.iters, optimizer=args.optimizer, lr=_given(args.lr),
            alpha=_given(args.alpha), beta=_given(args.beta), tv_weight=_given(args.tv_weight),
            content_layer=_given(args.content_layer), style_layers=_given(args.style_layers),
            init=args.init, seed=args.seed, pool=_given(args.pool), preserve_colors=args.preserve_colors,
            style_blend=_given(args.style_blend),
            style_scale=args.style_scale, scales=args.scales,
        )

    p.set_defaults(func=run)


# ------------------------------------------------------------------------------- train
def _widths_arg(text):
    """'16,32,64' -> (16, 32, 64)."""
    try:
        widths = tuple(int(item) for item in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 3 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give three integers >= 1 separated by commas, e.g. 16,32,64")
    return widths


def _set_threads(threads):
    """The cores to run on, before NumPy is imported (BLAS reads these variables once, when it loads).

    threads None: one BLAS thread unless the environment says otherwise. Else `threads` workers
    of scratchnst.parallel, each of whose products runs on one BLAS thread (see parallel.environment).
    """
    if threads is None:
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        return
    from scratchnst.parallel import environment  # NumPy is imported by it, and it reads nothing yet

    os.environ.update(environment(threads))


def _train_alpha_factor():
    from scratchnst.training import TRAIN_ALPHA_FACTOR

    return TRAIN_ALPHA_FACTOR


# train's --iters at most training.MAX_ITERS, written out (NumPy must not load before --threads is read;
# tests/test_training_robustness.py checks they agree): above 2**64 no checkpoint or network file could
# hold the plan, and a stop lost the run. Below 1 is told by training's settings check, as --batch is.
MAX_ITERS = 10**9


def _iters_arg(text):
    """An argparse type: an integer of at most MAX_ITERS, else one line."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None   # as type=int says it
    if value > MAX_ITERS:
        raise argparse.ArgumentTypeError(f"{text!r}: give an integer from 1 to 10**9, e.g. --iters 10000")
    return value


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a real-time style network (Johnson et al. 2016) on a folder of photos",
        description="Train a transformer network to paint any photo in the style of STYLE in one forward pass: "
        "random CROP x CROP crops of the photos in PHOTOS_DIR (and its sub-folders; whole SIZE x SIZE squares "
        "for the last --final-steps steps) go through it, and its "
        "output's course cost (alpha J_content + beta J_style + tv_weight J_tv, through the pretrained loss "
        "network) is lowered by Adam. Prints the settings, a progress line every --print-every steps (step, "
        "loss, seconds per step, ETA), and writes the network to OUT (.h5) at the end. Ctrl-C writes the "
        "network trained so far to OUT (and the checkpoint, with --checkpoint) and exits 130. Use the "
        "result with `scratchnst apply`.",
        formatter_class=_Formatter,
    )
    p.add_argument("style", metavar="STYLE", type=path_arg, help="the style image (a painting)")
    p.add_argument("photos_dir", metavar="PHOTOS_DIR", type=path_arg,
                   help="folder of training photos (.jpg, .png, ...; sub-folders too); unreadable ones are skipped")
    p.add_argument("-o", "--output", metavar="OUT", required=True, default=argparse.SUPPRESS, type=path_arg,
                   help="the network file to write (.h5)")
    p.add_argument("--size", type=int, default=256,
                   help="the scale the network is trained for: photos are brought to a short side of about SIZE "
                   "(a multiple of 4), and the style image to a long side of SIZE")
    p.add_argument("--crop", type=int, default=_Default("the smaller of SIZE and 128"),
                   help="side of the square random crops of those photos a step trains on (a multiple of 4, at "
                   "most SIZE): smaller crops make more, cheaper steps at the same scale")
    p.add_argument("--iters", type=_iters_arg, default=_Default("10000 / BATCH"),
                   help="training steps (batches): 10000 photos in all by default")
    p.add_argument("--minutes", metavar="M", type=float, default=_Default("19 for a new run without --iters"),
                   help="time budget: a few steps and photos are timed first, and the run trains as many of --iters "
                   "as fit in M minutes (fewer on a slow machine; never more), planned again at the steps' real pace "
                   "after each quarter of the crop steps and of the whole-photo steps; 0: no budget. With --iters and "
                   "no --minutes, every step asked for is trained; a resumed run keeps the plan of its checkpoint")
    p.add_argument("--final-steps", metavar="N", type=int, default=_Default("a twelfth of --iters"),
                   help="the last N of the steps train on whole SIZE x SIZE crops instead of --crop, so that the "
                   "network ends on photos as it will paint them (each such step takes (SIZE/CROP)^2 times as long)")
    p.add_argument("--batch", type=int, default=_Default("one per thread: 1, or N with --threads N"),
                   help="photos per step; with --threads, each photo of a batch runs on its own core")
    p.add_argument("--lr", type=float, default=_Default("0.002"), help="Adam's learning rate (at the first step)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="cosine: the learning rate falls from --lr along half a cosine to nearly 0 at the last "
                   "step; constant: --lr throughout")
    p.add_argument("--adam-beta2", metavar="B2", type=float, default=_Default("0.999"),
                   help="Adam's decay of its mean of squared gradients: 0.99 learns faster in short runs (a third of "
                   "the default steps or less), not in full ones")
    p.add_argument("--model", choices=["squeezenet", "vgg19"], default="squeezenet", help="the loss network")
    p.add_argument("--weights", metavar="FILE", default=_Default("searched as `scratchnst weights list` shows"),
                   help="the loss network's HDF5 weights file (Keras 2 or 3, or a .keras archive)")
    p.add_argument("--alpha", type=float, default=_ModelDefault("alpha", factor=_train_alpha_factor),
                   help="weight of the content cost (higher than stylize's: a network starts from nothing, and "
                   "with stylize's weight it learns to drop the photo's subject)")
    p.add_argument("--beta", type=float, default=_ModelDefault("beta"), help="weight of the style cost")
    p.add_argument("--tv-weight", type=float, default=_Default("0"),
                   help="weight of the total variation cost (smooths pixel noise)")
    p.add_argument("--style-size", type=int, default=_Default("SIZE"),
                   help="long side the style image is resized to for its Gram matrices")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the initial weights, the photo order, crops and flips")
    p.add_argument("--widths", metavar="W1,W2,W3", type=_widths_arg, default=_Default("16,32,64"),
                   help="channels of the transformer network at full, half and quarter resolution")
    p.add_argument("--residual-blocks", metavar="R", type=int, default=_Default("5"),
                   help="residual blocks of the transformer network (at quarter resolution)")
    p.add_argument("--outer-kernel", metavar="K", type=int, default=_Default("5"),
                   help="kernel size of the transformer network's first and last convolutions (odd; the paper's is 9)")
    p.add_argument("--noise-channels", metavar="Z", type=int, default=_Default("1"),
                   help="planes of Gaussian noise the transformer network reads beside the photo, to paint texture "
                   "on flat areas (0: the photo alone, as Johnson et al.)")
    p.add_argument("--snapshot", metavar="PHOTO", default=_Default("no snapshots"), type=path_arg,
                   help="stylise this photo every --snapshot-every steps, to watch the training")
    p.add_argument("--snapshot-every", metavar="N", type=int, default=_Default("100"),
                   help="steps between snapshots (with --snapshot)")
    p.add_argument("--snapshots-dir", metavar="DIR", default=_Default("the folder of OUT"), type=path_arg,
                   help="folder of the snapshots snapshot_<step>.png (created if missing)")
    p.add_argument("--checkpoint", metavar="FILE", default=_Default("no checkpoints"), type=path_arg,
                   help="save the whole state of the run (network, Adam, random generator, photo order) to FILE "
                   "(.npz) every --checkpoint-every steps, at the end and on Ctrl-C")
    p.add_argument("--checkpoint-every", metavar="N", type=int, default=_Default("100"),
                   help="steps between checkpoints (with --checkpoint or --resume)")
    p.add_argument("--resume", metavar="FILE", default=_Default("a new run"), type=path_arg,
                   help="continue the run saved in this checkpoint, with the same settings and files: the network "
                   "ends bit for bit as an uninterrupted run's (same machine and threads). --iters may be raised "
                   "(and --final-steps changed); the schedule then follows the new plan from the step it resumes at")
    p.add_argument("--print-every", metavar="N", type=int, default=10, help="steps between progress lines")
    _add_threads(p)

    def run(args):
        _set_threads(_given(args.threads))
        from scratchnst.cli.train_command import run_train

        return run_train(
            args.style, args.photos_dir, args.output, snapshot=_given(args.snapshot),
            snapshot_every=_given(args.snapshot_every), snapshots_dir=_given(args.snapshots_dir),
            checkpoint_file=_given(args.checkpoint), checkpoint_every=_given(args.checkpoint_every),
            resume_file=_given(args.resume), print_every=args.print_every, minutes=_given(args.minutes),
            model=args.model, weights=_given(args.weights), size=args.size, crop=_given(args.crop),
            lr_schedule=args.lr_schedule, **({"batch": args.batch} if _given(args.batch) is not None else {}),
            **({"iters": args.iters} if _given(args.iters) is not None else {}),
            final_steps=_given(args.final_steps),
            **({"lr": args.lr} if _given(args.lr) is not None else {}), adam_beta2=_given(args.adam_beta2),
            alpha=_given(args.alpha), beta=_given(args.beta), tv_weight=_given(args.tv_weight),
            style_size=_given(args.style_size), seed=args.seed,
            **({"widths": args.widths} if _given(args.widths) is not None else {}),
            **({"residual_blocks": args.residual_blocks} if _given(args.residual_blocks) is not None else {}),
            **({"outer_kernel": args.outer_kernel} if _given(args.outer_kernel) is not None else {}),
            **({"noise_channels": args.noise_channels} if _given(args.noise_channels) is not None else {}),
        )

    p.set_defaults(func=run)


def _add_apply(sub):
    p = sub.add_parser(
        "apply",
        help="stylise photos with a network trained by `scratchnst train`",
        description="Run a trained style network on photos of any size (reflection-padded to a multiple of 4 "
        "inside, cropped back): one forward pass per photo. With one PHOTO, OUT is the image file to write "
        "(or a folder: one that exists, or a name ending in /); with several, OUT is a folder (created if "
        "missing) and each result is named after its photo.",
        formatter_class=_Formatter,
    )
    p.add_argument("network", metavar="NETWORK", type=path_arg, help="the .h5 network written by `scratchnst train`")
    p.add_argument("photos", metavar="PHOTO", nargs="+", type=path_arg, help="the photo(s) to stylise")
    p.add_argument("-o", "--output", metavar="OUT", required=True, default=argparse.SUPPRESS, type=path_arg,
                   help="the image to write (one PHOTO), or the folder to write into (several)")
    p.add_argument("--size", type=int, default=_Default("each photo's own size"),
                   help="resize each photo to this long side first")
    _add_threads(p)

    def run(args):
        _set_threads(_given(args.threads))
        from scratchnst.cli.train_command import run_apply

        return run_apply(args.network, args.photos, args.output, size=_given(args.size))

    p.set_defaults(func=run)


# --------------------------------------------------------------------------- exercises
_EXERCISE_TIMEOUT = 10.0  # seconds; the same as scratchnst.exercises.DEFAULT_TIMEOUT (tests check it)
_IMPORT_TIMEOUT = 60.0  # seconds; scratchnst.exercises.DEFAULT_IMPORT_TIMEOUT
_STUDENT_BUDGET = 240.0  # seconds; scratchnst.exercises.batch.DEFAULT_BUDGET
_CHILD_MEMORY_MB = 2048  # scratchnst.exercises.sandbox.Limits.memory_mb
_LEAST_CHILD_MEMORY_MB = 512  # below about 160 MB the worker dies in its imports or the checks at scale


def _add_exercises(sub):
    p = sub.add_parser(
        "exercises",
        help="make a student copy of the package with the answers cut out, check one, or grade a class",
        description="Course exercises, in two roles. A student SELF-CHECKS their own copy with `check`: "
        "against this package's answers, or, in a student copy, against the reference values shipped "
        "with it (no answer key needed). A teacher GRADES untrusted submissions with `grade`: each "
        "runs contained (bubblewrap: no network, no view of the answers or your files; limits on memory, "
        "time, processes, files and output), many at once, with CSV/JSON/Gradescope exports. `make DIR` "
        "writes the student copy.",
        formatter_class=_Formatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p_make = actions.add_parser(
        "make", help="write a student copy of the package",
        description="Write DIR/scratchnst (the package, answers cut out, with the reference values a "
        "student's self-check needs) and DIR/README.md. The installed package is only read.",
        formatter_class=_Formatter)
    p_make.add_argument("dir", metavar="DIR", help="folder to write into (created if missing)")
    p_make.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR, replacing DIR/scratchnst and DIR/README.md")
    p_make.add_argument("--solutions", action="store_true",
                        help="keep the answers: an answer key laid out like the student copy")
    p_make.add_argument("--gradescope", metavar="BUNDLE_DIR",
                        help="also write a Gradescope autograder (setup.sh, run_autograder, the answer key) and "
                        "its zip into BUNDLE_DIR: for you, not for the students")

    def run_make(args):
        from scratchnst.exercises import run_make
        from scratchnst.exercises.batch import check_gradescope_bundle, write_gradescope_bundle

        if args.gradescope:   # before the copy is written: a bundle that cannot be written leaves nothing behind
            check_gradescope_bundle(args.gradescope, args.dir)
        status = run_make(args.dir, force=args.force, solutions=args.solutions)
        if args.gradescope:
            folder, archive = write_gradescope_bundle(args.gradescope)
            print(f"wrote the Gradescope autograder to {folder} and {archive} (it holds the answers: "
                  "keep it from the students)")
        return status

    p_make.set_defaults(func=run_make)

    p_check = actions.add_parser(
        "check", help="self-check a student copy, exercise by exercise (your own code)",
        description="Self-check: import the student's package from DIR in a separate process and compare "
        "each exercise with this package's answers (float64), finite differences and PyTorch (if "
        "installed), or, run from a student copy, with the reference values shipped with it. Not a "
        "sandbox: for other people's code use `grade`. Exit status 0 only at 100%.",
        formatter_class=_Formatter)
    p_check.add_argument("dir", metavar="DIR", nargs="?", default=".",
                         help="the folder holding the student's scratchnst/")
    p_check.add_argument("--only", metavar="NAME", action="append",
                         help="grade only the exercise NAME, or those whose name contains NAME (repeatable)")
    p_check.add_argument("--timeout", metavar="SECONDS", type=_seconds_arg, default=_EXERCISE_TIMEOUT,
                         help="time one exercise's calls may take before they are stopped")
    p_check.add_argument("--import-timeout", metavar="SECONDS", type=_seconds_arg, default=_IMPORT_TIMEOUT,
                         help="time importing the package may take")
    p_check.add_argument("--no-torch", action="store_true", help="skip the PyTorch checks even if torch is installed")

    def run_check(args):
        from scratchnst.exercises import run_check

        return run_check(args.dir, only=args.only, timeout=args.timeout, use_torch=not args.no_torch,
                         import_timeout=args.import_timeout)

    p_check.set_defaults(func=run_check)

    p_grade = actions.add_parser(
        "grade", help="grade a class: many submissions, contained, in parallel, with exports",
        description="Grade untrusted submissions: each DIR is a folder holding a scratchnst/, or a folder "
        "of such folders; every other entry of such a folder (an archive, a link, a package a folder too "
        "deep) gets a row saying why it was not graded. Each runs in bubblewrap with no network and no view "
        "of the answers or your files, under limits; inputs are drawn afresh for the run (--seed repeats them). Without "
        "bubblewrap, grading stops unless --uncontained. Prints a table; exit status 0 when every "
        "submission was graded (whatever the scores), 1 when one could not be.",
        formatter_class=_Formatter)
    p_grade.add_argument("dirs", metavar="DIR", nargs="+", help="submission folders, or folders of them")
    p_grade.add_argument("--only", metavar="NAME", action="append",
                         help="grade only the exercise NAME, or those whose name contains NAME (repeatable)")
    p_grade.add_argument("--timeout", metavar="SECONDS", type=_seconds_arg, default=_EXERCISE_TIMEOUT,
                         help="time one exercise's calls may take")
    p_grade.add_argument("--import-timeout", metavar="SECONDS", type=_seconds_arg, default=_IMPORT_TIMEOUT,
                         help="time importing a submission's package may take")
    p_grade.add_argument("--budget", metavar="SECONDS", type=_seconds_arg, default=_STUDENT_BUDGET,
                         help="time all of one submission's calls may take together")
    p_grade.add_argument("--jobs", metavar="N", type=_int_at_least(1, "--jobs"), default=None,
                         help="submissions graded at once; None: the number of CPUs")
    p_grade.add_argument("--memory", metavar="MB", type=_int_at_least(_LEAST_CHILD_MEMORY_MB, "--memory"),
                         default=_CHILD_MEMORY_MB, help="address space one submission's process may use (Python, "
                         f"NumPy and the checks' arrays need about 160 MB: at least {_LEAST_CHILD_MEMORY_MB})")
    p_grade.add_argument("--seed", type=seed_arg, default=None, help="draw the inputs from this seed; None: fresh ones")
    p_grade.add_argument("--uncontained", action="store_true",
                         help="grade even where bubblewrap cannot run: the submissions' code can then read and "
                         "change whatever you can")
    p_grade.add_argument("--no-torch", action="store_true", help="skip the PyTorch checks")
    p_grade.add_argument("--csv", metavar="FILE", help="write one row per submission")
    p_grade.add_argument("--json", metavar="FILE", help="write every check of every submission")
    p_grade.add_argument("--gradescope", metavar="PATH",
                         help="write Gradescope's results.json: a FILE.json for one submission, else a folder")
    p_grade.add_argument("--report", action="store_true", help="print each submission's full report too")

    def run_grade(args):
        from scratchnst.exercises.batch import run_grade

        return run_grade(args.dirs, only=args.only, timeout=args.timeout, import_timeout=args.import_timeout,
                         budget=args.budget, jobs=args.jobs, uncontained=args.uncontained, memory_mb=args.memory,
                         use_torch=not args.no_torch, seed=args.seed, csv_path=args.csv, json_path=args.json,
                         gradescope=args.gradescope, report=args.report)

    p_grade.set_defaults(func=run_grade)


# ------------------------------------------------------------------------------- bench
def _add_bench(sub):
    p = sub.add_parser(
        "bench",
        help="time one style-transfer step in scratchnst and in PyTorch, side by side",
        description="One style-transfer step (forward to the deepest layer in use, backward to the "
        "pixels, no weight gradients) of each network and image size, in scratchnst and in PyTorch "
        "on the same weights, input and threads: steps interleaved, median after warm-up; the "
        "ratio; each convolution's time; the peak memory of each, measured in a fresh process. "
        "Without torch it measures scratchnst alone. Random weights unless --pretrained: speed "
        "does not depend on their values.",
        formatter_class=_Formatter,
    )
    p.add_argument("--models", nargs="+", default=["vgg19", "squeezenet"], choices=["vgg19", "squeezenet"],
                   metavar="MODEL", help="networks to measure: vgg19 (to block5_conv1), squeezenet (to fire9)")
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512], metavar="PX",
                   help="image sizes in pixels (square images)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps of each library (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each library first")
    p.add_argument("--threads", type=_threads_arg, default=None,
                   help="threads of NumPy's BLAS and of PyTorch; without it, every CPU available")
    p.add_argument("--pretrained", action="store_true",
                   help="use the pretrained weights files (see `scratchnst weights list`) instead of random ones")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random weights, input and gradients")
    p.add_argument("--no-torch", action="store_true", help="measure scratchnst alone even if torch is installed")
    p.add_argument("--no-convs", action="store_true", help="skip the per-convolution breakdown")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the floor (NumPy's sgemm against PyTorch's on a 2048x2048 product)")
    p.add_argument("--no-quality", action="store_true",
                   help="skip the time-to-quality row (stylize against torch.optim.LBFGS on the same problem)")
    p.add_argument("--quality-images", nargs=2, metavar=("CONTENT", "STYLE"), type=path_arg,
                   default=_Default("lessons/images/cat.jpg and swirls.jpg of the repository"),
                   help="the content and style images of the time-to-quality row")
    p.add_argument("--quality-iters", type=int, default=200, metavar="N",
                   help="L-BFGS iterations of each library in the time-to-quality row")
    p.add_argument("--quality-repeats", type=int, default=5, metavar="N",
                   help="runs of the time-to-quality row, the libraries in turn (its median is reported; "
                   "each run takes about 30 s)")
    p.add_argument("--no-training", action="store_true",
                   help="skip the training-step row (one step of training a real-time style network)")
    p.add_argument("--quick", action="store_true",
                   help="a first look in well under a minute: 256 px only, 3 repeats, no per-convolution "
                   "breakdown, no memory measurement, no time-to-quality or training row (the full run takes "
                   "about 7 minutes on 2 cores)")

    def run(args):
        from scratchnst.cli.bench import check_settings, run_bench

        if args.quick:
            args.sizes, args.repeats, args.no_convs, args.no_memory, args.no_quality = [256], 3, True, True, True
            args.no_training = True
        check_settings(args.models, args.sizes, args.repeats, args.warmup, args.threads, args.seed)  # first
        quality = None if args.no_quality or args.no_torch else _quality_problem(args)
        return run_bench(models=args.models, sizes=args.sizes, repeats=args.repeats, warmup=args.warmup,
                         threads=args.threads, use_torch=not args.no_torch, pretrained=args.pretrained,
                         seed=args.seed, convs=not args.no_convs, memory=not args.no_memory, as_json=args.json,
                         floor=not args.no_floor, quality=quality, training=not args.no_training)

    p.set_defaults(func=run)


def _quality_problem(args):
    """The time-to-quality row's problem, or None (with one line on stderr saying why) when it cannot run."""
    from pathlib import Path

    from scratchnst.errors import UsageError
    from scratchnst.weights import find_weights

    if args.quality_iters < 1:
        raise UsageError(f"--quality-iters must be at least 1, got {args.quality_iters}")
    if args.quality_repeats < 1:
        raise UsageError(f"--quality-repeats must be at least 1, got {args.quality_repeats}")
    images = _given(args.quality_images)
    if images is None:
        shipped = Path(__file__).resolve().parents[2] / "lessons" / "images"
        images = [shipped / "cat.jpg", shipped / "swirls.jpg"]
        if not all(path.is_file() for path in images):
            print("bench: no time-to-quality row: give its images with --quality-images CONTENT STYLE "
                  "(the repository's lessons/images are not beside this installation)", file=sys.stderr)
            return None
    try:
        weights = find_weights("squeezenet", weights_flag=None)
    except UserError:
        print("bench: no time-to-quality row: it needs the real SqueezeNet weights; run "
              "`scratchnst weights download squeezenet`", file=sys.stderr)
        return None
    return {"content": str(images[0]), "style": str(images[1]), "weights": str(weights), "iters": args.quality_iters,
            "repeats": args.quality_repeats}


_SUBCOMMANDS = [_add_gradcheck, _add_weights, _add_stylize, _add_train, _add_apply, _add_exercises, _add_bench]


def build_parser():
    parser = ArgumentParser(
        prog="scratchnst",
        description="Neural Style Transfer from scratch in NumPy.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"scratchnst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _innermost(parser, args):
    """The (sub)parser of the command args were parsed for: `scratchnst weights info`'s, say."""
    while True:
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subcommands[0].dest, None) if subcommands else None
        if name not in (subcommands[0].choices if subcommands else ()):
            return parser
        parser = subcommands[0].choices[name]


def _uploads_named_as_options(given):
    """The words after `exercises grade` that the parser would take as options and that also name an entry of
    the current folder.

    Students name their uploads, and `grade *` in a class folder hands the names to the parser: an upload
    named `--only=total_cost` graded the whole class on that one exercise, `--timeout=1e-06` failed
    everyone, `-h` graded nothing (a red-team review's finds). Words after `--` are folders whatever they
    are named.
    """
    for i in range(len(given) - 1):
        if given[i:i + 2] == ["exercises", "grade"]:
            words = given[i + 2:]
            words = words[:words.index("--")] if "--" in words else words
            return [w for w in words if w.startswith("-") and w != "-" and os.path.lexists(w)]
    return []


def main(argv=None):
    """Entry point of the `scratchnst` console script; returns the exit status (see the module docstring)."""
    if argv is None:
        streams.guard()
    interrupts.catch_lost_interrupts()
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else map(str, argv))
    named = _uploads_named_as_options(given)
    if named:
        print(f"scratchnst exercises grade: error: {named[0]!r} is an option, and also a file or folder here (an "
              "upload named like an option, which `grade *` passes as one?): give the folders with a path "
              "(grade ./*) or after -- (grade -- *)", file=sys.stderr)
        return 2
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the parser of the (sub)command they were given to, whose --help lists what it takes
            before = (unknown[0] in given and args.command in given
                      and given.index(unknown[0]) < given.index(args.command))
            (parser if before else _innermost(parser, args)).error(f"unrecognized arguments: {' '.join(unknown)}")
    except UserError as error:   # --help or --version printed to a standard output that cannot take it (a full disk)
        print(f"scratchnst: error: {describe_error(error)}", file=sys.stderr)
        return error.exit_status
    except BrokenPipeError:   # `scratchnst --help | head -1`: as a command's output cut short (below)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    debug = getattr(args, "debug", False) or debug_requested()
    # As the real command (argv None), once the work has ended, a further Ctrl-C must not kill the
    # process on its way out, with a traceback and death by SIGINT instead of the exit status.
    ending = interrupts.ignore_ctrl_c if argv is None else (lambda: None)
    stops = interrupts.stops_interrupt()
    try:
        try:
            with stops:
                status = args.func(args)
        except Exception as error:
            if stops.unsettled is None:
                raise
            raise stops.unsettled from error   # the stop, turned into this error on its way (see stops_interrupt)
        ending()
    except KeyboardInterrupt as stop:
        ending()
        if debug:
            raise
        how = getattr(stop, "how", "Ctrl-C")
        print(f"scratchnst: interrupted ({how}); files already complete were kept, none was left half-written",
              file=sys.stderr)
        return getattr(stop, "exit_status", interrupts.INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (`scratchnst ... | head`): nothing to report, and
        # stdout must not be flushed again at exit, which would raise once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:
        if debug:
            raise
        print(f"scratchnst: error: {describe_error(error)}", file=sys.stderr)
        return getattr(error, "exit_status", 1)
    return int(status or 0)


def describe_error(error):
    """The one line a user sees for an exception: a UserError's own text, else what happened and what to do.

    Line breaks (a file name may hold one) are shown as \\n, so that it stays one line.
    """
    return _describe(error).replace("\r", "\\r").replace("\n", "\\n")


def _describe(error):
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory; use a smaller --size (or smaller images), or close other programs"
    if isinstance(error, OSError) and error.filename is not None:
        return os_error_line(error)
    if isinstance(error, NotImplementedError):
        return _unfinished_exercise(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return (f"internal error ({type(error).__name__}{': ' + text if text else ''}); this is a bug in scratchnst: "
            "run the command again with --debug and report the traceback")


def _unfinished_exercise(error):
    """The line for a stub of a student copy: which function is left to write, and what then.

    The stub raises in the function itself, so the innermost frame of the traceback names it.
    """
    frame = None
    tb = error.__traceback__
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    where = "a function"
    if frame is not None:
        module = frame.f_globals.get("__name__", "?")
        where = f"{module}.{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})"
    hint = " ".join(str(error).split())
    if len(hint) > 160:
        hint = hint[:157] + "..."
    return (f"{where} is not written yet: an exercise of this student copy{' (hint: ' + hint + ')' if hint else ''}; "
            "write it, check it with `python -m scratchnst exercises check` in your copy, and this command then "
            "runs on your own code")

"""What every lesson shares: its command-line options, where pictures go, and small picture helpers.

Not part of the lessons' subject: it only keeps the chapters free of plumbing. The lessons import
the real work from the `scratchnst` package; this module adds nothing to it.

    args = _lesson.parse_args(__doc__, size=256, iters=100)   # --content --style --size --iters --out ...
    _lesson.save(args, "01_filters.png", picture)               # lessons/out/01_filters.png
    plt = _lesson.pyplot("the cost plot")                       # None, with a note, without matplotlib

In a Jupyter notebook (see lessons/build_notebooks.py) every picture is also shown in the cell
that makes it, and the options come from $SCRATCHNST_LESSON_ARGS (e.g. "--size 64 --iters 3"),
since a notebook has no command line.
"""

import math
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scratchnst import image
from scratchnst.atomic import atomic_path, same_file
from scratchnst.cli import ArgumentParser, describe_error, path_arg, streams
from scratchnst.cli.interrupts import INTERRUPTED, catch_lost_interrupts
from scratchnst.errors import UsageError, UserError, debug_requested

LESSONS = Path(__file__).resolve().parent
IMAGES = LESSONS / "images"
DEFAULT_OUT = LESSONS / "out"  # git-ignored
DEFAULT_CONTENT = IMAGES / "cat.jpg"
DEFAULT_STYLE = IMAGES / "swirls.jpg"


# ---------------------------------------------------------------------------- errors as one line
# --debug (parse_args sets it) or SCRATCHNST_DEBUG=1: tracebacks instead of one line.
_DEBUG = debug_requested()


def _excepthook(kind, error, traceback):
    """Every error ends the lesson with one line on stderr and the exit status `scratchnst` uses.

    2 for a wrong option (UsageError), 130 for Ctrl-C, 1 for anything else: a missing or broken
    file (UserError), or a bug, which the line says is one. With --debug the traceback is shown
    instead, and the exit status is the same.
    """
    if issubclass(kind, BrokenPipeError):
        # The reader piped the output into `head` and stopped reading: nothing to report, and
        # stdout must not be flushed again on the way out (that would raise once more).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _exit(1)
    if _DEBUG:
        sys.__excepthook__(kind, error, traceback)
    elif issubclass(kind, KeyboardInterrupt):
        print("lesson stopped: interrupted (Ctrl-C); the pictures already written are complete, none was "
              "left half-written", file=sys.stderr)
    else:
        print(f"lesson stopped: {describe_error(error)}", file=sys.stderr)
    _exit(getattr(error, "exit_status", INTERRUPTED if issubclass(kind, KeyboardInterrupt) else 1))


def _exit(status):
    # After sys.excepthook Python always exits with status 1, and after an uncaught Ctrl-C it
    # kills itself with SIGINT: only os._exit gives the status `scratchnst` gives. It skips the
    # interpreter's clean-up, so flush what was printed first (files are complete or removed
    # already: every file is written through scratchnst.atomic).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


sys.excepthook = _excepthook
catch_lost_interrupts()
if "ipykernel" not in sys.modules:   # a notebook's cells print to the notebook, not to a stream that can fill
    # a lesson's output is its text: written nowhere (a full disk, a closed stream), it ends the
    # lesson with one line that says so, as `scratchnst` does, not as a bug
    streams.guard()


# ----------------------------------------------------------------------------------- options
def _in_notebook():
    return "ipykernel" in sys.modules


# A notebook has no command line: its options come from this variable (build_notebooks.py sets it).
NOTEBOOK_ARGS = "SCRATCHNST_LESSON_ARGS"


_START = time.perf_counter()


def done():
    """Print the lesson's total run time: its last line."""
    print(f"\nlesson finished in {time.perf_counter() - _START:.0f} s")


def parse_args(doc, size=256, iters=100, argv=None, extra=None):
    """Parse the options every lesson takes; defaults are the lesson's own.

    Mistakes are found here, before the lesson computes anything: an option that does not parse
    or is out of range (one line, exit status 2, as `scratchnst`), an image that cannot be read,
    an output folder that cannot be written (one line, exit status 1).

    Args:
        doc: the lesson's module docstring (its first line is the --help description).
        size: default --size, the long side of the images in pixels.
        iters: default --iters, optimiser iterations (lessons without an optimiser ignore it).
        argv: the arguments (default sys.argv[1:]; inside a notebook, $SCRATCHNST_LESSON_ARGS
            split as a shell would, or none).
        extra: None, or a function(parser) that adds the lesson's own options.

    Returns:
        argparse.Namespace with content, style (Paths), size, iters, seed, out (Path, created),
        network, weights.
    """
    global _DEBUG
    in_notebook = argv is None and _in_notebook()
    parser = ArgumentParser(  # one-line errors, --debug and the defaults in --help, as the `scratchnst` command
        description=doc.strip().splitlines()[0],
    )
    if in_notebook:  # the options come from the environment, not from the kernel's command line
        parser.error = lambda message: parser.exit(
            2, f"${NOTEBOOK_ARGS}: error: {message}; the lesson's script with --help lists the options\n")
    parser.add_argument("--content", type=path_option, default=DEFAULT_CONTENT, help="content image")
    parser.add_argument("--style", type=path_option, default=DEFAULT_STYLE, help="style image")
    parser.add_argument("--size", type=int, default=size, help="long side of the images, pixels (smaller = faster)")
    parser.add_argument("--iters", type=int, default=iters,
                        help="optimiser iterations, where the lesson has an optimiser")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random number")
    parser.add_argument("--out", type=path_option, default=DEFAULT_OUT, help="folder for the pictures")
    parser.add_argument("--network", choices=("auto", "vgg19", "squeezenet"), default="auto",
                        help="pretrained network, where the lesson uses one; auto = VGG-19 if its weights "
                        "are found, else SqueezeNet")
    parser.add_argument("--weights", type=path_option, default=None,
                        help="weights file (default: found as `scratchnst stylize` finds it)")
    if extra is not None:
        extra(parser)
    if argv is None and in_notebook:
        text = os.environ.get(NOTEBOOK_ARGS, "")
        try:
            argv = shlex.split(text)
        except ValueError as error:   # an unpaired quote: shlex says "No closing quotation"
            unsplit = str(error).lower()
        if argv is None:   # said outside the except block: the kernel shows no chained exception
            parser.error(f"cannot be split into options as a shell would ({unsplit}): {text!r}")
    elif argv is None:
        argv = sys.argv[1:]
    args = parser.parse_args(argv)
    _DEBUG = _DEBUG or getattr(args, "debug", False)
    if args.size < 16:
        parser.error(f"--size must be at least 16 pixels, got {args.size}")
    if args.iters < 1:
        parser.error(f"--iters must be at least 1, got {args.iters}")
    if args.seed < 0:
        parser.error(f"--seed must be at least 0, got {args.seed}")  # what np.random.default_rng takes
    for flag, path in _input_files(args):
        if flag != "weights":   # a weights file is checked below, as weights
            _check_image(path)
    if args.weights is not None:   # a missing file is said now, not when the lesson reaches the network
        from scratchnst import weights as weights_io

        weights_io.find_weights("squeezenet", explicit=args.weights)   # the model only matters for a search
    try:
        _check_memory(args)
    except UsageError as error:   # an option out of range, said as the other ones are
        parser.error(str(error))
    _make_output_folder(args.out)
    _inputs_not_among_pictures(args)
    return args


def _check_memory(args):
    """UsageError, as `scratchnst stylize` gives, if --size would need more memory than there is.

    Without it a mistyped --size 100000 has NumPy allocate tens of gigabytes until the kernel kills
    the lesson, with no word said. The need is stylize's estimate: VGG-19's where --network says
    so, else SqueezeNet's, the smaller, so that no lesson is refused a size it could run (those
    without a network need less still).
    """
    from scratchnst import settings

    model = "vgg19" if args.network == "vgg19" else "squeezenet"
    for flag, path in _input_files(args):
        if flag != "weights":
            settings.check_memory({"size": args.size, "model": model, "style_scale": 1.0}, path)


def _check_image(path):
    """UserError naming the file if it is no image; for a missing relative path, also where it was looked for.

    A notebook's options are read from the notebook's folder, not the one the user typed them in:
    `--content lessons/images/cat.jpg`, right from the repository, is wrong there.
    """
    try:
        image.load_image(path, long_side=16)  # missing, not an image, ...
    except UserError as error:
        if path.is_absolute() or path.exists():
            raise
        here = Path.cwd()
        elsewhere = [folder for folder in (LESSONS.parent, LESSONS) if folder != here and (folder / path).exists()]
        hint = f": give {os.path.relpath(elsewhere[0] / path)} or an absolute path" if elsewhere else ""
        raise UserError(f"{error} (relative paths are read from {here}{hint})") from None


def _input_files(args):
    """The files a lesson reads -> [(option, Path)]: --content, --style, --weights where given, and the
    images of a lesson's own --held-out option where it has one."""
    files = [(flag, Path(getattr(args, flag))) for flag in ("content", "style", "weights")
             if getattr(args, flag, None) is not None]
    return files + [("held-out", Path(path)) for path in getattr(args, "held_out", None) or ()]


def _inputs_not_among_pictures(args):
    """UsageError, before any work, if an input sits in --out under the name of one of this lesson's
    pictures (they all start with its number, e.g. 09_result.png): it would be written over."""
    lesson = re.match(r"(\d\d)_", Path(sys.argv[0]).name)
    if lesson is None:  # not run as a lesson script (a notebook, a test): `save` still checks each file
        return
    for flag, source in _input_files(args):
        if same_file(source.parent, args.out) and source.name.startswith(f"{lesson.group(1)}_"):
            raise UsageError(f"--{flag} {source} is in --out {args.out} under the name of a picture this lesson "
                             f"writes ({lesson.group(1)}_*); give another --out folder or rename the file")


def _make_output_folder(out):
    """Create the folder for the pictures and make sure a file can be written in it (UserError if not)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; give a folder for the pictures")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Writing a file is the only sure test (permissions, read-only file systems, quotas).
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UserError(f"--out {out}: cannot write pictures there ({error.strerror or error}); give a "
                        "writable folder") from None


# ------------------------------------------------------------------------------------ printing
def section(title):
    """Print a cell's heading, so the command-line output reads like the chapter."""
    print(f"\n## {title}")


class timed:
    """Context manager that measures wall-clock seconds: `with timed() as t: ...; t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def median_time(fn, repeats=5):
    """(fn()'s result, the median of `repeats` timed calls in seconds) after one untimed call.

    A first call pays for what later ones reuse (memory from the operating system, buffers a function
    keeps, BLAS starting its threads), and one call is at the mercy of whatever else the machine does:
    the median of warm calls is what the function costs.
    """
    result = fn()
    seconds = []
    for _ in range(repeats):
        with timed() as t:
            result = fn()
        seconds.append(t.seconds)
    return result, float(np.median(seconds))


def shown(path):
    """A path as the reader would type it: relative to the current folder when it is inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:  # outside the current folder
        return str(path)


# ------------------------------------------------------------------------------------ pictures
def load(path, size):
    """An image file as float32 (H, W, 3) RGB 0..255, its long side resized to `size` pixels."""
    return image.load_image(path, long_side=size)


def path_option(text):
    """A Path from an option that is not empty (Path("") would quietly mean the current folder)."""
    return Path(path_arg(text))


def _not_an_input(args, path):
    """UsageError if writing `path` would replace one of the lesson's inputs (also through a link)."""
    for flag, source in _input_files(args):
        if same_file(path, source):
            raise UsageError(f"--out {args.out}: the picture {path.name} would replace the --{flag} file {source}; "
                             "give another --out folder")


def save(args, name, picture):
    """Write a picture (H, W, 3) or (H, W), float 0..255 or uint8, to args.out / name; print where.

    In a notebook the picture is also shown below the cell (the PNG just written, byte for byte).
    Returns None, so that a cell ending with it shows no stray Out[] line.
    """
    _not_an_input(args, args.out / name)
    path = image.save_image(args.out / name, picture)
    print(f"wrote {shown(path)}")
    _show(path)


def _show(path):
    """In a notebook, show a PNG file in the output of the running cell; elsewhere do nothing."""
    if not _in_notebook():
        return
    from IPython.display import Image, display

    # The bytes are embedded: the saved notebook (and its HTML) keeps the picture. The alt text
    # names the file, for screen readers and for a reader looking for it in lessons/out/.
    try:
        picture = Image(filename=str(path), alt=Path(path).name)
    except TypeError:  # an older IPython: no alt text
        picture = Image(filename=str(path))
    display(picture)


def stretch(a, clip=0.5):
    """Map an array onto 0..255 for display (feature maps and gradients have no pixel scale).

    The lowest and highest `clip` percent are clipped first, so that a few extreme values do not
    leave everything else black.
    """
    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.percentile(a, [clip, 100 - clip])
    if hi <= lo:
        lo, hi = a.min(), a.max()
    if hi == lo:
        return np.zeros(a.shape)
    return np.clip((a - lo) / (hi - lo), 0, 1) * 255


def signed(a, clip=0.5):
    """Show a signed array (a gradient): white at 0, red where positive, blue where negative.

    Scaled by the (100 - clip)th percentile of the magnitude, so that 0 stays white, the two signs
    compare fairly, and a few extreme values do not wash out the rest.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:  # an RGB gradient: show its sum over channels
        a = a.sum(axis=-1)
    top = np.percentile(np.abs(a), 100 - clip)
    t = np.clip(a / (top or np.abs(a).max() or 1.0), -1, 1)
    pos, neg = np.clip(t, 0, 1)[..., None], np.clip(-t, 0, 1)[..., None]
    rgb = np.ones(a.shape + (3,)) - pos * np.array([0.0, 0.85, 0.85]) - neg * np.array([0.85, 0.85, 0.0])
    return rgb * 255


def like(picture, reference):
    """`picture` cropped at its centre to the aspect ratio of `reference` and resized to its size.

    For showing a (square) style image beside the content image without wasting the page.
    """
    H, W = reference.shape[:2]
    h, w = picture.shape[:2]
    if h * W > w * H:  # too tall: crop rows
        keep = max(1, round(w * H / W))
        picture = picture[(h - keep) // 2:(h - keep) // 2 + keep]
    else:  # too wide: crop columns
        keep = max(1, round(h * W / H))
        picture = picture[:, (w - keep) // 2:(w - keep) // 2 + keep]
    return image.resize_to(np.asarray(picture, dtype=np.float32), H, W)


def montage(tiles, labels=None, cols=None, gap=6, scale=1):
    """Tiles side by side on a white page, each with a label underneath: one picture.

    Args:
        tiles: list of (H, W, 3) or (H, W) arrays, float 0..255 or uint8; sizes may differ.
        labels: list of str, one per tile (or None).
        cols: tiles per row (default: all in one row).
        gap: white pixels between tiles.
        scale: integer enlargement (nearest neighbour), to make tiny arrays visible.

    Returns:
        uint8 (H_page, W_page, 3).
    """
    from PIL import Image, ImageDraw

    font = label_font()
    line_h = _line_height(font)
    images = []
    for tile in tiles:
        tile = np.asarray(tile)
        if tile.ndim == 2:
            tile = np.repeat(tile[..., None], 3, axis=-1)
        tile = image.to_uint8(tile) if tile.dtype != np.uint8 else tile
        if scale != 1:
            tile = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        images.append(Image.fromarray(tile))
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    cell_w = max(im.width for im in images)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [_wrap(label, font, cell_w, measure) for label in labels] if labels else [[] for _ in images]
    label_h = 4 + line_h * max(len(ls) for ls in lines) if labels else 0
    # each row as tall as its own tallest tile: a landscape photo's row leaves no band of white below
    row_h = [max(im.height for im in images[r * cols:(r + 1) * cols]) + label_h for r in range(rows)]
    row_y = np.cumsum([gap] + [h + gap for h in row_h])
    page = Image.new("RGB", (cols * cell_w + (cols + 1) * gap, int(row_y[-1])), "white")
    draw = ImageDraw.Draw(page)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        x, y = gap + c * (cell_w + gap), int(row_y[r])
        page.paste(im, (x, y))
        for n, line in enumerate(lines[k]):
            draw.text((x, y + im.height + 3 + line_h * n), line, fill=(0, 0, 0), font=font)
    return np.asarray(page)


LABEL_SIZE = 15  # pixels: readable beside pictures of 100 to 400 pixels


def label_font(size=LABEL_SIZE):
    """A scalable font for labels: the one Pillow ships (Aileron, Pillow >= 10.1 with FreeType).

    Pillow's older bitmap default is about 8 pixels high, too small to read beside a picture; it is
    used only where Pillow cannot give a scalable font.
    """
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _line_height(font):
    """Pixels from one line of text to the next in `font`."""
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
    return ascent + descent + 2


def _wrap(text, font, width, draw):
    """Split a label into lines no wider than `width` pixels (at word boundaries)."""
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


# ------------------------------------------------------------------------------- matplotlib
def pyplot(what):
    """matplotlib.pyplot ready to draw into files, or None (with a note) when it is not installed.

    Args:
        what: what the lesson would plot, for the note ("the cost curves").
    """
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: skipping {what} "
              "(pip install matplotlib, or pip install -e \".[lessons]\")")
        return None
    if not _in_notebook():
        matplotlib.use("Agg")  # draw into files; no window, no display needed
    import matplotlib.pyplot as plt

    return plt


def save_plot(args, name, fig):
    """Save a matplotlib figure to args.out / name atomically (scratchnst.atomic); print where.

    The figure is then closed: in a notebook the saved PNG is shown instead (see `save`), and a
    closed figure is not drawn again, empty, at the end of the cell. Returns None.
    """
    path = args.out / name
    _not_an_input(args, path)
    try:
        # the temporary name keeps the suffix: savefig picks the format from it
        with atomic_path(path, "picture") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        _release(fig)
    print(f"wrote {shown(path)}")
    _show(path)


def _release(fig):
    """Free a figure's drawing and take it out of pyplot's list of open figures."""
    fig.clf()
    pyplot_module = sys.modules.get("matplotlib.pyplot")
    if pyplot_module is not None:
        from matplotlib.figure import Figure

        if isinstance(fig, Figure):
            pyplot_module.close(fig)


def plot_relative_costs(args, name, histories, ylabel, title, xlabel="L-BFGS iteration"):
    """Plot each cost history divided by its first value, log scale, one line per label.

    Args:
        histories: {label: [cost per iteration]}.
        name: the PNG file in args.out; ylabel, title, xlabel: the axis labels and the title.
    Skipped, with a note, when matplotlib is not installed.
    """
    plt = pyplot(f"the plot of {ylabel} against the iteration")
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, history in histories.items():
        ax.semilogy(np.array(history) / history[0], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_plot(args, name, fig)


# ------------------------------------------------------------------------------------ PyTorch
def torch_or_note(what="the comparison with PyTorch"):
    """The torch module, or None with a printed note that says what is skipped."""
    try:
        import torch
    except ImportError:
        print(f"PyTorch is not installed: skipping {what} (pip install torch==2.13.0 "
              "--extra-index-url https://download.pytorch.org/whl/cpu)")
        return None
    return torch


# ------------------------------------------------------------------------- pretrained weights
def network_name(args):
    """The network a lesson uses: the one --weights FILE holds, else --network, else ("auto")
    VGG-19 if its weights are found, else SqueezeNet.

    Raises:
        UserError: no weights at all, with the one line that says how to get them; a --weights
            file that is missing, broken, or holds another network than --network names.
    """
    from scratchnst import weights as weights_io

    wanted = None if args.network == "auto" else args.network
    if args.weights is not None:
        # Read it now: a wrong file stops the lesson here, in one line, not halfway through.
        name, _ = weights_io.parameters_from_file(weights_io.read_weights(args.weights, model=wanted), wanted)
        return name
    if wanted is not None:
        weights_io.find_weights(wanted)  # UserError: where it looked, and the download command
        return wanted
    for name in ("vgg19", "squeezenet"):
        try:
            weights_io.find_weights(name)
            return name
        except UserError:
            continue
    raise UserError(f"no pretrained weights found: run {weights_io.download_command('squeezenet')} (3 MB; or vgg19, "
                    "80 MB, the course's network), or point $SCRATCHNST_WEIGHTS_DIR at a folder that holds them, "
                    "or give --weights FILE")


def load_network(args, pooling="max", dtype=np.float32, layers=None):
    """Load the lesson's pretrained network (see `network_name`) and say which one and from where.

    Args:
        args: the lesson's options (--network, --weights, --size, --content, --style).
        pooling: "max" (as the network was trained), "avg", or "default": the pooling
            `scratchnst stylize` uses for this network (transfer.MODEL_DEFAULTS).
        dtype: of weights, activations and gradients.
        layers: the layers the lesson runs the images through, for the size check:
            {network name: [layer, ...]} (`stylize_layers()` for `scratchnst stylize`'s), or None
            for every layer of the network.

    Raises:
        UsageError: --size is too small for those layers (the message gives the smallest that works).
    """
    from scratchnst import networks, transfer
    from scratchnst import weights as weights_io

    name = network_name(args)
    net = networks.load(name, weights=args.weights, dtype=dtype)
    check_size(args, net.name, None if layers is None else layers[net.name])
    if pooling == "default":
        pooling = transfer.MODEL_DEFAULTS[net.name].pool
    if pooling != net.pooling:
        net = networks.Network(net.name, net.params, pooling=pooling, dtype=dtype,
                               preprocessing=net.preprocessing, path=net.path)
    print(f"network: {net.name}, {pooling} pooling, {net.dtype.name}, weights from {shown(net.path)}")
    if net.name == "squeezenet" and args.network == "auto" and args.weights is None:
        print("(the course uses VGG-19; its weights were not found, so this lesson runs SqueezeNet 1.1, "
              f"10 to 20 times faster here: {weights_io.download_command('vgg19')} to use VGG-19)")
    return net


def stylize_layers():
    """{network name: the layers `scratchnst stylize`'s defaults run the images through}."""
    from scratchnst.settings import MODEL_DEFAULTS, layers_used

    return {name: layers_used(d.content_layer, d.style_layers) for name, d in MODEL_DEFAULTS.items()}


def check_size(args, model, layers=None, scales=1):
    """UsageError unless the content and style images at --size give each of `layers` an output.

    Args:
        args: the lesson's options (--size, --content, --style).
        model: the network's name ("vgg19", "squeezenet").
        layers: the layers the lesson uses, None for all of them.
        scales: the most coarse-to-fine passes the lesson runs (`stylize`'s --scales): the first
            works at --size / 2**(scales - 1).

    The images are resized so that their long side is --size; their short side must still be
    at least the smallest input those layers take (all of SqueezeNet's: 31 px, VGG-19's: 32;
    fewer layers, less). The message gives the smallest --size that works for the image that is
    too small. Every lesson that uses a pretrained network checks so before it runs the images
    through it, and stops with exit status 2.
    """
    from PIL import Image

    from scratchnst.architectures import ARCHITECTURES
    from scratchnst.settings import scale_sizes

    arch = ARCHITECTURES[model]
    sizes = arch.min_input_sizes
    need = max(sizes.values()) if layers is None else max(sizes[arch.resolve(layer)] for layer in layers)
    whose = "the network needs" if layers is None else "the layers this lesson uses need"
    smallest = scale_sizes(args.size, scales)[0]
    for what, path in (("content", args.content), ("style", args.style)):
        H, W = load(path, smallest).shape[:2]
        if min(H, W) < need:
            with Image.open(path) as img:
                ratio = max(img.size) / min(img.size)
            at = "," if smallest == args.size else f" in its first pass, at {smallest} px,"
            least = max(math.ceil(need * ratio), need) * 2 ** (scales - 1)
            raise UsageError(f"--size {args.size} is too small for {model}: the {what} image {path.name} becomes "
                             f"{W}x{H} pixels{at} and {whose} at least {need}x{need}; use --size {least} or more")

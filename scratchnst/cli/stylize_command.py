"""`scratchnst stylize`: settings, progress, snapshots, checkpoints, and ending well whatever happens.

`transfer.stylize` does the work; this module is what the command adds around it:
    - every path is checked before any computing starts: output, log and checkpoint folders
      exist and are writable, no output overwrites an input;
    - a progress line, snapshots every --save-every iterations, a checkpoint every
      --checkpoint-every iterations (`--resume` continues from it, bit for bit);
    - Ctrl-C writes the best image so far, the cost log and the checkpoint, says where, and
      exits 130; a cost that overflows keeps the last good image and says which flag to lower;
    - every file is written atomically (scratchnst.atomic): a kill leaves the old file or the new one.
"""

import glob
import os
import re
import sys
import time
from pathlib import Path


from scratchnst import atomic, checkpoint, json_text
from scratchnst import image
from scratchnst.atomic import same_file
from scratchnst.cli import interrupts
from scratchnst.errors import UsageError, UserError
from scratchnst.settings import INITS, resolve_settings
from scratchnst.transfer import CostNotFinite, stylize

SETTINGS_ORDER = (
    "model", "weights", "pool", "size", "scales", "init", "seed", "content_layer", "alpha",
    "style_layers", "beta", "style_blend", "style_scale", "tv_weight", "preserve_colors",
    "optimizer", "iters", "lr",
)


def format_settings(content, styles, output, settings):
    """The resolved settings as the lines `scratchnst stylize` prints before it starts."""

    def show(key, value):
        if key == "style_layers":
            return ", ".join(f"{name}:{weight:g}" for name, weight in value)
        if key == "style_blend":
            return ", ".join(f"{w:g}" for w in value)
        if isinstance(value, float):
            return f"{value:g}"
        return "-" if value is None else str(value)

    lines = [f"content {content}", f"style {', '.join(map(str, styles))}", f"output {output}"]
    lines += [f"{key} {show(key, settings[key])}" for key in SETTINGS_ORDER]
    width = max(len(line.split(" ", 1)[0]) for line in lines)
    return "\n".join("  " + key.ljust(width) + "  " + rest for key, rest in (line.split(" ", 1) for line in lines))


def _format_seconds(seconds):
    """12s, or 3:05 from a minute on."""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class ProgressLine:
    """One line on a stream, redrawn in place on a terminal:

        scale 1/2 [##########..........]  50/100  ETA 12s  J 6.41e+03  J_content 280  J_style 90.1

    On a terminal it is redrawn at most 10 times a second; elsewhere (a pipe, a log file) only
    its last state is written, once, by `close`, so that logs get one line and not hundreds.
    """

    WIDTH = 20

    def __init__(self, stream):
        self.stream = stream
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self.text = ""
        self.drawn = float("-inf")  # time of the last redraw

    def update(self, p):
        bar = "#" * int(self.WIDTH * p.done) + "." * (self.WIDTH - int(self.WIDTH * p.done))
        eta = _format_seconds(p.elapsed / p.done * (1 - p.done)) if p.done > 0 else "--"
        scale = f"scale {p.scale}/{p.scales} " if p.scales > 1 else ""
        c = p.costs
        self.text = (f"{scale}[{bar}] {p.iteration:>{len(str(p.iters))}}/{p.iters}  ETA {eta}  "
                     f"J {c['J']:.3g}  J_content {c['J_content']:.3g}  J_style {c['J_style']:.3g}")
        now = time.monotonic()
        if self.live and (now - self.drawn >= 0.1 or p.done >= 1):
            self.stream.write("\r" + self.text + "\x1b[K")  # \x1b[K clears the rest of the old line
            self.stream.flush()
            self.drawn = now

    def close(self):
        if not self.text:
            return
        self.stream.write(("\r" + self.text + "\x1b[K\n") if self.live else self.text + "\n")
        self.stream.flush()
        self.text = ""


# --------------------------------------------------------------------------------- paths
def snapshot_path(output, step, suffix=None):
    """OUT_<step>: out.png -> out_0050.png for the image after iteration 50 (all passes counted);
    with suffix=".json", out_0050.json."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{step:04d}{suffix or output.suffix}")


def _snapshot_of(output, path):
    """True if `path` has a name snapshot_path(output, step) may give: OUT_<digits>.png or .json."""
    output, path = Path(output), Path(path)
    if not same_file(output.parent, path.parent):
        return False
    pattern = rf"{re.escape(output.stem)}_[0-9]{{4,}}({re.escape(output.suffix)}|\.json)"  # ASCII, as written
    return re.fullmatch(pattern, path.name) is not None


def check_output_paths(outputs, inputs, snapshots_of=None):
    """Refuse, before any computing, outputs that cannot be written or would overwrite an input.

    Args:
        outputs: [(flag, path or None), ...] the files the run will write, e.g. ("-o", "out.png").
        inputs: [(what, path or None), ...] the files it reads (images, weights, the checkpoint
            it resumes from).
        snapshots_of: None, or the output whose numbered snapshots (OUT_0050.png, and
            OUT_0050.json after Ctrl-C) the run may write: no input or other output may have
            such a name.

    Raises:
        UsageError: an output is a folder, a device or a pipe, is also an input, or two outputs
            are the same file.
        UserError: an output's folder does not exist or is not writable.
    """
    outputs = [(flag, Path(path)) for flag, path in outputs if path is not None]
    inputs = [(what, Path(source)) for what, source in inputs if isinstance(source, (str, os.PathLike))]
    for i, (flag, path) in enumerate(outputs):
        atomic.check_output(flag, path)
        for what, source in inputs:
            if same_file(path, source):
                raise UsageError(f"{flag} {path} is the {what}: writing it would destroy an input; "
                                 "choose another file name")
        for other_flag, other in outputs[:i]:
            if same_file(path, other):
                raise UsageError(f"{flag} and {other_flag} are the same file {path}; give them different names")
    if snapshots_of is not None:
        snapshots_of = Path(snapshots_of)
        # the images after --save-every's iterations and the one kept on Ctrl-C: out_<iteration>.png
        # and .json, found too long only when the first is written, with the run's work lost
        longest = max((snapshot_path(snapshots_of, 10**6 - 1, suffix) for suffix in (None, ".json")),
                      key=lambda p: len(os.fsencode(p.name)))
        if len(os.fsencode(longest.name)) > atomic.NAME_MAX:
            raise UsageError(f"-o {snapshots_of}: the numbered images the run writes beside it ({longest.name}) "
                             f"would have names longer than the {atomic.NAME_MAX} bytes a file name may have; "
                             "give a shorter name")
        for existing in snapshots_of.parent.glob(f"{glob.escape(snapshots_of.stem)}_*"):
            if _snapshot_of(snapshots_of, existing) and (existing.is_symlink() or not existing.is_file()):
                raise UsageError(f"{existing} is a link or not a plain file, and has the name of a snapshot of "
                                 f"-o {snapshots_of}, which the run would write through; remove it or choose "
                                 "another -o name")
        others = inputs + [(f"file of {flag}", path) for flag, path in outputs if path != snapshots_of]
        others += [(what, Path(os.path.realpath(path))) for what, path in others]  # what links point to, too
        for what, path in others:
            if _snapshot_of(snapshots_of, path):
                raise UsageError(f"the {what} {path} has the name of a snapshot of -o {snapshots_of} "
                                 f"({Path(snapshots_of).stem}_<iteration>), which the run may write over; "
                                 "choose another -o name")


def _keep_finished_image(picture, output):
    """What to add to the message when -o cannot take a finished run's image (a full disk) and no
    checkpoint holds the run: where it was kept instead (atomic.write_elsewhere)."""
    kept = atomic.write_elsewhere(output, lambda path: image.save_image(path, picture))
    if kept is None:
        return "; the image could not be written to the temporary folder either: it is lost"
    return f"; wrote the image to {kept} instead"


# ------------------------------------------------------------------------------ the command
def run_stylize(content, styles, output, *, save_every=0, log=None, checkpoint_file=None, checkpoint_every=None,
                resume_file=None, stream=None, **options):
    """The `scratchnst stylize` command: settings, progress, snapshots, checkpoints, the image and the log.

    Args:
        content: path of the content image.
        styles: list of style image paths.
        output: the image file to write (atomically, when the run is complete).
        save_every: write snapshot_path(output, step) every this many iterations (0: never).
        log: None or the JSON file to write: settings, cost history, seconds per iteration.
        checkpoint_file: None or the file to save the run's whole state in, every
            `checkpoint_every` iterations, at the end, and on Ctrl-C.
        checkpoint_every: iterations between checkpoints (None: 10); only with a checkpoint file.
        resume_file: None or a checkpoint to continue from (the same settings and images;
            --iters may differ). Checkpoints then go on into it unless checkpoint_file says otherwise.
        stream: where the settings and the final line go (default stdout); the progress line
            goes to stderr.
        **options: `stylize`'s options.

    Returns:
        0 when the run is complete; 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP (the
        best image so far and the cost log are written next to OUTPUT, and the checkpoint if
        asked for; the line says where).

    Raises:
        UsageError, UserError: as `stylize`, and for paths that cannot be written (checked before
            the run starts). A cost that overflows (CostNotFinite) keeps the last good image
            next to OUTPUT and names the flag to lower.
    """
    stream = stream or sys.stdout
    output = Path(output)
    image.writable_format(output, "-o")  # now, not after minutes of work
    checkpoint_flag = "--checkpoint"
    if resume_file is not None and checkpoint_file is None:
        checkpoint_file, checkpoint_flag = resume_file, "--resume"  # go on saving where the run was saved
    if checkpoint_every is not None and checkpoint_file is None:
        raise UsageError("--checkpoint-every needs --checkpoint FILE (or --resume FILE): say where to save")
    checkpoint_every = 10 if checkpoint_every is None else checkpoint_every
    for flag, value, least in (("--save-every", save_every, 0), ("--checkpoint-every", checkpoint_every, 1)):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    settings = resolve_settings(content, styles, **options)
    resume = checkpoint.load(resume_file) if resume_file is not None else None
    if resume is not None:
        checkpoint.check_state(resume)
    init = settings["init"]
    inputs = [("content image", content), *(("style image", s) for s in styles), ("weights file", settings["weights"]),
              ("--init image", None if init in INITS else init)]
    check_output_paths([("-o", output), ("--log", log), (checkpoint_flag, checkpoint_file)], inputs,
                       snapshots_of=output)
    # The checkpoint resumed from is an input too, except to --checkpoint, which may go on writing it.
    check_output_paths([("-o", output), ("--log", log)], [("checkpoint given to --resume", resume_file)])

    print("scratchnst stylize", file=stream)
    print(format_settings(content, styles, output, settings), file=stream, flush=True)
    progress = ProgressLine(sys.stderr)
    run = _RunState()

    def callback(p):
        if resume is not None and run.last is None:  # said once stylize has accepted the checkpoint
            print(f"  resuming from {resume_file} at iteration {resume['steps']} "
                  f"(pass {resume['scale'] + 1}, J {resume['history'][-1]['J']:.4g})", file=stream, flush=True)
        run.seen(p)
        progress.update(p)
        with interrupts.holding_stops():  # a Ctrl-C waits until the file is whole, then stops the run
            if save_every and p.iteration and p.step % save_every == 0:
                try:
                    image.save_image(snapshot_path(output, p.step), p.image())
                except UserError as error:
                    raise _WriteFailed(error, "snapshot") from None
            if checkpoint_file is not None and p.iteration and p.step % checkpoint_every == 0:
                try:
                    checkpoint.save(checkpoint_file, p.checkpoint())
                except UserError as error:
                    raise _WriteFailed(error, "checkpoint") from None
                run.checkpointed = p

    def log_record(history, **extra):
        return {"content": str(content), "styles": [str(s) for s in styles], "output": str(output),
                "settings": settings, **extra, "history": history}

    try:
        result = stylize(content, styles, callback=callback, resume=resume, **settings)
    except KeyboardInterrupt as stop:
        with interrupts.ignoring_stops():  # a second Ctrl-C must not cut the saving of the first one's results
            progress.close()
            how = getattr(stop, "how", "Ctrl-C")  # cli.interrupts turns SIGTERM and SIGHUP into these too
            where = _save_partial(run, output, log, checkpoint_file, log_record, stopped=f"interrupted ({how})")
            line = f"scratchnst: interrupted ({how}){where}"
            print(line.replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)  # one line
        return getattr(stop, "exit_status", interrupts.INTERRUPTED)
    except CostNotFinite as error:
        progress.close()
        where = _save_partial(run, output, log, None, log_record, stopped=str(error))
        raise UserError(f"{error}{where}") from None
    except _WriteFailed as failed:  # a full disk, a folder gone: the run stops, and keeps what can be kept
        with interrupts.ignoring_stops():
            progress.close()
            if failed.what == "checkpoint":  # not tried again; the last one written is whole
                where = _save_partial(run, output, log, None, log_record, stopped=str(failed.error))
                if run.checkpointed is not None:
                    where += (f"; {checkpoint_file} still holds iteration {run.checkpointed.step}: continue from "
                              f"there with the same command and --resume {checkpoint_file}")
            else:
                where = _save_partial(run, output, log, checkpoint_file, log_record, stopped=str(failed.error))
        raise UserError(f"{failed.error}; the run stopped at iteration {run.last.step}{where}") from None
    finally:
        progress.close()
    with interrupts.ignoring_stops():  # the run is done: a Ctrl-C now must not lose its result
        to_checkpoint = checkpoint_file is not None and run.last is not None and run.checkpointed is not run.last
        try:
            image.save_image(output, result.image)
        except UserError as error:
            if not (checkpoint_file is not None and run.last is not None):
                raise UserError(f"{error}{_keep_finished_image(result.image, output)}") from None
            # the finished run in the checkpoint: --resume then writes the image without the work
            if to_checkpoint:
                try:
                    checkpoint.save(checkpoint_file, run.last.checkpoint())
                except UserError as also:
                    raise UserError(f"{error}; the checkpoint could not be written either ({also})") from None
            raise UserError(f"{error}; the finished run is in the checkpoint {checkpoint_file}: once {output} can be "
                            f"written, the same command with --resume {checkpoint_file} writes it at once") from None
        if to_checkpoint:  # --iters can go on from the end
            try:
                checkpoint.save(checkpoint_file, run.last.checkpoint())
            except UserError as error:
                raise UserError(f"wrote {output}, but {error}") from None
        if log is not None:
            try:
                atomic.write_text(Path(log), _json(log_record(
                    result.history, iterations=result.iterations, evaluations=result.evaluations,
                    seconds=result.seconds, seconds_per_iteration=result.seconds_per_iteration)), "log")
            except UserError as error:
                raise UserError(f"wrote {output}, but {error}") from None
    last = result.history[-1]
    H, W = result.image.shape[:2]
    if resume is not None and result.iterations == resume["steps"]:
        print(f"  nothing was left to do: the checkpoint is at iteration {resume['steps']} and --iters is "
              f"{settings['iters']}; raise --iters to go on", file=stream)
    for line in result.stopped:   # fewer iterations than asked: say why, not only how many
        print(f"  the optimiser stopped early ({line})", file=stream)
    each = "" if result.seconds_per_iteration is None else f"{result.seconds_per_iteration:.3f} s per iteration "
    print(f"wrote {output}: {result.iterations} iterations ({result.evaluations} evaluations) in "
          f"{result.seconds:.1f} s ({each}at {W}x{H}); "
          f"J {last['J']:.4g}, J_content {last['J_content']:.4g}, J_style {last['J_style']:.4g}"
          f"{' (of the image before --preserve-colors)' if settings.get('preserve_colors') else ''}", file=stream)
    return 0


class _RunState:
    """What the command remembers of a run as it goes: the last iteration and the best one so far.

    "Best" is the lowest cost in the latest pass reached (costs of passes at different sizes
    cannot be compared, and a finer pass is the closer to the result); Adam's cost can go up
    from one step to the next, L-BFGS's cannot.
    """

    def __init__(self):
        self.last = self.best = self.checkpointed = None

    def seen(self, p):
        self.last = p
        if self.best is None or p.scale > self.best.scale or p.costs["J"] < self.best.costs["J"]:
            self.best = p


def _save_partial(run, output, log, checkpoint_file, log_record, stopped):
    """Write what a stopped run has: the best image, the cost log, the checkpoint. Returns '; wrote ...'."""
    if run.best is None:
        return "; it stopped before the first iteration, so there was nothing to save"
    best = run.best
    # Each file on its own: on a full disk the small image may fit where the log or the checkpoint does not,
    # and the line must say what was kept
    try:
        image_path = image.save_image(snapshot_path(output, best.step), best.image())
    except UserError as error:
        return f"; the best image so far could not be kept either ({error})"
    said = f"; wrote the best image so far (iteration {best.step}, J {best.costs['J']:.4g}) to {image_path}"
    log_path = Path(log) if log is not None else snapshot_path(output, best.step, ".json")
    try:
        atomic.write_text(log_path, _json(log_record(
            run.last.history, stopped=stopped,
            best={"scale": best.scale, "iteration": best.iteration, "step": best.step, **best.costs},
            iterations=run.last.step)), "log")
        said += f" and the cost log to {log_path}"
    except UserError as error:
        said += f"; not the cost log ({error})"
    if checkpoint_file is not None:
        try:
            checkpoint.save(checkpoint_file, run.last.checkpoint())
            said += f"; continue with the same command and --resume {checkpoint_file}"
        except UserError as error:
            said += f"; not the checkpoint ({error})"
    return said


class _WriteFailed(Exception):
    """A snapshot or a checkpoint that could not be written during the run (`what`); `error` says why.

    Not a UserError: raised inside the optimiser's callback, it must end the run, not be taken for
    one of stylize's own errors on the way out."""

    def __init__(self, error, what):
        super().__init__(str(error))
        self.error, self.what = error, what


def _json(data):
    return json_text.dumps(data, indent=1) + "\n"

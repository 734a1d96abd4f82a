"""`scratchnst train` and `scratchnst apply`: train a real-time style network, then use it on photos.

`training.train` does the work; this module is what the commands add around it:
    - every path is checked before any computing starts (the -o folder exists and is writable,
      -o is no input, the photo folder holds photos, the style image reads);
    - a progress line every --print-every steps: step, loss, seconds per step, ETA;
    - Ctrl-C saves the network trained so far to -o (and the checkpoint, if asked for), says
      where, and exits 130; every file is written atomically (scratchnst.atomic);
    - a failure mid-run keeps the network of the last step done; an -o that cannot be written at
      the end (a full disk) keeps the finished run in its checkpoint or the temporary folder.
"""

import os
import sys
import time
from pathlib import Path

from scratchnst import checkpoint, image, image_files, training, transformer_net
from scratchnst.atomic import check_output, folder_problem, same_file, write_elsewhere
from scratchnst.cli import interrupts
from scratchnst.cli.stylize_command import _format_seconds, check_output_paths
from scratchnst.errors import UsageError, UserError, os_error_line

SETTINGS_ORDER = ("model", "weights", "pool", "size", "crop", "batch", "iters", "final_steps", "lr", "lr_schedule",
                  "adam_beta2", "content_layer", "alpha", "style_layers", "beta", "tv_weight", "style_size", "widths",
                  "residual_blocks", "outer_kernel", "noise_channels", "seed")


def format_settings(style, photos_dir, output, n_photos, settings, minutes=None):
    """The resolved settings as the lines `scratchnst train` prints before it starts (minutes: the time budget)."""

    def show(key, value):
        if key == "style_layers":
            return ", ".join(f"{name}:{weight:g}" for name, weight in value)
        if key == "widths":
            return "/".join(str(w) for w in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    rows = [("style", str(style)), ("photos", f"{photos_dir} ({n_photos} image files)"), ("output", str(output))]
    rows += [(key, show(key, settings[key])) for key in SETTINGS_ORDER]
    if minutes:
        at = [key for key, _ in rows].index("iters")
        rows[at] = ("iters", f"{settings['iters']} at most: as many as fit in the time budget")
        rows.insert(at + 1, ("minutes", f"{minutes:g} (the steps are timed first, then planned to fit)"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"  {key.ljust(width)}  {_one_line(value)}" for key, value in rows)


def plan_line(plan):
    """What the time budget planned (training.TrainPlan), in one line."""
    if plan.at_step:   # made again at the steps' real pace (training.replan)
        return (f"  re-planned after step {plan.at_step}: steps {plan.since + 1}-{plan.at_step} took {plan.pace:.2f} "
                f"times as long as timed, so {plan.iters} of the {plan.asked_iters} steps ({plan.final_steps} on whole "
                f"photos) are planned to end within --minutes {plan.minutes:g}")
    steps = [f"a {plan.crop_seconds:.3f} s crop step"] + (
        [f"a {plan.whole_seconds:.3f} s whole-photo step"] if plan.asked_final_steps else [])
    timed = f"  timed here: {', '.join(steps)}, {plan.decode_seconds:.3f} s to decode a photo; "
    if not plan.fits:
        return (timed + f"the timing used up --minutes {plan.minutes:g}: 1 step is trained, of the "
                f"{plan.asked_iters} asked for (--minutes 0 trains them all)")
    if plan.iters < plan.asked_iters:
        return (timed + f"{plan.asked_iters} steps would take {plan.asked_seconds / 60:.1f} min, so {plan.iters} "
                f"({plan.final_steps} on whole photos) are planned to fit in --minutes {plan.minutes:g} (--minutes 0 "
                "trains them all)")
    return (timed + f"the {plan.iters} steps should take {plan.seconds / 60:.1f} min, within --minutes "
            f"{plan.minutes:g}")


def progress_line(p):
    """step 12/700  J 4.31e+06  J_content 553  J_style 1.08e+06  0.83 s/step  ETA 9:35 [  skipped 1 photo]"""
    digits = len(str(p.iters))
    c = p.costs
    skipped = (f"  skipped {p.skipped} photo{'s' if p.skipped != 1 else ''} (unreadable, one plain colour or too "
               "elongated)" if p.skipped else "")
    return (f"step {p.iteration:>{digits}}/{p.iters}  J {c['J']:.3g}  J_content {c['J_content']:.3g}  "
            f"J_style {c['J_style']:.3g}  {p.seconds_per_step:.2f} s/step  ETA {_format_seconds(p.eta)}{skipped}")


def run_train(style, photos_dir, output, *, snapshot=None, snapshot_every=None, snapshots_dir=None,
              checkpoint_file=None, checkpoint_every=None, resume_file=None, print_every=10, stream=None,
              minutes=None, **options):
    """The `scratchnst train` command.

    Args:
        style: the style image file.
        photos_dir: the folder of training photos.
        output: the transformer network file (.h5) to write, at the end or on Ctrl-C.
        snapshot, snapshot_every, snapshots_dir: stylise the photo `snapshot` every snapshot_every
            steps (default 100) into snapshots_dir (default: -o's folder) as snapshot_<step>.png.
        checkpoint_file, checkpoint_every: the run's whole state every checkpoint_every steps
            (default 100), at the end and on Ctrl-C.
        resume_file: continue from this checkpoint (checkpoints then go on into it, unless
            checkpoint_file says otherwise).
        print_every: steps between progress lines (the first step's line is always printed).
        minutes: a time budget (training.train's); None: training.DEFAULT_MINUTES for a new run
            whose steps are not given (no --iters), none otherwise; 0: none.
        stream: where the settings and the last line go (stdout); progress lines go to stderr.
        **options: training.train's settings.

    Returns:
        0, or 130 (143, 129) when stopped by Ctrl-C (SIGTERM, SIGHUP) after saving what was trained.
    """
    stream = stream or sys.stdout
    output = Path(output)
    checkpoint_flag = "--checkpoint"
    if resume_file is not None and checkpoint_file is None:
        checkpoint_file, checkpoint_flag = resume_file, "--resume"
    if checkpoint_every is not None and checkpoint_file is None:
        raise UsageError("--checkpoint-every needs --checkpoint FILE (or --resume FILE): say where to save")
    if snapshot_every is not None and snapshot is None:
        raise UsageError("--snapshot-every needs --snapshot PHOTO: say which photo to stylise")
    checkpoint_every = 100 if checkpoint_every is None else checkpoint_every
    snapshot_every = 100 if snapshot_every is None else snapshot_every
    for flag, value in (("--checkpoint-every", checkpoint_every), ("--snapshot-every", snapshot_every),
                        ("--print-every", print_every)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    started = _budget_start()
    if minutes is not None:
        minutes = training.check_minutes(minutes)
    elif resume_file is None and options.get("iters") is None:
        minutes = training.DEFAULT_MINUTES
    # "the same command and --resume" goes on: a resumed run keeps the plan its checkpoint holds
    ignored_minutes, minutes = (minutes, None) if resume_file is not None else (None, minutes)
    resume = checkpoint.load(resume_file) if resume_file is not None else None
    settings = training.resolve_train_settings(**training.resumed_options(options, resume))
    photos = training.list_photos(photos_dir)
    image.image_size(style)   # the header: a missing or broken style image is told now, in one line
    training.check_train_memory(settings, style)
    if snapshot is not None:
        image.image_size(snapshot)
        snapshots_dir = Path(snapshots_dir) if snapshots_dir is not None else output.parent
        if _inside(snapshots_dir, photos_dir):
            raise UsageError(f"the snapshots would be written in {snapshots_dir}, inside the folder of training "
                             f"photos {photos_dir}, and become training photos themselves; give --snapshots-dir "
                             "a folder outside it")
    if checkpoint_file is not None and _would_be_photo(checkpoint_file, photos_dir):
        # it would be listed at the next start, and a resumed run refuses a folder whose photos changed
        raise UsageError(f"{checkpoint_flag} {checkpoint_file} is inside the folder of training photos {photos_dir} "
                         "with an image's extension, and would become a training photo itself (the run could never "
                         "be resumed); write it outside that folder, e.g. as run.ckpt.npz")
    inputs = [("style image", style), ("weights file", settings["weights"]), ("snapshot photo", snapshot)]
    check_output("-o", output, example="net.h5")   # a folder given: suggest a .h5 name in it, not out.png
    check_output_paths([("-o", output), (checkpoint_flag, checkpoint_file)], inputs)
    check_output_paths([("-o", output)], [("checkpoint given to --resume", resume_file)])
    if output.suffix.lower() not in NETWORK_SUFFIXES:
        raise UsageError(f"-o {output}: the network is written as an HDF5 file; give it a .h5 name, e.g. "
                         f"-o {output.with_suffix('.h5')}")
    for photo in photos:
        if same_file(output, photo):
            raise UsageError(f"-o {output} is one of the training photos; choose another file name")
    if snapshot is not None:
        _make_folder(snapshots_dir, "--snapshots-dir")
        check_output("--snapshots-dir", snapshots_dir / "snapshot_00001.png")   # writable, tried for real

    print("scratchnst train", file=stream)
    print(format_settings(style, photos_dir, output, len(photos), settings, minutes), file=stream, flush=True)
    run = {"last": None, "printed": False}

    def on_plan(plan):
        print(plan_line(plan), file=stream, flush=True)

    def callback(p):
        if run["last"] is None and resume is not None:
            print(f"  resuming from {resume_file} at step {resume['iteration']}", file=stream, flush=True)
            if ignored_minutes:
                print(f"  --minutes {ignored_minutes:g} is not used: a resumed run keeps the plan of its checkpoint "
                      f"({p.iters} steps; --iters changes it)", file=stream, flush=True)
        run["last"] = p
        if not run["printed"] or p.iteration % print_every == 0 or p.iteration == p.iters:
            run["printed"] = True  # the first step of this process always gets its line
            # whole: a Ctrl-C between print's writes of the text and of its newline left the line open,
            # and the "interrupted" line that ends the run was glued to its end
            with interrupts.holding_stops():
                print(progress_line(p), file=sys.stderr, flush=True)

    try:
        result = training.train(style, photos_dir, callback=callback, resume=resume, checkpoint_path=checkpoint_file,
                                checkpoint_every=checkpoint_every, snapshot=snapshot,
                                snapshot_every=snapshot_every if snapshot is not None else 0,
                                snapshots_dir=snapshots_dir, writing=interrupts.holding_stops, minutes=minutes,
                                started=started, on_plan=on_plan, **settings)
    except KeyboardInterrupt as stop:
        with interrupts.ignoring_stops():  # a second Ctrl-C must not cut the saving of the first one's results
            how = getattr(stop, "how", "Ctrl-C")
            p = run["last"]
            if p is None:
                line = f"scratchnst: interrupted ({how}) before the first step was done; nothing was saved"
            else:
                meta = {**p.meta, "stopped": f"interrupted ({how})"}
                transformer_net.save(output, p.params, meta)
                line = (f"scratchnst: interrupted ({how}) at step {p.iteration}; wrote the network trained so far "
                        f"to {output}")
                if checkpoint_file is not None:
                    checkpoint.save(checkpoint_file, p.checkpoint())
                    line += f"; continue with the same command and --resume {checkpoint_file}"
            print(_one_line(line), file=sys.stderr, flush=True)
        return getattr(stop, "exit_status", interrupts.INTERRUPTED)
    except (UserError, OSError) as error:
        # A run that fails after some steps (a snapshot's disk full, the gradients overflowing)
        # keeps what it had trained, as Ctrl-C does; the error itself is told as it is.
        if run["last"] is None:
            raise
        raise UserError(_what_failed(error) + _keep_after_failure(run["last"], output, checkpoint_file)) from None
    with interrupts.ignoring_stops():
        try:
            transformer_net.save(output, result.params, result.meta)
        except (UserError, OSError) as error:  # a full disk at the very end: keep the finished run
            raise UserError(_what_failed(error) + _keep_finished_run(result, output, checkpoint_file)) from None
    steps_done = len(result.history) - (resume["iteration"] if resume is not None else 0)
    if resume is not None and steps_done == 0:
        print(f"  nothing was left to do: the checkpoint is at step {resume['iteration']} and --iters is "
              f"{settings['iters']}; raise --iters to go on", file=stream)
    last = result.history[-1] if result.history else None
    said = f"; last J {last['J']:.4g}" if last else ""
    plural = "s" if result.meta["iterations"] != 1 else ""
    print(f"wrote {output}: {result.meta['iterations']} step{plural} ({steps_done} in this run, {result.seconds:.1f} s, "
          f"{result.seconds / max(1, steps_done):.2f} s per step){said}", file=stream)
    return 0


NETWORK_SUFFIXES = (".h5", ".hdf5")


def _budget_start():
    """The time.perf_counter() the time budget counts from: the start of the process when it is the
    `scratchnst` command (Python's start-up and imports count, as a user's clock does), the call
    otherwise (run_train called from a lesson, a notebook or a test, in a process of their own)."""
    now = time.perf_counter()
    main = sys.modules.get("__main__")
    command = (getattr(getattr(main, "__spec__", None), "name", None) == "scratchnst.__main__"   # python -m
               or getattr(getattr(main, "run", None), "__module__", None) == "scratchnst.__main__")   # the script
    return now - _process_seconds() if command else now


def _process_seconds():
    """Seconds since this process started (Linux's /proc), or 0 where that cannot be read."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()   # after the command's name, which may hold anything
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))   # field 22, starttime, in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def _inside(folder, parent):
    """True if `folder` (which may not exist yet) is `parent` or inside it."""
    folder, parent = Path(folder).resolve(), Path(parent).resolve()
    return folder == parent or parent in folder.parents


def _would_be_photo(path, photos_dir):
    """True if training.list_photos(photos_dir) would list the file `path` (which may not exist yet)."""
    path, folder = Path(path).resolve(), Path(photos_dir).resolve()
    if folder not in path.parents or path.suffix.lower() not in training.IMAGE_EXTENSIONS:
        return False
    return not any(part.startswith(".") for part in path.relative_to(folder).parts)


def _one_line(text):
    """text with its line breaks shown as \\n and \\r (a file name may hold them), as the error lines do, and
    each byte of a file name that is not UTF-8 as \\xNN: a terminal in UTF-8 refuses it, and the line with it."""
    return training.printable_path(text).replace("\r", "\\r").replace("\n", "\\n")


def _what_failed(error):
    # parser.describe_error's wording for these two kinds; parser imports this module, so calling
    # it from here would make an import cycle (tests/test_package_layout.py forbids them)
    if isinstance(error, OSError) and error.filename is not None:
        return os_error_line(error)
    return str(error)


def _keep_after_failure(progress, output, checkpoint_file):
    """Save the network (and checkpoint) of the last step done before a failure; what to add to its message."""
    said = ""
    with interrupts.ignoring_stops():
        try:
            transformer_net.save(output, progress.params, {**progress.meta, "stopped": "failed"})
            said += f"; wrote the network of step {progress.iteration} to {output}"
        except (UserError, OSError):
            said += f"; the network of step {progress.iteration} could not be saved either"
        if checkpoint_file is not None:
            try:
                checkpoint.save(checkpoint_file, progress.checkpoint())
                said += f"; wrote its checkpoint to {checkpoint_file} (continue with --resume {checkpoint_file})"
            except (UserError, OSError):
                said += f"; its checkpoint could not be written to {checkpoint_file} either"
    return said


def _keep_finished_run(result, output, checkpoint_file):
    """Where a finished run is kept when -o cannot be written (a full disk); what to add to its message.

    With a checkpoint, the run's last step wrote it: `--resume` finishes at once and writes -o.
    Without one, the network goes to the temporary folder (scratchnst.atomic.write_elsewhere).
    """
    if checkpoint_file is not None:
        return (f"; the finished run is in its checkpoint {checkpoint_file}: once {output} can be written, run "
                f"the same command with --resume {checkpoint_file} to write it")
    kept = write_elsewhere(output, lambda path: transformer_net.save(path, result.params, result.meta))
    if kept is None:
        return "; the trained network could not be written to the temporary folder either: it is lost"
    return f"; wrote the trained network to {kept} instead"


def _make_folder(folder, flag):
    """Create `folder` (and its parents) if missing; UserError in one line if that cannot be done."""
    folder = Path(folder)
    if folder.is_dir():
        return
    if folder.exists():
        raise UserError(f"{flag} {folder}: is a file, not a folder; give a folder")
    try:
        folder.mkdir(parents=True)
    except OSError as error:
        problem = folder_problem(folder.parent) or (error.strerror or str(error))
        raise UserError(f"cannot create {flag} {folder}: {problem}; choose another folder") from None


# -------------------------------------------------------------------------------------- apply
def output_paths(photos, output, into_folder=False):
    """Where `apply` writes each photo's result: OUT itself for one photo, OUT/<photo's name> for several,
    or for one photo when OUT is a folder (into_folder: it is one, or is to be made).

    A photo whose extension Pillow cannot write in colour gets .png instead.
    """
    output = Path(output)
    if len(photos) == 1 and not into_folder and not output.is_dir():
        return [output]
    paths = []
    for photo in photos:
        name = Path(photo).name
        try:
            image.writable_format(name)
        except UsageError:
            name = Path(name).stem + ".png"
        paths.append(output / name)
    return paths


# Peak memory of `apply` (default widths, float32, no caches kept: transformer_net.stylize), measured:
# 512x384 205 MB, 1024x768 590 MB, 2048x1536 1.83 GB, that is 525-650 bytes a pixel (two layers'
# full-resolution activations and the 9x9 convolutions' im2col rows) above about 80 MB, with the paper's
# 9x9 outer kernels. The default 5x5 need less (2026-12-05, peak RSS of the command: 170 MB, 467 MB and
# 1.40 GB, 400-500 bytes a pixel); a file may hold either, so the bound is the 9x9's, with margin:
APPLY_BYTES_PER_PIXEL = 700
APPLY_BYTES_FIXED = 150e6
# Those bytes are mostly activations: w1 channels at full resolution, w2 at a quarter of the pixels,
# w3 at a sixteenth. A wider network needs them in proportion (measured, 2026-12-05: widths 256/256/256
# took 4.9 kB a pixel above the fixed part between 400x300 and 800x600, the default 440 bytes, a ratio
# of 11 where this gives 12); a narrower one still needs the picture's own buffers, so never less.
DEFAULT_ACTIVATIONS = (transformer_net.DEFAULT_WIDTHS[0] + transformer_net.DEFAULT_WIDTHS[1] / 4
                       + transformer_net.DEFAULT_WIDTHS[2] / 16)   # 16 + 32/4 + 64/16 = 28 channels a pixel


def apply_bytes_per_pixel(params):
    """The peak bytes a pixel of the photo costs `apply` with this network (APPLY_BYTES_PER_PIXEL scaled by widths)."""
    w1, w2, w3 = transformer_net.architecture_of(params)[0]
    return APPLY_BYTES_PER_PIXEL * max(1.0, (w1 + w2 / 4 + w3 / 16) / DEFAULT_ACTIVATIONS)


def check_apply_memory(photo, size, bytes_per_pixel=APPLY_BYTES_PER_PIXEL):
    """UserError, before anything is decoded, if the photo at this size would not fit in memory.

    bytes_per_pixel: apply_bytes_per_pixel of the network (the default widths' by default).
    """
    from scratchnst.settings import available_memory

    H0, W0 = image.image_size(photo)

    def needed(long_side):
        H, W = (max(1, round(n * long_side / max(H0, W0))) for n in (H0, W0))
        return APPLY_BYTES_FIXED + bytes_per_pixel * (H + 3) * (W + 3)   # + up to 3 rows of padding

    long_side = max(H0, W0) if size is None else size
    available = available_memory()
    if available is None or needed(long_side) <= available:
        return
    fits = long_side
    while fits > 8 and needed(fits) > available:
        fits = int(fits * 0.95)
    H, W = (max(1, round(n * long_side / max(H0, W0))) for n in (H0, W0))
    raise UserError(f"{photo} is {W}x{H} pixels: stylising it needs about {needed(long_side) / 1e9:.1f} GB of memory "
                    f"and this machine has {available / 1e9:.1f} GB available; use --size {fits} or less")


def _result_size(photo, size):
    """(H, W) of `apply`'s result for this photo: its own size, or with the long side `size` (as load_image)."""
    H, W = image.image_size(photo)
    if size is None:
        return H, W
    scale = size / max(H, W)   # image_files._long_side_size's arithmetic, to the same rounding
    return max(1, round(H * scale)), max(1, round(W * scale))


def run_apply(network_file, photos, output, size=None, stream=None):
    """The `scratchnst apply` command: stylise photos with a trained network.

    Args:
        network_file: a transformer network written by `scratchnst train`.
        photos: list of photo files.
        output: the image file to write (one photo), or a folder (several photos; created if missing).
        size: None (each photo at its own size) or the long side to resize photos to first.
        stream: where the lines go (stdout).

    Returns:
        0. Every file is written atomically; photos of any size work (reflection-padded to a
        multiple of 4 inside, cropped back).

    Raises:
        UserError: a missing or broken network file or photo (headers are all read first); with
            several photos, one that breaks off while decoded is skipped, the others are written,
            and the error then says how many failed.
    """
    stream = stream or sys.stdout
    if size is not None and size < 1:
        raise UsageError(f"--size must be at least 1, got {size}")
    params, meta = transformer_net.load(network_file)
    for photo in photos:
        # missing or broken photos are told before any work, and huge ones (for this network's widths)
        check_apply_memory(photo, size, apply_bytes_per_pixel(params))
    # `-o results/` (a name ending in a slash) is a folder to write into even for one photo
    into_folder = len(photos) > 1 or str(output).endswith(("/", os.sep))
    output = Path(output)
    if into_folder:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: is a file, and the results go into a folder (with several photos, or a "
                             "name ending in /); give a folder")
        if not output.exists():
            check_output("-o", output)   # its parent exists and is writable: the folder can be made
    targets = output_paths(photos, output, into_folder)
    seen = {}
    for photo, target in zip(photos, targets):
        if target in seen:
            raise UsageError(f"{photo} and {seen[target]} would both be written to {target}; rename one, or apply "
                             "them one at a time")
        seen[target] = photo
        image.writable_format(target, "-o")
        for source in photos + [network_file]:
            if same_file(target, source):
                raise UsageError(f"-o {target} is the input {source}: writing it would destroy it; choose another "
                                 "-o (a different folder or file name)")
    for photo, target in zip(photos, targets):
        problem = image_files.size_problem(target, *_result_size(photo, size))
        if problem:   # now, not when the result is saved after all the computing
            raise UserError(f"-o {problem}")
    if into_folder:
        _make_folder(output, "-o")
    for target in targets:
        check_output("-o", target)
    failed = []
    for photo, target in zip(photos, targets):
        start = time.perf_counter()
        try:
            result = training.stylize_photo(params, meta, photo, size)
        except UserError as error:
            # Only the header of each photo was read up front: one that breaks off in the middle is
            # found here. With several photos the others are still worth painting; say which failed.
            if len(photos) == 1:
                raise
            failed.append(photo)
            # the error names the photo already (image_files's lines start with it): once is enough
            said = str(error) if str(error).startswith((str(photo), str(Path(photo)))) else f"{photo}: {error}"
            print(_one_line(f"skipped {said}"), file=sys.stderr, flush=True)
            continue
        # Held back, not ignored: a Ctrl-C during the save stops the run once the file is whole.
        with interrupts.holding_stops():
            image.save_image(target, result)
            H, W = result.shape[:2]
            print(_one_line(f"wrote {target} ({W}x{H}, {time.perf_counter() - start:.1f} s)"), file=stream,
                  flush=True)
    if failed:
        # each failure has had its "skipped" line: this one sums up, without repeating the reasons
        raise UserError(f"{len(failed)} of the {len(photos)} photos could not be stylised (the first: {failed[0]}, "
                        f"see the skipped lines above); the other {len(photos) - len(failed)} were written to {output}")
    return 0

"""Checkpoint files: the whole state of a style-transfer run, so that `--resume` can continue it.

A checkpoint is an .npz archive (NumPy's zip of .npy files, read with allow_pickle=False, so
loading one never runs code): every array of the state is stored as it is, in its dtype, bit for bit,
and everything else (numbers, names, the settings, the cost history) as one JSON text under the
key "meta". Floats survive JSON exactly: Python writes the shortest text that reads back to the
same double. What goes into the state is decided by `transfer.stylize`; this module stores and reads
nested dicts whose leaves are arrays or JSON values, and checks that a loaded one can be resumed
by the run at hand (the same settings and inputs, and contents that make sense).

    save("run.ckpt.npz", state)      # atomically: the old checkpoint stays until the new one is complete
    state = load("run.ckpt.npz")     # UserError, one line, for anything that is not a checkpoint
"""

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from scratchnst import atomic
from scratchnst.errors import UsageError, UserError

FORMAT = 1  # bumped when the layout of the state changes; `load` refuses other formats
_SEP = "/"  # joins the keys of nested dicts into the names of the stored arrays


def save(path, state):
    """Write a state to a checkpoint file atomically.

    Args:
        path: the file to write (any name; ".npz" is conventional). np.savez is given an open
            file, so it does not append ".npz" to the name.
        state: dict; nested dicts are flattened, arrays with at least one axis are stored as
            arrays, everything else must be JSON (floats, ints, strings, lists, None).

    Returns:
        Path of the written file.
    """
    arrays, meta = {}, {}
    _split(state, "", arrays, meta)
    with atomic.atomic_path(path, "checkpoint") as tmp:
        with open(tmp, "wb") as out:
            np.savez(out, meta=np.array(json.dumps({"format": FORMAT, "state": meta})), **arrays)
    return Path(path)


def load(path):
    """Read a checkpoint written by `save`; the same nested dict, arrays read-only.

    Raises:
        UserError: missing, a folder, not a checkpoint, damaged, or from another format.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the checkpoint file written by --checkpoint")
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such checkpoint file"
        raise UserError(f"{path}: {what}; check the path, or start without --resume")
    damaged = UserError(f"{path}: not a readable scratchnst checkpoint (damaged, cut short, or another kind of "
                        "file); start again without --resume")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # a zip archive, as .npz files are; never let np.load guess
                raise damaged
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
        header = json.loads(str(stored.pop("meta")))
    except PermissionError:
        raise UserError(f"{path}: cannot be read (Permission denied); check its permissions") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # NumPy's own texts are no help here (one even suggests allow_pickle=True, which would
        # run code from the file): the user needs to know the file is unusable, not why.
        raise damaged from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{path}: a checkpoint of format {header.get('format') if isinstance(header, dict) else '?'}"
                        f", this scratchnst reads format {FORMAT}; start again without --resume")
    state = header.get("state")
    if not isinstance(state, dict):
        raise damaged
    try:
        for name, array in stored.items():
            array.flags.writeable = False
            node = state
            *parents, leaf = name.split(_SEP)
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = array
    except (AttributeError, TypeError):  # "state" not a dict, or an array name clashing with a value
        raise damaged from None
    return state


def file_digest(path):
    """SHA-256 of a file's bytes (hex): how a checkpoint recognises the images it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split(node, prefix, arrays, meta):
    """Arrays (ndim >= 1) into arrays["a/b"], the rest into the nested dict meta (JSON values)."""
    for key, value in node.items():
        if _SEP in key:
            raise ValueError(f"checkpoint keys must not contain {_SEP!r}: {key!r}")
        if isinstance(value, dict):
            meta[key] = {}
            _split(value, prefix + key + _SEP, arrays, meta[key])
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            arrays[prefix + key] = value
        else:
            meta[key] = value.item() if isinstance(value, np.generic | np.ndarray) else value


# ------------------------------------------------- what a stylize checkpoint must hold to be resumed
class InputDigests:
    """SHA-256 of each input (image files, arrays, the weights file): what a checkpoint must be resumed with.

    Computed on first use, since only runs that save or resume a checkpoint need them (the
    VGG-19 file takes a second or two to read).
    """

    def __init__(self, content, styles, init_file, weights):
        """content, styles (a list), init_file (None unless --init is an image) and weights: paths or arrays."""
        self.sources = {"content": content, "styles": list(styles), "init": init_file, "weights": weights}
        self._digests = None

    def digests(self):
        """{"content", "styles" (a list), "init", "weights"}: hex SHA-256 strings (None for no --init file)."""
        if self._digests is None:
            self._digests = {key: [self._digest(v) for v in value] if key == "styles" else
                             (None if value is None else self._digest(value)) for key, value in self.sources.items()}
        return self._digests

    @staticmethod
    def _digest(source):
        if isinstance(source, (str, os.PathLike)):
            return file_digest(source)
        array = np.ascontiguousarray(source, dtype=np.float32)
        return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


def damaged(what):
    """The UserError for a checkpoint whose contents do not make sense (`what` says which part)."""
    return UserError(f"the checkpoint is damaged or not from this version of scratchnst ({what}); "
                     "start again without --resume")


def check_state(state):
    """UsageError or UserError unless a loaded checkpoint has the parts `stylize(resume=...)` reads."""
    if not isinstance(state, dict) or state.get("format") != "stylize":
        raise UsageError("the checkpoint is not from `scratchnst stylize`; start again without --resume")
    for key, kind in (("settings", dict), ("inputs", dict), ("optimizer", dict), ("history", list),
                      ("scale", int), ("steps", int), ("evaluations", int), ("elapsed", (int, float))):
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise damaged(f"{key} is missing or of the wrong kind")
    if not state["history"] or not all(isinstance(entry, dict) and isinstance(entry.get("J"), (int, float))
                                       for entry in state["history"]):
        raise damaged("the cost history")
    if min(state["scale"], state["steps"], state["evaluations"]) < 0 or not 0 <= state["elapsed"] < float("inf"):
        raise damaged("a count or time out of range")


def check_resume(state, settings, inputs, builtin_inits):
    """UsageError unless a checkpoint's state belongs to a run with these settings and inputs.

    Args:
        state: the loaded checkpoint (see `load`).
        settings: the run's resolved settings (transfer.resolve_settings).
        inputs: the run's InputDigests.
        builtin_inits: the --init values that are not files ("content+noise", ...).

    The weights are compared by their bytes, not their path, so a run resumed from another
    folder, or with a copy of the file, is accepted.
    """
    check_state(state)
    # The same JSON round trip the checkpoint went through (an --init array is compared by its digest).
    made, now = (json.loads(json.dumps(d, default=lambda _: "an array")) for d in (state["settings"], settings))

    def is_file(init):
        return not (isinstance(init, str) and init in builtin_inits)

    # The weights and an --init file are compared by content below. iters may change with one
    # pass; with several, the passes before the checkpoint ran with the old iters, so the end
    # would be no uninterrupted run's.
    ignored = {"weights"} | ({"iters"} if settings["scales"] == 1 else set())
    if is_file(state["settings"].get("init")) and is_file(settings["init"]):
        ignored.add("init")
    differ = [key for key in sorted(set(made) | set(now)) if key not in ignored and made.get(key) != now.get(key)]
    if differ:
        shown = "; ".join(f"{key}: checkpoint {made.get(key)!r}, now {now.get(key)!r}" for key in differ[:3])
        raise UsageError(f"the checkpoint was made with other settings ({shown}); give the interrupted run's "
                         "settings (only --iters may change, and only with --scales 1), or start again without "
                         "--resume")
    saved, current = state["inputs"], inputs.digests()
    for key, label in (("content", "content image differs from the one"), ("styles", "style images differ from "
                       "the ones"), ("init", "--init image differs from the one"), ("weights", "weights file "
                       "differs from the one")):
        if saved.get(key) != current[key]:
            raise UsageError(f"the {label} the checkpoint was made with; give the same files, or start again "
                             "without --resume")


def check_fits(state, pass_shapes):
    """UserError unless the checkpoint's pass and arrays fit the passes of this run (a damaged file would
    otherwise fail deep inside the optimiser, or go on from NaN pixels).

    Args:
        state: the loaded checkpoint, already through `check_resume`.
        pass_shapes: [(H, W), ...] of the run's passes, coarse to fine.
    """
    if not 0 <= state["scale"] < len(pass_shapes):
        raise damaged(f"pass {state['scale'] + 1} of {len(pass_shapes)}")
    H, W = pass_shapes[state["scale"]]
    for name, value in state["optimizer"].items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and not np.issubdtype(value.dtype, np.integer):
            # integers (L-BFGS's pair_slots) are checked where they are read (optim_state)
            if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
                raise damaged(f"{name} holds values that are not finite numbers")
    x = state["optimizer"].get("x")
    if not isinstance(x, np.ndarray) or x.shape != (H * W * 3,):
        raise damaged(f"its image is not the {W}x{H} of pass {state['scale'] + 1}")
    for name, value in state["optimizer"].items():  # the optimiser's other vectors are x's kind
        if name in ("g", "m", "v") and (not isinstance(value, np.ndarray) or value.shape != x.shape):
            raise damaged(f"{name} is not a vector of the image's {x.size} values")
    opt = state["optimizer"]

    def number(value, integer=False):
        # a count beyond int64 (a hand-edited 10**30) is no count: NumPy cannot even test it
        if isinstance(value, bool) or not isinstance(value, (int,) if integer else (int, float)):
            return False
        return 0 <= value < 2**63 if isinstance(value, int) else math.isfinite(value) and value >= 0

    scalars_ok = (number(opt.get("iteration"), True) and number(opt.get("n_evals"), True)
                  and isinstance(opt.get("f"), (int, float)) and np.isfinite(opt["f"])
                  and isinstance(opt.get("history"), list) and len(opt["history"]) == opt["iteration"] + 1
                  and all(isinstance(h, (int, float)) and np.isfinite(h) for h in opt["history"])
                  and isinstance(opt.get("aux"), dict) and {"J", "J_content", "J_style", "J_tv"} <= set(opt["aux"])
                  and (opt.get("f_previous") is None or isinstance(opt["f_previous"], (int, float)))
                  and ("skipped" not in opt or number(opt["skipped"], True))
                  and ("pair_rho" not in opt or bool(np.all(np.asarray(opt["pair_rho"]) > 0))))
    if not scalars_ok:
        raise damaged("the optimiser's state")
    # the iterations of every pass so far: the earlier passes' (at most --iters each), then this one's
    iters = state["settings"].get("iters")
    earlier = state["steps"] - opt["iteration"]
    if earlier < 0 or (state["scale"] == 0 and earlier != 0) or (
            isinstance(iters, int) and earlier > state["scale"] * iters):
        raise damaged(f"{state['steps']} iterations done in all, {opt['iteration']} in pass {state['scale'] + 1}")

"""Checkpoint files: the whole state of a style-transfer run, so that `--resume` can continue it.

A checkpoint is an .npz archive (NumPy's zip of .npy files, read with allow_pickle=False, so
loading one never runs code): every array of the state is stored as it is, float64 bit for bit,
and everything else (numbers, names, the settings, the cost history) as one JSON text under the
key "meta". Floats survive JSON exactly: Python writes the shortest text that reads back to the
same double. What goes into the state is decided by `transfer.stylize`; this module only stores
and reads nested dicts whose leaves are arrays or JSON values.

    save("run.ckpt.npz", state)      # atomically: the old checkpoint stays until the new one is complete
    state = load("run.ckpt.npz")     # UserError, one line, for anything that is not a checkpoint
"""

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from scratchnst import atomic
from scratchnst.errors import UserError

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

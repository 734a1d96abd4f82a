"""Writing files so that a reader never sees half of one: a temporary file, then a rename.

Every file scratchnst writes (images, logs, checkpoints, downloaded or converted weights, the
lessons' pictures) goes through `atomic_path`: the data is written to a hidden temporary file in
the destination's folder and renamed onto the destination only once it is complete. os.replace is
atomic within one file system, which is why the temporary file sits in the same folder and not in
/tmp: killing the process at any moment leaves either the old file or the new one.

    with atomic_path("out.png", "image") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
"""

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from scratchnst.errors import UsageError, UserError


def temporary_sibling(path):
    """A fresh hidden name next to `path`, ending in the same suffix (writers that pick the format
    from the extension, such as matplotlib's savefig, still see it): out.png -> .out.png.1f2e3d4c.tmp.png"""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path, what="file"):
    """Yield a temporary path to write; rename it onto `path` when the block ends without error.

    Args:
        path: the destination; an existing file there is replaced only by a complete new one.
        what: what the file is ("image", "log", ...), for the error message.

    Yields:
        pathlib.Path of the temporary file (not created: the block creates it).

    Raises:
        UserError: the file cannot be written (missing folder, no permission, full disk), one
            line naming it. Any other exception, Ctrl-C included, passes through; in every
            failure the temporary file is removed and `path` is left as it was.
    """
    path = writable_target(path, what)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    except OSError as error:
        _remove(tmp)
        if path.is_dir():
            raise UserError(f"cannot write the {what} {path}: it is a folder; give a file name") from None
        raise UserError(f"cannot write the {what} {path}: {reason(error)}; check that the folder exists, "
                        "is writable and has space") from None
    except BaseException:
        _remove(tmp)
        raise


def writable_target(path, what="file"):
    """The file a write to `path` must replace: a symbolic link's target, never the link itself.

    A rename onto a link would replace the link by a file and leave the file it points to as
    it was; a rename onto a device or a pipe (/dev/null, /dev/full, a FIFO) would replace the
    device. So links are followed, and anything that is not a regular file is refused.

    Raises:
        UsageError: the path exists and is neither a regular file nor a folder (a folder fails
            later, with its own message).
    """
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except OSError:  # not there yet (or unreadable): the write itself will tell
        return target
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UsageError(f"cannot write the {what} {path}: it is not a regular file (a device or a pipe); "
                         "give the name of a file")
    return target


def reason(error):
    """The operating system's one-line reason for an OSError, without file names or newlines.

    h5py and others put the errno inside a long text ("... errno = 28, error message = ...");
    the user needs "No space left on device", not the name of a temporary file.
    """
    number = error.errno
    if number is None:
        found = re.search(r"errno = (\d+)", str(error))
        number = int(found.group(1)) if found else None
    if number:
        return os.strerror(number)
    return " ".join(str(error).split())[:120] or type(error).__name__


def write_bytes(path, data, what="file"):
    """Write bytes to `path` atomically (see `atomic_path`); returns the Path."""
    with atomic_path(path, what) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text, what="file"):
    """Write UTF-8 text to `path` atomically (see `atomic_path`); returns the Path."""
    return write_bytes(path, text.encode("utf-8"), what)


def _flush_to_disk(tmp):
    # Without fsync a machine that loses power right after the rename can show the new name with
    # no data in it; with it, the rename publishes data that is already on disk.
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp):
    with contextlib.suppress(OSError):
        tmp.unlink()

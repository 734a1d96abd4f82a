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
import errno
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

from scratchnst.errors import UsageError, UserError


def temporary_sibling(path):
    """A fresh hidden name next to `path`, ending in the same suffix (writers that pick the format
    from the extension, such as matplotlib's savefig, still see it): out.png -> .out.png.1f2e3d4c.tmp.png"""
    path = Path(path)
    tail = f".{secrets.token_hex(4)}.tmp{path.suffix}"
    # within a file name's 255 bytes even where path's own name is near them: its start, cut short
    room = NAME_MAX - 1 - len(tail.encode("utf-8", "surrogateescape"))
    head = path.name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return path.with_name(f".{head}{tail}")


NAME_MAX = 255   # bytes of a file name on Linux's, macOS's and Windows's usual file systems


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


def write_hdf5(path, fill, what="file"):
    """Write an HDF5 file to `path` atomically: built in memory by fill(h5py.File), then written whole.

    HDF5 does not fail well on a full disk: after a write fails with ENOSPC, the library frees
    its objects later, raising in each finaliser, and the process can crash (a segmentation fault,
    the temporary file left behind, a trained network lost). In memory, the HDF5 library cannot
    meet a full disk; the bytes then go to disk as any other file's, and a full disk is one line
    (UserError) like anywhere else. Files written so are small enough to hold in memory: a trained
    network (a few MB) or converted weights (VGG-19's convolutions, 80 MB).
    """
    import io

    import h5py  # here, not at the top: most commands write no HDF5 file and need not import it

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    return write_bytes(path, buffer.getbuffer(), what)


def write_text(path, text, what="file"):
    """Write UTF-8 text to `path` atomically (see `atomic_path`); returns the Path."""
    return write_bytes(path, text.encode("utf-8"), what)


def write_elsewhere(output, write):
    """Where a finished result that `output` could not take (a full disk) was kept instead: a new file
    of the temporary folder (often another disk), named from output's first 40 characters (a long
    name would make too long a name); None if it could not be written there either (nothing is left).

    write(path) writes the result to path.
    """
    name = Path(output)
    kept = None
    try:
        handle, kept = tempfile.mkstemp(prefix=f"scratchnst-{name.stem[:40]}-", suffix=name.suffix[:10])
        os.close(handle)
        write(kept)
    except (UserError, OSError):
        if kept is not None:
            Path(kept).unlink(missing_ok=True)
        return None
    return kept


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


# ------------------------------------------------------------- checking outputs before any work
def output_problem(path):
    """Why a file cannot be written at `path`, found before any work is done, or None.

    The write itself goes through atomic_path, which follows a symbolic link to its target and
    puts its temporary file beside that target: the same rules are applied here. The folder is
    tried for real, with a file created and deleted, because os.access says yes to root even
    where nothing can be written (a read-only mount, /sys).

    Returns:
        None, or (kind, why): kind "folder" (path is a folder), "not regular" (a device, a pipe,
        a link loop, or this command's own standard output or error), "name" (longer than NAME_MAX
        bytes), "no folder" (its folder does not exist or is a file) or "not writable"; why is the
        one-line reason, e.g. "folder nodir does not exist".
    """
    path = Path(path)
    size = len(os.fsencode(path.name))
    if size > NAME_MAX:   # before any look at it, which would say "File name too long" of a folder above
        return "name", f"its name is {size} bytes long, more than the {NAME_MAX} a file name may have"
    try:
        if path.is_dir():
            return "folder", "it is a folder"
    except OSError as error:  # Path.is_dir raises where a folder above cannot be entered (EACCES)
        return "not writable", f"a folder above it cannot be entered ({reason(error)})"
    own = _own_stream(path)
    if own:
        return "not regular", f"it is this command's own {own}"
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR):
            return "not regular", reason(error)  # a link loop
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return "not regular", "it is not a regular file (a device or a pipe)"
    # the user's spelling of the folder, unless the name is a link that points elsewhere
    link = os.path.islink(path)
    folder = target.parent if link else path.parent
    problem = folder_problem(folder)
    if problem:
        return "no folder", f"it is a link to {target}, but {problem}" if link else problem
    probe = temporary_sibling(folder / target.name)
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "not writable", f"folder {folder} is not writable ({reason(error)})"
        return "not writable", f"{reason(error)} in folder {folder}"
    return None


def _own_stream(path):
    """"standard output" or "standard error" when path is where this process writes them, else None.

    /dev/stdout redirected to a file is that file: replaced by a rename, it would take the place of the
    command's own lines, which went on into the unlinked old one. Piped, it names no file to rename onto.
    """
    try:
        here = os.stat(path)
    except OSError:
        return None
    if not (stat.S_ISREG(here.st_mode) or stat.S_ISFIFO(here.st_mode) or stat.S_ISSOCK(here.st_mode)):
        return None  # a terminal, /dev/null: "not a regular file" says it, whoever else writes there
    for fd, name in ((1, "standard output"), (2, "standard error")):
        try:
            if os.path.samestat(here, os.fstat(fd)):
                return name
        except OSError:  # closed
            continue
    return None


def folder_problem(folder):
    """Why `folder` is not a folder: "folder X does not exist" or "X is a file, not a folder"; None if it is one."""
    folder = Path(folder)
    try:
        if folder.is_dir():
            return None
        existing = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), None)
        if existing is not None and existing.is_file():
            return f"{existing} is a file, not a folder"
        if existing is not None and not existing.is_dir():
            return f"{existing} is not a folder"  # a device, a broken link
    except OSError as error:  # a folder above it that the user may not enter (Path.is_dir raises then)
        return f"it or a folder above it cannot be entered ({reason(error)})"
    return f"folder {folder} does not exist"


def same_file(a, b):
    """True if a and b name one file: the same existing file (also through links, hard links, or
    spelled differently), or, for files not there yet, the same absolute name."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


# The file name check_output suggests inside a folder given by mistake, by flag: the advice must name a
# file the command then accepts, so its extension is the one that flag writes. "-o" is an image in
# `stylize` and `apply` but a network (.h5) in `train` and `weights convert`: those pass `example`.
OUTPUT_EXAMPLES = {"-o": "out.png", "--log": "log.json", "--checkpoint": "checkpoint.npz",
                   "--resume": "checkpoint.npz"}


def check_output(flag, path, example=None, kind="file"):
    """Refuse, before any work, an output `path` that cannot be written (see `output_problem`).

    Args:
        flag: the option that named it ("-o", "--log"), for the message.
        path: the file to be written.
        example: a file name to suggest inside a folder given by mistake; None: the flag's
            OUTPUT_EXAMPLES entry ("out.png" for a flag it does not list).
        kind: what to ask for instead of a device or a pipe ("file", ".h5 file").

    Raises:
        UsageError: path is a folder, a device, a pipe, a link loop, the command's own standard output
            or error, or a name too long (the command line is wrong).
        UserError: its folder does not exist, is a file, or is not writable.
    """
    problem = output_problem(path)
    if problem is None:
        return
    what, why = problem
    if what == "folder":
        example = example or OUTPUT_EXAMPLES.get(flag, "out.png")
        raise UsageError(f"{flag} {path}: is a folder; give a file name in it, e.g. {flag} {Path(path) / example}")
    if what == "not regular":
        raise UsageError(f"cannot write {flag} {path}: {why}; give the name of a new {kind}")
    if what == "name":
        raise UsageError(f"cannot write {flag} {path}: {why}; give a shorter name")
    advice = "create it first or choose another folder" if "does not exist" in why else "choose another folder"
    raise UserError(f"cannot write {flag} {path}: {why}; {advice}")

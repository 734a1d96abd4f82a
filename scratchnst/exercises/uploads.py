"""Where a class's submissions are: the uploads of a class folder, each graded or given a row saying why not.

`scratchnst exercises grade DIR...` takes submission folders (each holds a scratchnst/), or folders of
them. What students upload is not always that: archives, links, a package one folder too deep, loose
files, a package unpacked straight into the class folder. `find_submissions` reads such a layout so
that every upload gets a row (graded, or a NotASubmission that says why not), no upload can make a row
under another student's name or hide the others, and files that are nobody's upload are left out.
"""

import os
from pathlib import Path

from scratchnst.atomic import reason
from scratchnst.errors import UserError


class NotASubmission(UserError):
    """Why what stands where a submission should is not graded (its row says so); .path: where it stands."""

    def __init__(self, path, why):
        super().__init__(f"{path}: {why}")
        self.path = path


# Entries of a class folder that are nobody's upload: hidden files (.DS_Store), macOS's archive metadata.
_NOBODYS = ("__MACOSX",)
_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zst", ".tzst", ".lz4", ".lz",
             ".lzma", ".z", ".7z", ".rar", ".whl")
# Files a student may have uploaded instead of a folder: they get a row. Other files (a teacher's earlier
# grades.csv, an LMS's metadata.yml) are nobody's submission and are left out, and named once
# (find_submissions's left_out), so that an upload of a kind not listed here does not vanish unseen.
_UPLOADED_FILES = (".py", ".ipynb")   # besides the archives (_is_archive)
_EXPORTS = (".json", ".csv")  # a folder holding only these is an earlier run's exports (--gradescope DIR)


def _is_archive(name):
    """Whether a file name is an archive's, or one part of an archive split in numbered parts (.zip.001)."""
    name = name.lower()
    return name.endswith(_ARCHIVES) or (len(name) > 4 and name[-4] == "." and name[-3:].isdigit())


def _holds_package(folder, follow=False):
    """Whether folder is a folder (not a symbolic link, unless follow) with a real scratchnst/ folder in it."""
    package = folder / "scratchnst"
    return (folder.is_dir() and (follow or not folder.is_symlink()) and package.is_dir()
            and not package.is_symlink())


def _why_not(entry, one=False):
    """Why entry (an upload in a class folder, or a path given among several) is not a submission, in a few words.

    one: entry was given as one student's upload (--gradescope FILE.json), which a class folder cannot be."""
    if entry.is_symlink():
        return "a symbolic link, not followed (it could point at another's work); copy the folder itself in"
    if not entry.is_dir():
        if _is_archive(entry.name):
            return "an archive, not a folder; unpack it into a folder of its own, then grade again"
        return "a file, not a folder holding scratchnst/"
    if (entry / "scratchnst").is_symlink():
        return "its scratchnst is a symbolic link, not followed; copy the package itself in"
    deeper = _packages_below(entry, 3)
    if len(deeper) > 1:
        advice = ("--gradescope FILE.json takes one student's upload: for a class folder give --gradescope a folder"
                  if one else "if it is a class folder, grade it by itself")
        return f"no scratchnst/ of its own, but {len(deeper)} folders below it hold one ({deeper[0].parent}, ...): " \
            + advice
    if deeper:
        return f"no scratchnst/ of its own, but {deeper[0]} is one: move it up into {entry}, then grade again"
    return "holds no scratchnst/ folder"


def _packages_below(folder, depth):
    """The scratchnst/ folders up to `depth` levels below folder, in sorted order, no symbolic link followed.

    OSError where a folder on the way cannot be read (the caller's row says so)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if entry.name == "scratchnst":
                found.append(entry)
            elif depth > 1:
                found += _packages_below(entry, depth - 1)
    return found


def _scan(folder, depth=2):
    """The files up to `depth` levels in folder, lazily, no symbolic link followed (OSError if unreadable)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if depth > 1:
                    yield from _scan(entry.path, depth - 1)
            else:
                yield entry


def _look(entry):
    """(uploaded, may_hold_work) of an entry of a class folder, from one look at it (one pass over its files).

    uploaded: someone's upload, to be graded or given a row saying why not: a link, an archive, a
    notebook or Python file, a folder unless it holds nothing but an earlier run's exports (.json,
    .csv) and no package at any depth. may_hold_work: a package at most 3 levels down, Python or
    notebook files at most 2 down, or an uploaded file or link (which may). Both true where it cannot
    be read: its row says so.
    """
    if entry.is_symlink():
        return True, True
    if not entry.is_dir():
        uploaded = entry.name.lower().endswith(_UPLOADED_FILES) or _is_archive(entry.name)
        return uploaded, uploaded
    try:
        if _packages_below(entry, 3):
            return True, True
        seen = other_than_exports = False
        for file in _scan(entry):  # lazily: the first Python file ends the look at an upload of many files
            name = file.name.lower()
            if name.endswith((".py", ".ipynb")):
                return True, True
            seen = True
            other_than_exports = other_than_exports or not name.endswith(_EXPORTS)
    except OSError:
        return True, True
    return not seen or other_than_exports, False


def _class_of(path, one):
    """How find_submissions reads the folder `path`: (uploads, inner, others), or None for a submission of its own.

    uploads: its entries that are someone's upload (sorted; the stray scratchnst/ of a class folder among
    them); inner: those of them that are submission folders; others: the entries left out as nobody's
    upload (hidden ones and macOS's metadata not counted). A folder with a scratchnst/ of its own is
    one submission, with whatever else it holds (notes, data, a backup copy of the package), unless at
    least two other entries may hold a student's work (`_look`): then it is read as a class folder
    into which one upload was unpacked. Misread the other way, a class would be graded as that one
    upload and its students would vanish; this way a student's folder shows as rows that say what
    they hold. With `one`, a folder with a scratchnst/ is one submission whatever else it holds
    (Gradescope's run gives one student's upload).
    """
    if one and _holds_package(path, follow=True):
        return None

    def holds_package(entry):  # one unreadable upload is its own row's problem (`_why_not` says it), no other's
        try:
            return _holds_package(entry)
        except OSError:
            return False

    entries = sorted(e for e in path.iterdir() if not e.name.startswith(".") and e.name not in _NOBODYS)
    looks = {entry: _look(entry) for entry in entries}
    uploads = [e for e in entries if looks[e][0]]
    inner = [e for e in uploads if e.name != "scratchnst" and holds_package(e)]
    if _holds_package(path, follow=True) and sum(e.name != "scratchnst" and looks[e][1] for e in uploads) < 2:
        return None
    return uploads, inner, [e for e in entries if not looks[e][0]]


def find_submissions(paths, one=False, left_out=None):
    """[(name, folder)] of the submissions in paths: each a folder holding scratchnst/, or a folder of such folders.

    folder is a Path, or a NotASubmission saying why what stands there is not graded: every upload in
    a class folder gets a row, one that cannot be graded (an archive, a symbolic link, a package a
    folder too deep, an unreadable folder) with the reason, rather than vanishing from the table; files
    that are nobody's upload (a grades.csv, an LMS's metadata) are left out. A folder with a scratchnst/
    of its own is one submission, unless it also holds two or more uploads that may hold work (see
    `_class_of`): then that stray package gets a row, and the class is not graded as one submission.
    Names are the folders' own; with several paths given, a submission found inside one of them is named
    given/inner, so that a folder given for one student cannot make a row that reads as another's, and
    a given path that is a symbolic link gets a row (`grade class/*` gives the students' uploads); a
    single path given is the teacher's own, and followed. A folder reached twice is graded once.
    one: each path is one student's upload (Gradescope's run): one row each, whatever it holds.
    left_out: a list, if given, that receives the paths left out as nobody's upload (to be named).
    Raises UserError for a path that does not exist, and for a single path that holds no submission.
    """
    found = []
    several = len(paths) > 1
    for given in paths:
        path = Path(given)
        if not path.exists() and not path.is_symlink():
            raise UserError(f"{path}: no such folder; give submission folders (each holding scratchnst/) "
                            "or a folder of them")
        own = Path(os.path.abspath(path)).name or str(path)  # the name given ("." is the folder's), links unresolved
        try:
            if (several and path.is_symlink()) or (one and not _holds_package(path, follow=True)):
                found.append((own, NotASubmission(path, _why_not(path, one))))
                continue
            if several and (path.name.startswith(".") or path.name in _NOBODYS or not _look(path)[0]):
                # `grade class/*` gives what a class folder leaves out (an earlier export, LMS metadata)
                if left_out is not None and not path.name.startswith(".") and path.name not in _NOBODYS:
                    left_out.append(path)
                continue
            if not several and path.name == "scratchnst" and (path / "__init__.py").is_file() \
                    and _holds_package(path.parent, follow=True):
                # a student's scratchnst/ itself, not the folder holding it: its modules would be rows
                raise UserError(f"{path} is the package itself: give the folder that holds it, {path.parent}")
            if not path.is_dir():
                if not several:
                    raise UserError(f"{path}: {_why_not(path)}")
                found.append((own, NotASubmission(path, _why_not(path))))
                continue
            read = _class_of(path, one)
        except (OSError, RuntimeError) as error:  # RuntimeError: Python 3.11's words for a link loop
            why = f"cannot be read ({reason(error) if isinstance(error, OSError) else error})"
            if not several:
                raise UserError(f"{path}: {why}") from None
            found.append((own, NotASubmission(path, why)))
            continue
        if read is None:
            found.append((own, path))
            continue
        uploads, inner, others = read
        if left_out is not None:
            left_out += others
        if not inner and (several or all(e.name == "scratchnst" for e in uploads)):
            # no class folder: one student's upload (or a teacher's mistake), one row or one line
            try:
                why = _why_not(path)
            except OSError as error:
                why = f"cannot be read ({reason(error)})"
            if several:
                found.append((own, NotASubmission(path, why)))
                continue
            if why == "holds no scratchnst/ folder":
                raise UserError(f"{path} holds no submission: neither {path / 'scratchnst'} nor any "
                                f"{path / '*' / 'scratchnst'}")
            raise UserError(f"{path}: {why}")
        prefix = f"{own}/" if several else ""
        for entry in uploads:
            if entry in inner:
                found.append((prefix + entry.name, entry))
            elif entry.name == "scratchnst" and _holds_package(path, follow=True):
                found.append((prefix + entry.name, NotASubmission(
                    entry, f"a scratchnst/ directly in the class folder, beside {len(uploads) - 1} upload(s): whose "
                    "is it? Not graded; move it into a folder named after its student")))
            else:
                try:
                    why = _why_not(entry)
                except OSError as error:
                    why = f"cannot be read ({reason(error)})"
                found.append((prefix + entry.name, NotASubmission(entry, why)))
    if not found:  # several paths, each left out as nobody's upload
        raise UserError(f"none of the {len(paths)} paths given is an upload: give submission folders (each holding "
                        "scratchnst/) or a folder of them")
    found = _once_each(found)
    names = [name for name, _ in found]
    if len(set(names)) != len(names):  # two folders of one name: tell them apart by their path
        found = [(str(getattr(folder, "path", folder)), folder) for _, folder in found]
    return found


def _once_each(found):
    """found without the submissions reached a second time (`grade c c`, `grade . ..`): the first of each."""
    seen, kept = set(), []
    for name, folder in found:
        where = getattr(folder, "path", folder)
        try:
            key = os.path.realpath(where) if isinstance(folder, Path) else os.path.abspath(where)
        except (OSError, ValueError):
            key = str(where)
        if key not in seen:
            seen.add(key)
            kept.append((name, folder))
    return kept


__all__ = ["NotASubmission", "find_submissions"]

"""Running a student's code: a scratch copy of the submission, a contained child process, its handle.

Containment comes in layers, each of which stands without the others:
    - the submission is copied, not run in place: only regular `.py` files of its scratchnst/
      (no symlinks, no `__pycache__`, no `.pyc`, no compiled modules), bounded in number and size
      (`copy_submission`); Python runs with -B, so no bytecode is read or written; the modules
      the package gives that compute an exercise's answer (GIVEN_CODE) are replaced there by
      stubs whose every function refuses, and of the student's files only the exercise modules
      are kept: the rest of the package is the grader's own (`rebuild_around_exercises`);
    - nothing from the child is unpickled or executed: its answers are frames of JSON and raw
      arrays (worker.py) parsed by the grader under limits, and a broken frame ends the child;
    - the child runs in its own session, with a clean environment and limits on memory (address
      space), CPU time, processes, file size and open files; its stderr goes to a file of bounded
      size of which only the tail is read; on a timeout and at the end its session is killed, and
      so is any process it left behind (without bwrap the grader is a child subreaper, so orphans
      that left the session come back to it and are killed too). The kernel does not apply the
      process limit to root: as root it holds only once the child has become an unprivileged user,
      one of its own (`sandbox_user`: the kernel counts the limit per user, and a shared user let
      one submission's threads use up its neighbour's);
    - where bubblewrap works (`bwrap_status`), the child runs in it: no network, its own PID, IPC
      and UTS namespaces, a read-only view of the system's /usr, the Python installation without
      its site-packages, NumPy, the worker and the submission's copy, and a small private /tmp.
      Neither the reference answers nor the teacher's files are in that view. As root, the worker
      becomes its user before it imports the student's code, so the process limit holds and no
      capability is left. A seccomp filter (`sandbox_filter`) refuses the kernel keyring's calls,
      the one store the kernel keeps per user rather than per namespace, where one sandbox's user
      could leave what a later one's reads; System V shared memory and message queues, and files
      in memory (memfd_create), memory that no process limit counts; new namespaces, in which a
      worker would be root again; and file locks and watches, through which two sandboxes reading
      the same system files could talk. Without bwrap, grading says so and needs --uncontained to
      go on; as root, the child then runs as its user wherever `nobody` can run this Python
      (`nobody_can_run`).
"""

import ctypes
import errno
import functools
import glob
import math
import os
import platform
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import scratchnst.exercises.worker as wire
from scratchnst.errors import UserError

# Seconds a new child may take to start (Python and NumPy on a loaded machine) before it says it
# is ready. Start-up is not the student's code: it is charged to no budget.
START_TIMEOUT = 120.0
MAX_FILES = 400  # .py files in a submission
MAX_BYTES = 8 << 20  # their total size
MAX_DEPTH = 16  # folders inside scratchnst/
# Folders of a submission that are looked into: the package has three; 90,000 empty ones took the
# grader 19 s to copy and 280 s to delete, charged to no budget
MAX_FOLDERS = 100
STDERR_TAIL = 4096  # bytes of the child's stderr that are ever read
MAX_NOTES = 20  # files and folders left out of a submission that its report names


# The least memory_mb taken from a teacher: Python, NumPy and the arrays of the checks at scale need
# about 160 MB (at 128 the worker died in 7 of 20 exercises, at 64 in all, each blamed on the student).
LEAST_MEMORY_MB = 512


@dataclass(frozen=True)
class Limits:
    """The resource limits of one child.

    Memory is limited per process (the address space: no cgroup is needed), so a child's whole tree
    may hold up to processes x memory_mb; hence few processes. The worker needs one (its BLAS runs
    on one thread), and no exercise needs a second: the others are room for a student's own
    experiments, not for holding memory (16 allowed 16 x 2 GB to one submission).
    """

    memory_mb: int = 2048  # address space per process: NumPy's own start-up needs a few hundred MB
    cpu_seconds: int = 600  # CPU time per process, a backstop behind the wall-clock budgets
    processes: int = 4  # threads included; enforced for a non-root user (as root, for the user of the child's
    # own, `sandbox_user`: each child graded at a time has another, so that one cannot use up another's)
    file_mb: int = wire.OUTPUT_MB  # the largest file it may write, stderr included (and what a call may print)
    open_files: int = 64
    tmp_mb: int = 16  # the sandbox's private /tmp


# ======================================================================== the submission
@dataclass
class Submission:
    """A scratch copy of one submission: `root` holds scratchnst/; `notes` says what was left out."""

    root: Path
    notes: list
    files: int


def copy_submission(package_dir, dest):
    """Copy the regular .py files of package_dir (a student's scratchnst/) to dest/scratchnst.

    Symlinks (to a file or a folder, inside or outside), `__pycache__`, `.pyc` and any other file are
    left out and named in the notes; a submission with more than MAX_FILES files or MAX_BYTES bytes
    of Python, or MAX_FOLDERS folders, is cut there. Nothing is followed out of package_dir. The
    notes name at most MAX_NOTES of them, and count the rest.
    """
    notes, count, total, folders, unnoted = [], 0, 0, 1, 0

    def note(text):  # a note per file, up to MAX_NOTES: 100,000 symlinks once made a 20 MB report
        nonlocal unnoted
        if len(notes) < MAX_NOTES:
            notes.append(text)
        else:
            unnoted += 1

    target = Path(dest) / "scratchnst"
    target.mkdir(parents=True)
    stack = [(Path(package_dir), target, "scratchnst")]
    while stack:
        src, dst, shown = stack.pop()
        try:
            entries = sorted(os.scandir(src), key=lambda e: e.name)
        except OSError as error:
            note(f"{shown}: cannot be read ({error.strerror})")
            continue
        for entry in entries:
            name = f"{shown}/{_printable(entry.name)}"
            if entry.is_symlink():
                note(f"{name}: a symlink, ignored")
            elif entry.is_dir(follow_symlinks=False):
                if entry.name == "__pycache__":
                    continue  # compiled files are never used: the sources are compiled afresh
                if len(Path(name).parts) - 1 > MAX_DEPTH:   # a path too long to copy; no package is that deep
                    note(f"{name}: a folder more than {MAX_DEPTH} deep, ignored")
                    continue
                if folders >= MAX_FOLDERS:
                    if folders == MAX_FOLDERS:
                        note(f"{name}: over the limit of {MAX_FOLDERS} folders, it and the rest ignored")
                        folders += 1
                    continue
                folders += 1
                try:
                    (dst / entry.name).mkdir()
                except OSError as error:
                    _unless_full(error)
                    note(f"{name}: cannot be copied ({error.strerror}), ignored")
                    continue
                stack.append((Path(entry.path), dst / entry.name, name))
            elif not entry.is_file(follow_symlinks=False):
                note(f"{name}: not a regular file, ignored")
            elif entry.name.endswith(".py"):
                size = entry.stat(follow_symlinks=False).st_size
                if count >= MAX_FILES or total + size > MAX_BYTES:
                    note(f"{name}: over the limit of {MAX_FILES} files / {MAX_BYTES >> 20} MB, ignored")
                    continue
                try:
                    with open(entry.path, "rb", opener=_no_follow) as f:
                        data = f.read(MAX_BYTES + 1)
                    (dst / entry.name).write_bytes(data[:MAX_BYTES])
                except OSError as error:
                    _unless_full(error)
                    note(f"{name}: cannot be copied ({error.strerror}), ignored")
                    continue
                count, total = count + 1, total + size
            elif entry.name.endswith((".pyc", ".pyo", ".so", ".pyd", ".pth")):
                note(f"{name}: compiled or path file, ignored (only .py sources are graded)")
    if unnoted:
        notes.append(f"and {unnoted} more files or folders ignored")
    for folder, dirs, files in os.walk(dest):  # readable by the sandbox's user
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return Submission(Path(dest), notes, count)


# Code the package GIVES the student (as CS231n gives fast_layers.py) that computes an exercise's
# answer: the fast convolutions, the layers of the transformer network (whose weight gradient is
# a convolution's), and the networks' pooling (a student copy's own fast_pool calls the student's
# layers, but a submission may bring back the package's), and the PyTorch twins of the layers and costs
# (torch_ref: written with tensor methods, which a NumPy subclass can lend them, they compute the costs'
# answers without torch). None of the graded modules (layers, costs, optim) imports them. They are not in the scratch copy at all, so that no reload, fresh import or
# exec of their source inside the child can bring them back (refusing their functions in the child,
# as the grader once did, was undone by importlib.reload); stubs stand in for them, for a clear message.
GIVEN_CODE = ("fast_conv", "winograd", "tap_planes", "fire_rows", "conv_rows", "upsample_conv", "transformer_layers",
              "fast_pool", "torch_ref")
_GIVEN_STUB = '''"""scratchnst.{module} is given code: the grader leaves it out of a submission (exercises.sandbox)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def refused(*args, **kwargs):
        raise RuntimeError(f"{module}.{{name}} is given code, not your answer: write the exercise itself")
    return refused
'''


def rebuild_around_exercises(submission, package_dir, exercise_modules):
    """Rebuild a scratch copy (a Submission) around its exercise modules: the student's own files of those
    modules, the top-level modules of package_dir (the grader's package) for everything else, and stubs
    whose functions refuse for the GIVEN_CODE modules. Files of the student's that are left out are noted.

    Only the exercise modules are the student's answer. Anything else a submission brings is a way
    around the stubs: given code copied under another name (scratchnst/vendor/fast_conv.py) or as a
    package folder (scratchnst/fast_conv/__init__.py, which Python imports before the stub beside
    it), or a changed helper module the graded code imports. None of package_dir's other top-level
    modules holds an answer: a student copy ships the same files. Its subpackages (the command line,
    the grader itself) are not needed by the graded code, and are left out.
    """
    package = submission.root / "scratchnst"
    package_dir = Path(package_dir)
    kept = {f"{module}.py" for module in exercise_modules}
    answers = {name: (package / name).read_bytes() for name in kept if (package / name).is_file()}
    left_out = []
    for path in sorted(package.rglob("*")):
        name = path.relative_to(package).as_posix()
        if name in kept or path.is_dir() or Path(name).stem in GIVEN_CODE and "/" not in name:
            continue
        if name.startswith(("cli/", "exercises/")):
            continue  # the package's own subpackages, never the student's to change (nor used in grading)
        given = package_dir / name
        if "/" in name or not given.is_file() or given.read_bytes() != path.read_bytes():
            left_out.append(f"scratchnst/{name}")
    shutil.rmtree(package)
    package.mkdir()
    for source in sorted(package_dir.glob("*.py")):
        if source.name not in kept and source.stem not in GIVEN_CODE:
            shutil.copyfile(source, package / source.name)
    for name, data in answers.items():
        (package / name).write_bytes(data)
    for module in GIVEN_CODE:
        (package / f"{module}.py").write_text(_GIVEN_STUB.format(module=module), encoding="utf-8")
    for path in package.iterdir():
        os.chmod(path, 0o644)
    os.chmod(package, 0o755)
    if left_out:
        shown = ", ".join(left_out[:3]) + (f" and {len(left_out) - 3} more" if len(left_out) > 3 else "")
        submission.notes.append(f"{shown}: not an exercise module, the package's own used instead (only "
                                f"{', '.join(sorted(kept))} are graded)")


def _unless_full(error):
    """Raise error again if the grader's disk is full: that is the teacher's to fix, not the submission's
    (a path too long for the file system, an unreadable file, are the submission's, and only noted)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise error


def _no_follow(path, flags):
    return os.open(path, flags | os.O_NOFOLLOW)


def _printable(text, limit=200):
    """text with control characters (terminal escapes) shown as \\x.., cut to `limit`."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in str(text))
    return out if len(out) <= limit else out[:limit] + "..."


# ============================================================================= bubblewrap
_BWRAP = {}


def bwrap_status():
    """(True, "bubblewrap 0.8.0") when bwrap can run the worker's Python here, else (False, why)."""
    if "status" not in _BWRAP:
        path = shutil.which("bwrap")
        if path is None:
            _BWRAP["status"] = (False, "bubblewrap (bwrap) is not installed")
        else:
            with tempfile.TemporaryDirectory(prefix="scratchnst-probe-") as scratch:
                runner = _runner(Path(scratch))
                (Path(scratch) / "sub").mkdir()
                # with the keyring filter, as the workers run; where bwrap or the kernel cannot load
                # it (no seccomp), without it: the other walls still stand
                for seccomp in (True, False):
                    _BWRAP["seccomp"] = seccomp
                    ok, why = _probe(path, runner, Path(scratch) / "sub")
                    if ok:
                        break
            version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
            _BWRAP["status"] = (True, version or "bubblewrap") if ok else (
                False, f"bubblewrap cannot make a sandbox here ({why.strip('[]')})")
    return _BWRAP["status"]


def _probe(bwrap, runner, sub):
    """(True, "") if bwrap runs the worker's Python and NumPy as the workers run, else (False, why)."""
    seccomp = _filter_fd()
    command = _bwrap_command(bwrap, runner, sub, Limits(), seccomp) + [
        "-c", "import sys; sys.path.insert(0, '/grader/lib'); import numpy"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=120, env={}, pass_fds=(seccomp,) if seccomp else (),
                              preexec_fn=_limits_for_child(Limits()))
        return done.returncode == 0, _printable(done.stderr.decode("utf-8", "replace").strip()
                                                .splitlines()[-1:] or ["no message"])
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, _printable(error)
    finally:
        if seccomp is not None:
            os.close(seccomp)


def _runner(scratch):
    """scratch/runner: the worker script and empty mount points for NumPy."""
    runner = scratch / "runner"
    (runner / "lib" / "numpy").mkdir(parents=True)
    (runner / "lib" / "numpy.libs").mkdir()
    shutil.copyfile(wire.__file__, runner / "worker.py")
    for folder, dirs, files in os.walk(runner):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return runner


def _ancestors(path):
    """The folders above path, outermost first ("/a/b/c" -> ["/a", "/a/b"])."""
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts))]


# The system calls the sandbox refuses, by CPU: (seccomp's AUDIT_ARCH, {name: number}).
# - the kernel keyring's (add_key, request_key, keyctl): the sandboxes' users are reused from one
#   submission to the next, and keys live in the kernel per user, not per namespace: one student's
#   worker could leave a key that a later one's reads (and it outlives grading);
# - System V IPC's (shmget, semget, msgget): a segment or a queue is kernel memory that no process
#   limit counts and that outlives its maker (three 1 GB segments, filled and detached, held 3 GB of
#   the teacher's RAM for a worker limited to 2 GB);
# - new namespaces (unshare, setns, clone with a CLONE_NEW* flag): in a user namespace of its own a
#   worker is root again there, and mounts a tmpfs as large as it likes;
# - io_uring_setup: a queue of work the kernel does later, outside the filter's sight;
# - memfd_create: a file in memory that the address-space limit does not count, each up to the file
#   size limit, and as many as the worker may keep open (or park in flight on a socket): 0.5 GB more
#   in one worker limited to 2 GB.
# - file locks (flock, and fcntl's lock commands) and watches on files (inotify, fcntl's F_NOTIFY):
#   the files every sandbox reads (/usr, Python's) are the same files, so a lock one submission's worker
#   takes or a read it makes, another's sees: two submissions graded at a time could talk (a red-team
#   review had one publish its answers, bit by bit, in the position of a lock, and another copy them).
# clone3 passes its flags in memory that a filter cannot read: it fails with ENOSYS, on which the C
# library falls back to clone, whose flags it can.
_REFUSED_CALLS = {
    "x86_64": (0xC000003E, {"add_key": 248, "request_key": 249, "keyctl": 250, "shmget": 29, "semget": 64,
                            "msgget": 68, "unshare": 272, "setns": 308, "io_uring_setup": 425, "memfd_create": 319,
                            "flock": 73, "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254},
               {"clone": 56, "clone3": 435, "fcntl": 72}),
    "aarch64": (0xC00000B7, {"add_key": 217, "request_key": 218, "keyctl": 219, "shmget": 194, "semget": 190,
                             "msgget": 186, "unshare": 97, "setns": 268, "io_uring_setup": 425,
                             "memfd_create": 279, "flock": 32, "inotify_init1": 26, "inotify_add_watch": 27},
                {"clone": 220, "clone3": 435, "fcntl": 25}),
}
_NEW_NAMESPACES = 0x7E020000   # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
# fcntl's commands refused: F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW (the same
# numbers for their 64-bit forms on 64-bit CPUs), F_SETLEASE, F_GETLEASE, F_NOTIFY
_LOCK_COMMANDS = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)


def sandbox_filter():
    """The seccomp program bwrap --seccomp reads (classic BPF): the calls of _REFUSED_CALLS fail with
    EPERM, clone3 with ENOSYS, clone with EPERM when it asks for a new namespace, fcntl with EPERM for the
    _LOCK_COMMANDS; every call of another ABI (x86-64's x32 and i386 numbers, reached by a student's own
    machine code) fails with EPERM; everything else is allowed. None on a CPU whose numbers are not known
    here."""
    known = _REFUSED_CALLS.get(platform.machine())
    if known is None:
        return None
    arch, refused, others = known
    x32 = 0x40000000 if arch == 0xC000003E else 0xFFFFFFFF
    load, alu_and, equal, at_least, ret = 0x20, 0x54, 0x15, 0x35, 0x06   # BPF_LD|W|ABS, ALU|AND|K, JEQ|K, JGE|K, RET|K
    allow, errno_ret = 0x7FFF0000, 0x00050000                            # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO
    # (code, jump if true, jump if false, k), jumps as labels resolved below; a string is a label
    program = [(load, None, None, 4),                      # seccomp_data.arch
               (equal, None, "refuse", arch),
               (load, None, None, 0),                      # seccomp_data.nr
               (at_least, "refuse", None, x32)]
    program += [(equal, "refuse", None, number) for number in refused.values()]
    program += [(equal, "enosys", None, others["clone3"]),
                (equal, "fcntl", None, others["fcntl"]),
                (equal, None, "allow", others["clone"]),
                (load, None, None, 16),                    # clone's flags: the low half of args[0]
                (alu_and, None, None, _NEW_NAMESPACES),
                (equal, "allow", "refuse", 0),
                "fcntl", (load, None, None, 24)]           # fcntl's command: the low half of args[1]
    program += [(equal, "refuse", None, command) for command in _LOCK_COMMANDS]
    program += [(ret, None, None, allow), "allow", (ret, None, None, allow),
                "refuse", (ret, None, None, errno_ret | errno.EPERM),
                "enosys", (ret, None, None, errno_ret | errno.ENOSYS)]
    labels, at = {}, 0
    for entry in program:
        if isinstance(entry, str):
            labels[entry] = at
        else:
            at += 1
    code = []
    for entry in program:
        if isinstance(entry, str):
            continue
        op, true, false, k = entry
        here = len(code)
        jump = [0 if target is None else labels[target] - here - 1 for target in (true, false)]
        code.append(struct.pack("=HBBI", op, *jump, k))
    return b"".join(code)


def _filter_fd():
    """A pipe's read end holding sandbox_filter() (for bwrap --seccomp), or None without one."""
    program = sandbox_filter() if _BWRAP.get("seccomp", True) else None
    if program is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, program)   # 304 bytes: far below a pipe's buffer
    os.close(write_end)
    return read_end


def _bwrap_command(bwrap, runner, submission, limits, seccomp_fd=None, user=None):
    """bwrap's command line: the view described in the module docstring, then python -I -S -B.

    seccomp_fd: None, or a file descriptor the child inherits holding sandbox_filter().
    user: the uid the worker becomes, as root (None: nobody's).
    """
    python = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    numpy_dir = os.path.dirname(os.path.realpath(np.__file__))
    command = [bwrap, "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    if not prefix.startswith("/usr/"):
        for folder in _ancestors(prefix):  # made 0755: bwrap would copy /root's 0700 and lock the worker out
            command += ["--perms", "0755", "--dir", folder]
        command += ["--ro-bind", prefix, prefix]
    for real in _site_packages():
        if real.startswith(prefix + "/") or real.startswith("/usr/"):
            # hidden: torch, the installed scratchnst, the teacher's packages. Read-only: run by a teacher
            # who is not root, the worker keeps the teacher's uid and would own an empty tmpfs there, of
            # no size limit (half the RAM, which no process limit counts)
            command += ["--tmpfs", real, "--remount-ro", real]
    if not python.startswith(("/usr/", prefix + "/")):
        command += ["--ro-bind", python, python]
    command += ["--ro-bind", str(runner), "/grader", "--ro-bind", numpy_dir, "/grader/lib/numpy"]
    if os.path.isdir(numpy_dir + ".libs"):
        command += ["--ro-bind", numpy_dir + ".libs", "/grader/lib/numpy.libs"]
    command += [
        "--ro-bind", str(submission), "/sub",
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",  # /dev/shm too: memory no limit counts
        "--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "grader", "--die-with-parent", "--new-session", "--clearenv",
    ]
    for key, value in _clean_environment("/tmp").items():
        command += ["--setenv", key, value]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    if user is not None:
        command += ["--setenv", "SCRATCHNST_USER", str(user)]
    return command + ["--setenv", "SCRATCHNST_SANDBOX", "1", python, "-I", "-S", "-B"]


def _site_packages():
    """The folders of installed packages the sandbox's view would show, real paths, sorted.

    This Python's, and its base installation's when it runs in a venv (the venv's site.getsitepackages()
    names only the venv's own: the base's, which may hold torch or a non-editable scratchnst, the
    answers, stayed visible), the user's, and every other Python's under /usr (Debian's dist-packages,
    and those of Pythons that programs bring with them: `_packages_under`).
    """
    import site

    found = site.getsitepackages() + site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])
    found += [site.getusersitepackages()]
    for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages"):
        found += glob.glob(pattern)  # /usr/lib/python3/dist-packages too
    found += _packages_under("/usr")
    return sorted({os.path.realpath(path) for path in found if os.path.isdir(path)})


@functools.lru_cache(maxsize=None)
def _packages_under(top, depth=8):
    """Every site-packages or dist-packages folder up to `depth` levels below top, no link followed.

    A program may bring a Python of its own under /usr (Google Cloud SDK's in
    /usr/lib/google-cloud-sdk/platform/bundledpythonunix/lib/python3.12/site-packages was importable in
    the sandbox, by a submission that put it on sys.path). Looked for once per grader: 0.3-0.5 s for
    the whole of a Debian /usr.
    """
    found = []

    def scan(folder, depth):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.name in ("site-packages", "dist-packages"):
                        found.append(entry.path)   # hidden whole: no need to look inside
                    elif depth > 1:
                        scan(entry.path, depth - 1)
        except OSError:   # a folder root may not read: nothing found there
            pass

    scan(top, depth)
    return tuple(found)


def _clean_environment(home):
    """The child's whole environment: nothing of the teacher's (tokens, paths, proxies) is passed on."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _limits_for_child(limits, as_user=None):
    """The preexec function that sets the child's rlimits (in the child, before exec), and with
    as_user (root, no sandbox: `nobody_can_run`) makes it that user."""
    def apply():  # runs after start_new_session's setsid: the child leads its own session
        pairs = [(resource.RLIMIT_AS, limits.memory_mb << 20), (resource.RLIMIT_CPU, limits.cpu_seconds),
                 (resource.RLIMIT_FSIZE, limits.file_mb << 20), (resource.RLIMIT_NOFILE, limits.open_files),
                 (resource.RLIMIT_CORE, 0)]
        if as_user is not None or os.getuid() != 0:  # root's is ignored; bwrap's worker becomes its user itself
            user = as_user if as_user is not None else os.getuid()
            pairs.append((resource.RLIMIT_NPROC, _processes_of(user) + limits.processes))
        else:
            pairs.append((resource.RLIMIT_NPROC, limits.processes))
        for which, value in pairs:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        if as_user is not None:
            os.setgroups([])
            os.setgid(as_user)
            os.setuid(as_user)
    return apply


# Without a sandbox, as root (Gradescope's container, where bubblewrap is refused), the student's code
# would run as root: it could read anything, the answer key included, and the grader's own memory
# and environment through /proc. As an unprivileged user (`sandbox_user`) it reads only what every user
# may: the run_autograder of `make --gradescope` closes the key's folder to others before grading. Where
# `nobody` cannot run this Python (installed under root's 0700 home, say), nor can that user, the child
# stays root, and the grader says so.
NOBODY = 65534
_NOBODY_RUNS = {}

# As root, each child graded at a time runs as a user of its own, not as `nobody` for all: the kernel
# counts the process limit per user, so that with one user shared, a submission whose code started two
# threads left its neighbour none ("can't start new thread": an honest student lost a check to another's
# run), and a process of one could signal another's. These users are numbers no system gives a name or a
# file (the first is 2**31 - 2**16): they own nothing, and read only what every user may, as nobody does.
# Each user is claimed across processes too, with a lock held on a file of its own for as long as
# its child runs (released by the kernel if the grader dies): two teachers grading at once, or one
# grading two classes in two terminals, share no user, so neither class's code can take the other's
# processes or signal them (seen before the claim: a second run's first child got the first run's
# first user, and a submission holding its processes made an honest one's thread fail to start).
SANDBOX_USERS = range(2**31 - 2**16, 2**31 - 2**16 + 4096)
USER_LOCK_FOLDERS = ("/run/lock", "/var/lock")   # root's; the temporary folder where neither may be written
_USERS_TAKEN = {}   # user -> the descriptor of its lock file (None where no folder could hold one)


def _user_lock_folder():
    """A folder of root's for the users' lock files, made if missing; None where none can be."""
    for parent in (*USER_LOCK_FOLDERS, tempfile.gettempdir()):
        folder = os.path.join(parent, "scratchnst-sandbox-users")
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        try:
            info = os.lstat(folder)
        except OSError:
            continue
        # another user's folder (or a link planted in a shared /tmp) could hand out taken users
        if os.path.isdir(folder) and not os.path.islink(folder) and info.st_uid == os.getuid() \
                and not info.st_mode & 0o022:
            return folder
    return None


def _claim(user, folder):
    """The descriptor of user's lock file, locked; None if another process holds it."""
    import fcntl   # POSIX only, as the users are
    fd = os.open(os.path.join(folder, f"{user}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sandbox_user():
    """A user of SANDBOX_USERS that no running child has, of this process or another's (claimed with a
    lock file): the caller gives it back (`give_back_user`)."""
    with _LOCK:
        folder = _user_lock_folder()
        for user in SANDBOX_USERS:
            if user in _USERS_TAKEN:
                continue
            try:
                fd = _claim(user, folder) if folder else None
            except OSError:   # the folder gone or full: the user is claimed in this process alone
                fd = None
            if fd is None and folder and os.path.exists(os.path.join(folder, f"{user}.lock")):
                continue   # held by another grader
            _USERS_TAKEN[user] = fd
            return user
    raise UserError(f"all {len(SANDBOX_USERS)} sandbox users are taken by graders running now; wait for them to "
                    "end, or grade with fewer --jobs")


def give_back_user(user):
    with _LOCK:
        fd = _USERS_TAKEN.pop(user, None)
    if fd is not None:
        os.close(fd)   # the kernel drops the lock with it


def nobody_can_run():
    """True if, as root, `nobody` can run this Python and its NumPy from a scratch folder of the
    temporary folder (so that the uncontained child can drop to nobody); False otherwise, and always
    False for another user."""
    if os.getuid() != 0:
        return False
    numpy_parent = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    key = (sys.executable, numpy_parent, tempfile.gettempdir())
    if key not in _NOBODY_RUNS:
        scratch = Path(tempfile.mkdtemp(prefix="scratchnst-probe-"))
        try:
            os.chmod(scratch, 0o711)
            runner = _runner(scratch)
            code = (f"import sys; sys.path.insert(0, {numpy_parent!r}); import numpy; "
                    f"open({str(runner / 'worker.py')!r}).close()")
            done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, timeout=120,
                                  cwd="/", env=_clean_environment("/tmp"),
                                  preexec_fn=_limits_for_child(Limits(), as_user=NOBODY))
            _NOBODY_RUNS[key] = done.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _NOBODY_RUNS[key] = False
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _NOBODY_RUNS[key]


def _processes_of(uid):
    """How many processes (threads included) uid has now: RLIMIT_NPROC counts them all."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


# ============================================================== stray processes of a child
_WORKERS = set()  # pids of the workers (or their bwrap) this process started and has not reaped
_LOCK = threading.Lock()


def _become_subreaper():
    """Make orphans of our children come back to this process (Linux), so that they can be killed."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _stat(pid):
    """(ppid, pgid, sid, start time in clock ticks since boot) of pid from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def kill_strays(session, orphans_since=None):
    """Kill every process of the child's session or process group and, given orphans_since (the child's
    start time), every process that came back to us as an orphan and started no earlier than the child.

    Orphans matter where there is no sandbox: a student's process that left the session (setsid) and
    outlived its parent is handed to this process, the subreaper. In the sandbox the PID namespace
    ends with the child, and everything in it.
    """
    me = os.getpid()
    for _ in range(20):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            stat = _stat(int(name))
            if stat is None:
                continue
            ppid, pgid, sid, started = stat
            with _LOCK:
                ours = int(name) in _WORKERS
            orphan = orphans_since is not None and ppid == me and not ours and started >= orphans_since
            if session in (pgid, sid) or orphan:
                found.append(int(name))
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in found:
            if _stat(pid) and _stat(pid)[0] == me:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        time.sleep(0.02)


def _reap_dead_sandboxes():
    """Kill and reap the bwrap processes that came back to this process (the subreaper) as orphans.

    Killing a worker's outer bwrap hands the inner one, the sandbox's init, to us (by the time the
    outer one has been waited for); it dies with its parent, and without a wait stayed a zombie until
    the grader ended: one per start of a worker, which a submission that crashes on purpose restarts
    at every check. A bwrap that is a child of ours but no worker's own is such an orphan: another
    worker's inner bwrap is that worker's child, and a Popen still waiting for its own is in _WORKERS.
    """
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                comm, fields = f.read().split(b" (", 1)[1].rsplit(b") ", 1)
        except (OSError, ValueError, IndexError):
            continue
        state, ppid = fields.split()[:2]
        with _LOCK:
            ours = int(name) in _WORKERS
        if int(ppid) == me and comm == b"bwrap" and not ours:
            try:
                if state != b"Z":
                    os.kill(int(name), signal.SIGKILL)
                os.waitpid(int(name), 0)
            except (ChildProcessError, ProcessLookupError):
                pass


# ========================================================================== the child
class StudentProcess:
    """The student's package, imported in a contained child process; `call` runs one of its functions.

    Args:
        submission: a Submission (its root holds the scratch copy of scratchnst/).
        contained: run in bubblewrap (True), or in a plain child process (False: self-check, or a
            teacher's explicit --uncontained).
        limits: Limits.
        modules: the modules of scratchnst to import first (each under the import budget).
        import_budget: seconds each import may take: the package's, then each module's.

    The child is started on the first call and again after it was stopped (timeout, broken frame)
    or died. Use as a context manager: the child and whatever it started never outlive it.
    """

    def __init__(self, submission, contained, limits=Limits(), modules=(), import_budget=60.0):
        self.submission, self.contained, self.limits = submission, contained, limits
        self.modules, self.import_budget = list(modules), import_budget
        self.import_errors = {}
        self.import_seconds = 0.0
        self._proc = None
        self._hung = {}  # module -> the answer its calls get: its import outlived the budget
        self._calls = 0  # requests sent: each carries its number, each answer must give it back
        self._fatal = None  # an answer every later call gets: the package's import timed out
        self._scratch = Path(tempfile.mkdtemp(prefix="scratchnst-run-"))
        self._runner = _runner(self._scratch)
        # the child's own user (as root; in bwrap the worker becomes it, else the preexec function)
        self.user = sandbox_user() if os.getuid() == 0 and (contained or nobody_can_run()) else None
        if self.user is not None and not contained:  # (bwrap shows the worker its own view of the files)
            os.chmod(self._scratch, 0o711)   # its user may pass through to the worker, not list the folder
        _become_subreaper()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)
        if self.user is not None:
            give_back_user(self.user)
            self.user = None

    def _command(self, seccomp_fd=None):
        if self.contained:
            return _bwrap_command(shutil.which("bwrap"), self._runner, self.submission.root, self.limits,
                                  seccomp_fd, self.user) + ["/grader/worker.py", "--worker", "/sub", "/grader/lib"]
        numpy_parent = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
        return [sys.executable, "-I", "-S", "-B", str(self._runner / "worker.py"), "--worker",
                str(self.submission.root), numpy_parent]

    def _start(self, cap=math.inf):
        """Start the child and import the modules; None when it is ready, else an answer dict.

        The imports run the student's code (whatever a module does at import time): besides each
        import's own budget they may take `cap` seconds together, after which the answer is "budget".
        """
        imported_before = self.import_seconds
        self._stderr = open(self._scratch / "stderr", "w+b")
        home = self._scratch / "home"
        home.mkdir(exist_ok=True)
        if self.user is not None and not self.contained:
            os.chown(home, self.user, self.user)
        read_requests, write_requests = os.pipe()
        read_answers, write_answers = os.pipe()
        seccomp = _filter_fd() if self.contained else None
        try:
            with _LOCK:  # registered before any other thread's kill_strays can take it for an orphan
                self._proc = subprocess.Popen(
                    self._command(seccomp), stdin=read_requests, stdout=write_answers, stderr=self._stderr,
                    cwd=str(home), env=_clean_environment(str(home)), start_new_session=True,
                    preexec_fn=_limits_for_child(self.limits, None if self.contained else self.user), close_fds=True,
                    pass_fds=(seccomp,) if seccomp is not None else ())
                _WORKERS.add(self._proc.pid)
                self._started = (_stat(self._proc.pid) or (0, 0, 0, 0))[3]
        finally:
            for fd in (read_requests, write_answers, seccomp):
                if fd is not None:
                    os.close(fd)
        os.set_blocking(write_requests, False)  # a child that stops reading cannot block the grader
        self._requests, self._answers = write_requests, read_answers
        answer, _ = self._receive(START_TIMEOUT)
        if answer.get("status") != "ready":
            self._fatal = self._failed(answer, "the worker did not start")
            return self._fatal
        # The package first, then each module on its own: a module that hangs at import costs its
        # own exercises (the child is restarted without it), not those of the modules after it.
        self.import_errors = {}
        for module in [None] + [m for m in self.modules if m not in self._hung]:
            answer = self._import(module, cap - (self.import_seconds - imported_before))
            if answer.get("status") == "budget":
                self.stop()
                return answer
            if answer.get("status") in ("timeout", "crashed", "garbled"):
                what = "the package" if module is None else f"scratchnst.{module}"
                if answer["status"] == "timeout":
                    hung = {"status": "import timeout", "message": f"importing {what} took longer than "
                            f"{self.import_budget:g} s (code that runs at import time? --import-timeout sets the "
                            "limit)"}
                else:
                    hung = dict(answer, message=f"while importing {what}: {answer.get('message') or 'no message'}")
                self.stop()
                if module is None:
                    self._fatal = hung
                    return self._fatal
                self._hung[module] = hung
                return self._start(cap - (self.import_seconds - imported_before))
            if answer.get("status") != "imported":
                self._fatal = self._failed(answer, "the worker failed while importing the package")
                return self._fatal
            errors = answer.get("errors")
            if isinstance(errors, dict):
                for m, e in errors.items():
                    error = _clean_answer(e)
                    if error["status"] not in ("not done", "error"):   # an import error is an exception, nothing else
                        error = {"status": "garbled", "message": "an import error that was not an exception (a frame "
                                 "written by the student's code?)"}
                    self.import_errors[str(m)] = error
        return None

    def _import(self, module, cap=math.inf):
        """Ask the child to import scratchnst (module None) or scratchnst.<module>; its answer ("budget"
        when it outlived `cap` seconds, less than the import's own budget)."""
        if cap <= 0:
            return {"status": "budget"}
        if not self._send({"kind": "import", "modules": [] if module is None else [module]}):
            return {"status": "timeout"}
        answer, seconds = self._receive(min(self.import_budget, cap))
        self.import_seconds += seconds
        if answer.get("status") == "timeout" and cap < self.import_budget:
            return {"status": "budget"}
        return answer

    def _failed(self, answer, what):
        if answer.get("status") in ("crashed", "garbled", "timeout"):
            out = dict(answer)
            if out["status"] == "timeout":
                out = {"status": "crashed", "code": None, "message": f"{what} within {START_TIMEOUT:g} s"}
            self.stop()
            return out
        self.stop()
        return {"status": "garbled", "message": f"{what}: unexpected answer"}

    def _send(self, head, body=None, budget=START_TIMEOUT):
        """Write one frame to the child; False if it did not take it within budget (it stopped reading)."""
        data = wire.encode_frame(head, body)
        view = memoryview(data)
        deadline = time.monotonic() + max(budget, 0.01)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _, writable, _ = select.select([], [self._requests], [], left)
            if writable:
                try:
                    written = os.write(self._requests, view[:select.PIPE_BUF])  # never blocks once writable
                except BlockingIOError:
                    continue
                view = view[written:]
        return True

    def _receive(self, budget):
        """(answer dict, seconds): the child's next frame, or why there is none (timeout, crashed, garbled)."""
        start = time.monotonic()
        try:
            head, body = wire.read_frame(self._answers, start + max(budget, 0.01))
        except TimeoutError:
            return {"status": "timeout"}, time.monotonic() - start
        except EOFError:  # the answer pipe closed: the child ended, or closed it and goes on (it is killed)
            try:
                code = self._proc.wait(timeout=2) if self._proc else None
            except subprocess.TimeoutExpired:
                code = None
            return {"status": "crashed", "code": code, "message": self._stderr_tail()}, time.monotonic() - start
        except wire.ProtocolError as error:
            return {"status": "garbled", "message": f"the answer channel carried {error}"}, time.monotonic() - start
        except OSError as error:
            return {"status": "crashed", "code": None, "message": _printable(error)}, time.monotonic() - start
        answer = _clean_answer(head)
        answer["value"] = body
        return answer, time.monotonic() - start

    def stop(self):
        """Kill the child's whole session (and any orphan it left), close its pipes."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        with _LOCK:
            _WORKERS.discard(proc.pid)
        kill_strays(proc.pid, None if self.contained else self._started)
        if self.contained:
            _reap_dead_sandboxes()
        for fd in (self._requests, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()

    def _stderr_tail(self):
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - STDERR_TAIL))
            lines = self._stderr.read(STDERR_TAIL).decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return _printable(lines[-1], 200) if lines else ""

    def call(self, module, function, args, kwargs, budget, total=math.inf, printed=0):
        """Run scratchnst.<module>.<function>(*args, **kwargs) in the child.

        printed is what the exercise's earlier calls printed (bytes): the calls of one exercise share
        the child's limit on output (worker.OUTPUT_MB), whatever else the child ran before.

        budget is the call's own seconds; total what is left of the submission's (--budget), which
        also pays for the imports of a child started for this call (the first, or one after a crash
        or timeout): `import_seconds` grows by what they took.

        Returns:
            (answer, seconds). answer is a dict with "status":
                "ok"             "value" (the result, plain data), "mutated" (paths of inputs written into)
                "not done"       NotImplementedError: "type", "message", "where", "function"
                "error"          any other exception: the same keys
                "timeout"        no answer within the budget; the child was killed
                "crashed"        the child died: "code" (its exit status), "message" (stderr's last line)
                "garbled"        the answer broke the format (the child was killed): "message"
                "import timeout" the package's import outlived its own budget: "message"
                "budget"         the imports of a new child outlived `total`
        """
        if self._fatal:
            return dict(self._fatal), 0.0
        if module in self._hung:
            return dict(self._hung[module]), 0.0
        if self._proc is None:
            failed = self._start(total)
            if failed:
                return failed, 0.0
        if module in self._hung:  # found hanging while this child started
            return dict(self._hung[module]), 0.0
        if module in self.import_errors:
            return dict(self.import_errors[module]), 0.0
        self._calls += 1
        # stderr holds what this call writes to the file descriptors (print() goes to the frames): emptied
        # first, so that a call that filled it to the file-size limit leaves no "File too large" to the next
        try:
            self._stderr.seek(0)
            self._stderr.truncate()
        except (OSError, ValueError):
            pass
        start = time.monotonic()
        try:
            sent = self._send({"kind": "call", "id": self._calls, "module": module, "function": function,
                               "printed": int(printed)},
                              (tuple(args), dict(kwargs)), budget)
        except OSError:  # the pipe broke: the child is gone
            answer = {"status": "crashed", "code": None, "message": self._stderr_tail()}
            self.stop()
            return answer, time.monotonic() - start
        if not sent:
            self.stop()
            return {"status": "timeout"}, time.monotonic() - start
        answer, _ = self._receive(budget - (time.monotonic() - start))
        seconds = time.monotonic() - start
        if answer["status"] in ("ready", "imported"):
            answer = {"status": "garbled",
                      "message": "a start-up frame where an answer was due (a frame written by the student's code?)"}
        elif answer["status"] in CALL_STATUSES and answer.get("id") != self._calls:
            answer = {"status": "garbled",
                      "message": "an answer to another call (a frame written by the student's code?)"}
        if answer["status"] in ("timeout", "crashed", "garbled"):
            if answer["status"] == "crashed":
                answer["message"] = answer.get("message") or self._stderr_tail()
            self.stop()
        return answer, seconds


_STATUSES = ("ready", "imported", "ok", "not done", "error")
CALL_STATUSES = ("ok", "not done", "error")   # what a call's answer may say (ready and imported are not answers)


def _is_input_path(path):
    """True for a path the worker reports an input by: [argument index or keyword, then indexes into it]."""
    return (isinstance(path, list) and 1 <= len(path) <= 8
            and ((type(path[0]) is int and 0 <= path[0] < 1000) or (type(path[0]) is str and len(path[0]) <= 100))
            and all((type(i) is int and 0 <= i < 1000) or (type(i) is str and len(i) <= 100) for i in path[1:]))


def _clean_answer(head):
    """The child's head as a dict of known keys, strings made printable and short, nothing else trusted."""
    if not isinstance(head, dict) or head.get("status") not in _STATUSES:
        return {"status": "garbled", "message": "the answer had no valid status"}
    out = {"status": head["status"], "id": head.get("id") if type(head.get("id")) is int else None}
    for key in ("type", "message", "where", "function"):
        out[key] = _printable(head.get(key, "") if isinstance(head.get(key, ""), str) else "", 240)
    printed = head.get("printed") if isinstance(head.get("printed"), dict) else {}
    lines = printed.get("lines") if isinstance(printed.get("lines"), list) else []
    out["printed"] = [_printable(line, wire.SHOWN_LINE_CHARS) for line in lines[:wire.SHOWN_LINES]
                      if isinstance(line, str)]
    for key in ("count", "bytes"):  # how many lines and bytes the call printed in all (the start is shown)
        value = printed.get(key)
        out[f"printed_{key}"] = value if type(value) is int and 0 <= value < 1 << 62 else 0
    mutated = head.get("mutated", [])
    out["mutated"] = [tuple(p) for p in mutated[:64] if _is_input_path(p)] if isinstance(mutated, list) else []
    if "errors" in head:
        out["errors"] = head["errors"] if isinstance(head["errors"], dict) else {}
    return out

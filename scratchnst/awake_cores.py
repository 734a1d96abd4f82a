"""Keeping the cores of a multi-threaded run from halting while its threads wait for each other.

A split (`parallel.split`) hands a piece to another thread and later waits for it; a piece's NumPy
calls give up the GIL and take it back, and wait when the other thread holds it. Each wait puts
the thread to sleep; if nothing else wants its core, the core halts, and waking it again costs
what the machine makes it cost. On a 2-core KVM guest whose cpuidle polls for 0 ns before halting
(haltpoll, guest_halt_poll_ns = 0), that was 50-250 us a time, tens of times a step: a split that
did nothing took 100-120 us back to back and 560 us after 50 ms of rest, and a SqueezeNet step at
256x256 ran no faster on two cores than on one (46 ms against 44). PyTorch's OpenMP threads spin
between parallel regions instead of sleeping; Python threads cannot spin without holding the GIL
the other thread needs.

So, while a run holds the cores (`parallel.hold`), each of its cores gets a spinner: a tiny process
pinned to that core, at the SCHED_IDLE policy, looping on a poll of its pipe. SCHED_IDLE means it
runs only when nothing else on that core wants to, and gives way at once when a thread of the run
(or any other program) wakes: the core never halts, and the wake-up is a local reschedule. Outside
`hold()` the spinners block on a read of their pipe and cost nothing; they end with the process
(their pipe closes; they also read its end when it is killed). Measured on that Xeon, 2 threads,
side by side: a SqueezeNet step at 512x512 106 ms with them, 125 ms without (at 256x256 37.2 and
37.4 ms: the GIL, not the cores' sleep, holds that one back); a split that does nothing 85 us back
to back and 300 us after 50 ms of rest.

Left off (`enabled()` False) where it cannot help or would cost: fewer than 2 cores in the run,
no SCHED_IDLE (not Linux), a CPU quota on the process's cgroup (a spinning core would use the
quota up and the run be throttled), or SCRATCHNST_SPIN=0 in the environment.
"""

import atexit
import contextlib
import os
import select
import subprocess
import sys
import threading

ENVIRONMENT_VARIABLE = "SCRATCHNST_SPIN"

# Seconds a new spinner has to say it runs as it must (a Python start: 20 ms idle) before the run
# goes on without spinners.
_START_SECONDS = 5.0

# The spinner: pin to its core, drop to SCHED_IDLE, say whether that worked, then on b"1" spin
# until the next byte (b"0": wait again) or the end of the pipe (the parent has gone: exit).
_SPINNER = r"""
import os, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    os.sched_setaffinity(0, {int(sys.argv[1])})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.write(1, b"n")
    sys.exit()
os.write(1, b"y")
poll = select.poll()
poll.register(0, select.POLLIN)
while True:
    order = os.read(0, 1)
    if not order:
        sys.exit()
    if order == b"1":
        while not poll.poll(0):
            pass
"""

_lock = threading.Lock()
_spinners = {}  # core -> Popen
_depth = 0  # nested keep_awake contexts
_generation = 0  # bumped in a child made by fork: a context its parent entered is not the child's to end
_broken = False  # a spinner could not be started or could not drop to SCHED_IDLE: none from now on
_quota = None  # whether the cgroup caps the CPU time (None: not read yet)


def enabled(cores):
    """Whether spinners would run on `cores` (a list of core numbers)."""
    global _quota
    if len(cores) < 2 or _broken or not hasattr(os, "SCHED_IDLE") or not hasattr(os, "sched_setaffinity"):
        return False
    if os.environ.get(ENVIRONMENT_VARIABLE, "1") == "0":
        return False
    if _quota is None:  # read once: a cgroup's quota does not come and go during a run
        _quota = _cpu_quota()
    return not _quota


def busy_waiting_allowed():
    """Whether a run may keep a core busy while it waits: not under a cgroup's CPU quota (the wait would
    use the quota up and the run be throttled), nor with SCRATCHNST_SPIN=0. The helper processes of
    `piece_processes` spin between their jobs only then."""
    global _quota
    if os.environ.get(ENVIRONMENT_VARIABLE, "1") == "0":
        return False
    if _quota is None:
        _quota = _cpu_quota()
    return not _quota


@contextlib.contextmanager
def keep_awake(cores):
    """Context: a spinner on each of `cores` while it lasts (nothing where `enabled` says no).

    Args:
        cores: the core numbers the run's threads are pinned to.
    """
    global _depth
    started = None
    with _lock:
        if enabled(cores) and _start(cores):
            _depth += 1
            started = _generation
            if _depth == 1:
                _tell(b"1")
    try:
        yield
    finally:
        if started is not None:
            with _lock:
                if started == _generation and _depth > 0:
                    _depth -= 1
                    if _depth == 0:
                        _tell(b"0")


def _start(cores):
    """Make the spinners missing for `cores`; False (and none ever again) if one cannot run as it must."""
    global _broken
    for core in cores:
        if core in _spinners and _spinners[core].poll() is None:
            continue
        spinner = None
        try:
            # -I: no current folder, no user site, no PYTHON* variables: a select.py where the user
            # runs scratchnst is not imported; -S: no site either (a faster start)
            spinner = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SPINNER, str(core)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       close_fds=True)
            answer = _first_byte(spinner.stdout, _START_SECONDS)
        except (OSError, ValueError, TypeError):  # no executable (an embedded Python's is None or ""), no processes
            answer = b""
        if answer != b"y":
            if spinner is not None:
                _end(spinner, kill=True)
            _broken = True
            _stop_all()  # the ones just made for the other cores too: none will ever spin now
            return False
        _spinners[core] = spinner
    return True


def _first_byte(pipe, seconds):
    """The first byte the pipe gives within `seconds`, or b"" (poll: no limit on the descriptor's number)."""
    poller = select.poll()
    poller.register(pipe.fileno(), select.POLLIN)
    if not poller.poll(seconds * 1000):
        return b""
    return os.read(pipe.fileno(), 1)


def _end(spinner, kill=False):
    """Close the spinner's pipe (it exits at its end), kill it if asked, and reap it."""
    if kill:
        with contextlib.suppress(OSError):
            spinner.kill()
    for pipe in (spinner.stdin, spinner.stdout):
        with contextlib.suppress(OSError, ValueError):
            pipe.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        spinner.wait(timeout=1)


def _tell(order):
    """Send b"1" (spin) or b"0" (wait) to every spinner; a spinner that has gone is forgotten."""
    for core, spinner in list(_spinners.items()):
        try:
            spinner.stdin.write(order)
            spinner.stdin.flush()
        except (OSError, ValueError):
            del _spinners[core]


def _cpu_quota():
    """Whether this process's cgroup, or one above it, caps its CPU time (v2 cpu.max, v1 cfs_quota_us).

    The cgroup is the one /proc/self/cgroup names, looked for under /sys/fs/cgroup (v2) or its cpu
    controller's folder (v1); in a container with its own cgroup namespace that is "/", the mount's root.
    """
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # v2: one tree
            if _any_above("/sys/fs/cgroup", path, "cpu.max", lambda text: text.split()[0] != "max"):
                return True
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's tree
            for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"):
                if _any_above(mount, path, "cpu.cfs_quota_us", lambda text: int(text) > 0):
                    return True
    return False


def _any_above(mount, path, name, capped):
    """Whether `name` in the cgroup `path` under `mount`, or in a cgroup above it, says capped(its text)."""
    parts = [p for p in path.strip("/").split("/") if p and p not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        try:
            with open(os.path.join(mount, *parts[:depth], name)) as f:
                if capped(f.read()):
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def stop():
    """End every spinner now (they would end with the process anyway)."""
    with _lock:
        _stop_all()


def _stop_all():
    for spinner in _spinners.values():
        with contextlib.suppress(OSError, ValueError):
            spinner.stdin.close()
    for spinner in _spinners.values():
        _end(spinner)
    _spinners.clear()


def _forget_in_child():
    """In a child made by fork: the parent's spinners are the parent's; close this copy of their pipes.

    Closed without a flush (a byte the parent was writing at the fork must not be sent twice).
    """
    global _lock, _depth, _generation
    for spinner in _spinners.values():
        for pipe in (spinner.stdin, spinner.stdout):
            with contextlib.suppress(OSError, ValueError):
                pipe.detach().close()
    _spinners.clear()
    _lock, _depth, _generation = threading.Lock(), 0, _generation + 1


atexit.register(stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)

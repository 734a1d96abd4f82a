"""Stopping well: Ctrl-C, SIGTERM and SIGHUP end a command with its work saved and the right exit status.

    130  Ctrl-C (SIGINT), 143 SIGTERM (kill, a batch system's time limit), 129 SIGHUP (the
         terminal closed): 128 + the signal's number, as shells report a program killed by it.

Inside `stops_interrupt()` SIGTERM and SIGHUP raise errors.Interrupted, a KeyboardInterrupt, so
everything that saves its work on Ctrl-C does so for them too. `ignoring_stops()` guards the
short moments that write the results: a second Ctrl-C there must not cut them in half.
`catch_lost_interrupts()` makes sure no stop is swallowed by a finalizer.
"""

import _thread
import signal
import threading

from scratchnst.errors import Interrupted

INTERRUPTED = 128 + signal.SIGINT  # 130
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _in_main_thread():
    # Only the main thread may set signal handlers (and receives the signals).
    return threading.current_thread() is threading.main_thread()


def _signals(names):
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


class stops_interrupt:
    """Inside the block, the first stop raises; later ones are ignored until it has been dealt with.

    Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP raise errors.Interrupted (exit status
    128 + the number). A second stop that arrived with the first (both held back while a file
    was written) or just after it would otherwise raise again inside the code that saves the
    first one's results, and lose them.
    """

    def __enter__(self):
        global _stopping
        self.old = {}
        _stopping = None
        if _in_main_thread():
            for number in _signals(STOP_SIGNALS):
                self.old[number] = signal.signal(number, _raise_once)
        return self

    def __exit__(self, *exc):
        global _stopping
        for number, handler in self.old.items():
            signal.signal(number, handler)
        _stopping = None


_stopping = None  # the signal being dealt with, inside stops_interrupt


def _raise_once(number, frame):
    global _stopping
    if _stopping is not None:
        return  # a stop is already on its way: this one adds nothing
    _stopping = number
    if number == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signal.Signals(number).name, 128 + number)


class ignoring_stops:
    """Ignore Ctrl-C, SIGTERM and SIGHUP inside the block, then put the old handlers back.

    For the moments that write a result (well under a second): the process ends right after,
    so a stop that arrives then is dropped rather than cutting a file or a message in half.
    """

    def __enter__(self):
        self.old = {}
        if _in_main_thread():
            for number in _signals(STOP_SIGNALS):
                self.old[number] = signal.signal(number, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        for number, handler in self.old.items():
            signal.signal(number, handler)


def ignore_ctrl_c():
    """From now on, ignore Ctrl-C (for a process that is about to exit with its status)."""
    if _in_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def catch_lost_interrupts():
    """Make sure a stop is never lost (the command and the lessons install this).

    Python raises KeyboardInterrupt wherever the interpreter happens to be; in a finalizer or a
    weakref callback (h5py closes its objects through them, for one) the exception cannot
    propagate, is printed as "Exception ignored in ..." and the program runs on as if nothing
    had happened (about one run in ten under load). The hook sends the same signal to the main
    thread again a moment later, from another thread: a real signal, so that a sleep or a wait
    there is cut short too, and not raised at once, which would land in the same finalizer.
    """
    import sys

    sys.unraisablehook = _unraisablehook


def _unraisablehook(unraisable):
    import sys

    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        global _stopping
        _stopping = None  # that stop was swallowed: the one sent again must raise
        number = getattr(unraisable.exc_value, "exit_status", INTERRUPTED) - 128  # SIGTERM stays SIGTERM
        again = threading.Timer(0.01, _signal_main, args=(number,))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def _signal_main(number):
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, number)
    else:  # Windows: sets the flag only, a blocking call in the main thread ends first
        _thread.interrupt_main()


class holding_stops:
    """Hold Ctrl-C, SIGTERM and SIGHUP back inside the block and deliver them when it ends.

    For files written in the middle of a run (checkpoints, snapshots, each photo of `apply`): a stop
    that lands inside the zip or PNG writer would leave it half-closed and turn into an internal
    error; held back, it arrives a moment later, once the file is complete, and the run stops as
    usual. The stop is recorded by a handler of our own rather than blocked with a signal mask:
    a mask is the calling thread's, and the kernel hands a process's signal (a terminal's Ctrl-C)
    to any thread that does not block it, such as a worker of scratchnst.parallel, whose Python
    handler then ran in the main thread in the middle of the file all the same.
    """

    def __enter__(self):
        self.old, self.held = {}, []
        if _in_main_thread():
            for number in _signals(STOP_SIGNALS):
                self.old[number] = signal.signal(number, self._hold)
        return self

    def _hold(self, number, frame):
        self.held.append(number)

    def __exit__(self, *exc):
        pending = list(self.old.items())
        try:
            while pending:
                signal.signal(*pending[0])
                pending.pop(0)
        finally:
            # a stop that arrives once its own handler is back may raise in the loop above: the
            # other handlers must still be put back, or they would record stops no one delivers
            for number, handler in pending:
                signal.signal(number, handler)
        if self.held:
            # raise() is directed at the calling thread: the handler put back runs here, now
            signal.raise_signal(self.held[0])

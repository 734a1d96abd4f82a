"""Stopping well: Ctrl-C, SIGTERM and SIGHUP end a command with its work saved and the right exit status.

    130  Ctrl-C (SIGINT), 143 SIGTERM (kill, a batch system's time limit), 129 SIGHUP (the
         terminal closed): 128 + the signal's number, as shells report a program killed by it.

Inside `stops_interrupt()` SIGTERM and SIGHUP raise errors.Interrupted, a KeyboardInterrupt, so
everything that saves its work on Ctrl-C does so for them too. `ignoring_stops()` guards the
short moments that write the results: a second Ctrl-C there must not cut them in half.
`catch_lost_interrupts()` makes sure no stop is swallowed by a finalizer; `stops_interrupt()` sends
again a stop that a bare `except:` swallowed (NumPy's compiled modules run one while they load).
"""

import _thread
import signal
import sys
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
    """Inside the block, a stop raises; later ones are ignored while it is being dealt with.

    Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP raise errors.Interrupted (exit status
    128 + the number). A second stop that arrived with the first (both held back while a file
    was written) or just after it would otherwise raise again inside the code that saves the
    first one's results, and lose them. "Being dealt with" is judged, not assumed: a stop raised
    where a bare `except:` swallows it (NumPy's compiled modules register a class under one while
    they are imported) is not on its way, so the next stop raises again, and a watcher thread sends
    the swallowed one again a moment later (RESEND_AFTER), so that a single Ctrl-C still ends the run.
    After the block, `unsettled` is the exception of a stop no code dealt with (None if none): where
    the block ended with another error, that error is the stop, changed on its way (cli.main).
    """

    def __enter__(self):
        global _stopping
        self.old = {}
        self.unsettled = None
        _stopping = None
        if _in_main_thread():
            for number in _signals(STOP_SIGNALS):
                self.old[number] = signal.signal(number, _raise_once)
        return self

    def __exit__(self, *exc):
        global _stopping
        # Under the lock, so that the watcher cannot send a stop that finds the old handlers back.
        with _lock:
            try:
                _put_back(self.old)
            finally:
                if _stopping is not None:
                    # a stop no code dealt with, the block ending with another error: that error is
                    # most likely the stop, turned into it on the way (NumPy imported when Ctrl-C
                    # came raises ImportError), and the caller reports the stop (cli.main)
                    self.unsettled = None if _stopping.settled.is_set() else _stopping.error
                    _stopping.settled.set()
                _stopping = None


def _put_back(handlers):
    """Restore the signal handlers `handlers` ({number: handler}), all of them even if a stop raises meanwhile."""
    pending = list(handlers.items())
    try:
        while pending:
            signal.signal(*pending[0])
            pending.pop(0)
    finally:
        # signal.signal() first runs the handler of a stop that is pending, which may raise: the
        # other handlers must still be put back, or they would record stops no one delivers
        for number, handler in pending:
            signal.signal(number, handler)


RESEND_AFTER = 0.5  # seconds a raised stop may take to reach the code that deals with it before it is sent again


class _Stop:
    """A stop raised inside stops_interrupt: its signal, its exception, and whether it was dealt with."""

    def __init__(self, number):
        self.number = number
        if number == signal.SIGINT:
            self.error = KeyboardInterrupt()
            # what Interrupted carries: cli.main and __main__ read them, and they mark a stop raised here
            self.error.how, self.error.exit_status = "Ctrl-C", INTERRUPTED
        else:
            self.error = Interrupted(signal.Signals(number).name, 128 + number)
        # set once the stop needs sending no more: the code that saves the results was reached
        # (ignoring_stops), a later stop took its place, or the block ended
        self.settled = threading.Event()


_stopping = None  # the _Stop raised last, inside stops_interrupt
_lock = threading.Lock()  # between the watcher's resending and stops_interrupt putting the old handlers back


def _raise_once(number, frame):
    global _stopping
    if _stopping is not None and (_stopping.settled.is_set() or _being_handled(_stopping.error)):
        return  # a stop is already on its way: this one adds nothing
    if _stopping is not None:
        _stopping.settled.set()  # swallowed: this one takes its place, and its watcher ends
    _stopping = _Stop(number)
    _watch(_stopping)
    raise _stopping.error


def _being_handled(error):
    """True while an except, finally or __exit__ of the main thread runs for `error` or for an error raised there.

    An error raised while `error` was handled has it in its __context__ chain. Run in a signal
    handler, sys.exc_info() is the exception of the code the signal interrupted; an exception that
    a bare `except:` swallowed is in no chain, once that `except:` has ended.
    """
    current, seen = sys.exc_info()[1], set()
    while current is not None and id(current) not in seen:
        if current is error:
            return True
        seen.add(id(current))
        current = current.__context__
    return False


def _watch(stop):
    watcher = threading.Thread(target=_resend_until_settled, args=(stop,), name="scratchnst-stop-watcher",
                               daemon=True)
    try:
        watcher.start()
    except RuntimeError:   # no thread to be had (a process limit): the stop still raises, unwatched
        pass


def _resend_until_settled(stop):
    # Sent while it is still being handled (a long `finally`), the stop is ignored by _raise_once
    # and sent again later; swallowed, it raises once more. interrupt_main() only marks the signal
    # as arrived, with no real signal, so the handler that runs is the one in place when the main
    # thread next checks: under the lock, stops_interrupt cannot have put the old ones back
    # (holding_stops' and ignoring_stops' own handlers hold it, or drop it, as they do any stop).
    # Being no real signal, it does not cut short a wait the main thread is blocked in (a sleep, a
    # select): the stop then takes effect when that wait ends, or at a second Ctrl-C.
    while not stop.settled.wait(RESEND_AFTER):
        with _lock:
            if _stopping is not stop or stop.settled.is_set():
                return
            try:
                _thread.interrupt_main(stop.number)
            except TypeError:   # Python 3.9's takes no signal: a Ctrl-C, which stops the run as well
                _thread.interrupt_main()


class ignoring_stops:
    """Ignore Ctrl-C, SIGTERM and SIGHUP inside the block, then put the old handlers back.

    For the moments that write a result (well under a second): the process ends right after,
    so a stop that arrives then is dropped rather than cutting a file or a message in half.
    """

    def __enter__(self):
        self.old = {}
        if _in_main_thread():
            if _stopping is not None:
                _stopping.settled.set()  # the stop has reached the code that saves the results: no resending
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
    sys.unraisablehook = _unraisablehook


def _unraisablehook(unraisable):
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # No need to forget the stop: one that was swallowed is being handled nowhere, so _raise_once
        # raises the one sent again (and ignores it if it lands while an earlier stop is handled).
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
        _put_back(self.old)   # a stop that arrives once its own handler is back may raise in there
        if self.held:
            # raise() is directed at the calling thread: the handler put back runs here, now
            signal.raise_signal(self.held[0])

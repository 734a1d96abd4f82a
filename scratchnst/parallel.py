"""A layer's work cut into pieces run at once on the cores, each piece's products on one BLAS thread.

With 2 BLAS threads, a matrix product runs on both cores but everything around it (the im2col
copies, bias and ReLU, pooling, the masks of ReLU's backward pass) runs on one: on a 2-core Xeon
that left a VGG-19 step at 512x512 1.4 times PyTorch's, whose own passes are threaded. Here the
work of a layer is cut into contiguous pieces run at the same time by `workers()` Python threads,
each doing its copies AND its products on one core: NumPy releases the GIL inside its loops and
BLAS calls, and OpenBLAS runs one thread per call (`one_blas_thread`), so that two products do not
each spawn a second thread onto a busy core. Who cuts what: fast_conv (rows of the output of each
convolution, bands of rows of a col2im, rows of a kernel gradient), tap_planes (blocks of positions
of a convolution, bands of rows of an input gradient), fire_rows (bands of rows of a
whole fire module, its three convolutions at once), transformer_layers (rows of the kernel
gradient), fast_pool (rows of a pooling's output). Each cut is exact: pieces write disjoint memory,
or their own arrays added afterwards. `ahead` runs whole pieces of work on the other cores while
the caller goes on: transfer's content and style terms, during the backward pass that needs them.

Handing a piece to another thread costs what waking it costs: on a 2-core VM whose idle cores
halt, 80-150 us per split, about what a core does in a small layer. Hence fewer, larger splits
(fire_rows), a least amount of work per piece, each thread kept on a core of its own during a run
(`hold`), and those cores kept from halting (`awake_cores`). Two pieces at once also share the
GIL: a piece should make a few large NumPy calls, not many small ones (`in_piece`).

So inside a run (`hold()`), on x86-64 Linux, the splits of a network's step (fire modules, pools,
the forward convolutions, an RGB input's gradient: the sites that pass `args=` to `split`) hand
their other pieces to helper processes instead (`piece_processes`), one per extra core, over
memory both map (`shared_arena`; `empty` and `shared_copy` put arrays there): no GIL between the
pieces, and a handoff of about a microsecond. The results are the same bits as with threads.
col2im's input gradients by bands (strided convolutions of 8 channels or more), Winograd's and
`ahead` still use threads; SCRATCHNST_PROCESSES=0 keeps every piece in threads.

How many workers: $SCRATCHNST_WORKERS when set (the command line sets it for --threads N, and
starts NumPy's BLAS on one thread: `environment`); else the BLAS's own thread count where it can be
read and set (the OpenBLAS of NumPy's wheels), its products then held to one thread for a run by
`hold`; else 1. With one worker every split runs as one piece in the calling thread: the same
results up to rounding (pooling and bias gradients bit for bit; a float32 convolution's output and
gradients within a few units of the last place, up to 5e-7 relative, as its products split
differently), only the speed differs; a fixed count gives the same bits run after run.
SCRATCHNST_WORKERS=1 turns the splitting off, and `set_workers(n)` overrides the count (tests run
both ways).
"""

import contextlib
import contextvars
import ctypes
import glob
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import marshal

from scratchnst import awake_cores

# .inside: this thread runs a piece of a split, or under unsplit() (nested splits run whole);
# .piece: it runs a piece of a split, other threads of the process the others (in_piece)
_state = threading.local()
_region = threading.Lock()  # one split at a time changes the BLAS's thread count
_pool = None
_workers = None
_blas = None  # (set_num_threads, get_num_threads), or () when NumPy's BLAS cannot be told
_arena = None         # shared_arena.Arena of the splits' helper processes, made when first wanted
_helpers = []         # piece_processes.Helper, one per worker beyond the first, started by hold()
_no_helpers = False   # True once helpers could not start or one was lost: the pieces stay threads
_held_depth = 0       # how many hold() contexts are open
_forks = 0            # how many forks this process descends from since it imported this module
_pool_busy = 0        # how many splits or queues have given the pool's threads work (_pool_at_work)
_busy_lock = threading.RLock()   # held by _pool_at_work while it calls _let_helpers_spin, which takes it too
# (module, name) of piece functions whose pieces failed in a helper and not in the caller, as one that
# the helper cannot import would at every split, or one that warns (a warning is an error there, so
# that the caller runs the piece and the warning is seen): after a few, their pieces stay in threads
_helper_failures = {}
_not_for_helpers = set()
_MOST_HELPER_FAILURES = 3


def _blas_controls():
    """(set, get) of the thread count of the OpenBLAS NumPy loaded, or () if there is none to control."""
    global _blas
    if _blas is None:
        import numpy  # here, not at the top: `environment` must be usable before NumPy loads

        _blas = ()
        here = os.path.dirname(numpy.__file__)
        # NumPy's wheels bundle scipy-openblas: numpy.libs (Linux, Windows) or numpy/.dylibs (macOS)
        candidates = [path for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*")
                      for path in sorted(glob.glob(os.path.join(here, pattern)))]
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library, not a second copy
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"),
                                   ("openblas_", "")):
                try:
                    setter = getattr(lib, f"{prefix}set_num_threads{suffix}")
                    getter = getattr(lib, f"{prefix}get_num_threads{suffix}")
                except AttributeError:
                    continue
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                _blas = (setter, getter)
                return _blas
    return _blas


def workers():
    """How many pieces a split runs at once.

    $SCRATCHNST_WORKERS if set (what `environment` sets), else the BLAS's thread count when it can
    be controlled, else 1.
    """
    global _workers
    if _workers is None:
        given = os.environ.get(WORKERS_VARIABLE, "").strip()
        if given.isdigit() and int(given) >= 1:
            count = int(given)
        else:
            controls = _blas_controls()
            count = controls[1]() if controls else 1
        _workers = max(1, int(count))
    return _workers


WORKERS_VARIABLE = "SCRATCHNST_WORKERS"


def environment(threads):
    """The environment variables that run a new process on `threads` cores: {name: value}.

    NumPy's BLAS gets ONE thread and scratchnst `threads` workers. Even told to use one thread per
    call, an OpenBLAS started with two slowed the pieces of a split (a VGG-19 step at 512x512 on a
    2-core Xeon: 2.36 s, against 2.02 s when it had started with one). They must be set before
    NumPy is imported: BLAS reads them once, when it loads.
    """
    return {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
            WORKERS_VARIABLE: str(threads)}


def set_workers(n):
    """Set how many pieces a split runs at once (1: no splitting); returns the previous count.

    The results do not depend on it; the speed does: where the BLAS's threads cannot be controlled,
    each piece's products may spawn threads of their own onto the other pieces' cores.
    """
    global _workers
    previous = workers()
    _workers = max(1, int(n))
    return previous


def pieces(n, count):
    """`count` contiguous (start, stop) ranges covering range(n), as equal as can be, none empty."""
    count = max(1, min(count, n))
    bounds = [n * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def split_ranges(n, least=1):
    """The pieces, (start, stop) ranges, that split(fn, n, least) called now in this thread cuts range(n)
    into: [(0, n)] when it runs as one piece. For pieces that each fill an array of their own, made first."""
    count = min(workers(), n // max(1, least))
    if count < 2 or getattr(_state, "inside", False):
        return [(0, n)]
    return pieces(n, count)


def split(fn, n, least=1, args=None, writes=()):
    """Run fn(start, stop) over contiguous pieces of range(n), at once on `workers()` threads.

    Args:
        fn: called once per piece; the pieces must write to disjoint memory (the caller cuts
            them so: rows of an output, channels of a gradient).
        n: the length of what is cut.
        least: do not make a piece shorter than this (below it a piece's work is not worth a thread).
        args: None, or a tuple: each piece is then fn(start, stop, *args), fn a module-level
            function whose pieces return None, and inside `hold()` the other pieces may run in
            helper processes (`piece_processes`): args must then be arrays, numbers, strings,
            None, dtypes, tuples and lists of them, and every array a piece writes (its index in
            `writes`) must have been made by `empty()`; anything else runs the pieces as threads.
            A piece may be run a second time (its helper failed it half-way): it must write the
            cells it owns before it adds to them.
        writes: the indices in args of the arrays the pieces write.

    Returns:
        the list of fn's results, in the order of the pieces.

    Every piece runs in a copy of the caller's context (so under the caller's np.errstate). Pieces that
    could go to helper processes while one is still starting run one after another in the calling
    thread: threads were slower than that at the start of a run.
    Runs as one piece, in the calling thread, when there is one worker, n < 2 * least, or inside a
    piece of another split (or of `ahead`). While another thread's split or `ahead` holds the other
    cores, the same pieces run one after another in the calling thread: where pieces are added up
    afterwards (bands of an input gradient) the rounding depends on the cut, and a result must not
    depend on what another thread was doing at that moment. A piece's exception is raised here:
    after every piece has ended when they run at once, at once when they run one after another.
    """
    ranges = split_ranges(n, least)
    if args is not None:
        fn_of_args, fn = fn, (lambda start, stop: fn_of_args(start, stop, *args))
    if len(ranges) < 2:
        return [fn(0, n)]
    count = len(ranges)
    if not _region.acquire(blocking=False):
        with one_blas_thread():  # as the pieces run in the pool's threads
            return [_piece(fn, start, stop) for start, stop in ranges]
    try:
        if args is not None:
            helpers = _ready_helpers(count - 1)
            if helpers:
                from scratchnst.piece_processes import NotShareable

                try:
                    return _split_in_processes(fn, fn_of_args, ranges, args, writes, helpers)
                except NotShareable:
                    pass
            elif _helpers_starting(count - 1):
                # A helper still starting (a Python start): the pieces one after another here, as
                # threads took longer (the first two SqueezeNet forward passes of a stylize run at
                # 320 px on a 2-core Xeon: 27-30 and 41-45 ms in threads, 14.7 and 27 here)
                with one_blas_thread():
                    return [_piece(fn, start, stop) for start, stop in ranges]
        pool = _the_pool()
        with one_blas_thread(), _pool_at_work():
            # each piece in a copy of the caller's context: NumPy's errstate (np.errstate) lives there
            futures = [pool.submit(contextvars.copy_context().run, _piece, fn, start, stop)
                       for start, stop in ranges[1:]]
            try:
                first = _piece(fn, *ranges[0])  # the calling thread does a piece too
            finally:
                rest = [future.exception() or future.result() for future in futures]  # wait for all
            for item in rest:
                if isinstance(item, BaseException):
                    raise item
            return [first] + rest
    finally:
        _region.release()


def empty(shape, dtype):
    """An uninitialised array, in memory helper processes can share when a split may hand them pieces.

    For what the pieces of a split with `args` write (`split`): inside `hold()`, with more than one
    worker where `piece_processes` can run, an array of `shared_arena`; else np.empty's.
    """
    import numpy as np   # here, not at the top: `environment` must be usable before NumPy loads

    arena = _the_arena()
    if arena is not None and _held_depth > 0:
        try:
            return arena.empty(shape, dtype)
        except OSError:   # no memory or file left for a segment: NumPy's (a split with it stays in threads)
            pass
    return np.empty(shape, dtype)


def shared_copy(a):
    """Array `a`, or a copy of it in the memory of the helper processes if splits may hand them pieces.

    For what a run passes to every split and never changes, a network's weights: a piece's argument
    outside that memory is copied into it for each split (`piece_processes.encode_args`), which for
    SqueezeNet's fire modules cost 3.6 ms of a 97 ms step at 512x512 on a 2-core Xeon.
    """
    arena = _the_arena()
    if arena is None or a.size == 0:
        return a
    try:
        copy = arena.empty(a.shape, a.dtype)
    except OSError:   # no memory or file left for a segment: the array stays where it is
        return a
    copy[...] = a
    return copy


def _the_arena():
    """The process's shared arena when pieces may go to helper processes, else None."""
    global _arena
    if workers() < 2 or _no_helpers:
        return None
    if _arena is None:
        from scratchnst import piece_processes, shared_arena   # they import NumPy: see `empty`

        if not piece_processes.supported():
            return None
        _arena = shared_arena.Arena()
    return _arena


def splits_in_processes(fn):
    """Whether a split of module-level function fn's pieces (`split` with `args`) made now would hand them
    to helper processes: for work worth cutting only where no GIL stands between the pieces. Not for a
    function whose pieces kept failing in helpers (`_not_for_helpers`)."""
    return (workers() > 1 and not getattr(_state, "inside", False)
            and (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)) not in _not_for_helpers
            and bool(_ready_helpers(workers() - 1)))


def _ready_helpers(count):
    """`count` helper processes ready for pieces, or [].

    Inside `hold()` only: there each helper spins between jobs. They are started at the first hold()
    (or sooner, `start_helpers`) and are ready a moment later: until then (for _STARTING_SECONDS at
    most) a split's pieces run one after another in the calling thread, and as threads for good once
    one is gone (`split`).
    """
    if _held_depth == 0 or _no_helpers or _the_arena() is None:
        return []
    ready = [helper for helper in _helpers[:count] if helper.ready()]
    if any(helper.broken for helper in _helpers):
        _give_up_helpers()
        return []
    return ready if len(ready) == count else []


# Seconds a helper may take to start before the splits stop waiting for it: their pieces run one after
# another in the calling thread until it is ready (`split`), in threads once it is this late.
_STARTING_SECONDS = 2.0


def _helpers_starting(count):
    """Whether the `count` helpers a split would use exist, inside hold(), and one of them is still starting."""
    if _held_depth == 0 or _no_helpers or len(_helpers) < count:
        return False
    return any(helper.starting(_STARTING_SECONDS) for helper in _helpers[:count])


def start_helpers():
    """Start the helper processes of this process's splits (one per worker beyond the first), once.

    hold() does it; a run may do it sooner, before it reads its files: a helper is ready a Python
    start and its imports later (0.14 s on a 2-core Xeon), and until then a split's pieces run one
    after another in the calling thread. Nothing where hold() would start none (one worker, no shared
    memory, SCRATCHNST_PROCESSES=0).
    """
    if _helpers or _no_helpers or _the_arena() is None:
        return
    from scratchnst import piece_processes

    try:
        for k in range(1, workers()):
            _helpers.append(piece_processes.Helper(helper_core(k)))
    except (OSError, TypeError, ValueError):   # no process, memory or Python (sys.executable) for one
        _give_up_helpers()


def _give_up_helpers(kill=False):
    """No more helper processes in this process: the splits' pieces are threads from now on.

    With `kill` (one may be writing into memory about to be reused) every helper is killed first,
    before any wait: a second Ctrl-C during the waits leaves none of them running.
    """
    global _no_helpers
    _no_helpers = True
    helpers = list(_helpers)
    _helpers.clear()
    if kill:
        for helper in helpers:
            helper.kill()
    for helper in helpers:
        helper.close()


def stop_helpers():
    """End the helper processes, if any; the next hold() may start new ones. Returns how many ended."""
    global _no_helpers
    count = len(_helpers)
    _give_up_helpers()
    _no_helpers = False
    return count


def _split_in_processes(fn, fn_of_args, ranges, args, writes, helpers):
    """split's pieces, the first in this thread and the others in `helpers`; see piece_processes."""
    import numpy as np

    from scratchnst import piece_processes

    arena = _the_arena()
    name = piece_processes.function_name(fn_of_args)
    if name in _not_for_helpers:
        raise piece_processes.NotShareable("its pieces failed in a helper and not here")
    keep = []
    encoded = piece_processes.encode_args(args, set(writes), arena, keep)
    errstate = np.geterr()
    try:
        jobs = [marshal.dumps(name + (start, stop, encoded, errstate)) for start, stop in ranges[1:]]
    except ValueError:   # something marshal cannot carry after all
        raise piece_processes.NotShareable("an argument marshal cannot write") from None
    started, answers = [], []
    try:
        for helper, job in zip(helpers, jobs):
            started.append(helper)   # first: a job posted is waited for, whatever interrupts here
            helper.start(arena, job)
        with one_blas_thread(), unsplit():   # no GIL shared with the helpers: not a thread's piece (`in_piece`)
            first = fn(*ranges[0])
    finally:
        try:
            for helper in started:   # never leave a helper writing into what is freed next
                answers.append(helper.wait())
        except BaseException:   # a Ctrl-C while waiting: the helper may still write, so it goes
            _give_up_helpers(kill=True)
            raise
    with one_blas_thread(), unsplit():
        for (ok, _), (start, stop) in zip(answers, ranges[1:1 + len(answers)]):
            if not ok:   # run it here: its own exception, if it has one, is raised as a thread's would be
                fn(start, stop)
                if not any(helper.broken for helper in started):   # it failed there only
                    _helper_failures[name] = _helper_failures.get(name, 0) + 1
                    if _helper_failures[name] >= _MOST_HELPER_FAILURES:   # not there again
                        _not_for_helpers.add(name)
    if any(helper.broken for helper in _helpers):
        _give_up_helpers()
    return [first] + [None] * (len(ranges) - 1)


def ahead(functions):
    """Start functions of no arguments on the other cores, in order, while the caller goes on: a Queue.

    For independent pieces of work the caller will need one after another, each a few large NumPy
    calls (the cost terms of `transfer.make_cost_function`, needed by a backward pass one layer
    after another). The pool's threads take them in order from the second on: the caller is to ask
    for the first at once, and computes it itself rather than wait for a thread to wake up and do
    it. `Queue.result(k)` gives the k-th one's result, running it in the calling thread if no thread
    has taken it yet, else waiting for it. So the caller never waits for work nobody has started.
    While the queue runs, the caller's own splits run their pieces one after another in the calling
    thread (the other cores are busy), and every BLAS call runs on one thread, as in a split's
    pieces, until `Queue.join()`, which the caller must call when done: it waits for the threads
    and gives BLAS its thread count back.

    Unlike split, whose pieces make many calls and wait for each other's GIL at each (`in_piece`),
    each function here gives the GIL back only a few times, and the caller's calls go on between.
    The functions' own splits run whole, whichever thread runs them. With one worker, inside a
    piece of another split, or while another split runs, every function runs here and now in the
    calling thread, the last first, so that the first to be asked for is the one last made, still
    in the cache (on SqueezeNet at 320 px, first first, an evaluation of
    `transfer.make_cost_function` took 47.5 ms against 46.3); their exceptions are raised by
    `Queue.result` all the same. Results do not depend on which thread computed them, nor in which
    order, nor when.
    """
    queue = Queue(functions)
    threads = min(workers() - 1, len(functions) - 1)
    if threads < 1 or getattr(_state, "inside", False) or not _region.acquire(blocking=False):
        # with more than one worker, one BLAS thread, as when the pool's threads run them
        with unsplit(), (one_blas_thread() if workers() > 1 else contextlib.nullcontext()):
            for k in reversed(range(len(functions))):
                if queue._take(k):
                    queue._run(k)
        return queue
    # The region is held by this call until its submits are done, then by each drain submitted;
    # the last to let go releases it, whatever fails in between.
    queue._holders = 1
    queue._blas = one_blas_thread()
    queue._blas.__enter__()
    queue._at_work = _pool_at_work()
    queue._at_work.__enter__()
    try:
        pool = _the_pool()
        for _ in range(threads):
            with queue._lock:
                queue._holders += 1
            try:
                queue._futures.append(pool.submit(contextvars.copy_context().run, queue._drain))
            except BaseException:
                queue._let_go()  # that drain will not run
                raise
    except BaseException:
        queue._let_go()
        queue.join()
        raise
    queue._let_go()
    return queue


class Queue:
    """The functions `ahead` started, their results in order; see `ahead`."""

    def __init__(self, functions):
        self._functions = list(functions)
        self._lock = threading.Lock()
        self._taken = [False] * len(self._functions)
        self._done = [threading.Event() for _ in self._functions]
        self._at_work = None
        self._results = [None] * len(self._functions)
        self._errors = [None] * len(self._functions)
        self._futures = []
        self._holders = 0  # who still holds the split region for this queue (see ahead)
        self._blas = None  # the one_blas_thread context the queue runs under, until join

    def _take(self, k):
        with self._lock:
            if self._taken[k]:
                return False
            self._taken[k] = True
            return True

    def _run(self, k):
        try:
            self._results[k] = self._functions[k]()
        except BaseException as error:  # raised in the thread that asks for the result
            self._errors[k] = error
        finally:
            self._done[k].set()

    def _let_go(self):
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
            at_work, self._at_work = (self._at_work, None) if last else (None, self._at_work)
        if last:
            _region.release()
            if at_work is not None:   # the pool's threads are done: the helpers may spin again
                at_work.__exit__(None, None, None)

    def _drain(self):  # a pool thread: every function not yet taken, in order from the second
        _state.piece = _state.inside = True
        try:
            for k in range(1, len(self._functions)):
                if self._take(k):
                    self._run(k)
        finally:
            _state.piece = _state.inside = False
            self._let_go()

    def result(self, k):
        """The k-th function's result (its exception raised here), computed here if no thread has begun it."""
        if self._take(k):
            with unsplit():  # as in a thread of the pool: its own splits run whole, whoever runs it
                self._run(k)
        else:
            self._done[k].wait()
        if self._errors[k] is not None:
            raise self._errors[k]
        return self._results[k]

    def join(self):
        """Wait until the pool's threads have finished (every function taken has ended); give BLAS its
        thread count back. Calling it again does nothing more."""
        for future in self._futures:
            future.exception()  # waits; _drain catches what the functions raise
        blas, self._blas = self._blas, None
        if blas is not None:
            blas.__exit__(None, None, None)
        with self._lock:
            at_work, self._at_work = self._at_work, None
        if at_work is not None:
            at_work.__exit__(None, None, None)


def _the_pool():
    """The worker threads (workers() - 1 of them, each pinned to a core of its own), made at the first use."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers() - 1, thread_name_prefix="scratchnst",
                                   initializer=_pin_pool_thread, initargs=(itertools.count(1), _pool_cores()))
    return _pool


def _forget_the_pool():
    """In a child made by fork: the parent's worker threads and helper processes are not its own; make
    new ones when needed, and a new shared arena (the parent's blocks are still the parent's)."""
    global _pool, _region, _arena, _helpers, _no_helpers, _held_depth, _pool_busy, _busy_lock, _forks
    _pool, _region = None, threading.Lock()
    arena = _arena
    # first: whatever happens below, the child never posts a job to its parent's helpers
    _arena, _helpers, _no_helpers, _held_depth, _pool_busy = None, [], False, 0, 0
    _busy_lock = threading.RLock()
    _forks += 1   # a hold() entered before the fork ends without a trace here (_helpers_held)
    if arena is not None:   # its memory would stay the parent's: made the child's own
        from scratchnst import shared_arena

        shared_arena.privatize(arena)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_pool)


def _piece(fn, start, stop):
    _state.piece = True
    try:
        with unsplit():
            return fn(start, stop)
    finally:
        _state.piece = False


def in_piece():
    """Whether this thread runs a piece of a split, other threads of the process running the others.

    Such a piece should make a few large NumPy calls rather than many small ones. Each call gives
    up the GIL and takes it back; when another piece's thread holds it at that moment, the wait
    is a sleep and a wake-up, 20-200 us on a VM whose idle cores halt. Measured on a 2-core Xeon:
    SqueezeNet's first max pool at 512x512, its two halves in two threads at once, 5.1 ms as 36
    calls each, 8.8 ms as 576 calls (bands of rows), 18.6 ms as 2300; one half alone 4.6, 3.5 and
    5.3 ms.
    """
    return getattr(_state, "piece", False)


@contextlib.contextmanager
def unsplit():
    """Context: the splits inside run as one piece in the calling thread, as inside a piece of a split.

    For work that is itself one piece of a larger whole whose other pieces run elsewhere (training's
    helper processes, `training_processes`): its layers must not spread onto their cores.
    """
    outer = getattr(_state, "inside", False)
    _state.inside = True
    try:
        yield
    finally:
        _state.inside = outer


def hold(pieces=True):
    """Context for a whole run (an optimisation, a training, a benchmark's steps): BLAS on one thread,
    the calling thread on a core of its own, and (`pieces`) the splits' pieces in helper processes.

    OpenBLAS's idle threads keep spinning for about 0.1 s after a threaded call, on the cores the
    pieces of the next split need (measured on a 2-core Xeon: a split convolution took 4.0 ms
    instead of 2.3 right after a threaded product). Inside `hold()` every BLAS call runs on one
    thread, so none is left spinning, and the splits spread the work instead; the heavy products
    of a run (convolutions, the kernels' gradients) are split, the rest are small.

    The calling thread is also kept on the first of the process's cores (and the worker threads
    each on one of the others, see `_pin_pool_thread`) until the context ends, when its own
    affinity is restored. Left free, after a pause (the machine idle for 0.05 s or more, as
    between a benchmark's steps or while the user looks at a snapshot) Linux woke the worker on
    the core of the thread that woke it, the two shared one core for the rest of the step, and a
    SqueezeNet step at 256x256 on a 2-core Xeon VM took 53 ms instead of 28 (32 ms pinned).
    And while it lasts each of those cores has an idle-priority spinner (`awake_cores`), so that a
    thread that waits (for a piece, for the GIL) leaves its core busy rather than halted: waking a
    halted core of a VM costs 50-250 us, tens of times a step.

    With `pieces` (the runs whose layers are split: stylize's, the benchmark's steps), the helper
    processes of `piece_processes` are started at the first hold() and take the other pieces of
    each split with `args` (see `split`), spinning between them while the run lasts; then the
    spinners of `awake_cores` are left out: on a helper's core one delayed the helper's wake-ups
    by a scheduler tick (4 ms). A training passes pieces=False: its pieces are whole photos, each
    already in a process of its own (`training_processes`).
    With one worker it changes nothing.
    """
    if workers() < 2:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(one_blas_thread())
    if pieces:
        start_helpers()
    cores = _cores()
    # the cores the run's threads are pinned to: keep them from halting
    if len(cores) >= workers() and not (pieces and _helpers):
        stack.enter_context(awake_cores.keep_awake(cores[:workers()]))
    stack.enter_context(_on_core(0))
    if pieces and _helpers:
        stack.enter_context(_helpers_held())
    return stack


@contextlib.contextmanager
def _helpers_held():
    """Context: the helper processes started (once) and spinning between jobs; after the outermost, asleep."""
    global _held_depth
    if _held_depth == 0 and _arena is not None:
        _arena.begin()
    _held_depth += 1
    forks = _forks
    _let_helpers_spin()
    try:
        yield
    finally:
        if forks != _forks:   # a child made by fork inside the run: its state was reset, none of this is its
            return
        _held_depth -= 1
        _let_helpers_spin()
        if _held_depth == 0 and _arena is not None:
            generation = _arena.generation
            _arena.trim()
            if _arena.generation != generation:   # segments dropped: the helpers let go of them too
                for helper in list(_helpers):
                    try:
                        helper.sync(_arena)
                    except Exception:   # NotShareable: it does not listen; the next job finds out
                        pass


@contextlib.contextmanager
def _pool_at_work():
    """Context: the pool's threads have work; the helper processes, pinned to the same cores, sleep meanwhile.

    A spinning helper would take half of its core from the thread that has work there.
    """
    global _pool_busy
    with _busy_lock:
        _pool_busy += 1
        _let_helpers_spin()
    try:
        yield
    finally:
        with _busy_lock:
            _pool_busy -= 1
            _let_helpers_spin()


def _let_helpers_spin():
    """Tell the helper processes whether to spin between jobs: inside hold(), while the pool's threads are idle."""
    with _busy_lock:   # the pool's threads and the caller both call this: the last word is the state now
        spin = _held_depth > 0 and _pool_busy == 0 and awake_cores.busy_waiting_allowed()
        for helper in list(_helpers):
            helper.hold(spin)
            if spin:
                helper.wake()   # now, so that it spins by the time the first piece comes


def _cores():
    """The cores this process may run on, in order, or [] where that cannot be read or set."""
    if not (hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")):
        return []
    try:
        return sorted(os.sched_getaffinity(0))
    except OSError:
        return []


@contextlib.contextmanager
def _on_core(k):
    """Context: the calling thread runs on the k-th core of the process (k modulo their count), then as before.

    Linux's sched_setaffinity with pid 0 sets the calling thread's affinity only. Nothing is
    changed where affinity is not supported, fails, or there are fewer cores than workers (then
    pinning would put two pieces on one core).
    """
    global _held_cores
    cores = _cores()
    previous = outer = None
    if len(cores) >= workers():
        try:
            previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cores[k % len(cores)]})
            outer, _held_cores = _held_cores, cores
        except OSError:
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            _held_cores = outer
            try:
                os.sched_setaffinity(0, previous)
            except OSError:
                pass


# The cores of the thread that entered hold(), as they were before it was pinned to one of them
# (None outside hold()). A worker thread starts with the affinity of the thread that made it; made
# by a split inside hold(), that is the one core of the caller, and the worker must not read its
# own affinity to find the others.
_held_cores = None


def _pool_cores():
    """The cores the pool's threads are spread over: the process's, as they were before hold() pinned the caller."""
    return list(_held_cores) if _held_cores is not None else _cores()


def helper_core(k):
    """The core for the k-th helper process of a run (training_processes), k >= 1, or None to leave it free.

    The k-th core of the process as it was before hold() pinned the caller to the first, as the pool's
    k-th thread: a process started by a pinned thread inherits its one core, and would share it.
    """
    cores = _pool_cores()
    return cores[k % len(cores)] if len(cores) >= workers() else None


def _pin_pool_thread(counter, cores):
    """Initializer of each worker thread: stay on a core of its own, the k-th of `cores` (the caller of hold() has the 0th)."""
    if len(cores) >= workers():
        try:
            os.sched_setaffinity(0, {cores[next(counter) % len(cores)]})
        except OSError:
            pass


class one_blas_thread:
    """Context: each BLAS call made inside runs on one thread; the count before is restored after."""

    def __enter__(self):
        controls = _blas_controls()
        self._previous = controls[1]() if controls else None
        if controls and self._previous != 1:
            controls[0](1)
        return self

    def __exit__(self, *exc):
        controls = _blas_controls()
        if controls and self._previous not in (None, 1):
            controls[0](self._previous)
        return False

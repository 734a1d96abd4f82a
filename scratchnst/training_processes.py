"""Training's helper processes: each computes the loss and gradients of its piece of every batch.

With --threads N a training step takes N photos, one on each core (`training.batch_loss_and_grads`).
As threads of one process the pieces slowed each other down: on a 2-core AMD EPYC (2026-12-05,
idle, medians) a step of two 128 px photos took 82-85 ms where one photo took 72 on one core, and
two whole 256 px photos 303-318 ms against 264-291 for one. Two processes side by side took 72-73
and 264-271 ms each, so the cores are not what the threads lose to: there were few page faults and
little system time (tuning malloc to avoid them gained 1-3 ms), which leaves the GIL and the Python
between NumPy's calls, about a hundred layers a step. So the calling process keeps the first piece
and `Helpers` hands each other piece to a process of its own:

    parent                                   helper k (training_helper.main, in a process of its own)
    setup: the loss network's weights,  ->   builds the same loss (training.make_loss_function)
           the style targets, the costs'
           layers and weights
                                        <-   ready
    step: parameters, photos of piece k ->   training.loss_and_grads, one BLAS thread, no splits
    (computes piece 0 meanwhile)        <-   J, parts, gradients

In `train` (2026-12-05, batches of two, three runs each way interleaved, medians) a step took
82 ms instead of 92 on 128 px crops and 320 ms instead of 345 on whole 256 px photos: 0.89 and
0.93 of the threads' time; a whole `scratchnst train --threads 2` took 8 min 40 s instead of 9 min
9 s (README.md's table). The parameters and photos go to a helper, and its gradients come back,
through memory both processes map (`SharedBuffer`): through the pipe, sending the parameters took
2.1 ms and receiving the gradients 2.7, against 0.6 and 1.9 through memory.

Each piece is computed exactly as a thread computed it (one BLAS thread, the same kernel, the layers
unsplit) and the pieces are summed in the same order, so the step is the same, bit for bit, as with
threads, and a run resumes on the same thread count as before.

Messages are a JSON header and raw array bytes, nothing pickled; a helper answers on a pipe of its
own, and what it prints goes with its stderr to a file whose last line becomes the parent's message
if it dies. It has no terminal: it runs in a session of its own, so Ctrl-C reaches only the parent,
which kills its helpers (one may be in the middle of a step) and then saves the work. An idle
helper ends when its stdin closes: the parent closed it, or died.
"""

import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile

import numpy as np

from scratchnst import parallel, piece_processes
from scratchnst.errors import UserError

_MAGIC = b"SNST"                 # every message starts so: anything else on the pipe is not one
_HEADER = struct.Struct("<4sQ")  # the magic, then the length of the JSON header that follows
_MAX_HEADER = 2**20
_DTYPES = ("float32", "float64", "uint8")
# What a helper runs (its argument: the descriptor of its replies' pipe; its stdout, like its stderr,
# goes to a file, so that nothing printed reaches a reply), this scratchnst first on its path
# (piece_processes.helper_command). A string, not an import, so that training (which imports this
# module) and training_helper (which imports training) make no cycle.
HELPER_COMMAND = piece_processes.helper_command("from scratchnst.training_helper import main\n"
                                                "main(int(sys.argv[1]))\n")
_PACKAGE_PARENT = piece_processes.PACKAGE_PARENT
# each helper's shared memory, in two halves: a step's parameters and photos go into the first,
# its gradients come back in the second (1.7 + 0.2 MB, and 1.7 MB, for the default network and
# 128 px crops). Pages are only allocated where written; a message that does not fit its half goes
# through the pipe.
SHARED_BYTES = 128 * 2**20


# ------------------------------------------------------------------------------------- messages
def write_message(stream, kind, values=None, arrays=None, shared=None):
    """Send {kind, values (JSON), arrays {name: ndarray}} to a binary stream.

    The arrays go as raw bytes after the header, or, when `shared` (a writable buffer both processes
    map: a half of a SharedBuffer) is given and they fit, into it, the header saying where.
    """
    arrays = {name: np.asarray(a, order="C") for name, a in (arrays or {}).items()}
    arrays = {name: a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")) for name, a in arrays.items()}
    offsets = _layout(arrays, len(shared) if shared is not None else 0)
    header = json.dumps({"kind": kind, "values": values or {},
                         "arrays": [[name, a.dtype.name, list(a.shape), offset]
                                    for (name, a), offset in zip(arrays.items(), offsets)]}).encode()
    for a, offset in zip(arrays.values(), offsets):
        if offset is not None:
            np.frombuffer(shared, a.dtype, a.size, offset).reshape(a.shape)[...] = a
    stream.write(_HEADER.pack(_MAGIC, len(header)) + header)
    for a, offset in zip(arrays.values(), offsets):
        if offset is None:
            stream.write(memoryview(a.reshape(-1).view(np.uint8)))
    stream.flush()


def _layout(arrays, room):
    """Where each array goes in a shared buffer of `room` bytes, or all None if they do not fit.

    Each starts on a 64-byte boundary, as NumPy's own arrays often do: a product's kernel may take
    another path on an array less aligned.
    """
    offsets, end = [], 0
    for a in arrays.values():
        offsets.append(end)
        end += -(-a.nbytes // 64) * 64
    return offsets if end <= room else [None] * len(arrays)


def read_message(stream, shared=None):
    """(kind, values, arrays) of the next message of a binary stream.

    Arrays sent through `shared` are views of it: valid until the other side is sent its next
    message (and writes there again). EOFError when the stream has closed; ValueError when what
    comes is not a message.
    """
    magic, length = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    if magic != _MAGIC or length > _MAX_HEADER:
        raise ValueError("what came is not a helper message")
    try:
        header = json.loads(_read_exactly(stream, length))
        kind, values, listed = header["kind"], header["values"], header["arrays"]
        arrays = {}
        for name, dtype, shape, offset in listed:
            if dtype not in _DTYPES:
                raise ValueError(f"unexpected array type {dtype!r} in a helper message")
            if offset is not None:
                if shared is None:
                    raise ValueError("a helper message points into shared memory that this side does not have")
                count = int(np.prod(shape, dtype=np.int64))
                arrays[name] = np.frombuffer(shared, dtype, count, offset).reshape(shape)
                continue
            a = np.empty(shape, dtype)
            view = memoryview(a.reshape(-1).view(np.uint8))   # a's own memory, filled in place
            done = 0
            while done < len(view):
                got = stream.readinto(view[done:])
                if not got:
                    raise EOFError("the stream closed in the middle of a message")
                done += got
            arrays[name] = a
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"a malformed helper message ({type(error).__name__}: {error})") from None
    return kind, values, arrays


def _read_exactly(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("the stream closed in the middle of a message")
        data += chunk
    return data


class SharedBuffer:
    """Memory a parent and one helper both map: an anonymous file whose descriptor the helper inherits.

    `memory` is the mmap, `fd` the descriptor to pass to the helper (pass_fds), closed here once it
    has been (`passed`). Both are None where there is no such file (os.memfd_create is Linux's):
    then every array goes through the pipes, a little slower. `halves()`: the parent's to write
    (parameters, photos) and the helper's (gradients), so that neither overwrites what the other
    may still read.
    """

    def __init__(self, size):
        self.memory, self.fd, self.size = None, None, size
        if not hasattr(os, "memfd_create"):
            return
        try:
            self.fd = os.memfd_create("scratchnst-helper")   # close-on-exec: only the helper given it gets it
            os.ftruncate(self.fd, size)
            self.memory = mmap.mmap(self.fd, size)
        except OSError:
            self.close()

    def halves(self):
        if self.memory is None:
            return None, None
        view = memoryview(self.memory)
        return view[:self.size // 2], view[self.size // 2:]

    def passed(self):
        """The helper has it: the parent's copy of the descriptor is no longer needed (the mapping stays)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self):
        self.passed()
        if self.memory is not None:
            try:
                self.memory.close()
            except BufferError:   # a view of it is still alive; the mapping goes with the last one
                pass
            self.memory = None


# ----------------------------------------------------------------------------------- the parent
class Helpers:
    """`count` helper processes computing the loss of pieces of each batch (`training.batch_loss_and_grads`).

    Args:
        count: how many (the parent computes one more piece itself).
        network: the loss network (networks.Network); its weights are sent, not its file.
        targets: the parent's style targets (its loss function's `.targets`), sent too, so that
            both sides compute with the same numbers.
        content_layer, style_layers, alpha, beta, tv_weight: make_loss_function's.

    A context manager: the processes end when it exits (at once, killed, when it exits on an
    exception: a helper may be in the middle of a step). Every failure of a helper (it cannot
    start, it dies, it fails, it answers nonsense) is a UserError, and after one the helpers take no
    more steps.
    """

    def __init__(self, count, network, targets, content_layer, style_layers, alpha, beta, tv_weight):
        self.count = count
        self._procs, self._replies, self._errors, self._shared = [], [], [], []
        self._waiting, self._broken = 0, None
        values = {"architecture": network.name, "pooling": network.pooling, "dtype": np.dtype(network.dtype).name,
                  "preprocessing": network.preprocessing, "content_layer": content_layer,
                  "style_layers": [[name, float(w)] for name, w in style_layers], "alpha": float(alpha),
                  "beta": float(beta), "tv_weight": float(tv_weight), "layers": list(network.params),
                  "targets": list(targets)}
        arrays = {f"target/{name}": t for name, t in targets.items()}
        for layer, (kernel, bias) in network.params.items():
            arrays[f"{layer}/kernel"], arrays[f"{layer}/bias"] = kernel, bias
        # unbuffered: what a helper printed is in its file before the traceback that ends it
        env = {**os.environ, **parallel.environment(1), "SCRATCHNST_HELPER_PATH": _PACKAGE_PARENT,
               "PYTHONUNBUFFERED": "1"}
        try:
            for _ in range(count):   # all started first: they import at the same time
                shared = SharedBuffer(SHARED_BYTES)
                self._shared.append(shared)
                try:
                    errors = tempfile.TemporaryFile()
                    self._errors.append(errors)
                    replies, their_end = os.pipe()
                    self._replies.append(os.fdopen(replies, "rb"))
                    try:
                        self._procs.append(subprocess.Popen(
                            [sys.executable, "-c", HELPER_COMMAND, str(their_end)], stdin=subprocess.PIPE,
                            stdout=errors, stderr=errors, env=env, start_new_session=True,
                            pass_fds=(their_end,) + (() if shared.fd is None else (shared.fd,))))
                    finally:
                        os.close(their_end)   # the helper's now: its end closes when it ends
                except OSError as error:   # no memory, process or descriptor left for it
                    raise UserError(f"could not start a helper process for --threads ({error.strerror or error}); "
                                    "run again with fewer --threads") from None
            for k, (proc, shared) in enumerate(zip(self._procs, self._shared)):
                own = {"core": parallel.helper_core(k + 1),   # see parallel.helper_core
                       "shared_fd": shared.fd, "shared_bytes": shared.size}
                self._talk(k, lambda: write_message(proc.stdin, "setup", {**values, **own}, arrays))
                shared.passed()
            for k in range(count):
                ready, _ = self._answer(k, "ready")
                if not ready.get("shared"):   # it could not map the memory: the pipes carry everything
                    self._shared[k].close()
        except BaseException:
            self.close(kill=True)
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(kill=exc_type is not None)
        return False

    def send(self, params, pieces):
        """Start helper k on pieces[k], (n, H, W, 3 + z) preprocessed photos and their noise planes, with these
        parameters (<= count pieces)."""
        if self._broken is not None:
            raise self._broken
        if self._waiting or len(pieces) > self.count:
            raise RuntimeError(f"{len(pieces)} pieces sent to {self.count} helpers, {self._waiting} still at work")
        arrays = {f"param/{n}": p for n, p in params.items()}
        for k, x in enumerate(pieces):
            self._waiting = k + 1   # from here, helper k may be at work
            self._talk(k, lambda: write_message(self._procs[k].stdin, "step", {}, {**arrays, "x": x},
                                                self._shared[k].halves()[0]))

    def receive(self, names):
        """[(J, grads, parts)] of the pieces sent, in their order; grads {name: array} for each of `names`.

        Every helper sent a piece is heard before an error is raised, the first one's.
        """
        results, first_error = [], None
        waiting, self._waiting = self._waiting, 0
        for k in range(waiting):
            arrays = None
            try:
                values, arrays = self._answer(k, "result")
                try:
                    results.append((float(values["J"]), {name: np.array(arrays[f"grad/{name}"]) for name in names},
                                    {key: float(v) for key, v in values["parts"].items()}))
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    raise UserError(f"a helper process of --threads answered without its results ({error!r}); "
                                    "run again with fewer --threads") from None
            except UserError as error:
                first_error = first_error or error
            arrays = None   # no view of the shared memory outlives this
        if first_error is not None:
            self._broken = first_error
            raise first_error
        return results

    def _talk(self, k, fn):
        try:
            return fn()
        except (EOFError, OSError) as error:   # a broken pipe: it ended
            self._broken = self._died(k, error)
        except ValueError as error:   # it wrote something else than a message
            self._broken = UserError(f"a helper process of --threads answered out of turn ({error}); run again "
                                     "with fewer --threads")
        raise self._broken

    def _answer(self, k, expected):
        kind, values, arrays = self._talk(k, lambda: read_message(self._replies[k], self._shared[k].halves()[1]))
        if kind == "error":
            memory = values.get("type") == "MemoryError"
            raise UserError(f"a helper process of --threads {'ran out of memory' if memory else 'failed'} "
                            f"({values.get('type')}: {values.get('message')}); run again with fewer --threads"
                            + (", or a smaller --crop or --size" if memory else ""))
        if kind != expected:
            raise UserError(f"a helper process of --threads answered {kind!r} instead of {expected!r}; run again "
                            "with fewer --threads")
        return values, arrays

    def _died(self, k, error):
        proc = self._procs[k]
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:   # alive, but its pipe is broken: it is of no more use
            proc.kill()
            code = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:   # a real-time signal has no name
                name = f"signal {-code}"
            why = f" (killed by {name})"
            if -code == getattr(signal, "SIGKILL", None):
                why += "; the system may have run out of memory"
        else:
            errors = self._errors[k]
            errors.seek(0)
            lines = [line.strip() for line in errors.read().decode("utf8", "replace").splitlines() if line.strip()]
            why = f": {lines[-1]}" if lines else f" (exit status {code})" if code is not None else f" ({error})"
        return UserError(f"a helper process of --threads stopped{why}; run again with fewer --threads")

    def close(self, kill=False):
        """End every helper: close its pipes (an idle one exits at the end of its stdin), or kill it
        (`kill`: one may be in the middle of a step); wait for each; free the rest."""
        procs, self._procs = self._procs, []
        kill = kill or self._waiting > 0   # one at work would only notice its closed stdin when it is done
        self._waiting = 0
        try:
            for proc in procs:
                if kill:
                    proc.kill()
                try:
                    proc.stdin.close()
                except OSError:   # a helper that died leaves a broken pipe to flush
                    pass
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            for proc in procs:   # a second Ctrl-C above: none is left behind
                if proc.poll() is None:
                    proc.kill()
            for item in self._replies + self._errors + self._shared:
                item.close()
            self._replies, self._errors, self._shared = [], [], []

"""Arrays in memory that the helper processes of a split map too (`piece_processes`).

A piece of a split run in another process reads and writes the caller's arrays: the layer's input,
its output, its cache. They must live in memory both processes map, at an offset both know. Here
that memory is a few anonymous files (`os.memfd_create`), "segments", each mapped once by the
caller and once by every helper (their descriptors go to a helper over its socket). `empty(shape,
dtype)` gives an ndarray in them; `where(a)` says where an array lies, if it lies in them, so that
a piece's arguments can be described to a helper as (segment, offset, shape, strides, dtype) and
rebuilt there as views of the same bytes (`view`).

Blocks are handed out by size and come back when the last view of an array dies (a finalizer on
its base array), onto a list of free blocks of their size; a request takes a free block of its
size, else the smallest free one up to twice as large, else new memory. A run allocates the same
shapes at every step, so after its first step it reuses its own blocks and touches no new page.
The price: a freed block keeps its pages, where NumPy's large arrays go back to the system when
freed, so a step's peak memory counts every block it used (a VGG-19 step at 512 px: 543 MB
against 481 in NumPy's memory, 2-core Xeon; `scratchnst bench`'s memory columns). A segment
with no live block left is given back to the system by `trim()` at the end of a run if that run
did not use it, so a process that ran at 512 px and then at 256 keeps no dead blocks of the first
for long.

Every block starts on a 64-byte boundary, as NumPy's own large arrays do on Linux: a product's
kernel may take a slower path on a less aligned array.
"""

import collections
import math
import mmap
import operator
import os
import sys
import threading
import weakref

import numpy as np

ALIGN = 64
SEGMENT_BYTES = 64 * 2**20   # the least a new segment holds; a larger request gets a segment of its size


def available():
    """Whether this system can make such memory (Linux's memfd_create, not refused by a sandbox)."""
    global _available
    if _available is None:
        try:
            os.close(os.memfd_create("scratchnst-probe"))
            _available = True
        except (AttributeError, OSError):
            _available = False
    return _available


_available = None


class _Segment:
    __slots__ = ("index", "fd", "size", "memory", "base", "end", "live", "used")

    def __init__(self, index, size):
        self.index, self.size = index, size
        self.fd = os.memfd_create(f"scratchnst-arena-{index}")   # close-on-exec: helpers get it over a socket
        try:
            os.ftruncate(self.fd, size)
            self.memory = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.base = np.frombuffer(self.memory, np.uint8).ctypes.data
        self.end, self.live, self.used = 0, 0, 0


class Arena:
    """Segments of shared memory and the blocks handed out in them; see the module docstring.

    Thread-safe: the pool's threads allocate too (the cost terms `parallel.ahead` runs).
    """

    def __init__(self):
        self._lock = threading.Lock()
        # Blocks given back by their arrays' finalizers, taken onto the free lists under the lock. Not
        # the lock itself: a finalizer runs when the garbage collector frees an array in a cycle, which
        # any allocation can set off, one made under the lock included (it then waited for itself).
        self._returned = collections.deque()
        self._segments = {}      # index -> _Segment
        self._free = {}          # block size -> [(segment index, offset)]
        _libc_calls()   # now, in the parent: a child made by fork may not load it safely (`privatize`)
        self._next_index = 0
        self._epoch = 0          # counts the runs (`begin`): a segment remembers the last one it served
        self.generation = 0      # counts segments made and dropped: a helper's list is stale when it differs

    def empty(self, shape, dtype):
        """An uninitialised array of `shape` and `dtype` in shared memory (C order)."""
        dtype = np.dtype(dtype)
        shape = tuple(operator.index(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if any(d < 0 for d in shape):
            raise ValueError("negative dimensions are not allowed")
        count = math.prod(shape)
        if count * dtype.itemsize > sys.maxsize:   # as np.empty says it, not an overflow further down
            raise ValueError("array is too big; `arr.size * arr.dtype.itemsize` is larger than the maximum "
                             "possible size.")
        size = max(ALIGN, -(-count * dtype.itemsize // ALIGN) * ALIGN)
        with self._lock:
            self._take_returned()
            segment, offset, size = self._block(size)
            segment.live += 1
            segment.used = self._epoch
        flat = np.frombuffer(segment.memory, dtype, count, offset)
        weakref.finalize(flat, self._returned.append, (segment.index, offset, size))
        return flat.reshape(shape)

    def _block(self, size):
        """(segment, offset, the block's size): a free block of `size` bytes, else the smallest free one
        up to twice as large (malloc would reuse freed memory of any size: without it a VGG-19 step at
        256 px held 166 MB at its peak against 125 in NumPy's memory), else new memory."""
        found = self._free_block(size)
        if found is None:   # the larger sizes looked at only then: most requests find their own
            for fits in sorted(k for k, blocks in self._free.items() if size < k <= 2 * size and blocks):
                found = self._free_block(fits)
                if found is not None:
                    break
        if found is not None:
            return found
        for segment in self._segments.values():
            if segment.size - segment.end >= size:
                offset, segment.end = segment.end, segment.end + size
                return segment, offset, size
        segment = _Segment(self._next_index, max(SEGMENT_BYTES, size))
        self._segments[segment.index] = segment
        self._next_index += 1
        self.generation += 1
        segment.end = size
        return segment, 0, size

    def _free_block(self, size):
        """(segment, offset, size) of a free block of exactly `size` bytes in a live segment, or None."""
        free = self._free.get(size)
        while free:
            index, offset = free.pop()
            if index in self._segments:
                return self._segments[index], offset, size
        return None

    def _take_returned(self):
        """Move the blocks the finalizers gave back onto the free lists (under the lock)."""
        while self._returned:
            index, offset, size = self._returned.popleft()
            segment = self._segments.get(index)
            if segment is not None:
                segment.live -= 1
                self._free.setdefault(size, []).append((index, offset))

    def where(self, a):
        """(segment index, byte offset of a's first element) if ndarray `a` lies in a segment, else None."""
        if not isinstance(a, np.ndarray) or a.size == 0:
            return None
        address = a.ctypes.data
        span = _span(a)
        with self._lock:
            for segment in self._segments.values():
                if segment.base + span[0] <= address and address + span[1] <= segment.base + segment.size:
                    return segment.index, address - segment.base
        return None

    def segments(self):
        """(generation, [(index, fd, size)] of the live segments), read together, for a helper to map."""
        with self._lock:
            return self.generation, [(s.index, s.fd, s.size) for s in self._segments.values()]


    def begin(self):
        """A run starts: what it allocates marks the segments it uses (see `trim`)."""
        with self._lock:
            self._epoch += 1

    def trim(self):
        """Give back to the system every segment no array uses and the run that ends did not use.

        A run that starts again at once (a benchmark's steps, each its own run) finds its blocks as it
        left them, their pages mapped: dropping them all at the end of each run, then faulting new
        pages in, made a SqueezeNet step at 512 px slower than on one core.
        """
        with self._lock:
            self._take_returned()
            dead = [s for s in self._segments.values() if s.live == 0 and s.used < self._epoch]
            for segment in dead:
                del self._segments[segment.index]
                self.generation += 1
            if dead:
                self._free = {size: [(i, o) for i, o in blocks if i in self._segments]
                              for size, blocks in self._free.items()}
        for segment in dead:
            os.close(segment.fd)
            try:
                segment.memory.close()
            except BufferError:   # a view escaped the count (it cannot, but never fail a run for it)
                pass


def _span(a):
    """(lowest, highest + 1) byte offsets of a's elements from a's first element's address."""
    low = high = 0
    for n, stride in zip(a.shape, a.strides):
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + a.itemsize


def describe(a, place):
    """What a helper needs to rebuild ndarray `a` that lies at `place` (Arena.where): a marshal-able tuple."""
    index, offset = place
    return (index, offset, tuple(a.shape), tuple(a.strides), a.dtype.str)


def view(mapped, description):
    """The array a description (`describe`) stands for, as a view of `mapped` {segment index: mmap}."""
    index, offset, shape, strides, dtype = description
    return np.ndarray(shape, np.dtype(dtype), buffer=mapped[index], offset=offset, strides=strides)


_libc = None   # (mmap, mremap, memmove) of the C library, resolved in the parent: see `privatize`


def _libc_calls():
    global _libc
    if _libc is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
        _libc = (libc.mmap, libc.mremap, ctypes.memmove, ctypes.get_errno)
    return _libc


def privatize(arena):
    """In a child made by fork: make the arena's memory the child's own, as the rest of its memory is.

    A fork copies a process's private memory (copy-on-write) but shares its MAP_SHARED mappings: the
    child's arrays in the arena (a network's weights, the activations of its last run) would be the
    parent's, each side seeing the other's writes and the blocks the other reuses. So each segment's
    used bytes are copied into a new private anonymous mapping, which then replaces the shared one
    at the same address (mremap: the arrays keep pointing at it); the child's descriptors of the
    segments' files, the arena's and those the mmap objects keep, are pointed at /dev/null, so that
    the child does not keep the parent's memory alive. The arena is of no more use for sharing:
    the child makes a new one. One copy of the used bytes per fork (a `subprocess` with preexec_fn
    pays it too). Linux only, as memfd is.
    """
    mmap_, mremap, memmove, get_errno = _libc_calls()
    segments, arena._segments, arena._free = list(arena._segments.values()), {}, {}
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    for segment in segments:
        fresh = mmap_(None, segment.size, mmap.PROT_READ | mmap.PROT_WRITE, private, -1, 0)
        if fresh in (None, 2**64 - 1):
            raise OSError(get_errno(), "no memory to make the shared arena private after fork")
        memmove(fresh, segment.base, segment.end)
        # MREMAP_MAYMOVE | MREMAP_FIXED: the private copy takes the shared mapping's place, at once
        if mremap(fresh, segment.size, segment.size, 1 | 2, segment.base) != segment.base:
            raise OSError(get_errno(), "could not make the shared arena private after fork")
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:scratchnst-arena-"):
                    os.dup2(null, int(name))
            except OSError:   # gone meanwhile (the listing's own descriptor)
                pass
    finally:
        os.close(null)

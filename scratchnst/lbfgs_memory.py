"""L-BFGS's curvature pairs in one stacked buffer, and the product H g in two passes over it.

The two-loop recursion (`optim.lbfgs_direction`, the readable version) makes 4 vector operations
per pair, each a pass over n values: on SqueezeNet at 320 px with twenty float32 pairs that was
about 6 ms an iteration, a tenth of an evaluation, on one core however many the run has. Every dot
product it takes is one of a pair with g or with another pair. Kept from iteration to iteration,
the dot products between pairs turn the recursion into arithmetic on k numbers between two passes
over the pairs, each a matrix product that BLAS runs at the speed of memory:

    pass 1:  S g and Y g, the pairs against g (and against the y of the pair added last, whose
             dot products with the older pairs, s_i.y_new and y_i.y_new, come with it);
    the recursion on numbers (Nocedal & Wright, Alg. 7.4, with each vector dot product written
             through those): a_i = rho_i (s_i.g - sum_{j>i} a_j s_i.y_j), gamma, b_i, c_i = a_i - b_i;
    pass 2:  r = gamma g - gamma Y^T a + S^T c.

The passes go through the buffer a block of columns at a time (pass 1's in the cache for its
two vectors), pass 2's blocks split across the cores (`parallel.split`); pass 1's partial sums are
added in block order in the calling thread, so the result does not depend on the number of workers.
It equals the two-loop recursion up to rounding (tests: 1e-12 relative in float64).

The pairs live in rows of the buffer (slots), written once and never moved: the (s, y, rho)
entries of `pairs`, oldest first, are views of their rows, and a pair's entry that someone still
holds is given copies of its rows when a new pair takes its slot, so that the state of an earlier
iteration (`Iterate.state`, which copies the pairs when it is called) stays what it was.
"""

import weakref
from collections import deque

import numpy as np

from scratchnst import memory_pages, parallel

# Columns per block of pass 1: 40 rows x 8192 float32 = 1.25 MiB, in a core's L2 cache for both
# vectors. Pass 1 runs in the calling thread, unsplit, unless the pieces go to helper processes
# (`parallel.splits_in_processes`): its blocks are many small products, and two threads making them
# wait for each other's GIL at each (measured on a 2-core Xeon, 20 pairs of 230400 values, the
# buffer out of the cache as after an evaluation: 3.0 ms unsplit by blocks of 8192, 3.2 by blocks of
# 2048, 3.8 split across threads, 4.6 in one product; in the cache 1.4, 1.6, 1.8 and 2.7). With a
# helper process the whole direction took 3.1 ms instead of 4.2 inside a stylize run (cat and
# swirls, 320 px). Pass 2 reads each value once whatever the blocks, a few large products split
# across the cores (2.1 ms against 3.1 unsplit): larger blocks, fewer Python steps.
_BLOCK = 8192
_BLOCK_2 = 4 * _BLOCK


class _Entry(list):
    """[s, y, rho]: a list that can be weakly referenced (see PairMemory.add)."""

    __slots__ = ("__weakref__",)


class PairMemory:
    """The newest m curvature pairs (s, y, rho) of an L-BFGS run and their dot products.

    Attributes:
        pairs: deque of [s (n,), y (n,), rho], oldest first; s and y read-only views of the buffer.
        slots: deque of the buffer row of each pair, oldest first.
    """

    def __init__(self, m, n, dtype):
        self.m, self.n = m, n
        self.dtype = np.dtype(dtype)
        # rows 0..m-1 hold s, rows m..2m-1 the y of the same slot; zeros: rows not yet written
        # take part in the passes with coefficient 0 and must not be NaN
        # Small pages: the buffer is written a row at a time over the first m iterations, each
        # fresh huge page costly on a VM (memory_pages); the passes read it in order, the TLB's
        # reach does not matter to them. 200-450 ms of stylize's first iterations at 320 px. In a
        # run with helper processes it is in their shared memory (small pages too), zeroed at once.
        with memory_pages.small_pages():
            self._buffer = _zeros((2 * m, n), self.dtype)
        self.pairs, self.slots = deque(), deque()
        self._sy = np.zeros((m, m))  # by slot: s_a . y_b for a's pair no newer than b's
        self._yy = np.zeros((m, m))  # by slot: y_a . y_b
        self._new = None  # the slot of the pair added last, its dot products not yet known
        self._V = _zeros((2, n), self.dtype)  # pass 1's two vectors: g, and the new pair's y

    def __len__(self):
        return len(self.pairs)

    def clear(self):
        """Forget every pair (the rows become free; the entries of `pairs` keep copies)."""
        for entry in self.pairs:
            entry[0], entry[1] = entry[0].copy(), entry[1].copy()
        self.pairs.clear()
        self.slots.clear()
        self._new = None

    def add(self, s, y, rho, slot=None):
        """Keep the pair (s, y, rho = 1/(s.y)), dropping the oldest beyond m.

        Args:
            s, y: (n,) vectors, copied into the buffer in its dtype.
            rho: 1 / (s . y).
            slot: None for the free row or the oldest pair's; a row number to use that one
                (a resumed run puts each pair back in its own row).
        """
        if self._new is not None:
            self._dot_products(None)  # two pairs added without a direction between them (a resume)
        if len(self.pairs) == self.m:
            # The row is reused: an entry someone still holds (an Iterate whose state() is not yet
            # taken) keeps its values in copies. One held by no one is gone once this reference
            # is: two copies of n values saved per iteration. (A weak reference, not a count of
            # references, which interpreters count differently.)
            held = weakref.ref(self.pairs.popleft())
            entry = held()
            if entry is not None:
                entry[0], entry[1] = entry[0].copy(), entry[1].copy()
            del entry
            free = self.slots.popleft()
        else:
            used = set(self.slots)
            free = next(k for k in range(self.m) if k not in used)
        slot = free if slot is None else int(slot)
        if slot in self.slots or not 0 <= slot < self.m:
            raise ValueError(f"slot {slot} is not a free row of the {self.m}")
        self._buffer[slot] = s
        self._buffer[self.m + slot] = y
        s_row, y_row = self._buffer[slot].view(), self._buffer[self.m + slot].view()
        s_row.flags.writeable = y_row.flags.writeable = False
        self.pairs.append(_Entry([s_row, y_row, float(rho)]))
        self.slots.append(slot)
        self._new = slot

    def direction(self, g, held=None, negate=False):
        """H g, the L-BFGS inverse-Hessian estimate times g: the two-loop recursion's result.

        Args:
            g: (n,) vector (the gradient).
            held: None, or indices of g to take as 0 (the projected gradient's coordinates held at
                a bound), without the caller's copy of g: g is read once, into the pairs' dtype.
            negate: return -H g, the descent direction, exactly (every product's terms negated:
                rounding to nearest is symmetric), without a pass to negate r.

        Returns:
            r: (n,) fresh array of the pairs' dtype, H g (-H g with negate); with no pairs, g itself
            (as that dtype, copied, the held entries 0, negated with negate).
            None when a dot product overflowed the pairs' dtype (float32 ends at 3.4e38, which the
            products of gradients of 1.8e19 pass): the recursion would make inf, NaN, or a finite
            but wrong r of them; the caller runs `optim.lbfgs_direction` in a wider dtype instead.
            Such a product is inf and gives a NumPy overflow warning unless the caller's errstate
            says otherwise (`optim.lbfgs` ignores it: it handles the None).
        """
        g = np.asarray(g)
        if not self.pairs:
            r = np.array(g, dtype=self.dtype, copy=True)
            if held is not None:
                r[held] = 0
            return np.negative(r, out=r) if negate else r
        Sg, Yg = self._dot_products(g, held)
        g_mem = self._V[0]  # g in the pairs' dtype
        k = len(self.pairs)
        idx = np.array(self.slots)
        rho = np.array([entry[2] for entry in self.pairs])
        sy = self._sy[np.ix_(idx, idx)]  # sy[i, j] = s_i . y_j for i <= j (logical order)
        yy = self._yy[np.ix_(idx, idx)]
        # Below the diagonal sy holds stale values of earlier pairs, unused: only its upper triangle counts.
        if not (np.isfinite(Sg).all() and np.isfinite(Yg).all() and np.isfinite(np.triu(sy)).all()
                and np.isfinite(yy).all()):
            return None
        a = np.zeros(k)
        for i in range(k - 1, -1, -1):  # newest to oldest, as the first loop
            a[i] = rho[i] * (Sg[i] - np.dot(a[i + 1:], sy[i, i + 1:]))
        gamma = sy[-1, -1] / yy[-1, -1]
        yq = Yg - yy @ a  # y_i . q, q = g - sum_j a_j y_j
        c = np.zeros(k)
        for i in range(k):  # oldest to newest, as the second loop
            b = rho[i] * (gamma * yq[i] + np.dot(c[:i], sy[:i, i]))
            c[i] = a[i] - b
        coefficients = np.zeros(2 * self.m)
        coefficients[idx] = c
        coefficients[self.m + idx] = -gamma * a
        if negate:
            coefficients, gamma = -coefficients, -gamma
        coefficients = coefficients.astype(self.dtype)
        r = parallel.empty(self.n, self.dtype)
        parallel.split(_combine_blocks, -(-self.n // _BLOCK_2),
                       args=(coefficients, self._buffer, self.dtype.type(gamma), g_mem, _BLOCK_2, r), writes=(5,))
        return r

    def _dot_products(self, g, held=None):
        """Pass 1: (S g, Y g) in the pairs' logical order ((None, None) if g is None), g's entries
        at `held` taken as 0; and the pending pair's dot products with every pair, recorded.
        Leaves g (so masked), in the pairs' dtype, in _V[0]."""
        # Always both vectors, g and the new y (zeros for a missing one): a product's rounding may
        # depend on its shape, and a resumed run must add up every sum as the run it continues did.
        V = self._V
        if g is None:
            V[0] = 0
        else:
            np.copyto(V[0], g, casting="same_kind")
            if held is not None:
                V[0][held] = 0
        V[1] = 0 if self._new is None else self._buffer[self.m + self._new]

        P = np.zeros((2 * self.m, 2))
        blocks = -(-self.n // _BLOCK)
        if parallel.splits_in_processes(_block_products):   # no GIL between the pieces: split
            products = parallel.empty((blocks, 2 * self.m, 2), self.dtype)
            parallel.split(_block_products, blocks, args=(self._buffer, V, _BLOCK, products), writes=(3,))
            for product in products:   # summed in block order, as below
                P += product
        else:
            for a0 in range(0, self.n, _BLOCK):  # the blocks' products, summed in block order (see _BLOCK)
                P += self._buffer[:, a0:a0 + _BLOCK] @ V[:, a0:a0 + _BLOCK].T
        if self._new is not None:
            t, col = self._new, 1
            for slot in self.slots:
                self._sy[slot, t] = P[slot, col]  # s_slot . y_new: the older pairs' s, and the new one's own
                self._yy[slot, t] = self._yy[t, slot] = P[self.m + slot, col]
            self._new = None
        if g is None:
            return None, None
        idx = np.array(self.slots)
        return P[idx, 0], P[self.m + idx, 0]


def _zeros(shape, dtype):
    """Zeros where a split's pieces may read them in a helper process (`parallel.empty`)."""
    a = parallel.empty(shape, dtype)
    a[...] = 0
    return a


def _block_products(start, stop, buffer, V, block, products):
    """Pass 1's blocks start..stop-1: products[b] = buffer's columns of block b times V's, transposed (a piece)."""
    for b in range(start, stop):
        np.matmul(buffer[:, b * block:(b + 1) * block], V[:, b * block:(b + 1) * block].T, out=products[b])


def _combine_blocks(start, stop, coefficients, buffer, scale, g, block, r):
    """Pass 2's blocks start..stop-1: r = buffer^T coefficients + scale g there (a piece of its split)."""
    n = r.shape[0]
    for a0 in range(start * block, min(stop * block, n), block):
        a1 = min(a0 + block, n)
        np.matmul(coefficients, buffer[:, a0:a1], out=r[a0:a1])
        r[a0:a1] += scale * g[a0:a1]

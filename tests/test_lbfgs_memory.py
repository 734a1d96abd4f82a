"""scratchnst.lbfgs_memory: H g by two passes over the stacked pairs, against the two-loop recursion."""

import numpy as np
import pytest

from scratchnst import parallel
from scratchnst.lbfgs_memory import _BLOCK, _BLOCK_2, PairMemory
from scratchnst.optim import lbfgs_direction


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def random_pair(rng, n):
    """(s, y, rho) with s.y > 0, as a step and its change of gradient on a convex stretch give."""
    s = rng.standard_normal(n)
    y = s * rng.uniform(0.2, 5.0, n) + 0.05 * rng.standard_normal(n)
    return s, y, 1.0 / float(np.dot(s, y))


@pytest.fixture(params=[1, 2, 3], ids=lambda k: f"{k} workers")
def workers(request):
    previous = parallel.set_workers(request.param)
    yield request.param
    parallel.set_workers(previous)


@pytest.mark.parametrize("n", [7, _BLOCK, _BLOCK + 1, _BLOCK_2 + 3 * _BLOCK + 9])  # less than a block of pass 1,
# one block, one more, several of pass 1 and more than one of pass 2
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 3e-6)])
def test_direction_is_the_two_loop_recursion(n, dtype, tol, workers):
    rng = np.random.default_rng(n)
    m = 4
    memory, pairs = PairMemory(m, n, dtype), []
    g = rng.standard_normal(n)
    np.testing.assert_array_equal(memory.direction(g), g.astype(dtype))  # no pairs: H = I
    for step in range(2 * m + 1):  # fills the rows, then reuses the oldest's
        s, y, rho = random_pair(rng, n)
        memory.add(s, y, rho)
        pairs = (pairs + [(s.astype(dtype), y.astype(dtype), rho)])[-m:]
        if step % 3 != 2:  # now and then two pairs in a row with no direction between (a skipped pair's iteration)
            g = rng.standard_normal(n)
            r = memory.direction(g)
            assert r.dtype == dtype and r.shape == (n,)
            assert rel_error(r, lbfgs_direction(g, pairs)) < tol
    assert len(memory) == m and [e[2] for e in memory.pairs] == [p[2] for p in pairs]


def test_the_result_does_not_depend_on_the_workers():
    rng = np.random.default_rng(1)
    n = 2 * _BLOCK_2 + 5  # several blocks of each pass: pass 2's split across the workers
    pairs = [random_pair(rng, n) for _ in range(7)]
    g = rng.standard_normal(n)
    results = []
    for count in (1, 2, 3):
        previous = parallel.set_workers(count)
        try:
            memory = PairMemory(5, n, np.float32)
            for pair in pairs:
                memory.add(*pair)
                memory.direction(g)
            results.append(memory.direction(g))
        finally:
            parallel.set_workers(previous)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_pairs_put_back_in_their_rows_give_the_same_bits():
    """What a resumed run does: the saved pairs added again, each in its own row, then the next direction."""
    rng = np.random.default_rng(2)
    n, m = 5000, 3
    memory = PairMemory(m, n, np.float32)
    for _ in range(4):  # with the fifth below, the rows are in use out of order: 2, 0, 1
        memory.add(*random_pair(rng, n))
        memory.direction(rng.standard_normal(n))
    memory.add(*random_pair(rng, n))  # pending: its products come with the next direction
    again = PairMemory(m, n, np.float32)
    for (s, y, rho), slot in zip(memory.pairs, memory.slots):
        again.add(s.copy(), y.copy(), rho, slot)
    assert list(again.slots) == list(memory.slots) and list(memory.slots) != sorted(memory.slots)
    g = rng.standard_normal(n)
    np.testing.assert_array_equal(again.direction(g), memory.direction(g))


def test_entries_taken_earlier_keep_their_values():
    rng = np.random.default_rng(3)
    n = 100
    memory = PairMemory(2, n, np.float64)
    first = random_pair(rng, n)
    memory.add(*first)
    taken = tuple(memory.pairs)  # what Iterate.state holds on to
    for _ in range(3):  # the row is reused twice over
        memory.add(*random_pair(rng, n))
    np.testing.assert_array_equal(taken[0][0], first[0])
    np.testing.assert_array_equal(taken[0][1], first[1])
    kept = tuple(memory.pairs)
    memory.clear()
    assert len(memory) == 0 and all(np.isfinite(entry[0]).all() for entry in kept)
    memory.add(*first)
    assert rel_error(memory.direction(first[0]), lbfgs_direction(first[0], [first])) < 1e-13


def test_the_rows_of_the_pairs_cannot_be_written_through():
    memory = PairMemory(2, 10, np.float64)
    memory.add(np.ones(10), np.ones(10), 0.1)
    with pytest.raises(ValueError):
        memory.pairs[0][0][0] = 5.0


@pytest.mark.parametrize("slot", [-1, 3, 0])
def test_a_row_that_is_not_free_is_refused(slot):
    memory = PairMemory(3, 10, np.float64)
    memory.add(np.ones(10), np.ones(10), 0.1, slot=0)
    with pytest.raises(ValueError, match="not a free row"):
        memory.add(np.ones(10), np.ones(10), 0.1, slot=slot)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pairs_added", [0, 1, 5])
def test_held_entries_and_the_negated_direction_are_exact(dtype, pairs_added):
    """direction(g, held, negate=True) is, bit for bit, -direction(g with the held entries 0): what
    optim.lbfgs asks for without copying g or negating r."""
    rng = np.random.default_rng(4)
    n = 3 * 2048 + 11
    pairs = [random_pair(rng, n) for _ in range(pairs_added)]
    g = rng.standard_normal(n)
    held = np.sort(rng.choice(n, 40, replace=False))
    pg = g.copy()
    pg[held] = 0
    plain, fused = PairMemory(3, n, dtype), PairMemory(3, n, dtype)
    for pair in pairs:
        plain.add(*pair)
        fused.add(*pair)
    expected = plain.direction(pg)
    given = g.copy()
    got = fused.direction(g, held, negate=True)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, -expected)
    np.testing.assert_array_equal(g, given)  # g itself untouched


def test_an_entry_held_alone_keeps_its_values_too():
    """Not only a tuple of them (what Iterate.state keeps): any reference to an entry is a holder."""
    rng = np.random.default_rng(5)
    memory = PairMemory(1, 50, np.float64)
    first = random_pair(rng, 50)
    memory.add(*first)
    entry = memory.pairs[0]
    memory.add(*random_pair(rng, 50))  # takes the only row
    np.testing.assert_array_equal(entry[0], first[0])
    np.testing.assert_array_equal(entry[1], first[1])

"""Which pages of memory NumPy asks Linux for: small ones for a run that touches its arrays once.

NumPy asks for transparent huge pages (2 MiB) for every array of 4 MiB or more. Where memory was
used before, huge pages are the faster kind. But a fresh 2 MiB page has to come from a free
block of that size, and on a virtual machine that reports its free blocks to the host (free page
reporting, as Firecracker's and most clouds' balloons do) such a block usually has to be backed by
the host again when it is first touched; small pages come from memory the guest has just freed.
Measured on a 2-core Firecracker VM:

- touching 37 MB of fresh arrays: 200-450 ms in huge pages, 13 ms in small ones (5 ms either
  way once the memory is reused);
- `scratchnst apply` on a 512x512 photo: 1.3-2.2 s for the first photo in huge pages, 0.43 s in
  small ones (0.36 against 0.41 s for the next ones, same size);
- `scratchnst stylize`: 0.3-1.4 s sooner at 320 and 512 px, the same time per iteration.

So the runs that touch most of their memory once (stylize's optimisation, applying a trained
network) use small pages; training, thousands of steps over the same arrays, keeps NumPy's choice.
It keeps glibc's malloc as it is, too: with its thresholds raised so that freed memory stays with
the process (MALLOC_MMAP_THRESHOLD_ 32 MiB, MALLOC_TRIM_THRESHOLD_ 4 GB, MALLOC_TOP_PAD_ 64 MiB),
300 steps of `scratchnst train` on one core took 30k page faults instead of 213k, but 56.8 s
against 54.9, and 200 steps 36-43 s either way (2026-12-07, 2-core AMD EPYC, alternated). The
transformer's passes alone, in a loop, gained 9-18%; the whole step, nothing above the noise.
"""

import contextlib

try:  # NumPy's own switch (used by its NUMPY_MADVISE_HUGEPAGE variable)
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # NumPy 1.x
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None


@contextlib.contextmanager
def small_pages():
    """Context: the arrays NumPy allocates inside are not given huge pages; NumPy's setting is restored after.

    The setting is the process's, so arrays other threads allocate meanwhile get small pages too
    (the worker threads of `parallel` are part of the same run).
    """
    if _set_madvise_hugepage is None:
        yield
        return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)

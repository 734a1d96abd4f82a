"""How many CPUs this process may run on: the bound of --threads, and the bench's default.

Standard library only: the command line asks before NumPy is imported, whose BLAS reads its thread
count once, when it loads.
"""

import os


def available_cpus():
    """The CPUs this process may run on (its affinity mask on Linux, else every CPU), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux, or the mask cannot be read
        return os.cpu_count() or 1

"""Run the tests under other CPUs' OpenBLAS kernels and thread counts: a verdict must not depend on them.

    python tests/kernel_sweep.py                    # the numerical tests, every kernel x 1 and 2 threads
    python tests/kernel_sweep.py --all              # the whole suite instead
    python tests/kernel_sweep.py --kernels Zen Prescott --threads 1 --jobs 2   # what CI runs
    python tests/kernel_sweep.py --kernels Zen -- -x -k conv                    # after --: pytest flags

OpenBLAS picks its matrix-product kernel from the CPU it finds; OPENBLAS_CORETYPE makes it use another
one here: Haswell (AVX2), SkylakeX (AVX-512, only where this CPU has it), Zen (AMD), Prescott (SSE3,
an old CPU's). Each kernel rounds differently in the last bits, as another machine's would, so a test
that passes under all of them, with 1 and 2 BLAS threads, does not hang on one CPU's rounding.

Prints one row per run (kernel, threads, passed, failed, skipped, seconds) and exits 1 if any run failed.
--jobs N runs N of them at once, for a machine with the cores to spare: with one BLAS thread each,
two runs on 2 cores take little longer than one (CI's two kernels: about 4 minutes instead of 7).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests whose numbers go through BLAS: layers, networks, costs, optimisers, the stylize loop.
NUMERICAL = [
    "tests/test_layers.py",
    "tests/test_gradcheck.py",
    "tests/test_costs.py",
    "tests/test_optim.py",
    "tests/test_optim_resume.py",
    "tests/test_networks.py",
    "tests/test_transfer.py",
    "tests/test_transformer_layers.py",
    "tests/test_transformer_net.py",
    "tests/test_fire_rows.py",
    "tests/test_lbfgs_memory.py",
    "tests/test_winograd.py",
    "tests/test_tap_planes.py",
]


def available_kernels():
    """The kernels this CPU can run: SkylakeX only with AVX-512 (it would crash elsewhere)."""
    kernels = ["Haswell", "Zen", "Prescott"]
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512f" in flags:
        kernels.insert(1, "SkylakeX")
    return kernels


def count(summary, word):
    found = re.search(rf"(\d+) {word}", summary)
    return int(found.group(1)) if found else 0


def start(kernel, threads, tests, pytest_args):
    """Start one run's pytest -> (Popen, start time); its output goes to an unnamed temporary file
    (a pipe nobody reads while another run is waited for could fill and stall it)."""
    env = dict(os.environ, OPENBLAS_CORETYPE=kernel, OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    output = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *pytest_args],
                               cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    return process, output, time.perf_counter()


def finish(kernel, threads, process, output, started):
    """Wait for a started run -> its row: kernel, threads, passed, failed, skipped, seconds, status, failures."""
    status = process.wait()
    seconds = time.perf_counter() - started
    output.seek(0)
    lines = output.read().strip().splitlines()
    output.close()
    summary = lines[-1] if lines else ""
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"kernel": kernel, "threads": threads, "passed": count(summary, "passed"),
            "failed": count(summary, "failed") + count(summary, "error"), "skipped": count(summary, "skipped"),
            "seconds": seconds, "status": status, "failures": failures}


def sweep(runs, tests, pytest_args, jobs=1):
    """Yield the row of each (kernel, threads) in `runs`, in their order, `jobs` of them running at once."""
    pending = list(runs)
    running = []
    while pending or running:
        while pending and len(running) < jobs:
            kernel, threads = pending.pop(0)
            running.append((kernel, threads, *start(kernel, threads, tests, pytest_args)))
        yield finish(*running.pop(0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", nargs="+", default=available_kernels(), metavar="KERNEL",
                        help="OPENBLAS_CORETYPE values (default: every one this CPU runs)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], metavar="N", help="BLAS thread counts")
    parser.add_argument("--all", action="store_true", help="the whole suite, not only the numerical tests")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at once (default: 1)")
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = [a for a in pytest_args if a != "--"]
    if "SkylakeX" in args.kernels and "SkylakeX" not in available_kernels():
        parser.error("SkylakeX needs a CPU with AVX-512, which this one lacks")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    tests = [] if args.all else NUMERICAL
    print(f"{'kernel':<10} {'threads':>7} {'passed':>7} {'failed':>7} {'skipped':>7} {'seconds':>8}", flush=True)
    bad = False
    runs = [(kernel, threads) for kernel in args.kernels for threads in args.threads]
    for row in sweep(runs, tests, pytest_args, args.jobs):
        print(f"{row['kernel']:<10} {row['threads']:>7} {row['passed']:>7} {row['failed']:>7} "
              f"{row['skipped']:>7} {row['seconds']:>8.1f}", flush=True)
        for line in row["failures"]:
            print(f"    {line}", flush=True)
        # pytest exits 0 when all passed, 5 when nothing was collected: both are no verdict against us
        bad |= row["status"] not in (0,) or row["passed"] == 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

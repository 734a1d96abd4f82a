"""A stop that something swallowed must not block the ones after it (cli.interrupts).

The red team's case: a Ctrl-C in the first half second of `scratchnst train` raised KeyboardInterrupt
while NumPy was being imported, inside an `abc.register` that NumPy's compiled (Cython) code runs under
a bare `except:`. The stop was lost, and as it was still marked "on its way", every later Ctrl-C,
SIGTERM and SIGHUP was ignored until the run ended. The unit tests swallow a stop as that `except:`
does; the subprocess test makes the real command's Ctrl-C land in NumPy's own `except:`.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scratchnst.__main__ as entry
from scratchnst.cli import interrupts
from scratchnst.errors import Interrupted

from test_training import SWIRLS, write_photo

REPO = Path(__file__).resolve().parents[1]
NEVER = 3600   # RESEND_AFTER for the tests of one mechanism: the watcher must not send anything meanwhile


def swallowed(number):
    """Deliver the signal `number` and swallow what its handler raises, as a bare `except:` does."""
    try:
        signal.raise_signal(number)   # the handler runs inside raise_signal, in this thread
    except BaseException:   # noqa: B036 - the point: as NumPy's compiled code does
        return True
    return False


@pytest.mark.parametrize("first, then, status", [
    (signal.SIGINT, signal.SIGINT, 130),
    (signal.SIGINT, signal.SIGTERM, 143),
    (signal.SIGTERM, signal.SIGHUP, 129),
], ids=["ctrl-c, ctrl-c", "ctrl-c, sigterm", "sigterm, sighup"])
def test_a_stop_after_a_swallowed_one_raises(monkeypatch, first, then, status):
    monkeypatch.setattr(interrupts, "RESEND_AFTER", NEVER)
    with interrupts.stops_interrupt():
        assert swallowed(first)
        with pytest.raises(KeyboardInterrupt) as stop:
            signal.raise_signal(then)
    assert getattr(stop.value, "exit_status", None) == status


def test_a_single_swallowed_stop_is_sent_again_and_ends_the_block(monkeypatch):
    """No second Ctrl-C needed: the watcher sends the stop again until it raises where it can."""
    monkeypatch.setattr(interrupts, "RESEND_AFTER", 0.05)
    went_on = []
    with pytest.raises(Interrupted) as stop:
        with interrupts.stops_interrupt():
            assert swallowed(signal.SIGTERM)
            deadline = time.monotonic() + 60   # a bound, not a timing assert: the stop comes long before
            while time.monotonic() < deadline:
                went_on.append(1)   # the run goes on, computing
                time.sleep(0.01)
            pytest.fail("the swallowed SIGTERM was never sent again")
    assert stop.value.exit_status == 143 and went_on


def test_a_swallowed_stop_then_one_during_a_file_write_waits_until_the_file_is_whole(monkeypatch):
    monkeypatch.setattr(interrupts, "RESEND_AFTER", NEVER)
    written = []
    with interrupts.stops_interrupt():
        assert swallowed(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            with interrupts.holding_stops():
                signal.raise_signal(signal.SIGINT)   # held back
                written.append("the file is whole")
        assert written == ["the file is whole"]


def test_a_second_stop_during_the_cleanup_of_the_first_is_ignored(monkeypatch):
    """In a `finally`, in an `except` (and in an error raised there), the first stop is being dealt with."""
    monkeypatch.setattr(interrupts, "RESEND_AFTER", NEVER)
    cleaned = []
    with pytest.raises(KeyboardInterrupt) as stop:
        with interrupts.stops_interrupt():
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                signal.raise_signal(signal.SIGTERM)   # ignored: no Interrupted replaces the Ctrl-C here
                cleaned.append("finally")
    assert type(stop.value) is KeyboardInterrupt and cleaned == ["finally"]

    with interrupts.stops_interrupt():
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            try:
                raise OSError("a file the cleanup could not write")
            except OSError:
                signal.raise_signal(signal.SIGINT)   # ignored: that error came while handling the stop
            cleaned.append("except")
    assert cleaned == ["finally", "except"]


def test_once_the_results_are_being_saved_later_stops_are_ignored_until_the_block_ends(monkeypatch):
    """As train and stylize do: `except KeyboardInterrupt`, save inside ignoring_stops, then return."""
    monkeypatch.setattr(interrupts, "RESEND_AFTER", NEVER)
    with interrupts.stops_interrupt():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            with interrupts.ignoring_stops():
                signal.raise_signal(signal.SIGTERM)   # dropped, as before
        signal.raise_signal(signal.SIGINT)   # on the way out of the block: no second "interrupted" line
    with pytest.raises(KeyboardInterrupt):   # and the next block starts afresh
        with interrupts.stops_interrupt():
            signal.raise_signal(signal.SIGINT)


def test_the_handlers_are_put_back_after_a_swallowed_stop(monkeypatch):
    monkeypatch.setattr(interrupts, "RESEND_AFTER", NEVER)
    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {n: signal.getsignal(n) for n in numbers}
    with interrupts.stops_interrupt():
        assert swallowed(signal.SIGHUP)
    assert {n: signal.getsignal(n) for n in numbers} == before


@pytest.mark.parametrize("number, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
                         ids=["sigterm", "sighup", "ctrl-c"])
def test_debug_keeps_the_status_of_the_stop(monkeypatch, capsys, number, status):
    """With --debug cli.main lets the stop through for its traceback: not a Ctrl-C "while starting"."""
    import scratchnst.cli

    def main_under_debug():
        with interrupts.stops_interrupt():
            signal.raise_signal(number)

    monkeypatch.setattr(scratchnst.cli, "main", main_under_debug)
    assert entry.run() == status
    err = capsys.readouterr().err
    assert "Traceback" in err and "while starting" not in err


# The real command: a Ctrl-C lands in the register that NumPy's compiled code runs under a bare
# `except:` (Cython registers its memoryview type with collections.abc.Sequence as its module loads),
# while `train` imports NumPy inside cli.main's stops_interrupt.
CTRL_C_IN_NUMPYS_IMPORT = """
import abc, signal, sys
from scratchnst.cli import interrupts

real_register = abc.ABCMeta.register

def register(cls, subclass):
    if cls.__name__ == "Sequence" and signal.getsignal(signal.SIGINT) is interrupts._raise_once:
        abc.ABCMeta.register = real_register   # once
        print("Ctrl-C in Sequence.register", flush=True)
        signal.raise_signal(signal.SIGINT)
    return real_register(cls, subclass)

abc.ABCMeta.register = register
sys.argv[0] = "scratchnst"
from scratchnst.__main__ import run
status = run()
print("the import went on:", "scratchnst.cli.train_command" in sys.modules, flush=True)
sys.exit(status)
"""


def test_a_ctrl_c_swallowed_while_numpy_loads_still_stops_train(tmp_path, squeezenet_weights_path):
    photos = tmp_path / "photos"
    write_photo(photos / "a.png", 40, 56, seed=1)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
    env.pop("SCRATCHNST_WORKERS", None)
    argv = [sys.executable, "-c", CTRL_C_IN_NUMPYS_IMPORT, "train", str(SWIRLS), str(photos),
            "-o", str(tmp_path / "net.h5"), "--weights", str(squeezenet_weights_path), "--size", "32",
            "--iters", "100000"]
    with subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the Ctrl-C was lost: the run went on\n{out}\n{err}")
    if "Ctrl-C in Sequence.register" not in out:
        pytest.skip("NumPy was loaded before cli.main's stops_interrupt, or registers nothing with Sequence")
    if "the import went on: True" not in out:
        pytest.skip("this NumPy lets the KeyboardInterrupt through: nothing swallowed it")
    assert process.returncode == 130, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scratchnst: interrupted (Ctrl-C)") and "Traceback" not in err, err

"""Tests of scratchnst.training_processes: training's helper processes give the threads' step, bit for
bit; their messages; and a helper that fails, dies or lingers ends in one line, with no process left."""

import io
import os
import select
import signal

import numpy as np
import pytest

from scratchnst import checkpoint, parallel, training, training_processes
from scratchnst.errors import UserError

from test_training import LAYERS, SWIRLS, TINY, photos, tiny_problem  # noqa: F401  (photos: a fixture)


@pytest.fixture
def workers():
    """parallel.set_workers for one test, restored after it."""
    previous = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(previous)


def settings_of(style_x, tv_weight=0.5):
    return (style_x, LAYERS["content_layer"], LAYERS["style_layers"], 10.0, 4.0, tv_weight)


def start_helpers(count, net, style_x, losses=None):
    """Helpers for the loss of settings_of(style_x), with the style targets of `losses` (or new ones)."""
    targets = (losses or [training.make_loss_function(net, *settings_of(style_x))])[0].targets
    return training_processes.Helpers(count, net, targets, *settings_of(style_x)[1:])


# ---------------------------------------------------------------------------------------- messages
def test_messages_carry_values_and_arrays_exactly():
    stream = io.BytesIO()
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(np.pi), "c": np.zeros((0, 4), np.uint8),
              "d": np.asfortranarray(np.random.default_rng(0).normal(size=(3, 2)))}
    training_processes.write_message(stream, "step", {"J": 1.5, "names": ["x/y"]}, arrays)
    training_processes.write_message(stream, "ready")
    stream.seek(0)
    kind, values, got = training_processes.read_message(stream)
    assert kind == "step" and values == {"J": 1.5, "names": ["x/y"]} and list(got) == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and np.array_equal(got[name], a)
    assert training_processes.read_message(stream) == ("ready", {}, {})
    with pytest.raises(EOFError):
        training_processes.read_message(stream)


def test_a_message_cut_short_or_of_another_type_is_refused():
    stream = io.BytesIO()
    training_processes.write_message(stream, "step", {}, {"a": np.ones(100, np.float32)})
    cut = io.BytesIO(stream.getvalue()[:-10])
    with pytest.raises(EOFError):
        training_processes.read_message(cut)
    stream = io.BytesIO()
    training_processes.write_message(stream, "step", {}, {"a": np.ones(3, np.int64)})
    stream.seek(0)
    with pytest.raises(ValueError, match="int64"):
        training_processes.read_message(stream)


# ----------------------------------------------------------------------------------------- the step
@pytest.mark.parametrize("count, batch, dtype", [(1, 2, np.float64), (2, 3, np.float64), (1, 3, np.float32)])
def test_helpers_give_the_threads_step_bit_for_bit(workers, count, batch, dtype):
    net, params, x, style_x = tiny_problem(dtype, seed=7, batch=batch)
    workers(count + 1)
    losses = training.make_loss_functions(net, *settings_of(style_x))
    threads = training.batch_loss_and_grads(params, x, losses)
    ours = training.make_loss_functions(net, *settings_of(style_x), count=1)   # as train makes them for helpers
    assert len(ours) == 1
    with start_helpers(count, net, style_x, losses) as helpers:
        for _ in range(2):   # and again: a helper's caches of one step do not leak into the next
            J, grads, parts = training.batch_loss_and_grads(params, x, ours, helpers=helpers)
            assert J == threads[0] and parts == threads[2] and list(grads) == list(threads[1])
            for name, g in grads.items():
                assert g.dtype == dtype and np.array_equal(g, threads[1][name]), name
        procs = list(helpers._procs)
        assert all(os.getsid(proc.pid) == proc.pid for proc in procs)   # no terminal's Ctrl-C reaches them
    assert all(proc.poll() is not None for proc in procs)


def test_one_photo_is_not_sent_to_a_helper(workers, monkeypatch):
    net, params, x, style_x = tiny_problem(np.float64, seed=8, batch=1)
    workers(1)
    alone = training.loss_and_grads(params, x, training.make_loss_function(net, *settings_of(style_x)))
    with start_helpers(1, net, style_x) as helpers:
        monkeypatch.setattr(helpers, "send", lambda *args: pytest.fail("a piece was sent"))
        J, grads, _ = training.batch_loss_and_grads(params, x, training.make_loss_functions(net, *settings_of(style_x)),
                                                    helpers=helpers)
    assert J == alone[0] and all(np.array_equal(grads[n], alone[1][n]) for n in grads)


# ---------------------------------------------------------------------------------------- failures
def test_a_helper_that_dies_is_told_in_one_line(workers):
    net, params, x, style_x = tiny_problem(np.float32, seed=9, batch=2)
    workers(2)
    losses = training.make_loss_functions(net, *settings_of(style_x))
    with start_helpers(1, net, style_x) as helpers:
        helpers._procs[0].send_signal(signal.SIGKILL)
        helpers._procs[0].wait()
        with pytest.raises(UserError) as info:
            training.batch_loss_and_grads(params, x, losses, helpers=helpers)
    message = str(info.value)
    assert "helper process of --threads stopped (killed by SIGKILL)" in message and "\n" not in message
    assert "out of memory" in message and message.endswith("run again with fewer --threads")


def test_a_helper_that_cannot_start_says_why(workers, monkeypatch):
    net, _, _, style_x = tiny_problem(np.float32, seed=9)
    monkeypatch.setattr(training_processes, "HELPER_COMMAND", "import sys; sys.exit('scratchnst is not here')")
    with pytest.raises(UserError, match="stopped: scratchnst is not here; run again with fewer --threads"):
        start_helpers(1, net, style_x)


@pytest.mark.parametrize("count", [1, 2])
def test_a_helpers_error_is_one_line_every_helper_is_heard_and_no_step_follows(workers, count):
    """The first helper fails, the second (if any) answers: both are read before the error is raised,
    so nothing is left in a pipe or in use in shared memory; the helpers take no step after it."""
    net, params, x, style_x = tiny_problem(np.float32, seed=10, batch=count + 1)
    workers(count + 1)
    broken = {name: p for name, p in params.items() if name != "conv1/kernel"}
    with start_helpers(count, net, style_x) as helpers:
        helpers.send(broken, [x[1:2]])
        if count == 2:   # the second one gets what it needs: its answer must still be read
            training_processes.write_message(helpers._procs[1].stdin, "step", {},
                                             {**{f"param/{n}": p for n, p in params.items()}, "x": x[2:]},
                                             helpers._shared[1].halves()[0])
            helpers._waiting = 2
        with pytest.raises(UserError) as info:
            helpers.receive(list(params))
        for replies in helpers._replies:   # every answer was read: nothing is left in a pipe
            assert not select.select([replies], [], [], 0.5)[0]
        with pytest.raises(UserError):
            helpers.send(params, [x[1:2]])
    message = str(info.value)
    assert message == ("a helper process of --threads failed (KeyError: 'conv1/kernel'); run again with fewer "
                       "--threads")


def steps_with_threads_and_helpers(workers, seed, batch, count):
    """A tiny problem's step with count + 1 threads, then with count helpers: both (J, grads, parts)."""
    net, params, x, style_x = tiny_problem(np.float64, seed=seed, batch=batch)
    workers(count + 1)
    losses = training.make_loss_functions(net, *settings_of(style_x))
    threads = training.batch_loss_and_grads(params, x, losses)
    with start_helpers(count, net, style_x, losses) as helpers:
        return threads, training.batch_loss_and_grads(params, x, losses, helpers=helpers)


def test_a_batch_smaller_than_the_helpers_uses_fewer(workers):
    threads, helpers = steps_with_threads_and_helpers(workers, seed=11, batch=2, count=2)
    assert helpers[0] == threads[0] and all(np.array_equal(helpers[1][n], threads[1][n]) for n in threads[1])


def test_what_a_helper_prints_does_not_break_its_answers(workers, tmp_path, monkeypatch):
    """A module that prints when Python starts (a sitecustomize, say): its stdout is not the replies' pipe."""
    (tmp_path / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    threads, helpers = steps_with_threads_and_helpers(workers, seed=12, batch=2, count=1)
    assert helpers[0] == threads[0]


def test_a_helper_answering_out_of_turn_is_one_line(workers, monkeypatch):
    net, params, x, style_x = tiny_problem(np.float32, seed=13, batch=2)
    workers(2)
    losses = training.make_loss_functions(net, *settings_of(style_x))
    with start_helpers(1, net, style_x) as helpers:
        helpers.send(params, [x[1:]])
        monkeypatch.setattr(training_processes, "_MAGIC", b"XXXX")   # what it sends is no longer a message here
        with pytest.raises(UserError, match="answered out of turn .*not a helper message.*; run again with fewer "):
            helpers.receive(list(params))
        procs = list(helpers._procs)
    assert all(proc.poll() is not None for proc in procs)


# ------------------------------------------------------------------------------------------ training
def test_training_with_helpers_resumes_bit_for_bit_and_leaves_no_process(workers, photos, squeezenet_weights_path,
                                                                         tmp_path, monkeypatch):
    """Two workers, batches of two: one helper per run, ended with it, Ctrl-C included; a run stopped
    after step 2 and resumed ends as one never stopped, its last step on whole photos."""
    started = []

    class Recorded(training_processes.Helpers):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(list(self._procs))

    monkeypatch.setattr(training_processes, "Helpers", Recorded)
    workers(2)
    options = dict(TINY, iters=4, final_steps=1, seed=3, weights=str(squeezenet_weights_path))
    straight = training.train(SWIRLS, photos, **options)
    assert len(started) == 1 and straight.settings["batch"] == 2
    ckpt = tmp_path / "run.ckpt.npz"

    def interrupt_at_two(progress):
        if progress.iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(SWIRLS, photos, checkpoint_path=ckpt, checkpoint_every=2, callback=interrupt_at_two, **options)
    resumed = training.train(SWIRLS, photos, resume=checkpoint.load(ckpt), **options)
    assert len(started) == 3
    for name, p in straight.params.items():
        assert np.array_equal(resumed.params[name], p), name
    assert all(proc.poll() is not None for procs in started for proc in procs)


def test_a_helper_the_system_refuses_to_start_is_one_line(monkeypatch):
    net, _, _, style_x = tiny_problem(np.float32, seed=9)

    def no_more_processes(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(training_processes.subprocess, "Popen", no_more_processes)
    with pytest.raises(UserError, match=r"could not start a helper process for --threads \(Resource temporarily "
                                        r"unavailable\); run again with fewer --threads"):
        start_helpers(1, net, style_x)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_a_helper_started_inside_hold_takes_another_core_than_the_caller(workers):
    """hold() pins the calling thread to one core; a process it starts inherits that core unless it moves."""
    net, _, _, style_x = tiny_problem(np.float32, seed=9)
    workers(2)
    cores = sorted(os.sched_getaffinity(0))
    with parallel.hold():
        mine = os.sched_getaffinity(0)
        with start_helpers(1, net, style_x) as helpers:
            theirs = os.sched_getaffinity(helpers._procs[0].pid)
    assert mine == {cores[0]} and theirs == {cores[1]}


def test_a_helper_that_cannot_map_the_shared_memory_gets_everything_through_its_pipes(workers, monkeypatch):
    """Told a size larger than the file, the helper's mmap fails: it says so, and the parent sends by pipe."""
    real = training_processes.SharedBuffer

    class Misstated(real):
        def __init__(self, size):
            super().__init__(size)
            self.size = 2 * size

    monkeypatch.setattr(training_processes, "SharedBuffer", Misstated)
    net, params, x, style_x = tiny_problem(np.float64, seed=14, batch=2)
    workers(2)
    losses = training.make_loss_functions(net, *settings_of(style_x))
    threads = training.batch_loss_and_grads(params, x, losses)
    with start_helpers(1, net, style_x, losses) as helpers:
        assert helpers._shared[0].memory is None
        J, grads, _ = training.batch_loss_and_grads(params, x, losses, helpers=helpers)
    assert J == threads[0] and all(np.array_equal(grads[n], threads[1][n]) for n in grads)

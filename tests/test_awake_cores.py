"""scratchnst.awake_cores: spinners at SCHED_IDLE on a run's cores while it holds them, none after."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scratchnst import awake_cores, parallel

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or len(os.sched_getaffinity(0)) < 2
                                or awake_cores._cpu_quota(),
                                reason="spinners need Linux's SCHED_IDLE, 2 cores and no CPU quota")


def _state(pid):
    """The process's scheduler state letter (R running, S sleeping, ...), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _wait_for(condition, seconds=5.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def fresh():
    awake_cores.stop()
    previous = parallel.set_workers(2)
    yield
    parallel.set_workers(previous)
    awake_cores.stop()


@linux_only
def test_a_run_on_two_cores_has_an_idle_priority_spinner_on_each_spinning_only_inside_hold(fresh):
    cores = sorted(os.sched_getaffinity(0))[:2]
    with parallel.hold(pieces=False):
        spinners = dict(awake_cores._spinners)
        if not spinners and awake_cores._broken:
            pytest.skip("a process here cannot pin itself or take SCHED_IDLE (a container's seccomp?)")
        assert sorted(spinners) == cores
        for core, spinner in spinners.items():
            assert os.sched_getscheduler(spinner.pid) == os.SCHED_IDLE
            assert os.sched_getaffinity(spinner.pid) == {core}
            assert _wait_for(lambda: _state(spinner.pid) == "R")  # spinning
    for spinner in spinners.values():  # blocked on its pipe: no CPU time at all
        assert _wait_for(lambda: _state(spinner.pid) == "S")
    with parallel.hold(pieces=False):
        assert awake_cores._spinners == spinners  # the same ones again, not new processes
        with parallel.hold(pieces=False):  # nested: still spinning when the inner one ends
            pass
        assert all(_wait_for(lambda s=s: _state(s.pid) == "R") for s in spinners.values())
    awake_cores.stop()
    assert all(_wait_for(lambda s=s: s.poll() is not None) for s in spinners.values())


@linux_only
def test_none_with_one_worker_or_when_the_environment_says_no(fresh, monkeypatch):
    parallel.set_workers(1)
    with parallel.hold(pieces=False):
        assert awake_cores._spinners == {}
    parallel.set_workers(2)
    monkeypatch.setenv(awake_cores.ENVIRONMENT_VARIABLE, "0")
    with parallel.hold(pieces=False):
        assert awake_cores._spinners == {}
    assert not awake_cores.enabled([0])


CGROUPS = [  # (/proc/self/cgroup, {file: text}, capped)
    ("0::/\n", {"/sys/fs/cgroup/cpu.max": "200000 100000\n"}, True),  # a container's own namespace
    ("0::/\n", {"/sys/fs/cgroup/cpu.max": "max 100000\n"}, False),
    ("0::/user.slice/run-1.scope\n", {"/sys/fs/cgroup/user.slice/run-1.scope/cpu.max": "50000 100000\n"}, True),
    ("0::/user.slice/run-1.scope\n", {"/sys/fs/cgroup/user.slice/cpu.max": "50000 100000\n",  # a parent's cap
                                        "/sys/fs/cgroup/user.slice/run-1.scope/cpu.max": "max 100000\n"}, True),
    ("0::/user.slice/run-1.scope\n", {"/sys/fs/cgroup/cpu.max": "50000 100000\n"}, True),
    ("0::/system.slice\n", {"/sys/fs/cgroup/system.slice/cpu.max": "max 100000\n"}, False),
    ("4:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n",
     {"/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n"}, True),
    ("4:cpu,cpuacct:/docker/abc\n", {"/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "-1\n"}, False),
    ("2:memory:/x\n", {"/sys/fs/cgroup/cpu.max": "50000 100000\n"}, False),  # no cpu controller named
    ("", {}, False),
]


@pytest.mark.parametrize("proc, files, capped", CGROUPS)
def test_a_cgroup_cpu_quota_turns_them_off(proc, files, capped, monkeypatch, tmp_path):
    """A core kept busy would use the quota up and get the run throttled: the process's own cgroup and those above."""
    import builtins

    real_open = builtins.open
    fake = {"/proc/self/cgroup": proc, **files}

    def fake_open(path, *args, **kwargs):
        path = str(path)
        if path.startswith(("/sys/fs/cgroup", "/proc/self/cgroup")):
            if path not in fake:
                raise FileNotFoundError(path)
            target = tmp_path / "file"
            target.write_text(fake[path])
            return real_open(target, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert awake_cores._cpu_quota() == capped
    monkeypatch.delenv(awake_cores.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(awake_cores, "_broken", False)
    monkeypatch.setattr(awake_cores, "_quota", None)  # read again
    can = hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setaffinity")
    assert awake_cores.enabled([0, 1]) == (can and not capped)


@linux_only
def test_a_module_in_the_current_folder_does_not_replace_the_spinners_own(tmp_path):
    """The spinners run isolated (-I): a select.py or signal.py where the user works is not theirs."""
    marker = tmp_path / "ran"
    for name in ("select.py", "signal.py", "os.py"):
        (tmp_path / name).write_text(f"open({str(marker)!r}, 'a').write('{name}')\n")
    script = textwrap.dedent("""
        import time
        from scratchnst import awake_cores, parallel
        parallel.set_workers(2)
        with parallel.hold(pieces=False):
            time.sleep(0.3)
            print(len(awake_cores._spinners), awake_cores._broken,
                  all(s.poll() is None for s in awake_cores._spinners.values()))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(awake_cores.__file__).parents[1])}
    # the run itself with -P (its own path safe), in that folder: the spinners start there
    done = subprocess.run([sys.executable, "-P", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False", "True"]
    assert not marker.exists()


@linux_only
def test_the_spinners_end_with_a_killed_run_and_ignore_ctrl_c(tmp_path):
    """SIGKILL leaves no spinner behind; Ctrl-C (SIGINT to the process group) prints nothing from them."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from scratchnst import awake_cores, parallel
        parallel.set_workers(2)
        with parallel.hold(pieces=False):
            print(" ".join(str(s.pid) for s in awake_cores._spinners.values()), flush=True)
            time.sleep(60)
    """))
    for how in (signal.SIGKILL, signal.SIGINT):
        run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
        pids = [int(p) for p in run.stdout.readline().split()]
        assert len(pids) == 2
        os.killpg(run.pid, how)  # the whole group, as a terminal's Ctrl-C does
        run.wait(timeout=10)
        assert all(_wait_for(lambda p=p: _state(p) in (None, "Z")) for p in pids)
        stderr = run.stderr.read()
        assert stderr.count("Traceback") == (1 if how == signal.SIGINT else 0)  # the run's own KeyboardInterrupt


def test_results_do_not_depend_on_them(fresh, monkeypatch):
    """A step with spinners and without: the same pixels (they only keep cores awake)."""
    import numpy as np

    from scratchnst import networks
    from scratchnst.cli import bench

    net = networks.Network("squeezenet", bench.random_params("squeezenet"))
    x = np.random.default_rng(0).uniform(-100, 100, (1, 64, 64, 3)).astype(np.float32)
    grads = {"fire5": np.ones(net.forward(x, ["fire5"])["fire5"].shape, np.float32)}
    with_spin = bench.scratchnst_step(net, x, grads)
    monkeypatch.setenv(awake_cores.ENVIRONMENT_VARIABLE, "0")
    np.testing.assert_array_equal(bench.scratchnst_step(net, x, grads), with_spin)

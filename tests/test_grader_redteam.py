"""The red team: submissions that try to get marks without the work, or to hang, break or spy on the
grader. Each is graded as a teacher grades (`grade(..., contained=True)`, in bubblewrap) and must
get 0 for the exercises it touches, leave the others' grades alone, leave no process behind, end
within its budget, and change nothing outside its scratch folder (the installed package, the
submission itself, the teacher's files). Without a usable bubblewrap the contained runs are skipped
(with the reason); the attacks that the uncontained fallback must also survive (hangs, floods,
forged answers, stray processes) run there too.
"""

import contextlib
import glob
import hashlib
import json
import os
import py_compile
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from exercise_helpers import plant, rendered
import scratchnst
from scratchnst import exercises
from scratchnst.exercises import batch, sandbox
from scratchnst.exercises.grading import check_containment

PACKAGE = Path(scratchnst.__file__).resolve().parent
TOKEN = "redteam" + secrets.token_hex(4)  # in every process an attack starts: found if one outlives grading
BUDGET = 90.0  # seconds one attacked submission may take in all: generous for a loaded 2-core machine
BWRAP, WHY = sandbox.bwrap_status()
needs_bwrap = pytest.mark.skipif(not BWRAP, reason=f"no sandbox here: {WHY}")


def digest(folder):
    """One hash of every file under folder (names and bytes; symlinks by their target)."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(folder)).encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _parent(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), 0))


def leftovers(scope=None):
    """Processes that outlived grading: an attack's (TOKEN in its command line), or one of this test's
    grading (its scratch folder, under `scope`, in its own command line or in an ancestor's: a worker
    in bubblewrap sees only /sub). Graders that other test runs or teachers run at the same time on
    this machine are not ours, and are left out."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        cmdline = _cmdline(pid)
        ours = TOKEN in cmdline
        ancestor, hops = pid, 0
        while scope is not None and not ours and ancestor and hops < 6:
            ours = str(scope) in _cmdline(ancestor)
            ancestor, hops = _parent(ancestor), hops + 1
        if ours:
            found.append((pid, cmdline[:120]))
    return found


@contextlib.contextmanager
def scratch_under(tmp_path):
    """The grader's scratch folders under tmp_path/scratch while it runs: their names in its processes'
    command lines tell this test's processes from those of graders running beside it."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    tempfile.tempdir = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = None


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """An answer key and a student copy, made once; each attack works on a copy of one of them."""
    base = tmp_path_factory.mktemp("pristine")
    exercises.make_student_copy(base / "key", solutions=True)
    exercises.make_student_copy(base / "stub", selfcheck=True)
    return base


@pytest.fixture
def teacher(tmp_path, monkeypatch):
    """The teacher's side: a secret in the environment, a private file, a listening socket."""
    monkeypatch.setenv("TEACHER_SECRET", TOKEN + "-env")
    home = tmp_path / "teacher"
    home.mkdir()
    (home / "grades.csv").write_text("alice,100\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0)
    yield home, listener
    listener.close()


def run_attack(pristine, tmp_path, teacher, base, plants, contained=True, setup=None, only=None, **options):
    """Grade one attacked submission; check the promises that hold for every attack; return the Report."""
    home, listener = teacher
    submission = tmp_path / "submission"
    shutil.copytree(pristine / base, submission, symlinks=True)
    for (module, function), code in plants.items():
        plant(submission, module, function, code.replace("TOKEN", TOKEN).replace("TEACHER_HOME", str(home))
              .replace("PACKAGE", str(PACKAGE)).replace("PORT", str(listener.getsockname()[1])))
    if setup:
        setup(submission)
    before = {"package": digest(PACKAGE), "submission": digest(submission), "teacher": digest(home)}
    options.setdefault("timeout", 5.0)
    start = time.monotonic()
    with scratch_under(tmp_path) as scratch:
        report = exercises.grade(submission, only=only, use_torch=False, contained=contained, budget=BUDGET,
                                 **options)
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET + 30, f"took {elapsed:.0f} s"
    time.sleep(0.2)  # a stray process would still be there; give the kernel a moment to reap the killed ones
    assert not leftovers(scratch), leftovers(scratch)
    assert not sandbox._WORKERS
    after = {"package": digest(PACKAGE), "submission": digest(submission), "teacher": digest(home)}
    assert after == before, "something outside the scratch folder changed"
    assert not list(Path("/tmp").glob(f"*{TOKEN}*")), "the attack wrote into the teacher's /tmp"
    try:
        listener.accept()
        raise AssertionError("the attack reached the teacher's network")
    except BlockingIOError:
        pass
    text = rendered(report)
    assert "\x1b" not in text and "\x07" not in text
    assert TOKEN + "-env" not in text
    return report


def points(report):
    return {r.exercise.function: r.points for r in report.results}


def only_touched_lose(report, touched):
    """The touched exercises get 0; every other one (in an answer key) keeps full marks."""
    got = points(report)
    assert all(got[f] == 0 for f in touched), {f: got[f] for f in touched}
    others = {r.exercise.function: r.status for r in report.results if r.exercise.function not in touched}
    assert all(status == "pass" for status in others.values()), others


# ------------------------------------------------------------------ marks without the work
# Each is planted in a student copy (everything else stubbed): full marks would be the attack's win.
FIND_REFERENCE = """
    import importlib.util, os, sys
    places = [os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "..", "layers.py"), "PACKAGE/layers.py"]
    for top in ("/", "/work", "/root", "/usr/lib", "/tmp"):
        try:
            for name in os.listdir(top):
                places += [os.path.join(top, name, "scratchnst", "layers.py"), os.path.join(top, name, "layers.py")]
        except OSError:
            pass
    for place in places:
        if os.path.isfile(place) and "/sub/" not in place and os.path.realpath(place) != os.path.realpath(__file__):
            spec = importlib.util.spec_from_file_location("reference_layers", place)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                return module.relu_forward(x)
            except Exception:
                continue
    raise RuntimeError("no reference found")
"""


@needs_bwrap
def test_loading_the_installed_reference_answers_finds_nothing(pristine, tmp_path, teacher):
    report = run_attack(pristine, tmp_path, teacher, "stub", {("layers", "relu_forward"): FIND_REFERENCE},
                        only=["relu_forward"])
    assert points(report) == {"relu_forward": 0}
    assert "no reference found" in rendered(report)


@needs_bwrap
def test_a_symlink_to_the_installed_package_is_ignored(pristine, tmp_path, teacher):
    def link(submission):
        (submission / "scratchnst" / "layers.py").unlink()
        (submission / "scratchnst" / "layers.py").symlink_to(PACKAGE / "layers.py")

    report = run_attack(pristine, tmp_path, teacher, "stub", {}, setup=link, only=["relu", "conv2d_forward"])
    assert set(points(report).values()) == {0}
    assert any("symlink, ignored" in note for note in report.notes)


def test_a_symlinked_package_folder_is_refused(pristine, tmp_path):
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "scratchnst").symlink_to(PACKAGE)
    with pytest.raises(exercises.grading.UserError, match="holds no scratchnst package"):
        exercises.grade(submission, only=["relu"], use_torch=False, contained=False)


@needs_bwrap
def test_answers_hidden_in_pyc_files_are_never_run(pristine, tmp_path, teacher):
    def compiled_answers(submission):
        package = submission / "scratchnst"
        # the answer key compiled where Python would look for a cache, and as a sourceless module
        (package / "__pycache__").mkdir()
        # unchecked-hash .pyc: Python would run it without looking at the (stubbed) source at all
        unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
        py_compile.compile(str(pristine / "key" / "scratchnst" / "layers.py"),
                           cfile=str(package / "__pycache__" / f"layers.{sys_tag()}.pyc"), invalidation_mode=unchecked)
        py_compile.compile(str(pristine / "key" / "scratchnst" / "costs.py"), cfile=str(package / "costs.pyc"),
                           invalidation_mode=unchecked)
        (package / "costs.py").unlink()
        os.utime(package / "layers.py", (0, 0))

    report = run_attack(pristine, tmp_path, teacher, "stub", {}, setup=compiled_answers,
                        only=["relu", "gram_matrix", "total_cost"])
    assert set(points(report).values()) == {0}
    assert any("costs.pyc" in note for note in report.notes)


def sys_tag():
    import sys

    return sys.implementation.cache_tag


@needs_bwrap
def test_removing_the_import_block_does_not_bring_torch(pristine, tmp_path, teacher):
    code = """
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "NoForeign" not in getattr(f, "__name__", "")]
        import torch
        return (torch.from_numpy(A) @ torch.from_numpy(A).T).numpy()
    """
    report = run_attack(pristine, tmp_path, teacher, "stub", {("costs", "gram_matrix"): code}, only=["gram_matrix"])
    assert points(report) == {"gram_matrix": 0}
    assert "No module named 'torch'" in rendered(report)


@pytest.mark.parametrize("contained", [True, False], ids=["bwrap", "uncontained"])
def test_calling_the_given_fast_convolution_is_no_answer(pristine, tmp_path, teacher, contained):
    """fast_conv is given (the networks run it), as CS231n gives fast_layers.py: calling it from the
    convolution exercises earns nothing, while the other exercises still run it as they like."""
    if contained and not BWRAP:
        pytest.skip("bubblewrap is not usable here")
    forward = """
        from scratchnst import fast_conv
        out = fast_conv.conv2d_forward(x, w, b, stride, padding)[0]
    """
    backward = """
        from scratchnst import fast_conv
        return fast_conv.conv2d_backward(dout, cache, weight_grads)
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "conv2d_forward"): forward,
                                                            ("layers", "conv2d_backward"): backward},
                        contained=contained, only=["conv2d", "relu_forward"])
    assert points(report) == {"conv2d_forward": 0, "conv2d_backward": 0, "relu_forward": 1}
    assert "fast_conv.conv2d_forward is given code, not your answer" in rendered(report)


@pytest.mark.parametrize("how", ["reload", "a fresh import", "exec of its source"])
def test_bringing_back_the_given_convolution_is_no_answer(pristine, tmp_path, teacher, how):
    """The given modules are not in the scratch copy: no reload or re-import in the child finds them."""
    fetch = {"reload": "fast_conv = importlib.reload(fast_conv)",
             "a fresh import": "del sys.modules['scratchnst.fast_conv']; fast_conv = importlib.import_module("
                               "'scratchnst.fast_conv')",
             "exec of its source": "space = {}; exec(open(fast_conv.__file__).read(), space); "
                                   "fast_conv = types.SimpleNamespace(**space)"}[how]
    forward = f"""
        import importlib, sys, types
        from scratchnst import fast_conv
        {fetch}
        out = fast_conv.conv2d_forward(x, w, b, stride, padding)[0]
    """
    report = run_attack(pristine, tmp_path, teacher, "stub", {("layers", "conv2d_forward"): forward},
                        contained=BWRAP, only=["conv2d_forward"])
    assert points(report) == {"conv2d_forward": 0}
    if how == "exec of its source":   # the stub's source: a module __getattr__, which a namespace does not call
        assert "AttributeError: 'types.SimpleNamespace' object has no attribute 'conv2d_forward'" in rendered(report)
    else:
        assert "fast_conv.conv2d_forward is given code, not your answer" in rendered(report)


@needs_bwrap
def test_calling_the_given_winograd_convolution_is_no_answer(pristine, tmp_path, teacher):
    """winograd.conv3x3 is given too (the networks run it for their wide 3x3 layers)."""
    forward = """
        from scratchnst import winograd
        top, left = (w.shape[0] - 1) // 2, (w.shape[1] - 1) // 2
        pads = ((top, w.shape[0] - 1 - top), (left, w.shape[1] - 1 - left)) if padding == "same" else ((0, 0), (0, 0))
        out = winograd.conv3x3(x, w, *pads, b)
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "conv2d_forward"): forward},
                        only=["conv2d_forward"])
    assert points(report) == {"conv2d_forward": 0}
    assert "winograd.conv3x3 is given code, not your answer" in rendered(report)


@needs_bwrap
def test_calling_the_given_tap_planes_convolution_is_no_answer(pristine, tmp_path, teacher):
    """tap_planes.conv is given too (the real-time network's output layer runs it)."""
    forward = """
        from scratchnst import tap_planes
        top, left = (w.shape[0] - 1) // 2, (w.shape[1] - 1) // 2
        pads = ((0, 0), (top, w.shape[0] - 1 - top), (left, w.shape[1] - 1 - left), (0, 0))
        out = tap_planes.conv(np.pad(x, pads) if padding == "same" else x, w, b)
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "conv2d_forward"): forward},
                        only=["conv2d_forward"])
    assert points(report) == {"conv2d_forward": 0}
    assert "tap_planes.conv is given code, not your answer" in rendered(report)


@pytest.mark.parametrize("contained", [pytest.param(True, marks=needs_bwrap, id="bwrap"),
                                       pytest.param(False, id="uncontained")])
def test_calling_the_given_pytorch_twins_is_no_answer(pristine, tmp_path, teacher, contained):
    """torch_ref's costs are written with tensor methods (.numel(), .diff()), which a subclass of ndarray
    lends them: without torch they computed the cost exercises' answers (a red-team review's find)."""
    lend = """
        from scratchnst import torch_ref
        class T(np.ndarray):
            def numel(self):
                return self.size
    """
    content = lend + "    return float(torch_ref.content_cost(a_C.astype(np.float64).view(T), a_G.view(T)))\n"
    style = lend + "    return float(torch_ref.layer_style_cost(a_S.astype(np.float64).view(T), a_G.astype(np.float64)))\n"
    report = run_attack(pristine, tmp_path, teacher, "stub", {("costs", "compute_content_cost"): content,
                                                             ("costs", "compute_layer_style_cost"): style},
                        contained=contained, only=["compute_content_cost", "compute_layer_style_cost"])
    assert points(report) == {"compute_content_cost": 0, "compute_layer_style_cost": 0}
    assert "torch_ref.content_cost is given code, not your answer" in rendered(report)


@needs_bwrap
@pytest.mark.parametrize("base", ["key", "stub"])
def test_calling_the_given_pooling_is_no_answer(pristine, tmp_path, teacher, base):
    """fast_pool is given too (the networks pool with it), bringing the package's back into a student
    copy included: from the pooling exercises it earns nothing."""
    forward = """
        from scratchnst import fast_pool
        out, (_, arg, _, _, _) = fast_pool.max_pool_forward(x, size, stride, padding)
    """
    backward = """
        from scratchnst import fast_pool
        return fast_pool.max_pool_backward(dout, cache)
    """

    def bring_back(submission):  # a student copy's fast_pool calls layers: put the package's in its place
        shutil.copy(PACKAGE / "fast_pool.py", submission / "scratchnst" / "fast_pool.py")

    report = run_attack(pristine, tmp_path, teacher, base, {("layers", "max_pool_forward"): forward,
                                                            ("layers", "max_pool_backward"): backward},
                        setup=bring_back if base == "stub" else None, only=["max_pool_forward", "max_pool_backward"])
    assert points(report) == {"max_pool_forward": 0, "max_pool_backward": 0}
    assert "fast_pool.max_pool_forward is given code, not your answer" in rendered(report)
    assert "fast_pool.max_pool_backward is given code, not your answer" in rendered(report)


@pytest.mark.parametrize("how", ["under another name", "as a package folder", "in a helper module"])
def test_given_code_smuggled_back_under_other_names_is_no_answer(pristine, tmp_path, teacher, how):
    """The stubs replaced given modules by their names only: the given convolution copied into
    scratchnst/vendor/ (its imports pointed there), moved to scratchnst/fast_conv/__init__.py (a package
    folder, which Python imports before the stub beside it) earned 6 of 6 points, as would an answer
    kept in a helper module the package has (visualize.py). Only the exercise modules are the student's now."""
    given = ("fast_conv", "conv_rows", "winograd", "tap_planes")
    home = {"under another name": "vendor", "as a package folder": None, "in a helper module": None}[how]

    def smuggle(submission):
        package = submission / "scratchnst"
        for module in given:
            text = (PACKAGE / f"{module}.py").read_text()
            if home:
                (package / home).mkdir(exist_ok=True)
                (package / home / "__init__.py").write_text("")
                for other in given:
                    text = text.replace(f"from scratchnst import {other}", f"from scratchnst.{home} import {other}")
                    text = text.replace(f"scratchnst.{other} ", f"scratchnst.{home}.{other} ")
                (package / home / f"{module}.py").write_text(text)
            elif how == "as a package folder":
                (package / f"{module}.py").unlink()
                (package / module).mkdir()
                (package / module / "__init__.py").write_text(text)
        if how == "in a helper module":  # the answer key's convolution, under a helper's name
            (package / "visualize.py").write_text((PACKAGE / "layers.py").read_text())

    source = {"under another name": "scratchnst.vendor.fast_conv", "as a package folder": "scratchnst.fast_conv",
              "in a helper module": "scratchnst.visualize"}[how]
    forward = f"""
        import importlib
        out = importlib.import_module("{source}").conv2d_forward(x, w, b, stride, padding)[0]
    """
    backward = f"""
        import importlib
        return importlib.import_module("{source}").conv2d_backward(dout, cache, weight_grads)
    """
    report = run_attack(pristine, tmp_path, teacher, "stub", {("layers", "conv2d_forward"): forward,
                                                             ("layers", "conv2d_backward"): backward},
                        setup=smuggle, contained=BWRAP, only=["conv2d"])
    assert points(report) == {"conv2d_forward": 0, "conv2d_backward": 0}
    text = " ".join(rendered(report).split())
    if how != "as a package folder":
        assert "not an exercise module, the package's own used instead" in text, text


def _children():
    """(pid, state, name) of this process's children, zombies included."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                comm, fields = f.read().split(b" (", 1)[1].rsplit(b") ", 1)
        except (OSError, ValueError, IndexError):
            continue
        if int(fields.split()[1]) == os.getpid():
            found.append((int(name), fields.split()[0].decode(), comm.decode()))
    return found


@needs_bwrap
def test_workers_that_crash_leave_no_zombies_behind(pristine, tmp_path):
    """Each start of a worker left its sandbox's inner bwrap as a zombie of the grader (the subreaper),
    one per crash until the grader ended: a submission that crashes at every check made one each."""
    submission = tmp_path / "crash"
    shutil.copytree(pristine / "key", submission)
    for function in ("relu_forward", "relu_backward"):
        plant(submission, "layers", function, "import os\nos._exit(3)")
    before = {pid for pid, _, _ in _children()}
    report = exercises.grade(submission, only=["relu"], use_torch=False, contained=True, budget=60)
    assert report.points == 0
    left = [child for child in _children() if child[0] not in before and child[2] != "ps"]
    assert not left, left


def test_a_layout_the_file_system_refuses_is_noted_not_blamed_on_the_teachers_disk(tmp_path):
    """Folders nested past the longest path, and a folder named like a given module: both ended in "not
    graded: cannot copy ...; free some space in the temporary folder", a correct submission's 0."""
    package = tmp_path / "scratchnst"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("ANSWER = 1\n")
    (package / "fast_pool.py").mkdir()
    fd = os.open(package, os.O_RDONLY)
    for _ in range(sandbox.MAX_DEPTH):  # each name as long as a name may be: the path passes PATH_MAX
        os.mkdir("d" * 255, dir_fd=fd)
        inner = os.open("d" * 255, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    copied = sandbox.copy_submission(package, tmp_path / "scratch")
    assert any("cannot be" in note for note in copied.notes), copied.notes
    sandbox.rebuild_around_exercises(copied, PACKAGE, ["layers", "costs", "optim"])
    built = copied.root / "scratchnst"
    assert (built / "layers.py").read_text() == "ANSWER = 1\n"
    assert "is given code" in (built / "fast_pool.py").read_text()
    assert (built / "arguments.py").read_bytes() == (PACKAGE / "arguments.py").read_bytes()
    assert not (built / "costs.py").exists() and not (built / "exercises").exists()


def test_a_report_names_at_most_a_few_of_the_files_left_out(tmp_path):
    """100,000 symlinks in a submission made a 20 MB report, JSON and Gradescope export of one note each."""
    package = tmp_path / "scratchnst"
    (package / "junk").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for i in range(500):
        (package / "junk" / f"link{i:04d}").symlink_to("/etc/passwd")
    copied = sandbox.copy_submission(package, tmp_path / "scratch")
    assert len(copied.notes) == sandbox.MAX_NOTES + 1, copied.notes
    assert copied.notes[-1] == f"and {500 - sandbox.MAX_NOTES} more files or folders ignored"


def test_no_pythons_installed_packages_are_in_the_sandboxs_view(monkeypatch):
    """In a venv, site.getsitepackages() names the venv's folder only: the base installation's, where
    torch or a non-editable scratchnst (the answers) may be, stayed visible in the sandbox."""
    import site

    base = site.getsitepackages([sys.base_prefix])
    monkeypatch.setattr(site, "getsitepackages", lambda prefixes=None: ["/nonexistent/venv/site-packages"]
                        if prefixes is None else base)
    command = sandbox._bwrap_command("bwrap", Path("/runner"), Path("/sub"), sandbox.Limits())
    hidden = {command[i + 1] for i, word in enumerate(command) if word == "--tmpfs"}
    for path in base + glob.glob("/usr/lib/python3*/*-packages"):
        if os.path.isdir(path):
            assert os.path.realpath(path) in hidden, (path, hidden)


def test_a_python_a_program_brings_under_usr_has_its_packages_hidden_too(tmp_path):
    """Google Cloud SDK's own Python (/usr/lib/google-cloud-sdk/.../site-packages) was in the sandbox's
    view: every site-packages and dist-packages folder below /usr is hidden, however deep (to 8 levels)."""
    for folder in ("lib/sdk/platform/bundled/lib/python3.12/site-packages/pkg", "share/app/dist-packages",
                   "lib/python3/dist-packages/inner/site-packages", "lib/too/deep/a/b/c/d/e/f/site-packages"):
        (tmp_path / folder).mkdir(parents=True)
    os.symlink(tmp_path / "lib", tmp_path / "link")   # not followed: the same folders once
    found = sandbox._packages_under(str(tmp_path))
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in found) == [
        "lib/python3/dist-packages", "lib/sdk/platform/bundled/lib/python3.12/site-packages",
        "share/app/dist-packages"]
    command = sandbox._bwrap_command("bwrap", Path("/runner"), Path("/sub"), sandbox.Limits())
    hidden = {command[i + 1] for i, word in enumerate(command) if word == "--tmpfs"}
    assert {os.path.realpath(p) for p in sandbox._packages_under("/usr")} <= hidden


@needs_bwrap
def test_replaying_the_values_shipped_with_the_copy_fails(pristine, tmp_path, teacher):
    """The student copy ships the self-check's expected values; a teacher's grade uses other inputs."""
    code = """
        import json, os
        import numpy as np
        here = os.path.dirname(os.path.abspath(__file__))
        with np.load(os.path.join(here, "exercises", "selfcheck", "arrays.npz")) as npz:
            arrays = [npz[f"a{i}"] for i in range(len(npz.files))]
        for a in arrays:
            if a.shape == x.shape and a.dtype == x.dtype and not np.array_equal(a, x):
                return a, a
        raise RuntimeError("no shipped values here")
    """
    report = run_attack(pristine, tmp_path, teacher, "stub", {("layers", "relu_forward"): code},
                        only=["relu_forward"], salt=12345)
    assert points(report) == {"relu_forward": 0}


@needs_bwrap
def test_a_float_subclass_that_pickles_into_code_is_only_described(pristine, tmp_path, teacher):
    code = """
        import os

        class Sneaky(float):
            def __reduce__(self):
                return (os.system, ("touch /tmp/pwned-TOKEN",))

            def __float__(self):
                while True:
                    pass

        return Sneaky(alpha * J_content + beta * J_style)
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("costs", "total_cost"): code},
                        only=["total_cost", "gram_matrix"])
    only_touched_lose(report, {"total_cost"})
    assert "an object of type Sneaky" in rendered(report)


# ------------------------------------------------------------------------- damage and spying
@needs_bwrap
def test_writing_into_the_installed_package_and_the_teachers_files_changes_nothing(pristine, tmp_path, teacher):
    code = """
        import os
        hits = []
        for target in ("PACKAGE/costs.py", "TEACHER_HOME/grades.csv", os.path.abspath(__file__),
                       "/tmp/pwned-TOKEN", os.path.expanduser("~/pwned-TOKEN")):
            try:
                with open(target, "a") as f:
                    f.write("pwned")
                hits.append(target)
            except OSError:
                pass
        raise RuntimeError(f"wrote into {hits}")
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("costs", "gram_matrix"): code},
                        only=["gram_matrix", "total_cost"])
    only_touched_lose(report, {"gram_matrix"})
    # its own private /tmp is writable (and thrown away with the sandbox); nothing of the teacher's is
    assert "wrote into [" in rendered(report)
    assert str(PACKAGE) not in rendered(report) and "grades.csv" not in rendered(report)


@needs_bwrap
def test_the_teachers_environment_files_and_network_are_out_of_sight(pristine, tmp_path, teacher):
    code = """
        import os, socket
        seen = [k for k in os.environ if "SECRET" in k]
        seen += [p for p in ("TEACHER_HOME/grades.csv", "PACKAGE/layers.py", "/work", "/root/.ssh")
                 if os.path.exists(p)]
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
            seen.append("network")
        except OSError:
            pass
        raise RuntimeError(f"seen: {seen} {dict(os.environ)}")
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code},
                        only=["relu_forward", "relu_backward"])
    only_touched_lose(report, {"relu_forward"})
    assert "seen: [] " in rendered(report)


def test_terminal_escapes_in_a_message_are_shown_not_played(pristine, tmp_path, teacher):
    code = r"""raise RuntimeError("\x1b[2J\x1b]0;owned\x07 done")"""
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code},
                        contained=False, only=["relu_forward"])
    assert points(report) == {"relu_forward": 0}
    assert "\\x1b[2J" in rendered(report)


# ------------------------------------------------------------------------ hangs and floods
HANGS = {
    "garbage written into the answer pipe": ("layers", "relu_forward", """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"not a frame" * 1000)
            except OSError:
                pass
        out = np.maximum(x, 0)
    """),
    "a forged answer frame before the real one": ("layers", "relu_forward", """
        import os, sys
        worker = sys.modules["__main__"]
        for fd in range(3, 64):
            try:
                os.write(fd, worker.encode_frame({"status": "ok", "id": 1, "mutated": []}, (x, x)))
            except OSError:
                pass
        out = np.maximum(x, 0)
    """),
    # (the grader must go on: the exercise's 0 here is its own wrong answer; what is tested is the rest)
    "SIGSTOP sent to the grader": ("layers", "relu_forward", """
        import os, signal
        for pid in (os.getppid(), 1):
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        raise RuntimeError("sent SIGSTOP")
    """),
    "an orphan in its own session that sleeps, holding the pipes": ("layers", "relu_forward", """
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "TOKEN"])
            os._exit(0)
        out = np.maximum(x, 0)
        while True:
            pass
    """),
    "20 forked children that outlive the call": ("layers", "relu_forward", """
        import os, sys
        forked = 0
        for _ in range(20):
            try:
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "TOKEN"])
                forked += 1
            except OSError:
                break
        raise RuntimeError(f"forked {forked} children")
    """),
    "a 3 GB allocation": ("layers", "relu_forward", """
        big = np.ones(3 * 2**30 // 8)
        out = np.maximum(x, 0) + 0 * big[0]
    """),
    "400 MB written to stderr": ("layers", "relu_forward", """
        import os
        chunk = b"x" * (1 << 20)
        for _ in range(400):
            os.write(2, chunk)
        out = np.maximum(x, 0)
    """),
    "the answer pipe closed, then an endless loop": ("layers", "relu_forward", """
        import os
        for fd in range(3, 64):
            try:
                os.close(fd)
            except OSError:
                pass
        while True:
            pass
    """),
    "forged answers, then no more reading of requests": ("costs", "compute_content_cost", """
        import os, sys
        frame = sys._getframe()
        while frame is not None and "head" not in frame.f_locals:
            frame = frame.f_back
        worker, call = sys.modules["__main__"], frame.f_locals["head"]["id"]
        for fd in range(3, 64):
            for later in (call, call + 1):
                try:
                    os.write(fd, worker.encode_frame({"status": "ok", "id": later, "mutated": []}, 0.0))
                except OSError:
                    pass
        while True:
            pass
    """),
    "a forged answer frame of a shape NumPy cannot make": ("layers", "relu_forward", """
        # no bytes (a side of 0), but sides whose product passes NumPy's index range: its reshape refuses
        import json, os, struct, sys
        frame = sys._getframe()
        while frame is not None and "head" not in frame.f_locals:
            frame = frame.f_back
        worker, call = sys.modules["__main__"], frame.f_locals["head"]["id"]
        header = json.dumps({"head": {"status": "ok", "id": call, "mutated": []}, "body": 0,
                             "arrays": [{"dtype": "float64", "shape": [0, 2 ** 26, 2 ** 26, 2 ** 26]}]}).encode()
        for fd in range(3, 64):
            try:
                os.write(fd, worker.MAGIC + struct.pack(">I", len(header)) + header)
            except OSError:
                pass
        out = np.maximum(x, 0)
    """),
    "an integer too large for a float": ("costs", "total_cost", """
        return 10 ** 4000
    """),
    "an integer too large for a float where a tuple is due": ("layers", "relu_forward", """
        return 10 ** 400
    """),
    "an answer nested a thousand deep": ("costs", "total_cost", """
        answer = 0.0
        for _ in range(1000):
            answer = [answer]
        return answer
    """),
    "an endless loop": ("layers", "relu_forward", """
        while True:
            pass
    """),
    "an answer too large to send": ("layers", "relu_forward", """
        return np.zeros(10 * 2**20), None
    """),
}


@pytest.mark.parametrize("contained", [pytest.param(True, marks=needs_bwrap, id="bwrap"),
                                       pytest.param(False, id="uncontained")])
@pytest.mark.parametrize("attack", sorted(HANGS))
def test_hangs_and_floods_cost_the_exercise_they_touch_only(pristine, tmp_path, teacher, attack, contained):
    if attack.startswith("SIGSTOP") and not contained:
        pytest.skip("uncontained, the student's code can signal the grader: that is what --uncontained means")
    module, function, code = HANGS[attack]
    report = run_attack(pristine, tmp_path, teacher, "key", {(module, function): code}, contained=contained,
                        only=[function, "relu_backward", "total_cost"], timeout=4.0)
    assert report.seconds < 60
    if attack.startswith("20 forked") and contained:  # the sandbox's process limit stopped the forks
        assert "forked 20 children" not in rendered(report) and "forked" in rendered(report)
    only_touched_lose(report, {function})


def test_an_answer_that_cannot_be_sent_says_so_and_keeps_its_worker(pristine, tmp_path, teacher):
    """An int beyond Python's 4300 digits of str(): the worker's own message, as the answer to its call."""
    report = run_attack(pristine, tmp_path, teacher, "key",
                        {("costs", "total_cost"): "import math\nreturn math.factorial(2000)"},
                        contained=BWRAP, only=["total_cost", "relu_forward"])
    assert points(report) == {"total_cost": 0, "relu_forward": 1}
    text = " ".join(rendered(report).split())
    assert "the result cannot be sent to the grader" in text and "an answer to another call" not in text, text


# --------------------------------------------------------------------------------- imports
def test_a_slow_import_gets_its_own_budget(pristine, tmp_path, teacher):
    """The issue's case: a correct module that spends 12 s at import, with the default budgets, is graded
    (it was TIMEOUT on every exercise when the import was charged to the first exercise's 10 s)."""
    def slow(submission):
        path = submission / "scratchnst" / "costs.py"
        path.write_text("import time\ntime.sleep(12)\n" + path.read_text())

    report = run_attack(pristine, tmp_path, teacher, "key", {}, setup=slow, contained=BWRAP,
                        only=["gram_matrix", "total_cost", "relu_forward"], timeout=exercises.DEFAULT_TIMEOUT,
                        import_timeout=exercises.DEFAULT_IMPORT_TIMEOUT)
    assert exercises.grading.math.isclose(report.points, report.total) and report.perfect, rendered(report)


def test_an_endless_import_is_stopped_with_its_own_message(pristine, tmp_path, teacher):
    def endless(submission):
        path = submission / "scratchnst" / "costs.py"
        path.write_text("while True:\n    pass\n" + path.read_text())

    report = run_attack(pristine, tmp_path, teacher, "key", {}, setup=endless, contained=BWRAP,
                        only=["gram_matrix", "total_cost", "relu_forward", "adam_update"], import_timeout=3)
    got = points(report)
    assert got["gram_matrix"] == got["total_cost"] == 0
    assert "importing scratchnst.costs took longer than 3 s" in rendered(report)
    # the modules that import fine are graded (the child is restarted without the hanging one)
    assert got["relu_forward"] == 1 and got["adam_update"] == 2


def test_grading_without_bwrap_needs_the_explicit_flag(monkeypatch):
    monkeypatch.setitem(sandbox._BWRAP, "status", (False, "bubblewrap (bwrap) is not installed"))
    with pytest.raises(exercises.grading.UsageError, match="not installed.*--uncontained"):
        check_containment(True, uncontained_ok=False)
    assert check_containment(True, uncontained_ok=True) is False


# ----------------------------------------------------------------------------- more attacks
@needs_bwrap
def test_patching_numpy_in_the_child_changes_no_judgement(pristine, tmp_path, teacher):
    """The answers are judged in the grader's process: what the child does to its own NumPy stays there."""
    code = """
        np.allclose = lambda *args, **kwargs: True
        np.testing.assert_allclose = lambda *args, **kwargs: None
        np.abs = lambda a, *args, **kwargs: np.zeros_like(a)
        np.max = lambda *args, **kwargs: 0.0
        out = x * 0
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code},
                        only=["relu_forward", "relu_backward"])
    only_touched_lose(report, {"relu_forward"})


def test_a_submission_that_is_slow_everywhere_stops_at_its_total_budget(pristine, tmp_path, teacher):
    """Each exercise within its own time, all of them over the student's total: the rest is not run."""
    slow = "import time\ntime.sleep(1.5)\nreturn alpha * J_content + beta * J_style"
    submission = tmp_path / "slow"
    shutil.copytree(pristine / "key", submission)
    plant(submission, "costs", "total_cost", slow)
    start = time.monotonic()
    with scratch_under(tmp_path) as scratch:
        report = exercises.grade(submission, only=["total_cost", "relu"], use_torch=False, contained=BWRAP,
                                 timeout=10.0, budget=2.0)
    assert time.monotonic() - start < 60
    statuses = [c.status for r in report.results for c in r.checks]
    assert "timeout" in statuses
    assert "not run: the student's total time budget ran out" in rendered(report)
    time.sleep(0.2)
    assert not leftovers(scratch)


def test_the_scratch_copy_takes_python_sources_only_and_within_bounds(tmp_path):
    """What a submission folder can hold besides its sources: nothing of it reaches the sandbox."""
    package = tmp_path / "scratchnst"
    package.mkdir()
    (package / "__init__.py").write_text("")
    os.mkfifo(package / "costs.py")  # reading it would block the grader
    (package / "layers.py").write_bytes(b"#" * (sandbox.MAX_BYTES + 1))
    (package / "optim.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (package / "deep").mkdir()
    (package / "deep" / "loop").symlink_to(package)
    os.makedirs(package / os.path.join(*["d"] * 40))   # 40 deep: copied, it would exceed a path's length
    (package / "notes.txt").write_text("kept out, silently: not code")
    copied = sandbox.copy_submission(package, tmp_path / "scratch")
    files = sorted(p.relative_to(copied.root).as_posix() for p in copied.root.rglob("*") if p.is_file())
    assert files == ["scratchnst/__init__.py"]
    notes = " ".join(copied.notes)
    assert "costs.py: not a regular file" in notes and "layers.py: over the limit" in notes
    assert "optim.cpython-311-x86_64-linux-gnu.so: compiled" in notes and "deep/loop: a symlink" in notes
    assert f"scratchnst/{'d/' * 16}d: a folder more than 16 deep, ignored" in notes


def test_a_submission_of_many_folders_is_cut_at_the_folder_limit(tmp_path):
    """Folders are not files, but each is made in the grader's /tmp and deleted again, outside every
    budget (90,000 empty ones took 19 s to copy and 280 s to delete): they are counted too."""
    package = tmp_path / "scratchnst"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for i in range(3 * sandbox.MAX_FOLDERS):
        os.makedirs(package / f"z{i:04d}" / "inner")
    copied = sandbox.copy_submission(package, tmp_path / "scratch")
    folders = [p for p in copied.root.rglob("*") if p.is_dir()]
    assert len(folders) <= sandbox.MAX_FOLDERS
    assert (copied.root / "scratchnst" / "__init__.py").is_file()
    notes = [n for n in copied.notes if "over the limit of" in n]
    assert len(notes) == 1 and f"{sandbox.MAX_FOLDERS} folders" in notes[0], copied.notes


def test_a_module_that_ends_the_worker_at_import_costs_its_own_exercises(pristine, tmp_path, teacher):
    def exits(submission):
        path = submission / "scratchnst" / "costs.py"
        path.write_text("import os\nos._exit(7)\n" + path.read_text())

    report = run_attack(pristine, tmp_path, teacher, "key", {}, setup=exits, contained=BWRAP,
                        only=["gram_matrix", "relu_forward", "adam_update"])
    assert points(report) == {"relu_forward": 1, "gram_matrix": 0, "adam_update": 2}
    assert "(exit status 7): while importing scratchnst.costs" in " ".join(rendered(report).split())


# ------------------------------------------------------------------ forged fields of an answer
# The worker's own code runs in the student's process: its functions can be replaced there. Whatever
# frame results, it is the student's answer, judged as data: a check may fail, the grader goes on.
FORGE = """
    import sys
    worker = sys.modules["__main__"]
    if not getattr(worker, "forged", False):
        real = worker._serve
        def forged(*args, **kwargs):
            head, body = real(*args, **kwargs)
            head.update(FIELDS)
            return head, body
        worker._serve, worker.forged = forged, True
    out = np.maximum(x, 0)
"""


@pytest.mark.parametrize("fields", [{"mutated": [[]]}, {"mutated": [[-100]]}, {"mutated": [[10 ** 30, "x" * 5000]]},
                                    {"status": "imported"}, {"status": "ready"}],
                         ids=["an empty input path", "a negative argument", "a path out of bounds",
                              "a start-up status", "a ready status"])
def test_forged_fields_of_an_answer_fail_checks_not_the_grader(pristine, tmp_path, teacher, fields):
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): FORGE.replace(
        "FIELDS", repr(fields))}, contained=BWRAP, only=["relu_forward", "relu_backward"])
    got = points(report)
    if "status" in fields:   # the first call is answered honestly, the next are start-up frames, refused;
        assert got["relu_forward"] < 1 and got["relu_backward"] == 1   # a new worker serves relu_backward
        assert "a start-up frame where an answer was due" in " ".join(rendered(report).split())
    else:   # paths that name no input are dropped: the right answers keep their marks
        assert got == {"relu_forward": 1, "relu_backward": 1}


def test_import_errors_forged_as_answers_fail_their_exercises(pristine, tmp_path, teacher):
    """An "import error" that says ok is no answer (it carried no value: the grader once failed on it).
    Forged by layers.py as it is imported (the package's own __init__.py is the grader's): costs's import,
    which comes next, answers with the forgery."""
    def forge(submission):
        init = submission / "scratchnst" / "layers.py"
        init.write_text(init.read_text() + """
import sys as _sys
_worker = _sys.modules["__main__"]
_real = _worker._import_all
_worker._import_all = lambda root, modules: (_real(root, modules), {m: {"status": "ok", "id": 1, "mutated": []}
                                                                    for m in modules})[1]
""")

    report = run_attack(pristine, tmp_path, teacher, "key", {}, setup=forge, contained=BWRAP,
                        only=["relu_forward", "gram_matrix"])
    assert points(report) == {"relu_forward": 1, "gram_matrix": 0}
    assert "an import error that was not an exception" in " ".join(rendered(report).split())


def test_imports_of_restarted_workers_count_against_the_total_budget(pristine, tmp_path, teacher):
    """A slow import and a crash in every call: each crash starts a new worker, whose imports run the
    student's code again. They are paid from the total budget, so grading ends at it."""
    def slow_import(submission):
        path = submission / "scratchnst" / "layers.py"
        path.write_text("import time as _t\n_t.sleep(1.5)\n" + path.read_text())

    crash = "import os\nos._exit(1)"
    submission = tmp_path / "slow"
    shutil.copytree(pristine / "key", submission)
    plant(submission, "layers", "relu_forward", crash)
    plant(submission, "layers", "relu_backward", crash)
    slow_import(submission)
    start = time.monotonic()
    with scratch_under(tmp_path) as scratch:
        report = exercises.grade(submission, only=["relu"], use_torch=False, contained=BWRAP, timeout=1.0, budget=1.0,
                                 import_timeout=3.0)
    # before: every check restarted the worker, 1.5 s of imports each, about 15 s in all
    assert time.monotonic() - start < 8
    assert points(report) == {"relu_forward": 0, "relu_backward": 0}
    assert "not run: the student's total time budget ran out" in rendered(report)
    time.sleep(0.2)
    assert not leftovers(scratch)


@needs_bwrap
@pytest.mark.skipif(sandbox.sandbox_filter() is None, reason="the keyring's system call numbers are not known here")
def test_the_kernel_keyring_is_closed_to_the_sandbox(pristine, tmp_path, teacher):
    """The sandboxes' users are reused, and the kernel keeps keys per user: a key one submission's
    worker adds, another's could read (and it would outlive grading). The sandbox refuses the calls."""
    code = """
        import ctypes, os, platform
        calls = {"x86_64": 248, "aarch64": 217}   # add_key
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        key = libc.syscall(ctypes.c_long(calls[platform.machine()]), b"user", b"TOKEN", b"answers", ctypes.c_size_t(7),
                           ctypes.c_int(-4))   # KEY_SPEC_USER_KEYRING
        raise RuntimeError(f"add_key gave {key}, errno {os.strerror(ctypes.get_errno())}")
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code}, only=["relu_forward"])
    assert "add_key gave -1, errno Operation not permitted" in " ".join(rendered(report).split())


def run_filter(program, nr, arch=None, flags=0, second=0):
    """What the seccomp program returns for one call: a classic-BPF interpreter of the five opcodes
    sandbox_filter uses, on a seccomp_data of (nr, arch, args[0] = flags, args[1] = second)."""
    import struct
    data = {0: nr, 4: arch, 16: flags & 0xFFFFFFFF, 24: second & 0xFFFFFFFF}
    code = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, accumulator = 0, 0
    while True:
        op, true, false, k = code[pc]
        if op == 0x20:
            accumulator = data[k]
        elif op == 0x54:
            accumulator &= k
        elif op in (0x15, 0x35):
            taken = accumulator == k if op == 0x15 else accumulator >= k
            pc += true if taken else false
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {op:#x}")
        pc += 1


@pytest.mark.skipif(sandbox.sandbox_filter() is None, reason="the system call numbers are not known here")
def test_the_filter_refuses_exactly_what_it_says():
    """The program itself, call by call: refused with EPERM, clone3 with ENOSYS (the C library then
    uses clone), clone only when it asks for a namespace, and every call of another ABI."""
    import errno
    import platform
    arch, refused, clones = sandbox._REFUSED_CALLS[platform.machine()]
    fcntl = clones["fcntl"]
    program = sandbox.sandbox_filter()
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    for name, number in refused.items():
        assert run_filter(program, number, arch) == eperm, name
    for number in (0, 1, 9, 57, 59, 60, 231):   # read, write, mmap, fork, execve, exit, exit_group on x86-64
        if number not in refused.values() and number not in clones.values():
            assert run_filter(program, number, arch) == allow, number
    assert run_filter(program, clones["clone3"], arch) == enosys
    threads = 0x003D0F00    # what pthread_create asks of clone
    assert run_filter(program, clones["clone"], arch, threads) == allow
    assert run_filter(program, clones["clone"], arch, 0x01200011) == allow   # fork
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run_filter(program, clones["clone"], arch, threads | flag) == eperm, hex(flag)
    for command in sandbox._LOCK_COMMANDS:   # file locks, leases and directory watches
        assert run_filter(program, fcntl, arch, 3, command) == eperm, command
    for command in (0, 1, 2, 3, 4, 1030, 1033):   # F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC, ...
        assert run_filter(program, fcntl, arch, 3, command) == allow, command
    assert run_filter(program, 3, 0x40000003) == eperm                 # i386's close: another ABI
    if arch == 0xC000003E:
        assert run_filter(program, 0x40000000 + 1, arch) == eperm      # x32's write


@needs_bwrap
@pytest.mark.skipif(sandbox.sandbox_filter() is None, reason="the system call numbers are not known here")
def test_kernel_memory_and_namespaces_are_closed_to_the_sandbox(pristine, tmp_path, teacher):
    """System V shared memory is kernel memory no process limit counts, and it outlives its maker
    (three 1 GB segments held 3 GB for a worker limited to 2 GB), and files in memory (memfd) escape the
    address-space limit; a user namespace makes the worker root again inside it (a tmpfs of any size).
    All are refused; threads and fork still work."""
    code = """
        import ctypes, os, threading
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget(0, ctypes.c_size_t(1 << 20), 0o1600)
        e1 = ctypes.get_errno()
        queue = libc.msgget(0, 0o1600)
        e2 = ctypes.get_errno()
        un = libc.unshare(0x10000000)   # CLONE_NEWUSER
        e3 = ctypes.get_errno()
        try:
            os.memfd_create("parked")
            e4 = "made"
        except OSError as error:
            e4 = error.strerror
        t = threading.Thread(target=lambda: None); t.start(); t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        status = os.waitpid(pid, 0)[1]
        raise RuntimeError(f"shmget {shm} {os.strerror(e1)}; msgget {queue} {os.strerror(e2)}; "
                           f"unshare {un} {os.strerror(e3)}; memfd {e4}; thread and fork "
                           f"{os.waitstatus_to_exitcode(status)}")
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code}, only=["relu_forward"])
    text = " ".join(rendered(report).split())
    assert ("shmget -1 Operation not permitted; msgget -1 Operation not permitted; unshare -1 Operation not "
            "permitted; memfd Operation not permitted; thread and fork 7") in text, text


@needs_bwrap
@pytest.mark.skipif(sandbox.sandbox_filter() is None, reason="the system call numbers are not known here")
def test_file_locks_and_watches_are_closed_to_the_sandbox(pristine, tmp_path, teacher):
    """Every sandbox reads the same system files: a lock on one, or a watch on its reads, was a channel
    between two submissions graded at a time (a red-team review copied answers through a lock's position).
    Locks, leases and watches are refused; the rest of fcntl still works."""
    code = """
        import ctypes, fcntl, os, sys
        said = []
        with open(sys.executable, "rb") as f:
            for name, lock in (("lockf", lambda: fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)),
                               ("flock", lambda: fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)),
                               ("getlk", lambda: fcntl.fcntl(f, fcntl.F_GETLK, bytes(32))),
                               ("ofd", lambda: fcntl.fcntl(f, 37, bytes(32)))):
                try:
                    lock()
                    said.append(f"{name} taken")
                except OSError as error:
                    said.append(f"{name} {error.strerror}")
            said.append(f"getfl {fcntl.fcntl(f, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY}")
        folder = os.open(os.path.dirname(sys.executable), os.O_RDONLY)
        try:
            fcntl.fcntl(folder, 1026, 1)   # F_NOTIFY, DN_ACCESS
            said.append("notify taken")
        except OSError as error:
            said.append(f"notify {error.strerror}")
        libc = ctypes.CDLL(None, use_errno=True)
        said.append(f"inotify {libc.inotify_init1(0)} {os.strerror(ctypes.get_errno())}")
        raise RuntimeError("; ".join(said))
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code}, only=["relu_forward"])
    text = " ".join(rendered(report).split())
    assert ("lockf Operation not permitted; flock Operation not permitted; getlk Operation not permitted; "
            "ofd Operation not permitted; getfl True; notify Operation not permitted; "
            "inotify -1 Operation not permitted") in text, text


NOBODY_PROBE = '''
import os, sys
sys.path.insert(0, TESTS)
from exercise_helpers import plant, rendered
from scratchnst import exercises
from scratchnst.exercises import batch, sandbox
secret = os.path.join(SCRATCH, "key")
os.makedirs(secret, mode=0o700)
with open(os.path.join(secret, "answers.txt"), "w") as f:
    f.write("the answers")
exercises.make_student_copy(os.path.join(SCRATCH, "sub"), solutions=True)
code = """import os
try:
    seen = open(SECRET + "/answers.txt").read()
except OSError as error:
    seen = error.strerror
raise RuntimeError(f"uid {os.getuid()} read: {seen}")"""
plant(os.path.join(SCRATCH, "sub"), "layers", "relu_forward", code.replace("SECRET", repr(secret)))
print("nobody can run:", sandbox.nobody_can_run())
report = exercises.grade(os.path.join(SCRATCH, "sub"), only=["relu_forward"], use_torch=False, contained=False)
print(" ".join(rendered(report).split()))
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's uncontained grading drops to another user")
def test_uncontained_grading_as_root_runs_the_student_as_an_unprivileged_user(request):
    """Gradescope's container refuses bubblewrap, and its grader runs as root beside the answer key: the
    student's code runs as a user of its own, who cannot read a folder closed to others (run_autograder closes the
    key's). Where this Python sits in root's 0700 home, as here, the probe runs in a view whose /root
    is open, as a system Python's folder is."""
    scratch = Path(tempfile.mkdtemp(prefix="scratchnst-nobody-"))   # not pytest's: its folders are 0700
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    os.chmod(scratch, 0o711)
    script = (NOBODY_PROBE.replace("TESTS", repr(str(Path(__file__).parent)))
              .replace("SCRATCH", repr(str(scratch))))
    command = [sys.executable, "-c", script]
    if not sandbox.nobody_can_run():
        if not shutil.which("bwrap") or not str(Path(sys.executable).resolve()).startswith("/root/"):
            pytest.skip("nobody cannot run this Python here, and no view can be made in which it can")
        command = ["bwrap", "--dev-bind", "/", "/", "--perms", "0755", "--tmpfs", "/root",
                   "--bind", "/root/.pyenv", "/root/.pyenv", "--proc", "/proc"] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nobody can run: True" in done.stdout, done.stdout
    uid = re.search(r"uid (\d+) read: Permission denied", done.stdout)
    assert uid and int(uid[1]) in sandbox.SANDBOX_USERS, done.stdout


CHEAT_ON_GRADESCOPE = """import os
try:
    key = open("/autograder/source/source/scratchnst/layers.py").read()
    environ = open(f"/proc/{os.getppid()}/environ", "rb").read()
    out = np.maximum(x, 0)
except OSError as error:
    raise RuntimeError(f"uid {os.getuid()}: {error.strerror}")"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap"),
                    reason="needs root and bubblewrap to lay out /autograder as Gradescope does")
@pytest.mark.parametrize("cheat", [True, False], ids=["reads-the-key", "honest"])
def test_the_gradescope_autograder_without_bubblewrap_hides_the_key(pristine, cheat):
    """Gradescope's container refuses bubblewrap and runs run_autograder as root, with the answer key in
    /autograder/source. The student's code then runs as nobody, and the script closes the key to others
    first: reading it (or the grader's environment) fails, and an honest submission still gets its marks.
    Laid out with bubblewrap here: /autograder bound to a scratch folder, a `bwrap` on PATH that fails
    as Gradescope's does, and /root opened where this Python lives in root's 0700 home."""
    autograder = Path(tempfile.mkdtemp(prefix="scratchnst-gradescope-"))
    mount_point = not os.path.exists("/autograder")   # bwrap makes it, empty, for its bind: removed after
    try:
        os.chmod(autograder, 0o755)
        folder, _ = batch.write_gradescope_bundle(autograder / "bundle", options="--only relu_forward --no-torch")
        shutil.copytree(folder, autograder / "source")
        shutil.copy(folder / "run_autograder", autograder / "run_autograder")
        shutil.copytree(pristine / "stub", autograder / "submission")
        plant(autograder / "submission", "layers", "relu_forward",
              CHEAT_ON_GRADESCOPE if cheat else "out = np.maximum(x, 0)")
        (autograder / "results").mkdir()
        tools = autograder / "bin"
        tools.mkdir()
        (tools / "bwrap").write_text("#!/bin/sh\nexit 1\n")
        os.chmod(tools / "bwrap", 0o755)
        (tools / "python3").symlink_to(sys.executable)
        command = [shutil.which("bwrap"), "--dev-bind", "/", "/", "--bind", str(autograder), "/autograder",
                   "--proc", "/proc"]
        if str(Path(sys.executable).resolve()).startswith("/root/"):
            command += ["--perms", "0755", "--tmpfs", "/root", "--bind", "/root/.pyenv", "/root/.pyenv"]
        env = {"PATH": f"{tools}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        done = subprocess.run(command + ["/bin/bash", "/autograder/run_autograder"], capture_output=True,
                              text=True, timeout=300, env=env)
        assert (autograder / "results" / "results.json").exists(), done.stdout[-2000:] + done.stderr[-2000:]
        results = (autograder / "results" / "results.json").read_text()
        assert "UNCONTAINED" in done.stdout + done.stderr and "as an unprivileged user" in done.stderr, done.stderr
        if cheat:
            assert json.loads(results)["score"] == 0, results
            uid = re.search(r"uid (\d+): Permission denied", results)
            assert uid and int(uid[1]) in sandbox.SANDBOX_USERS, results
        else:
            assert json.loads(results)["score"] == 1, results
    finally:
        shutil.rmtree(autograder, ignore_errors=True)
        if mount_point:
            with contextlib.suppress(OSError):
                os.rmdir("/autograder")


# Centred differences of a function's own forward pass, pushed back against the upstream gradient: a
# gradient with no formula in it. Exact for the linear layers and the quadratic costs (step 1), and with
# Richardson's extrapolation for the quartic style cost; fast on the small inputs of most checks.
_DIFFERENCES = """
    import numpy as _np

    def _pushed_back(f, a, d, h=1.0, richardson=False):
        def centred(step):
            g = _np.zeros(a.shape)
            flat, out = _np.array(a, dtype=_np.float64).reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                keep = flat[i]
                flat[i] = keep + step
                up = f(flat.reshape(a.shape))
                flat[i] = keep - step
                down = f(flat.reshape(a.shape))
                flat[i] = keep
                out[i] = _np.sum(d * (up - down)) / (2 * step)
            return g
        return (4 * centred(h / 2) - centred(h)) / 3 if richardson else centred(h)
"""
_FROM_THE_FORWARD_PASS = {
    ("layers", "conv2d_backward"): """
        x, w, b, stride, padding = cache
        forward = lambda xx, ww, bb: conv2d_forward(xx, ww, bb, stride, padding)[0]
        dx = _pushed_back(lambda v: forward(v, w, b), x, dout).astype(dout.dtype)
        if not weight_grads:
            return dx, None, None
        return (dx, _pushed_back(lambda v: forward(x, v, b), w, dout).astype(dout.dtype),
                _pushed_back(lambda v: forward(x, w, v), b, dout).astype(dout.dtype))
    """,
    ("layers", "avg_pool_backward"): """
        x_shape, size, stride, padding = cache
        return _pushed_back(lambda v: avg_pool_forward(v, size, stride, padding)[0], _np.zeros(x_shape),
                            dout).astype(dout.dtype)
    """,
    ("costs", "content_cost_backward"): """
        return _pushed_back(lambda v: compute_content_cost(a_C, v), a_G, 1.0).astype(a_G.dtype)
    """,
    ("costs", "gram_matrix_backward"): """
        return _pushed_back(gram_matrix, A, dG).astype(A.dtype)
    """,
    ("costs", "layer_style_cost_backward"): """
        return _pushed_back(lambda v: compute_layer_style_cost(a_S, v), a_G, 1.0, richardson=True).astype(a_G.dtype)
    """,
    ("costs", "total_variation_cost_backward"): """
        return _pushed_back(compute_total_variation_cost, x, 1.0).astype(x.dtype)
    """,
    ("costs", "layer_style_cost_from_target"): """
        n_C = a_G.shape[3]

        def cost(v):
            F = _np.asarray(v, dtype=_np.float64).reshape(-1, n_C)
            D = F.T @ F / F.shape[0] - target
            return _np.sum(D * D) / (4 * n_C**2)
        return float(cost(a_G)), _pushed_back(cost, a_G, 1.0, richardson=True).astype(a_G.dtype)
    """,
}


@needs_bwrap
def test_differentiating_ones_own_forward_pass_numerically_is_no_answer(pristine, tmp_path, teacher):
    """Such backward passes pass every check on small inputs; the main check at scale runs out of time."""
    plants = {key: textwrap.dedent(_DIFFERENCES) + textwrap.dedent(code) for key, code in _FROM_THE_FORWARD_PASS.items()}
    touched = [function for _, function in plants]
    report = run_attack(pristine, tmp_path, teacher, "key", plants, only=touched + ["relu_forward"], timeout=3.0)
    only_touched_lose(report, touched)
    for result in report.results:
        if result.exercise.function in touched:
            statuses = {check.label.split(" (")[0]: check.status for check in result.checks}
            at_scale = [label for label in statuses if label.startswith("at scale")]
            assert len(at_scale) == 1 and statuses[at_scale[0]] == "timeout", statuses
            assert all(status == "ok" for label, status in statuses.items() if label not in at_scale), statuses


@needs_bwrap
def test_no_folder_outside_tmp_takes_the_workers_files(pristine, tmp_path, teacher):
    """/dev (its shm) and the empty folders hiding the installed packages are read-only in the sandbox, whoever
    grades: a teacher who is not root leaves the worker its own uid, and it would own those tmpfs, of no size
    limit that any process limit counts. Only /tmp, small, takes files. (Run as root, as here, the worker is
    nobody and those folders are root's: this holds without the remounts too; a teacher who is not root is
    what they are for, and bwrap as nobody was checked by hand.)"""
    site = sandbox._site_packages()[0]
    code = f"""
        import os
        results = []
        for folder in ("/dev/shm", "/dev", {site!r}, "/tmp"):
            try:
                with open(os.path.join(folder, "parked"), "wb") as f:
                    f.write(b"x" * 4096)
                results.append(folder + " written")
            except OSError as error:
                results.append(folder + " refused")
        raise RuntimeError("; ".join(results))
    """
    report = run_attack(pristine, tmp_path, teacher, "key", {("layers", "relu_forward"): code}, only=["relu_forward"])
    text = " ".join(rendered(report).split())
    assert f"/dev/shm refused; /dev refused; {site} refused; /tmp written" in text, text

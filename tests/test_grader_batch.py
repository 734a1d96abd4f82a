"""Grading a class in one command (`scratchnst exercises grade`), its exports, the Gradescope bundle, and a
student copy that self-checks where no answer key exists (run inside a sandbox that holds only the
copy, Python and NumPy)."""

import csv
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import scratchnst
from scratchnst import exercises
from scratchnst.cli import main
from scratchnst.exercises import batch, sandbox
from scratchnst.exercises.cases import CheckResult
from scratchnst.exercises.grading import ExerciseResult, Report

sys.path.insert(0, str(Path(__file__).parent))
from test_grader_diagnoses import SLIPS, plant  # noqa: E402  (the planted slips, shared)
from conftest import strict_json  # noqa: E402

PACKAGE = Path(scratchnst.__file__).resolve().parent
BWRAP, WHY = sandbox.bwrap_status()
CONTAINMENT = [] if BWRAP else ["--uncontained"]


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """30 submissions: 4 answer keys, 4 untouched copies, 22 answer keys with 1 to 3 planted slips."""
    base = tmp_path_factory.mktemp("class")
    key, stub = base / "pristine-key", base / "pristine-stub"
    exercises.make_student_copy(key, solutions=True)
    exercises.make_student_copy(stub)
    room = base / "submissions"
    room.mkdir()
    rng = random.Random(13)
    planted = {}
    for i in range(30):
        name = f"student{i:02d}"
        shutil.copytree(stub if 4 <= i < 8 else key, room / name)
        slips = rng.sample(sorted(SLIPS), rng.randint(1, 3)) if i >= 8 else []
        for module, function in slips:
            plant(room / name, module, function, SLIPS[(module, function)])
        planted[name] = {function for _, function in slips}
    return room, planted


@pytest.fixture(scope="module")
def graded(klass, tmp_path_factory):
    room, planted = klass
    out = tmp_path_factory.mktemp("exports")
    start = time.monotonic()
    status = main(["exercises", "grade", str(room), "--no-torch", "--seed", "7", "--csv", str(out / "class.csv"),
                   "--json", str(out / "class.json"), "--gradescope", str(out / "gradescope")] + CONTAINMENT)
    return status, out, time.monotonic() - start


TOTAL = sum(e.points for e in exercises.CATALOGUE)


def test_a_class_of_30_grades_in_one_command(graded, klass, capsys):
    status, out, seconds = graded
    room, planted = klass
    assert status == 0
    print(f"\n30 submissions graded in {seconds:.1f} s ({'bwrap' if BWRAP else 'uncontained'}, "
          f"{os.cpu_count()} CPUs)", file=sys.__stderr__)
    assert seconds < 900  # generous: a loaded 2-core machine; about a second per submission here
    rows = {row["student"]: row for row in csv.DictReader((out / "class.csv").open())}
    assert sorted(rows) == sorted(planted)
    for name, row in rows.items():
        if name in ("student00", "student01", "student02", "student03"):
            assert row["percent"] == "100" and row["points"] == f"{TOTAL:.2f}", row
        elif name in ("student04", "student05", "student06", "student07"):
            assert row["percent"] == "0", row
        else:
            assert 0 < float(row["points"]) < TOTAL, row
            for function in planted[name]:
                column = next(k for k in row if k.endswith("." + function))
                assert float(row[column]) < next(e.points for e in exercises.CATALOGUE if e.function == function)


def test_the_json_export_names_each_planted_slip(graded, klass):
    _, out, _ = graded
    room, planted = klass
    from test_grader_diagnoses import NAMES

    data = {row["student"]: row for row in json.loads((out / "class.json").read_text())}
    for name, functions in planted.items():
        by_function = {e["name"].split(".")[1]: e for e in data[name]["exercises"]}
        for function in functions:
            assert NAMES[function] in by_function[function]["mistakes"], (name, function)


def test_gradescope_results_json_per_submission(graded, klass):
    _, out, _ = graded
    room, planted = klass
    files = sorted((out / "gradescope").glob("*.json"))
    assert [f.stem for f in files] == sorted(planted)
    result = json.loads((out / "gradescope" / "student00.json").read_text())
    assert result["score"] == TOTAL and len(result["tests"]) == len(exercises.CATALOGUE)
    assert all({"name", "score", "max_score", "output", "status"} <= set(t) for t in result["tests"])
    assert sum(t["max_score"] for t in result["tests"]) == TOTAL
    stub = json.loads((out / "gradescope" / "student04.json").read_text())
    assert stub["score"] == 0 and all(t["status"] == "failed" for t in stub["tests"])


def test_the_same_seed_gives_the_same_grades_and_no_seed_other_inputs(klass):
    room, _ = klass
    one = [room / "student08", room / "student09"]
    subs = [(p.name, p) for p in one]
    first = batch.grade_class(subs, seed=3, use_torch=False, contained=BWRAP, only=["relu", "style"])
    again = batch.grade_class(subs, seed=3, use_torch=False, contained=BWRAP, only=["relu", "style"])
    assert [r.points for _, r, _ in first] == [r.points for _, r, _ in again]
    a = exercises.reference_cases(only=["relu_forward"], use_torch=False, salt=1).entries[0][2][0].args[0]
    b = exercises.reference_cases(only=["relu_forward"], use_torch=False, salt=2).entries[0][2][0].args[0]
    assert a.shape == b.shape and not (a == b).all()


def test_a_folder_that_is_no_submission_is_one_line(tmp_path, capsys):
    assert main(["exercises", "grade", str(tmp_path)] + CONTAINMENT) == 1
    err = capsys.readouterr().err
    assert "holds no submission" in err and err.count("\n") == 1


def test_make_writes_a_gradescope_bundle_whose_answer_key_grades(tmp_path, klass):
    room, _ = klass
    assert main(["exercises", "make", str(tmp_path / "copy"), "--gradescope", str(tmp_path / "bundle")]) == 0
    folder = tmp_path / "bundle" / "gradescope"
    assert os.access(folder / "run_autograder", os.X_OK) and os.access(folder / "setup.sh", os.X_OK)
    assert "bubblewrap" in (folder / "setup.sh").read_text()
    assert "/autograder/results/results.json" in (folder / "run_autograder").read_text()
    with zipfile.ZipFile(tmp_path / "bundle" / "gradescope-autograder.zip") as z:
        names = set(z.namelist())
    assert {"setup.sh", "run_autograder", "source/scratchnst/layers.py"} <= names
    assert "# BEGIN SOLUTION" in (folder / "source" / "scratchnst" / "layers.py").read_text()
    assert not (tmp_path / "copy" / "gradescope").exists()  # the answers never go into the student copy
    # what run_autograder runs, with the bundle's answer key as the installed package
    results = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(folder / "source"))
    done = subprocess.run([sys.executable, "-m", "scratchnst", "exercises", "grade", str(room / "student00"),
                           "--gradescope", str(results), "--only", "relu", "--no-torch"] + CONTAINMENT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(results.read_text())["score"] == 2


def test_make_refuses_a_bundle_that_would_land_in_the_student_copy_before_writing_anything(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    for copy, bundle, words in (("c1", "c1", "would put the answer key in the student copy"),
                                ("c2", "c2/deeper", "would put the answer key in the student copy"),
                                ("b/gradescope/c3", "b", "or the copy in the bundle's folder"),
                                ("c4", "a-file", "is a file, not a folder")):
        status = main(["exercises", "make", str(tmp_path / copy), "--gradescope", str(tmp_path / bundle)])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1 and words in err, err
        assert not (tmp_path / copy).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(not BWRAP, reason=f"no sandbox to hide the answer key in: {WHY}")
def test_a_student_copy_self_checks_where_no_answer_key_exists(tmp_path):
    """In a sandbox that holds only the student copy, Python and NumPy: the copy's own `check` grades
    it against the values shipped with it (a stub: 0%; one exercise written: it passes)."""
    copy = tmp_path / "copy"
    exercises.make_student_copy(copy)
    plant(copy, "layers", "relu_forward", "out = np.maximum(x, 0)")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o755)
    for folder, dirs, files in os.walk(copy):
        os.chmod(folder, 0o755)
    runner = sandbox._runner(scratch)
    script = (f"import os, sys; sys.path[:0] = ['/sub', '/grader/lib']; "
              f"assert not os.path.exists({str(PACKAGE)!r}); "
              "from scratchnst.cli import main; sys.exit(main(['exercises', 'check', '/sub', '--only', 'relu']))")
    command = sandbox._bwrap_command(shutil.which("bwrap"), runner, copy, sandbox.Limits()) + ["-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "against the reference values shipped with the copy" in done.stdout
    assert "layers.relu_forward" in done.stdout and "1/1 points   pass" in done.stdout
    assert "(50%)" in done.stdout


def test_the_command_lines_defaults_are_the_modules_and_the_help_names_both_roles(capsys):
    from scratchnst.cli import build_parser

    args = build_parser().parse_args(["exercises", "grade", "somewhere"])
    assert (args.timeout, args.import_timeout, args.budget, args.memory) == (
        exercises.DEFAULT_TIMEOUT, exercises.DEFAULT_IMPORT_TIMEOUT, batch.DEFAULT_BUDGET, sandbox.Limits.memory_mb)
    assert build_parser().parse_args(["exercises", "check"]).import_timeout == exercises.DEFAULT_IMPORT_TIMEOUT
    from scratchnst.cli import parser
    from scratchnst.exercises import grading

    assert (parser.MAX_SECONDS, parser._LEAST_CHILD_MEMORY_MB) == (grading.MAX_SECONDS, sandbox.LEAST_MEMORY_MB)
    with pytest.raises(SystemExit):
        main(["exercises", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "SELF-CHECKS" in text and "GRADES untrusted submissions" in text


def test_a_submission_that_cannot_be_graded_is_a_row_and_exit_status_1(klass, tmp_path, capsys):
    room, _ = klass
    broken = tmp_path / "broken"
    (broken / "scratchnst").mkdir(parents=True)  # a package folder without __init__.py
    status = main(["exercises", "grade", str(room / "student00"), str(broken), "--only", "relu", "--no-torch",
                   "--csv", str(tmp_path / "out.csv")] + CONTAINMENT)
    assert status == 1
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [r["student"] for r in rows] == ["student00", "broken"]
    assert rows[0]["percent"] == "100" and "holds no scratchnst package" in rows[1]["error"]


def test_a_student_copy_that_does_not_import_still_checks_itself(tmp_path):
    """The checker never imports the student's modules itself: a syntax error in one and an endless loop
    at import in another cost their exercises, not the check."""
    exercises.make_student_copy(tmp_path)
    layers = tmp_path / "scratchnst" / "layers.py"
    layers.write_text("def broken(:\n" + layers.read_text())
    costs = tmp_path / "scratchnst" / "costs.py"
    costs.write_text("while True:\n    pass\n" + costs.read_text())
    plant(tmp_path, "optim", "adam_update", """
        m_new = beta1 * m + (1 - beta1) * dx
        v_new = beta2 * v + (1 - beta2) * dx * dx
        x_new = x - lr * (m_new / (1 - beta1**t)) / (np.sqrt(v_new / (1 - beta2**t)) + epsilon)
        return x_new, m_new, v_new
    """)
    done = subprocess.run([sys.executable, "-m", "scratchnst", "exercises", "check", "--import-timeout", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SyntaxError" in done.stdout and "importing scratchnst.costs took longer than 3 s" in done.stdout
    assert "optim.adam_update                                         2/2 points   pass" in done.stdout


# ============================================================ a timeout beside others is graded again alone
REGRADED = "graded again, alone: a check ran out of time while"


def _graded(status):
    """A report as grading makes one, without grading: one exercise whose one check has `status`."""
    result = ExerciseResult(exercises.CATALOGUE[0], [CheckResult("the question", status)], hint="")
    return Report(root=Path("."), results=[result], ungraded=[], torch="not used", seconds=0.5)


def _fake_grading(monkeypatch, timed_out):
    """grade_class with `grade` replaced: timed_out(folder, n) says whether the folder's n-th grading
    (1, 2, ...) times out. Returns the calls made, as (folder, n, cases given, gradings running then)."""
    cases = object()  # what reference_cases drew: each grading must be given this same object
    monkeypatch.setattr(batch, "reference_cases", lambda only, use_torch, salt: cases)
    calls, running, lock = [], [0], threading.Lock()

    def fake_grade(folder, **kwargs):
        with lock:
            running[0] += 1
            n = sum(f == folder for f, *_ in calls) + 1
            calls.append((folder, n, kwargs["cases"] is cases, running[0]))
        time.sleep(0.05)  # long enough for the pool's gradings to overlap
        with lock:
            running[0] -= 1
        return _graded("timeout" if timed_out(folder, n) else "ok")

    monkeypatch.setattr(batch, "grade", fake_grade)
    return calls


def test_a_submission_that_timed_out_beside_others_is_graded_again_alone_and_that_grading_kept(monkeypatch):
    """Budgets are wall-clock: beside a neighbour that burns every core, an honest but slow submission can
    run out of time. After the parallel phase it is graded again, alone, on the same inputs; the second
    grading is the one kept, says so, and is the one progress hears of (once per submission)."""
    calls = _fake_grading(monkeypatch, lambda folder, n: folder == "hog" or (folder == "slow" and n == 1))
    heard = []
    subs = [("hog", "hog"), ("slow", "slow"), ("fast", "fast")]
    outcomes = batch.grade_class(subs, jobs=3, progress=heard.append)
    assert [name for name, _, _ in outcomes] == ["hog", "slow", "fast"]
    reports = {name: report for name, report, _ in outcomes}
    assert reports["slow"].points == reports["slow"].total and reports["fast"].points == reports["fast"].total
    assert reports["hog"].points == 0  # graded again too, and out of time again: its own doing
    for name in ("hog", "slow"):
        (note,) = reports[name].notes
        assert note.startswith(REGRADED) and "3 submissions were graded at a time (0.0/1 points then)" in note
    assert reports["fast"].notes == []
    # the first three in parallel, then the two regradings one at a time, in the given order
    assert {c[:2] for c in calls[:3]} == {("hog", 1), ("slow", 1), ("fast", 1)}
    assert [c[:2] for c in calls[3:]] == [("hog", 2), ("slow", 2)]
    assert all(same_cases for _, _, same_cases, _ in calls)
    assert [running for *_, running in calls[3:]] == [1, 1]
    assert sorted(name for name, _, _ in heard) == ["fast", "hog", "slow"]
    assert all(any(o is h for o in outcomes) for h in heard)  # only the outcomes kept are heard of


def test_one_job_at_a_time_grades_each_submission_once(monkeypatch):
    """With --jobs 1 a timeout is the submission's own: nothing is graded again."""
    calls = _fake_grading(monkeypatch, lambda folder, n: True)
    outcomes = batch.grade_class([("a", "a"), ("b", "b")], jobs=1)
    assert [c[:2] for c in calls] == [("a", 1), ("b", 1)]
    assert all(report.notes == [] and report.points == 0 for _, report, _ in outcomes)


def test_an_honest_submission_slowed_by_its_neighbour_is_graded_again_alone_end_to_end(tmp_path):
    """Graded for real, two at a time: the honest relu waits while its neighbour's marker file exists (a
    stand-in for a neighbour hogging the CPU that needs no timing luck), and the neighbour, an endless
    loop, removes the marker when it is graded the second time. So beside it the honest one runs out of
    time whatever the machine's load, and alone (graded again after the neighbour) it passes.
    Uncontained: the two submissions share the marker through the file system."""
    marker, seen = tmp_path / "hog-running", tmp_path / "hog-seen"
    marker.touch()
    hog, honest = tmp_path / "hog", tmp_path / "honest"
    for root in (hog, honest):
        exercises.make_student_copy(root, solutions=True)
    plant(hog, "layers", "relu_forward", f"""
        import os, time
        if os.path.exists({str(seen)!r}):
            os.remove({str(marker)!r})
        else:
            open({str(seen)!r}, "w").close()
        while True:
            time.sleep(0.1)
    """)
    plant(honest, "layers", "relu_forward", f"""
        import os, time
        while os.path.exists({str(marker)!r}):
            time.sleep(0.05)
        out = np.maximum(x, 0)
    """)
    heard = []
    outcomes = batch.grade_class([("hog", hog), ("honest", honest)], only=["relu_forward"], timeout=5.0, jobs=2,
                                 contained=False, use_torch=False, seed=1, progress=heard.append)
    (_, hogs, _), (_, honests, _) = outcomes
    assert honests.perfect, [c.details for r in honests.results for c in r.checks if c.status != "ok"]
    assert any(n.startswith(REGRADED) and "(0.0/1 points then)" in n for n in honests.notes), honests.notes
    assert hogs.points == 0 and any(n.startswith(REGRADED) for n in hogs.notes)
    assert sorted(name for name, _, _ in heard) == ["hog", "honest"]



@pytest.mark.skipif(os.geteuid() != 0 or not BWRAP, reason="as root in bubblewrap, children become users of their own")
def test_submissions_graded_at_a_time_do_not_share_their_process_limit(tmp_path):
    """The kernel counts the process limit (4, threads included) per user: when every sandbox was the same
    nobody, two honest submissions whose ReLU ran in two threads, graded at a time, left each other none
    ("can't start new thread"), and one lost its points (a red-team review's find)."""
    threaded = """
        import threading, time
        out = np.empty_like(x)
        def half(rows):
            time.sleep(0.4)   # both submissions' threads alive at once
            out[rows] = np.maximum(x[rows], 0)
        n = x.shape[0] // 2
        workers = [threading.Thread(target=half, args=(slice(0, n),)), threading.Thread(target=half, args=(slice(n, None),))]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    """
    subs = []
    for name in ("ann", "ben"):
        exercises.make_student_copy(tmp_path / name, solutions=True)
        plant(tmp_path / name, "layers", "relu_forward", threaded)
        subs.append((name, tmp_path / name))
    outcomes = batch.grade_class(subs, only=["relu_forward"], jobs=2, use_torch=False, seed=2, contained=True)
    for name, report, error in outcomes:
        assert error is None and report.perfect, (name, [c.details for r in report.results for c in r.checks])
        assert not report.notes, report.notes   # graded once, side by side: no regrading alone
    # and the users are handed out one per child at a time, and given back
    first, second = sandbox.sandbox_user(), sandbox.sandbox_user()
    assert first != second and {first, second} <= set(sandbox.SANDBOX_USERS)
    sandbox.give_back_user(first)
    sandbox.give_back_user(second)
    assert sandbox.sandbox_user() == first
    sandbox.give_back_user(first)


def test_two_graders_at_once_share_no_sandbox_user():
    """Another grader's process holds its users (a lock file each) for as long as it runs: this one
    takes others, and gets them back once that process is gone, however it ended."""
    code = ("import sys; from scratchnst.exercises import sandbox; "
            "print(sandbox.sandbox_user(), sandbox.sandbox_user(), flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        theirs = set(map(int, other.stdout.readline().split()))
        ours = {sandbox.sandbox_user() for _ in range(3)}
        assert len(theirs) == 2 and len(ours) == 3 and not theirs & ours, (theirs, ours)
        for user in ours:
            sandbox.give_back_user(user)
    finally:
        other.kill()   # no goodbye: the kernel drops its locks
        other.wait()
    again = {sandbox.sandbox_user() for _ in range(5)}
    assert theirs <= again, (theirs, again)
    for user in again:
        sandbox.give_back_user(user)



@pytest.mark.parametrize("upload", ["--only=total_cost", "--timeout=1e-06", "-h"])
def test_an_upload_named_like_an_option_is_refused_not_obeyed(tmp_path, monkeypatch, capsys, upload):
    """`grade *` in a class folder hands the uploads' names to the parser: one named --only=total_cost graded
    the whole class on that one exercise, --timeout=1e-06 failed everyone, -h graded nothing and said 0."""
    (tmp_path / upload).mkdir()
    (tmp_path / "alice").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["exercises", "grade", *sorted(os.listdir("."))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scratchnst exercises grade: error: {upload!r} is an option, and also a file or folder "
                          "here") and "(grade ./*) or after -- (grade -- *)" in err and err.count("\n") == 1, err
    # after -- (or as ./NAME) it is a folder like any other: here, one that holds no scratchnst/
    assert main(["exercises", "grade", *CONTAINMENT, "--", *sorted(os.listdir("."))]) == 1
    assert f"{upload}: holds no scratchnst/ folder" in capsys.readouterr().out


# ============================================================ the exports: names students chose
def _report(ok=True, notes=()):
    """A graded submission as grading makes one, without grading: one exercise, one check."""
    exercise = exercises.CATALOGUE[0]
    result = ExerciseResult(exercise, [CheckResult("the question", "ok" if ok else "fail")], hint="")
    return Report(root=Path("."), results=[result], ungraded=[], torch="not used", notes=list(notes), seconds=0.5)


def _fake_class(tmp_path, monkeypatch, outcomes):
    """A class folder of the outcomes' names, graded instantly: run_grade's table and exports, not grading."""
    room = tmp_path / "room"
    for name, _, _ in outcomes:
        (room / name / "scratchnst").mkdir(parents=True)
    monkeypatch.setattr(batch, "grade_class", lambda submissions, **_: [
        next(o for o in outcomes if o[0] == name) for name, _ in submissions])
    return room


def test_a_folder_name_that_is_not_utf8_is_one_escaped_form_in_every_export(tmp_path, capsys):
    """Graded for real: b"Jos\\xe9" shows as Jos\\xe9 in the table, the CSV, the JSON and the Gradescope
    files; a folder literally named Jos\\xe9 stays another student (its backslash doubled)."""
    room = tmp_path / "room"
    room.mkdir()
    try:
        os.mkdir(os.path.join(os.fsencode(room), b"Jos\xe9"))
    except OSError as error:  # a file system that takes only UTF-8 names cannot hold such a folder
        pytest.skip(f"no folder name that is not UTF-8 here: {error}")
    raw = os.fsdecode(b"Jos\xe9")
    os.rmdir(room / raw)
    exercises.make_student_copy(room / raw, solutions=True)
    shutil.copytree(room / raw, room / "Jos\\xe9")
    out = tmp_path / "out"
    out.mkdir()
    status = main(["exercises", "grade", str(room), "--only", "relu", "--no-torch", "--csv", str(out / "c.csv"),
                   "--json", str(out / "c.json"), "--gradescope", str(out / "gs")] + CONTAINMENT)
    table, err = capsys.readouterr()
    assert status == 0, err
    shown = {"Jos\\xe9", "Jos\\\\xe9"}  # as a teacher reads them: Jos\xe9 and Jos\\xe9
    assert all(any(line.startswith(name + " ") for line in table.splitlines()) for name in shown), table
    rows = list(csv.DictReader((out / "c.csv").open(encoding="utf-8")))
    assert {r["student"] for r in rows} == shown and all(r["percent"] == "100" for r in rows)
    assert {r["student"] for r in json.loads((out / "c.json").read_text(encoding="utf-8"))} == shown
    files = sorted((out / "gs").iterdir())
    assert len(files) == 2 and all(f.name.isascii() for f in files)
    assert {json.loads(f.read_text(encoding="utf-8"))["extra_data"]["student"] for f in files} == shown


def test_an_export_that_cannot_be_written_is_refused_before_the_class_is_graded(tmp_path, monkeypatch, capsys):
    room = _fake_class(tmp_path, monkeypatch, [("alice", _report(), None)])
    monkeypatch.setattr(batch, "grade_class", lambda *a, **k: pytest.fail("graded before the exports were checked"))
    (tmp_path / "a-file").write_text("not a folder")
    for flags, words in ((["--csv", tmp_path / "missing" / "c.csv"], "missing does not exist; create it first"),
                         (["--json", tmp_path], "is a folder; give a file name in it, e.g. --json"),
                         (["--gradescope", tmp_path / "missing" / "r.json"], "missing does not exist"),
                         (["--gradescope", tmp_path / "a-file"], "is a file, not a folder"),
                         (["--gradescope", tmp_path / "a-file" / "out"], "a-file is a file, not a folder"),
                         (["--csv", tmp_path / "s.csv", "--json", tmp_path / "s.csv"],
                          "--csv and --json name the same file"),
                         (["--json", tmp_path / "s.json", "--gradescope", tmp_path / "sub" / ".." / "s.json"],
                          "--json and --gradescope name the same file")):
        status = main(["exercises", "grade", str(room), *map(str, flags)] + CONTAINMENT)
        err = capsys.readouterr().err
        assert status in (1, 2) and err.count("\n") == 1 and words in err, err


def test_an_export_that_cannot_be_written_costs_no_other(tmp_path, monkeypatch, capsys):
    """Every export is tried: those that cannot be written at the end (their folder gone while the class
    was graded) say why in one line each, exit status 1."""
    outcomes = [("alice", _report(), None), ("bob", _report(ok=False), None)]
    room = _fake_class(tmp_path, monkeypatch, outcomes)
    graded = batch.grade_class
    (tmp_path / "missing").mkdir()

    def grade_class(*args, **kwargs):  # meanwhile the CSV's folder goes, a file takes the Gradescope folder's name
        (tmp_path / "missing").rmdir()
        (tmp_path / "a-file").write_text("not a folder")
        return graded(*args, **kwargs)

    monkeypatch.setattr(batch, "grade_class", grade_class)
    status = main(["exercises", "grade", str(room), "--csv", str(tmp_path / "missing" / "c.csv"), "--json",
                   str(tmp_path / "c.json"), "--gradescope", str(tmp_path / "a-file")] + CONTAINMENT)
    monkeypatch.setattr(batch, "grade_class", graded)
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("graded ", "warning"))]
    assert status == 1
    assert len(err) == 2 and all(line.startswith("scratchnst: error: ") for line in err), err
    assert "CSV file" in err[0] and "missing" in err[0] and "Gradescope folder" in err[1], err
    assert [r["student"] for r in json.loads((tmp_path / "c.json").read_text())] == ["alice", "bob"]
    # a bug in one export: one line too, and the others are written
    monkeypatch.setattr(batch, "as_csv", lambda outcomes: 1 / 0)
    status = main(["exercises", "grade", str(room), "--csv", str(tmp_path / "c.csv"), "--json",
                   str(tmp_path / "d.json"), "--gradescope", str(tmp_path / "gs")] + CONTAINMENT)
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("graded ", "warning"))]
    assert status == 1 and len(err) == 1 and "CSV file was not written: internal error (ZeroDivisionError" in err[0]
    assert (tmp_path / "d.json").exists() and len(list((tmp_path / "gs").glob("*.json"))) == 2
    assert not (tmp_path / "c.csv").exists()


def test_a_reader_that_goes_away_costs_no_export(tmp_path, monkeypatch):
    """`grade ... | head -1`: the table's reader gone, the exports of the class are written all the same."""
    room = _fake_class(tmp_path, monkeypatch, [("alice", _report(), None), ("bob", _report(ok=False), None)])

    class GoneReader(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        batch.run_grade([room], csv_path=tmp_path / "c.csv", json_path=tmp_path / "c.json",
                        gradescope=tmp_path / "gs", report=True, stream=GoneReader(), uncontained=True)
    assert [r["student"] for r in csv.DictReader((tmp_path / "c.csv").open(encoding="utf-8"))] == ["alice", "bob"]
    assert len(json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))) == 2
    assert len(list((tmp_path / "gs").glob("*.json"))) == 2


def test_results_of_an_earlier_run_left_in_the_gradescope_folder_are_named(tmp_path, monkeypatch, capsys):
    room = _fake_class(tmp_path, monkeypatch, [("alice", _report(), None), ("bob", _report(ok=False), None)])
    gs = tmp_path / "gs"
    gs.mkdir()
    (gs / "zoe.json").write_text("{}")        # a student of last year's class
    (gs / "notes.txt").write_text("mine")     # not a result: not named
    assert main(["exercises", "grade", str(room), "--gradescope", str(gs)] + CONTAINMENT) == 0
    note, = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert f"the Gradescope folder {gs} also holds 1 file(s) this run did not write (zoe.json)" in note
    assert sorted(p.name for p in gs.iterdir()) == ["alice.json", "bob.json", "notes.txt", "zoe.json"]
    (gs / "zoe.json").unlink()
    assert main(["exercises", "grade", str(room), "--gradescope", str(gs)] + CONTAINMENT) == 0
    assert "note: " not in capsys.readouterr().err


def test_names_that_look_the_same_but_are_spelt_apart_are_pointed_out(tmp_path, monkeypatch, capsys):
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    room = _fake_class(tmp_path, monkeypatch, [(composed, _report(), None), (decomposed, _report(ok=False), None),
                                               ("JOSE", _report(), None)])
    assert main(["exercises", "grade", str(room)] + CONTAINMENT) == 0
    note, = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert note.startswith("note: 1 pair(s) of names look the same but are spelt with other characters")
    assert ascii(composed) in note and ascii(decomposed) in note and "JOSE" not in note   # Jos\xe9, Jose\u0301


def test_an_answer_of_nan_leaves_every_export_valid_json(tmp_path):
    """An honest slip (NaN everywhere) gives infinite errors: strict parsers must still read the exports."""
    exercises.make_student_copy(tmp_path / "nan", solutions=True)
    plant(tmp_path / "nan", "layers", "relu_forward", "out = np.full_like(x, np.nan)")
    status = main(["exercises", "grade", str(tmp_path / "nan"), "--no-torch", "--only", "relu_forward", "--json",
                   str(tmp_path / "c.json"), "--gradescope", str(tmp_path / "gs.json")] + CONTAINMENT)
    assert status == 0
    (row,) = strict_json((tmp_path / "c.json").read_text())
    errors = [check["error"] for exercise in row["exercises"] for check in exercise["checks"]]
    assert None in errors and row["points"] == 0, row
    assert strict_json((tmp_path / "gs.json").read_text())["score"] == 0


def test_gradescope_files_never_collide_and_each_names_its_student(tmp_path):
    crafted = "a_b-" + hashlib.sha256(b"a b").hexdigest()[:8]  # the file `a b` would get, taken first
    names = ["a b", "a_b", "A_B", "a?b", crafted, "x" * 300, "ü" * 200, os.fsdecode(b"Jos\xe9"), "Jos_", "plain"]
    files = batch.gradescope_file_names(names)
    assert len({f.casefold() for f in files}) == len(names)  # also where the file system ignores case
    assert all(f.endswith(".json") and len(f.encode()) <= 255 for f in files)
    assert files[names.index("plain")] == "plain.json" and files[names.index("Jos_")] == "Jos_.json"
    assert dict(zip(names, files)) == dict(zip(names[::-1], batch.gradescope_file_names(names[::-1])))
    # written: `a b` and `a_b` both keep their own results, and each file says whose it is
    outcomes = [("a b", _report(), None), ("a_b", _report(ok=False), None), ("=x", None, "not graded: no package")]
    assert batch.write_exports(outcomes, gradescope=tmp_path / "gs") == []
    found = {r["extra_data"]["student"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "gs").iterdir()))}
    assert sorted(found) == ["=x", "a b", "a_b"]
    assert found["a b"]["score"] > 0 and found["a_b"]["score"] == 0 and found["=x"]["score"] == 0


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text():
    """OWASP's CSV injection: a leading ' where a cell of the students' text would start a formula; the
    numbers stay numbers, and every cell is quoted (a spreadsheet that splits on ; keeps `x;=1+1` whole)."""
    formulas = ['=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(A1)", " =1+1", "\uff1d1+1"]
    outcomes = [(n, _report(), None) for n in formulas] + [
        ("\t=1+1", _report(), None), ("x;=1+1", _report(), None),
        ("bob", None, "=cmd|' /C calc'!A0"), ("carol", None, "\r-not graded"), ("dave", None, "\t@x")]
    text = batch.as_csv(outcomes)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["student"] for r in rows[:6]] == ["'" + n for n in formulas]
    assert rows[6]["student"] == "\\t=1+1"  # a tab in a name is shown as \t: no formula either
    assert rows[7]["student"] == "x;=1+1" and '"x;=1+1"' in text
    assert [r["error"] for r in rows[8:]] == ["'=cmd|' /C calc'!A0", "'\r-not graded", "'\t@x"]
    points = f"{exercises.CATALOGUE[0].points:.2f}"
    assert [r["points"] for r in rows] == [points] * 8 + [""] * 3  # numbers are never prefixed; none if not graded
    assert [r["percent"] for r in rows] == ["100"] * 8 + [""] * 3
    # the JSON holds the names as they are: no spreadsheet reads it
    assert [r["student"] for r in batch.as_json(outcomes)[:6]] == formulas


def _layout(base, spec):
    """Make the folders and files of spec under base: 'a/b/' a folder, 'a/f.zip' a file, 'a -> b' a link."""
    for item in spec:
        if " -> " in item:
            link, target = item.split(" -> ")
            (base / link).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(base / target, base / link)
        elif item.endswith("/"):
            (base / item).mkdir(parents=True, exist_ok=True)
        else:
            (base / item).parent.mkdir(parents=True, exist_ok=True)
            (base / item).write_bytes(b"PK\x03\x04")


def _found(found, base):
    return [(name, str(f.relative_to(base)) if isinstance(f, Path) else type(f).__name__) for name, f in found]


def test_a_stray_package_in_the_class_folder_does_not_take_the_class_over(tmp_path):
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/bob/scratchnst/", "cls/scratchnst/"])
    found = batch.find_submissions([tmp_path / "cls"])
    assert _found(found, tmp_path) == [("alice", "cls/alice"), ("bob", "cls/bob"), ("scratchnst", "NotASubmission")]
    assert "whose is it" in str(found[2][1])
    # alone, with other files beside it, a scratchnst/ is one student's submission
    _layout(tmp_path, ["one/scratchnst/", "one/notes/", "one/README.txt"])
    assert _found(batch.find_submissions([tmp_path / "one"]), tmp_path) == [("one", "one")]


def test_every_upload_of_a_class_gets_a_row_saying_why_it_is_not_graded(tmp_path):
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/dave/project/scratchnst/", "cls/erin/",
                       "cls/erin/scratchnst -> cls/alice/scratchnst", "cls/frank.zip", "cls/gina.py",
                       "cls/hank -> cls/alice", "cls/.DS_Store", "cls/__MACOSX/"])
    found = dict(batch.find_submissions([tmp_path / "cls"]))
    assert sorted(found) == ["alice", "dave", "erin", "frank.zip", "gina.py", "hank"]
    assert found["alice"] == tmp_path / "cls/alice"
    why = {name: str(f) for name, f in found.items() if name != "alice"}
    assert "cls/dave/project/scratchnst is one: move it up" in why["dave"]
    assert "symbolic link" in why["erin"] and "symbolic link" in why["hank"]
    assert "archive" in why["frank.zip"] and "a file" in why["gina.py"]


def test_a_submission_with_copies_of_its_work_beside_it_is_one_submission(tmp_path):
    _layout(tmp_path, ["single/scratchnst/", "single/backup/scratchnst/", "single/notes.txt", "single/data/"])
    assert _found(batch.find_submissions([tmp_path / "single"]), tmp_path) == [("single", "single")]
    # unpacked into a class folder, one upload's package does not make the class one submission
    _layout(tmp_path, ["cls/scratchnst/", "cls/alice.zip", "cls/bob.tar.gz", "cls/carol/hw/scratchnst/"])
    found = _found(batch.find_submissions([tmp_path / "cls"]), tmp_path)
    assert [name for name, _ in found] == ["alice.zip", "bob.tar.gz", "carol", "scratchnst"]
    assert all(kind == "NotASubmission" for _, kind in found)
    # Gradescope's run gives one student's upload: it is one submission whatever it holds
    assert _found(batch.find_submissions([tmp_path / "cls"], one=True), tmp_path) == [("cls", "cls")]


def test_a_class_folder_given_through_a_link_is_followed_and_strangers_files_are_left_out(tmp_path):
    _layout(tmp_path, ["real/submission_1/scratchnst/", "real/submission_2/scratchnst/", "real/metadata.yml",
                       "real/grades.csv", "real/gs/results.json", "current -> real"])
    for given in (tmp_path / "current", str(tmp_path / "current") + "/"):
        assert [name for name, _ in batch.find_submissions([given])] == ["submission_1", "submission_2"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, to drop its power to read all")
def test_an_unreadable_upload_is_a_row_not_the_end_of_the_class(tmp_path):
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/locked/scratchnst/", "cls/scratchnst/"])  # and a stray package
    os.chmod(tmp_path / "cls" / "locked", 0)
    try:
        script = ("from scratchnst.exercises import batch; import sys; "
                  "print(batch.find_submissions(sys.argv[1:2])); print(batch.find_submissions(sys.argv[1:]))")
        done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                               "--inh-caps=-dac_override,-dac_read_search", sys.executable, "-c", script,
                               str(tmp_path / "cls"), str(tmp_path / "cls" / "alice")],
                              capture_output=True, text=True, timeout=120, cwd=Path(scratchnst.__file__).parent.parent)
    finally:
        os.chmod(tmp_path / "cls" / "locked", 0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("locked: cannot be read (Permission denied)") == 2, done.stdout


def test_uploads_of_loose_files_beside_a_stray_package_still_make_a_class(tmp_path):
    _layout(tmp_path, ["cls/scratchnst/", "cls/dave/scratchnst/", "cls/alice/nst.py", "cls/bob/nst.py"])
    found = _found(batch.find_submissions([tmp_path / "cls"]), tmp_path)
    assert found == [("alice", "NotASubmission"), ("bob", "NotASubmission"), ("dave", "cls/dave"),
                     ("scratchnst", "NotASubmission")]


def test_earlier_exports_beside_a_package_do_not_hide_an_upload(tmp_path):
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/alice/result.json", "cls/bob/proj/scratchnst/",
                       "cls/bob/out.json", "cls/gs/results.json", "cls/eve/scratchnst/"])
    found = dict(batch.find_submissions([tmp_path / "cls"]))
    assert sorted(found) == ["alice", "bob", "eve"] and isinstance(found["alice"], Path)
    assert "cls/bob/proj/scratchnst is one: move it up" in str(found["bob"])


def test_paths_that_cannot_be_followed_or_are_given_twice(tmp_path):
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/loop -> cls/loop", "sec/a/b/scratchnst/",
                       "course/s1/alice/scratchnst/", "course/s1/bob/scratchnst/", "course/s2/carol/scratchnst/"])
    found = dict(batch.find_submissions(sorted((tmp_path / "cls").iterdir())))  # `grade cls/*`
    assert isinstance(found["alice"], Path) and "symbolic link" in str(found["loop"])
    twice = batch.find_submissions([tmp_path / "cls" / "alice", tmp_path / "cls" / "alice" / "."])
    assert [name for name, _ in twice] == ["alice"]
    nested = dict(batch.find_submissions([tmp_path / "course"]))
    assert "2 folders below it hold one" in str(nested["s1"]) and "grade it by itself" in str(nested["s1"])


def test_archives_of_every_kind_get_a_row_and_files_left_out_are_named(tmp_path, monkeypatch, capsys):
    """Archives of the kinds students send get a row saying to unpack them; any other file is left out,
    as an earlier export or an LMS's metadata is, but named once before the grading starts."""
    archives = ["bob.tar.zst", "dan.tar.lz4", "gina.lzma", "hal.tbz2", "ivy.whl", "frank.zip.001", "kim.7z.002"]
    others = ["carl", "erin.txt", "grades.csv"]
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/.DS_Store", "cls/__MACOSX/"]
            + [f"cls/{n}" for n in archives + others])
    left_out = []
    found = batch.find_submissions([tmp_path / "cls"], left_out=left_out)
    assert [name for name, _ in found] == sorted(["alice"] + archives)
    assert all("an archive, not a folder; unpack it" in str(f) for name, f in found if name != "alice")
    assert sorted(p.name for p in left_out) == sorted(others)
    left_out = []   # `grade cls/*` leaves the same out, and names them too
    given = sorted(p for p in (tmp_path / "cls").iterdir() if not p.name.startswith((".", "__")))
    assert len(batch.find_submissions(given, left_out=left_out)) == 1 + len(archives)
    assert sorted(p.name for p in left_out) == sorted(others)
    # the command names them before grading, in one line
    monkeypatch.setattr(batch, "grade_class", lambda submissions, **_: [
        (name, _report() if isinstance(f, Path) else None, None if isinstance(f, Path) else str(f))
        for name, f in submissions])
    assert main(["exercises", "grade", str(tmp_path / "cls")] + CONTAINMENT) == 1
    table, err = capsys.readouterr()
    note, = [line for line in err.splitlines() if line.startswith("note: ")]
    assert note.startswith("note: left out 3 entries that look like no upload (no row): carl, erin.txt, grades.csv;")
    assert all(f"{n} " in table for n in archives)


def test_the_package_folder_itself_given_says_to_give_its_parent(tmp_path, capsys):
    _layout(tmp_path, ["s1/scratchnst/", "s1/scratchnst/__init__.py", "s1/scratchnst/layers.py"])
    status = main(["exercises", "grade", str(tmp_path / "s1" / "scratchnst")] + CONTAINMENT)
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert f"is the package itself: give the folder that holds it, {tmp_path / 's1'}" in err


def test_gradescopes_one_upload_is_always_one_row(tmp_path):
    _layout(tmp_path, ["loose/batch.py", "loose/layers.py", "kept/scratchnst/", "kept/a/scratchnst/",
                       "kept/b/scratchnst/", "kept/c.zip"])
    (row,) = batch.find_submissions([tmp_path / "loose"], one=True)
    assert row[0] == "loose" and isinstance(row[1], batch.NotASubmission)
    assert batch.find_submissions([tmp_path / "kept"], one=True) == [("kept", tmp_path / "kept")]
    # a class folder given as one upload (--gradescope FILE.json): the advice is not "grade it by itself"
    _layout(tmp_path, ["cls/a/scratchnst/", "cls/b/scratchnst/"])
    (row,) = batch.find_submissions([tmp_path / "cls"], one=True)
    assert "for a class folder give --gradescope a folder" in str(row[1]) and "by itself" not in str(row[1])


def test_a_folder_given_for_one_student_cannot_make_rows_for_others(tmp_path):
    # `grade cls/*`: dave's folder holds two packages, one in a folder named after carol, who sent none
    _layout(tmp_path, ["cls/alice/scratchnst/", "cls/dave/dave/scratchnst/", "cls/dave/carol/scratchnst/",
                       "cls/erin/", "cls/erin/scratchnst -> cls/alice/scratchnst", "cls/frank.zip"])
    found = batch.find_submissions(sorted((tmp_path / "cls").iterdir()))
    names = [name for name, _ in found]
    assert names == ["alice", "dave/carol", "dave/dave", "erin", "frank.zip"]
    assert all(isinstance(f, batch.NotASubmission) for name, f in found if name in ("erin", "frank.zip"))


def test_uploads_that_are_no_submission_are_rows_of_the_table_and_the_csv(tmp_path, klass):
    room, _ = klass
    cls = tmp_path / "cls"
    shutil.copytree(room / "student00", cls / "alice")
    shutil.copytree(room / "student04", cls / "bob")
    shutil.copytree(room / "student00" / "scratchnst", cls / "scratchnst")
    _layout(tmp_path, ["cls/frank.zip"])
    (cls / "grades.csv").write_text("student,points\n")   # an earlier run's exports, an LMS's metadata, macOS's
    (cls / "metadata.yml").write_text("course: x\n")      # archive folder: nobody's upload, whether cls or cls/*
    (cls / "gs").mkdir()                                   # is given
    (cls / "gs" / "alice.json").write_text("{}")
    shutil.copytree(room / "student00" / "scratchnst", cls / "__MACOSX" / "alice" / "scratchnst")
    for given in ([cls], sorted(cls.iterdir())):
        status = main(["exercises", "grade", *map(str, given), "--only", "relu_forward", "--no-torch", "--csv",
                       str(tmp_path / "grades.csv")] + CONTAINMENT)
        assert status == 1  # some uploads could not be graded
        rows = {row["student"]: row for row in csv.DictReader((tmp_path / "grades.csv").open())}
        assert sorted(rows) == ["alice", "bob", "frank.zip", "scratchnst"], rows
        assert rows["alice"]["percent"] == "100" and rows["bob"]["percent"] == "0"
        assert "archive" in rows["frank.zip"]["error"] and rows["scratchnst"]["error"]
        # not graded is no grade: no points an import could take for a 0
        assert rows["frank.zip"]["points"] == rows["frank.zip"]["percent"] == "", rows["frank.zip"]
    with pytest.raises(batch.UserError, match="none of the 2 paths given is an upload"):
        batch.find_submissions([cls / "grades.csv", cls / "gs"])

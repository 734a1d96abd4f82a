"""The reference values shipped with a student copy, so that a student can check their work without
the answer key: the checks of every exercise (inputs, expected values, tolerances, the values of
the classic mistakes), computed by `exercises make` from the answers and written as plain data.

    scratchnst/exercises/selfcheck/cases.json   the checks, arrays referred to by number
    scratchnst/exercises/selfcheck/arrays.npz   the arrays (NumPy's .npy format, read without pickle)

The values are of fixed seeded inputs, which a teacher's `grade` does not use (it draws others).
The values use worker.py's plain-data format: the same that carries the student's answers.
"""

import json
from pathlib import Path

import numpy as np

from scratchnst.exercises.cases import Case, Mistake, Pick
from scratchnst.exercises.worker import Limits, ProtocolError, pack, unpack

FOLDER = Path("exercises") / "selfcheck"  # inside the package
FORMAT = 1
_READ_LIMITS = Limits(array_bytes=1 << 30, arrays=1 << 20, string=1 << 16)


def _case_data(case, arrays):
    return {
        "label": case.label, "args": pack(tuple(case.args), arrays), "kwargs": pack(dict(case.kwargs), arrays),
        "expected": pack(case.expected, arrays), "parts": list(case.parts),
        "pick": None if case.pick is None else {"paths": [list(p) for p in case.pick.paths],
                                                "structures": list(case.pick.structures)},
        "mistakes": [{"name": m.name, "why": m.why, "value": pack(m.value, arrays), "part": m.part, "tol": m.tol,
                      "differs_only_at": pack(m.differs_only_at, arrays)} for m in case.mistakes],
        "tol": case.tol, "normwise": case.normwise,
        "dtype": None if case.dtype is None else np.dtype(case.dtype).name,
        "hint": case.hint, "size_rule": case.size_rule, "main": case.main,
    }


def write(package_dir, entries):
    """Write the checks of `entries` ((Exercise, hint, [Case]) ...) into package_dir/exercises/selfcheck/."""
    arrays, exercises = [], []
    for exercise, hint, cases in entries:
        exercises.append({"name": exercise.name, "hint": hint, "cases": [_case_data(c, arrays) for c in cases]})
    folder = Path(package_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cases.json").write_text(json.dumps({"format": FORMAT, "exercises": exercises}), encoding="utf-8")
    np.savez(folder / "arrays.npz", **{f"a{i}": a for i, a in enumerate(arrays)})


def _case(data, arrays):
    def value(obj):
        return unpack(obj, arrays, _READ_LIMITS)

    pick = data["pick"]
    return Case(
        data["label"], value(data["args"]), value(data["expected"]), kwargs=value(data["kwargs"]),
        parts=tuple(data["parts"]),
        pick=None if pick is None else Pick(tuple(tuple(p) for p in pick["paths"]), tuple(pick["structures"])),
        mistakes=[Mistake(m["name"], m["why"], value(m["value"]), part=m["part"], tol=m["tol"],
                          differs_only_at=value(m["differs_only_at"])) for m in data["mistakes"]],
        tol=data["tol"], normwise=data["normwise"], dtype=None if data["dtype"] is None else np.dtype(data["dtype"]),
        hint=data["hint"], size_rule=data["size_rule"], main=data["main"])


def load(package_dir):
    """[(exercise name, hint, [Case])] shipped in package_dir, or None if it ships none (or they cannot be read)."""
    folder = Path(package_dir) / FOLDER
    try:
        data = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = [npz[f"a{i}"] for i in range(len(npz.files))]
        if data.get("format") != FORMAT:
            return None
        return [(e["name"], e["hint"], [_case(c, arrays) for c in e["cases"]]) for e in data["exercises"]]
    except (OSError, ValueError, KeyError, TypeError, ProtocolError):
        return None

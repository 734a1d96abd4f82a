"""Course exercises: a student copy of the package with the answers cut out, and its autograder.

Two roles:
    self-check  a student checks their own copy: `scratchnst exercises check [DIR]`. Against the
                installed package's answers where it has them; in a student copy, against the
                reference values shipped with the copy (casefile.py): no answer key needed.
    grading     a teacher grades untrusted submissions: `scratchnst exercises grade DIR...`. Each
                runs contained (sandbox.py), against freshly drawn inputs, in parallel; exports as
                a table, CSV, JSON or Gradescope's results.json (batch.py).

What each module holds (none imports this package's __init__; the arrows of import go down):
    markers        the solution markers, the hidden functions, writing the student copy and its README
    catalogue      the graded exercises, their order and points
    checks_layers  the checks and classic mistakes of layers.py's exercises
    checks_costs   ... of costs.py's exercises
    checks_optim   ... of optim.py's exercise (adam_update)
    cases          one check (Case, Mistake, Pick) and judging an answer to it (CheckResult)
    casefile       the checks as plain data (JSON + .npz), shipped with a student copy
    worker         the child process that runs the student's code (what it may import and print), and the
                   plain-data wire format
    sandbox        the scratch copy of a submission, the contained child, its limits and its end
    grading        grading one copy: grade, Report, print_report, run_check, run_make
    uploads        where a class's submissions are: every upload of a class folder, graded or a row saying why not
    batch          grading a class: run_grade, the exports, the Gradescope bundle
See grading.py's docstring for what the student copy hides and how a check judges an answer.
"""

from scratchnst.exercises.catalogue import CATALOGUE, Exercise
from scratchnst.exercises.cases import CheckResult
from scratchnst.exercises.grading import (DEFAULT_IMPORT_TIMEOUT, DEFAULT_TIMEOUT, ExerciseResult, Report, grade,
                                          make_student_copy, print_report, reference_cases, run_check, run_make)
from scratchnst.exercises.markers import MarkerError, Region, find_regions, hidden_functions, package_regions

__all__ = [
    "CATALOGUE", "DEFAULT_IMPORT_TIMEOUT", "DEFAULT_TIMEOUT", "CheckResult", "Exercise", "ExerciseResult",
    "MarkerError", "Region", "Report", "find_regions", "grade", "hidden_functions", "make_student_copy",
    "package_regions", "print_report", "reference_cases", "run_check", "run_make",
]

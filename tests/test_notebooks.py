"""Every lesson runs as a Jupyter notebook and shows each of its pictures in the cell that makes it.

The lessons are turned into notebooks and run exactly as `python lessons/build_notebooks.py` does
(jupytext, nbclient, an ipykernel kernel), at a small size and with few iterations, writing their
pictures into a temporary folder. A cell that calls `_lesson.save`, `_lesson.save_plot` or
`_lesson.plot_relative_costs` must show one PNG per call, the same bytes as the file written; no
cell may show an empty matplotlib figure ("<Figure size ... with 0 Axes>") or a stray Out[] value.
"""

import base64
import importlib.util
import io
import re

import pytest
from PIL import Image

from conftest import REPO, missing
from test_lessons import EXPECTED, EXTRA, NEEDS_WEIGHTS, QUICK

LESSONS_DIR = REPO / "lessons"
# A call that makes one picture (a script line, not a comment).
PICTURE_CALL = re.compile(r"^[^#\n]*\b_lesson\.(save|save_plot|plot_relative_costs)\(", re.MULTILINE)


def load_builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", LESSONS_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shown_pictures(cell):
    """The PNGs (bytes) a code cell's outputs show."""
    return [base64.b64decode(out["data"]["image/png"]) for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})]


def picture_problems(nb):
    """What is wrong with the pictures of an executed notebook: a list of sentences, empty if nothing."""
    problems = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        where = f"cell {number} ({first_line[:60]!r})"
        calls = len(PICTURE_CALL.findall(cell.source))
        pictures = shown_pictures(cell)
        if len(pictures) != calls:
            problems.append(f"{where} makes {calls} picture(s) but shows {len(pictures)}")
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            if "<Figure size" in text and "image/png" not in out.get("data", {}):
                problems.append(f"{where} shows an empty figure: {text!r}")
            if out.get("output_type") == "execute_result":
                problems.append(f"{where} shows a stray value: {text[:80]!r}")
        for png in pictures:
            with Image.open(io.BytesIO(png)) as im:
                if im.width < 32 or im.height < 32:
                    problems.append(f"{where} shows a picture of only {im.width}x{im.height} pixels")
    return problems


@pytest.fixture(scope="module")
def builder():
    for module in ("jupytext", "nbclient", "nbconvert", "ipykernel", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed: pip install -e \".[lessons]\"")
    return load_builder()


def test_the_checker_finds_a_missing_picture_and_an_empty_figure():
    """picture_problems is what the notebook test relies on: it must fail where it should."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    png = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(png, format="PNG")
    shown = new_output("display_data", data={"image/png": base64.b64encode(png.getvalue()).decode(),
                                             "text/plain": "<IPython.core.display.Image object>"})
    empty = new_output("display_data", data={"text/plain": "<Figure size 600x400 with 0 Axes>"})
    good = new_code_cell('_lesson.save(args, "a.png", picture)', outputs=[shown])
    silent = new_code_cell('_lesson.section("x")\n_lesson.save(args, "b.png", picture)', outputs=[])
    blank = new_code_cell('    _lesson.save_plot(args, "c.png", fig)', outputs=[shown, empty])
    commented = new_code_cell('# _lesson.save(args, "d.png", picture)  is only a comment', outputs=[])
    assert picture_problems(new_notebook(cells=[good, commented])) == []
    problems = picture_problems(new_notebook(cells=[good, silent, blank]))
    assert len(problems) == 2, problems
    assert "makes 1 picture(s) but shows 0" in problems[0] and "empty figure" in problems[1]


# Characters that Markdown may take as syntax and drop from the page: * and ** (emphasis), [..](..) (a
# link), + at a line's start (a bullet), \\ (an escape), < > (a tag), | (a table). A lesson's text shows
# them as written: formulas such as KH*KW or a[l](C) go in backticks. Headings' # are syntax, not counted.
MARKUP = "*[]()+_\\<>|"


def markup_lost(markdown_text):
    """{character: (in the source, on the page)} for the MARKUP characters the rendered page lost or gained.

    Rendered by nbconvert's own Markdown filter (the HTML page's; Jupyter's is alike), tags stripped.
    """
    import html

    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    page = html.unescape(re.sub(r"<[^>]+>", "", markdown2html_mistune(markdown_text)))
    counts = {c: (markdown_text.count(c), page.count(c)) for c in MARKUP}
    return {c: n for c, n in counts.items() if n[0] != n[1]}


def test_lesson_args_may_be_one_option_that_starts_with_a_dash(builder):
    joined = builder._joined_lesson_args(["01", "--lesson-args", "--size=64", "--no-html", "--lesson-args", "-h"])
    assert joined == ["01", "--lesson-args=--size=64", "--no-html", "--lesson-args=-h"]
    assert builder._joined_lesson_args(["--lesson-args", "--size 64 --iters 3"]) == ["--lesson-args=--size 64 --iters 3"]
    assert builder._joined_lesson_args(["02", "--lesson-args"]) == ["02", "--lesson-args"]  # argparse says what is missing


def test_the_markup_check_sees_what_markdown_eats(builder):
    assert markup_lost("KH*KW slices instead of H_out*W_out") == {"*": (2, 0)}
    assert markup_lost("| a | b |\n|---|---|\n| 1 | 2 |")["|"][1] == 0
    assert markup_lost("a typo for a[l](C) - a[l](G)")["["] == (2, 0)
    assert markup_lost("a long line\n+ rng.uniform(0, 1)") == {"+": (1, 0)}
    assert markup_lost("`KH*KW` slices, `a[l](C)`, 2 * 3, a_C and a_G,\n\n    G = A @ A.T * 2**k") == {}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_lessons_text_shows_every_character_it_is_written_with(name, builder):
    nb = builder.to_notebook(LESSONS_DIR / name)
    lost = {number: markup_lost(cell.source) for number, cell in enumerate(nb.cells) if cell.cell_type == "markdown"}
    assert not any(lost.values()), {number: found for number, found in lost.items() if found}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lesson_as_a_notebook_shows_its_pictures(name, builder, tmp_path, monkeypatch, request):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    options = [*QUICK, *EXTRA.get(name, []), "--out", str(tmp_path / "out")]
    if name in NEEDS_WEIGHTS:
        weights = request.getfixturevalue("squeezenet_weights_path")
        monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(weights.parent))
        options += ["--network", "squeezenet"]
    nb = builder.execute(LESSONS_DIR / name, " ".join(options), timeout=300)

    assert picture_problems(nb) == []
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.png")}
    pictures, plots = EXPECTED[name]
    assert sorted(written) == sorted(pictures + plots)
    shown = [png for cell in nb.cells if cell.cell_type == "code" for png in shown_pictures(cell)]
    assert sorted(shown) == sorted(written.values()), "the notebook must show exactly the pictures it writes"
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "lesson finished in" in text
    assert "WRONG" not in text, text


def test_the_build_command_writes_a_notebook_and_an_html_page_with_its_pictures(builder, tmp_path, monkeypatch):
    """`python lessons/build_notebooks.py 01`, as documented: the page a reader opens in a browser
    holds the picture itself, not a link to a file."""
    import nbformat

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    builder.main(["01", "--dest", str(tmp_path / "nb"), "--lesson-args", f"--size 48 --out {tmp_path / 'out'}"])
    nb = nbformat.read(tmp_path / "nb" / "01_convolution.ipynb", as_version=4)
    assert picture_problems(nb) == []
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Lesson 1:")
    assert "`SCRATCHNST_LESSON_ARGS`" in nb.cells[0].source   # how the text's --options reach a notebook
    html = (tmp_path / "nb" / "01_convolution.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 1
    assert "Lesson 1: convolution by hand" in html and "lesson finished in" in html


def test_a_built_notebook_runs_again_from_the_folder_it_was_saved_in(builder, tmp_path, monkeypatch):
    """Jupyter starts a saved notebook's kernel in the notebook's folder (lessons/notebooks/), not in
    lessons/ where `_lesson.py` is: the notebook's first code cell finds the helper from there."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    builder.main(["01", "--dest", str(tmp_path / "nb"), "--no-html",
                  "--lesson-args", f"--size 48 --out {tmp_path / 'out'}"])
    nb = nbformat.read(tmp_path / "nb" / "01_convolution.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute(
        env=builder.kernel_env(f"--size 48 --out {tmp_path / 'again'}"), cwd=str(tmp_path / "nb"))
    assert picture_problems(nb) == []
    assert (tmp_path / "again" / "01_filters.png").is_file()


def test_a_cell_past_the_timeout_is_stopped_and_told_in_one_line(builder, tmp_path, monkeypatch):
    """With the blocking kernel manager nbclient never stopped a cell: a build with --timeout 2 ran
    lesson 5's 35 s cell to its end and succeeded."""
    import time

    from nbclient.exceptions import CellTimeoutError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    script = tmp_path / "slow.py"
    script.write_text('"""Lesson 0: waiting"""\n\n# %%\nimport time\ntime.sleep(60)\n')
    start = time.monotonic()
    with pytest.raises(CellTimeoutError):
        builder.execute(script, timeout=2)
    assert time.monotonic() - start < 40   # the kernel's start, 2 s, and its shutdown: not the minute
    monkeypatch.setattr(builder, "execute", lambda *a: (_ for _ in ()).throw(CellTimeoutError("slow")))
    with pytest.raises(SystemExit) as stop:
        builder.main(["01", "--dest", str(tmp_path / "nb"), "--timeout", "2"])
    assert str(stop.value.code) == ("build_notebooks: 01_convolution.py failed: a cell ran past --timeout 2 s "
                                    "(stopped); give a larger --timeout, or quicker --lesson-args")


def test_a_dest_that_cannot_be_made_is_one_line(builder, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        builder.main(["01", "--dest", str(tmp_path / "file" / "nb")])
    message = str(stop.value.code)
    assert message.startswith(f"build_notebooks: --dest {tmp_path / 'file' / 'nb'}: cannot make that folder") \
        and "\n" not in message, message


@pytest.mark.parametrize("options, said", [
    ("--sise 64", "$SCRATCHNST_LESSON_ARGS: error: unrecognized arguments: --sise 64"),
    ("--content nope.jpg", "UserError: nope.jpg: no such image file"),
    ("--size '64", "$SCRATCHNST_LESSON_ARGS: error: cannot be split into options as a shell would (no closing "
                   "quotation)")])
def test_a_lesson_that_fails_as_a_notebook_is_one_line(builder, tmp_path, options, said):
    """A wrong option or a missing file in --lesson-args: the lesson's own line, not the kernel's traceback."""
    with pytest.raises(SystemExit) as stop:
        builder.main(["01", "--dest", str(tmp_path / "nb"), "--lesson-args", f"{options} --out {tmp_path / 'out'}"])
    message = str(stop.value.code)
    assert message.startswith(f"build_notebooks: 01_convolution.py failed: {said}"), message
    assert "\n" not in message, message

"""The README's first commands stay true: CI runs its test line word for word, and its paths exist."""

import re

from conftest import REPO


def _first_block():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index("```bash") < 40, "the README must start with its two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    install_and_run, install_and_test = _first_block()
    assert "scratchnst stylize" in install_and_run and "pip install" in install_and_run
    assert "pytest" in install_and_test and "torch==2.13.0" in install_and_test
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci


def test_the_images_the_main_command_names_are_shipped():
    install_and_run = _first_block()[0]
    for path in re.findall(r"lessons/images/\S+", install_and_run):
        assert (REPO / path).is_file(), path

"""json_text: what scratchnst writes for other programs is JSON that a strict parser reads."""

import json
import math

import pytest

from scratchnst import json_text


def strict(text):
    """json.loads refusing NaN and Infinity, as JavaScript's JSON.parse does."""
    def refuse(word):
        raise ValueError(f"{word} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_at_any_depth():
    data = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, {"c": math.nan})], "d": "NaN", "e": 0, "f": None}
    assert strict(json_text.dumps(data)) == {"a": None, "b": [1.5, None, [None, {"c": None}]], "d": "NaN", "e": 0,
                                             "f": None}


def test_everything_else_is_written_as_json_dumps_writes_it():
    data = {"x": [0.1, -2.5e-300, 1e308, 7, True, "é\n"], "y": {"z": []}}
    assert json_text.dumps(data, indent=1) == json.dumps(data, indent=1)
    assert json_text.dumps(data) == json.dumps(data)


def test_a_non_finite_value_it_cannot_see_is_refused_not_written():
    class Odd:  # json.dumps cannot write it at all: the same TypeError as json.dumps
        pass

    with pytest.raises(TypeError):
        json_text.dumps({"a": Odd()})

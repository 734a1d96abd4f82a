"""json_text: what scratchnst writes for other programs is JSON that a strict parser reads."""

import json
import math

import numpy as np
import pytest

from conftest import strict_json
from scratchnst import json_text


def test_non_finite_floats_become_null_at_any_depth():
    data = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, {"c": math.nan})], "d": "NaN", "e": 0, "f": None}
    assert strict_json(json_text.dumps(data)) == {"a": None, "b": [1.5, None, [None, {"c": None}]], "d": "NaN", "e": 0,
                                             "f": None}


def test_everything_else_is_written_as_json_dumps_writes_it():
    data = {"x": [0.1, -2.5e-300, 1e308, 7, True, "é\n"], "y": {"z": []}}
    assert json_text.dumps(data, indent=1) == json.dumps(data, indent=1)
    assert json_text.dumps(data) == json.dumps(data)


def test_numpy_floats_and_non_finite_keys():
    assert strict_json(json_text.dumps({"a": np.float64("nan"), "b": np.float64(0.5)})) == {"a": None, "b": 0.5}
    assert strict_json(json_text.dumps({math.inf: 1, -math.inf: 2, math.nan: 3, 0.5: 4})) == \
        {"inf": 1, "-inf": 2, "nan": 3, "0.5": 4}


def test_what_json_dumps_cannot_write_is_refused_as_json_dumps_refuses_it():
    class Odd:
        pass

    for value in (Odd(), np.float32(1.5)):
        with pytest.raises(TypeError):
            json.dumps({"a": value})
        with pytest.raises(TypeError):
            json_text.dumps({"a": value})

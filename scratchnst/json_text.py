"""JSON that every parser reads: the files and reports scratchnst writes for other programs.

Python's json module writes a NaN or an infinity as the bare words NaN and Infinity. They are not JSON
(RFC 8259), and strict parsers refuse the whole document because of them (JavaScript's JSON.parse, jq
in some versions, most spreadsheet and LMS importers). Such values do come up: a student's answer full
of NaN gives an infinite error in a class's grades, a diverged run a NaN cost in its log. They are
written as null here, as JavaScript's JSON.stringify writes them: the number is unknown, the document
stays readable. Internal messages between scratchnst's own processes do not go through this.
"""

import json
import math


def dumps(data, indent=None):
    """json.dumps(data) with every float that is not finite (NaN, inf, -inf) written as null.

    Args:
        data: dicts, lists, tuples, str, int, float, bool and None, nested, as json.dumps takes them
            (np.float64 is a float; other NumPy scalars are refused as json.dumps refuses them). A dict
            key that is a non-finite float becomes "nan", "inf" or "-inf".
        indent: as json.dumps.

    Returns:
        The JSON text: never NaN or Infinity (allow_nan=False would raise ValueError instead).
    """
    return json.dumps(_finite(data), indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {(str(key) if isinstance(key, float) and not math.isfinite(key) else key): _finite(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value

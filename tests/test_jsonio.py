"""gdc/jsonio.py: the one results/metadata JSON writer, against hand-written JSON text."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from gdc import jsonio


def test_non_finite_floats_are_written_as_strings():
    x = {
        "a": float("nan"),
        "b": float("inf"),
        "c": -math.inf,
        "d": 0.5,
        "e": np.float64("nan"),
        "f": np.float32("-inf"),
    }
    assert jsonio.dumps(x, indent=None) == ('{"a": "nan", "b": "inf", "c": "-inf", "d": 0.5, "e": "nan", "f": "-inf"}')


def test_numpy_scalars_become_python_numbers():
    x = [np.int64(3), np.int32(-2), np.float64(0.1), np.float32(0.5), np.bool_(True), np.bool_(False), True, None]
    assert jsonio.dumps(x, indent=None) == "[3, -2, 0.1, 0.5, true, false, true, null]"


def test_tuples_and_arrays_become_lists():
    x = {
        "t": (1, (2.5, "x"), [np.float64("inf")]),
        "zero_d": np.array(7),
        "zero_d_nan": np.array(np.nan),
        "arr": np.array([[1, 2], [3, 4]], np.int16),
        "farr": np.array([1.5, np.nan, -np.inf]),
        "jax": jnp.array([1, 2], jnp.int32),
        "jax0": jnp.float32(2.0),
    }
    assert jsonio.dumps(x, indent=None) == (
        '{"t": [1, [2.5, "x"], ["inf"]], "zero_d": 7, "zero_d_nan": "nan", "arr": [[1, 2], [3, 4]], '
        '"farr": [1.5, "nan", "-inf"], "jax": [1, 2], "jax0": 2.0}'
    )


def test_keys_become_strings_and_private_keys_can_be_dropped():
    x = {1: {"_arrays": [1], "k": 2}, np.int64(2): 3, "_top": 0}
    assert jsonio.dumps(x, indent=None) == '{"1": {"_arrays": [1], "k": 2}, "2": 3, "_top": 0}'
    assert jsonio.dumps(x, indent=None, drop_private=True) == '{"1": {"k": 2}, "2": 3}'


def test_indent_and_sort_keys_as_json_dump():
    assert jsonio.dumps({"b": [1], "a": None}, indent=1) == '{\n "b": [\n  1\n ],\n "a": null\n}'
    assert jsonio.dumps({"b": 1, "a": 2}, indent=2, sort_keys=True) == '{\n  "a": 2,\n  "b": 1\n}'


def test_unknown_objects_are_refused():
    with pytest.raises(TypeError, match="object"):
        jsonio.dumps({"x": object()})


def test_round_trip_restores_the_non_finite_floats(tmp_path):
    x = {"a": [float("nan"), float("inf"), -math.inf, 1.0, "text"], "b": (np.int64(4),), "c": {"d": np.float32(0.25)}}
    path = str(tmp_path / "x.json")
    jsonio.write(path, x, indent=2)
    assert (tmp_path / "x.json").read_text() == (
        '{\n  "a": [\n    "nan",\n    "inf",\n    "-inf",\n    1.0,\n    "text"\n  ],\n  "b": [\n    4\n  ],\n'
        '  "c": {\n    "d": 0.25\n  }\n}'
    )
    back = jsonio.read(path)
    assert math.isnan(back["a"][0]) and back["a"][1] == math.inf and back["a"][2] == -math.inf
    assert back["a"][3:] == [1.0, "text"] and back["b"] == [4] and back["c"] == {"d": 0.25}
    assert type(back["b"][0]) is int
    rt = jsonio.roundtrip(x)
    assert math.isnan(rt["a"][0]) and rt["a"][1:] == back["a"][1:] and rt["b"] == [4] and rt["c"] == {"d": 0.25}


def test_bare_nan_tokens_of_older_files_read_back_as_nan(tmp_path):
    (tmp_path / "old.json").write_text('{"x": NaN, "y": Infinity, "z": -Infinity}')
    back = jsonio.read(str(tmp_path / "old.json"))
    assert math.isnan(back["x"]) and back["y"] == math.inf and back["z"] == -math.inf

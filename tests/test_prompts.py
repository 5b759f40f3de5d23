import math

import pytest

from pixgen.errors import PixgenError
from pixgen.loop.prompts import Prompt, parse_prompt, parse_prompts

INF = -math.inf


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("a cat", Prompt("a cat", 1.0, INF)),
        ("a cat:2", Prompt("a cat", 2.0, INF)),
        ("a cat:-1", Prompt("a cat", -1.0, INF)),
        ("a cat:0.5:0.8", Prompt("a cat", 0.5, 0.8)),
        ("a cat:1e-1", Prompt("a cat", 0.1, INF)),
        ("cat:abc", Prompt("cat:abc", 1.0, INF)),  # not a number: stays text
        ("a 4:3 photo", Prompt("a 4:3 photo", 1.0, INF)),
        ("a photo in 4:3", Prompt("a photo in 4:3", 1.0, INF)),  # digit before colon: text
        ("a photo in 4:3:2", Prompt("a photo in 4:3:2", 1.0, INF)),  # ambiguous: all text
        ("a photo in 4:3 :2", Prompt("a photo in 4:3", 2.0, INF)),  # a space marks the weight
        ("cat:nan", Prompt("cat:nan", 1.0, INF)),
        ("16:9", Prompt("16:9", 1.0, INF)),
        ("http://example.com/cat.png", Prompt("http://example.com/cat.png", 1.0, INF)),
        ("http://example.com/x:0.5", Prompt("http://example.com/x", 0.5, INF)),
        (r"C:\art\cat.png", Prompt(r"C:\art\cat.png", 1.0, INF)),
        (r"C:\art\cat.png:2", Prompt(r"C:\art\cat.png", 2.0, INF)),
        ("  spaced out  : 3 ", Prompt("spaced out", 3.0, INF)),
        ("time 10:30 at night", Prompt("time 10:30 at night", 1.0, INF)),
    ],
)
def test_parse_prompt_table(spec, expected):
    assert parse_prompt(spec) == expected


def test_multi_prompts_split_on_pipe():
    ps = parse_prompts("a red house | a lake:0.5 | fog:-1")
    assert [p.text for p in ps] == ["a red house", "a lake", "fog"]
    assert [p.weight for p in ps] == [1.0, 0.5, -1.0]


@pytest.mark.parametrize("spec", ["", "   ", "a | ", " | b", ":2", "cat:1:2:3", "cat:0", "cat:1e999", "x\x00y"])
def test_bad_prompts_raise_pixgen_error(spec):
    with pytest.raises(PixgenError):
        parse_prompts(spec)

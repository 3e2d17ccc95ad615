"""From a raw answer to an explanation: repetitions collapsed and flagged."""

from __future__ import annotations

import pytest

from vis_steer_lens.explain.text import collapse_repetitions, explanation_and_flag

PREFIX = "The highlighted element in the image is a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yellow yellow yellow circle", ("yellow circle", True)),
        ("Cyan cyan", ("Cyan", True)),
        ("a large circle a large circle a large circle", ("a large circle", True)),
        ("red square, blue square", ("red square, blue square", False)),
        ("large cyan circle", ("large cyan circle", False)),
        ("", ("", False)),
    ],
)
def test_collapse_repetitions(text, expected):
    assert collapse_repetitions(text) == expected


def test_explanation_and_flag():
    assert explanation_and_flag(f"{PREFIX} red circle.", PREFIX) == ("red circle", None)
    assert explanation_and_flag(f"{PREFIX} red red red circle.", PREFIX) == ("red circle", "repetition")
    assert explanation_and_flag(f"{PREFIX} red circle", PREFIX, finished=False) == (
        "red circle",
        "unfinished",
    )
    assert explanation_and_flag(f"{PREFIX} .", PREFIX) == ("", "empty")

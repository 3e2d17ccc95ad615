"""The one resumable store behind explain, evaluate and mine."""

from __future__ import annotations

import pytest

from vis_steer_lens.evaluate import ScoresFileMismatchError
from vis_steer_lens.explain import ResultsFile, ResumeMismatchError
from vis_steer_lens.store import ResultsStore, description_mismatches


def test_resume_keeps_rows_and_refuses_other_settings(tmp_path):
    path = tmp_path / "rows.jsonl"
    store = ResultsStore(path, {"sae": "a", "k": 5}, key=("feature", "text"))
    store.append([{"feature": 1, "text": "x"}, {"feature": 2, "text": "y"}])
    again = ResultsStore(path, {"sae": "a", "k": 5}, key=("feature", "text"))
    assert again.done == {(1, "x"), (2, "y")}
    with pytest.raises(ResumeMismatchError, match=r"k: stored 5, now 6; sae: stored 'a', now 'b'"):
        ResultsStore(path, {"sae": "b", "k": 6})
    with pytest.raises(FileExistsError, match="holds results already"):
        ResultsStore(path, {"sae": "a", "k": 5}, resume=False)


def test_results_without_a_description_are_not_adopted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"feature": 0}\n')
    with pytest.raises(ResumeMismatchError, match="no run description"):
        ResultsStore(path, {"k": 1})


def test_every_writer_shares_the_error_type():
    assert issubclass(ScoresFileMismatchError, ResumeMismatchError)
    assert issubclass(ResultsFile, ResultsStore)
    assert description_mismatches({"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2)}) == []  # JSON-equal is equal

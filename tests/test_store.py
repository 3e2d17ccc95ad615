"""The one resumable store behind explain, evaluate and mine."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from vis_steer_lens.evaluate import ScoresFileMismatchError
from vis_steer_lens.explain import ResultsFile, ResumeMismatchError
from vis_steer_lens.store import ResultsLockedError, ResultsStore, description_mismatches


def test_resume_keeps_rows_and_refuses_other_settings(tmp_path):
    path = tmp_path / "rows.jsonl"
    store = ResultsStore(path, {"sae": "a", "k": 5}, key=("feature", "text"))
    store.append([{"feature": 1, "text": "x"}, {"feature": 2, "text": "y"}])
    store.close()
    again = ResultsStore(path, {"sae": "a", "k": 5}, key=("feature", "text"))
    assert again.done == {(1, "x"), (2, "y")}
    again.close()
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


def _lock_held_by(path, pid: int) -> None:
    path.with_name(path.name + ".lock").write_text(f"{socket.gethostname()}:{pid}")


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    path = tmp_path / "rows.jsonl"
    first = ResultsStore(path, {"k": 1})
    with pytest.raises(ResultsLockedError, match="open for writing already in this process"):
        ResultsStore(path, {"k": 1})
    assert ResultsStore(path, {"k": 1}, read_only=True).done == set()  # readers are never refused
    first.close()
    with ResultsStore(path, {"k": 1}) as second:
        second.append([{"feature": 3}])
    assert not path.with_name("rows.jsonl.lock").exists()


def test_another_live_process_holds_the_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_held_by(path, writer.pid)
        with pytest.raises(ResultsLockedError, match=rf"another process \(.*:{writer.pid}\)"):
            ResultsStore(path, {"k": 1})
    finally:
        writer.kill()
        writer.wait()
    # Its process is gone now: the lock is stale and taken over.
    with ResultsStore(path, {"k": 1}) as store:
        store.append([{"feature": 0}])
    assert store.done == {0}


def test_a_run_that_wrote_no_row_does_not_block_the_next(tmp_path):
    path = tmp_path / "rows.jsonl"
    with ResultsStore(path, {"coefficient": -1e30}):
        pass  # failed before its first row (say, a non-finite coefficient)
    with ResultsStore(path, {"coefficient": 30.0}) as store:  # other settings: nothing to keep, so accepted
        store.append([{"feature": 0}])
    with pytest.raises(ResumeMismatchError, match="coefficient"):
        ResultsStore(path, {"coefficient": 31.0})  # now it has a row: refused as before

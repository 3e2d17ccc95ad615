"""JSON-lines results files: a damaged line costs only itself."""

from __future__ import annotations

import json
import logging

from vis_steer_lens.jsonl import append_jsonl, read_jsonl


def _write(path, lines):
    path.write_bytes(b"".join(lines))


def test_a_damaged_middle_line_keeps_every_good_row(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    rows = [{"feature": i} for i in range(5)]
    lines = [json.dumps(r).encode() + b"\n" for r in rows]
    lines[2] = b'{"feature": 2, "expl\x00\x00garbage\n'
    _write(path, lines)
    with caplog.at_level(logging.WARNING):
        kept = read_jsonl(path)
    assert [r["feature"] for r in kept] == [0, 1, 3, 4]
    assert "1 damaged line" in caplog.text
    assert (tmp_path / "rows.jsonl.damaged").read_bytes() == lines[2]
    # The file is clean now: appending continues after the good rows, and rereading warns no more.
    append_jsonl(path, [{"feature": 2}])
    assert sorted(r["feature"] for r in read_jsonl(path)) == [0, 1, 2, 3, 4]


def test_a_torn_last_line_is_cut_off(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write(path, [b'{"feature": 0}\n', b'{"feature": 1}\n', b'{"featu'])
    assert [r["feature"] for r in read_jsonl(path)] == [0, 1]
    assert path.read_bytes() == b'{"feature": 0}\n{"feature": 1}\n'


def test_looking_without_repair_changes_nothing(tmp_path):
    path = tmp_path / "rows.jsonl"
    content = b'{"feature": 0}\nnot json\n{"feature": 1}\n{"featu'
    _write(path, [content])
    assert [r["feature"] for r in read_jsonl(path, repair=False)] == [0, 1]
    assert path.read_bytes() == content and not (tmp_path / "rows.jsonl.damaged").exists()

"""The dashboard's sweeps page: every ``RUN/sweeps/<axis>.csv`` as a table, with its plotly figure.

``vis-steer-lens sweep`` writes one table and one figure per axis into the run; the dashboard shows
each table on ``sweeps.html``, linked from the index, with a link to the run's figure (a
self-contained plotly page, left in the run rather than copied: the dashboard loads no library).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from vis_steer_lens.atomic import atomic_write_text

#: The axes in the order the page shows them (others, a plug-in's, follow by name).
AXIS_ORDER = ("base-image", "coefficient", "target", "layer")
#: Columns of a sweep's table the page leaves out (the figure and the examples say them).
HIDDEN_COLUMNS = ("axis",)


def sweep_tables(run_root: str | Path) -> dict[str, pd.DataFrame]:
    """``axis -> table`` of every sweep a run holds (``RUN/sweeps/<axis>.csv``), in :data:`AXIS_ORDER`."""
    folder = Path(run_root) / "sweeps"
    paths = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    rank = {axis: i for i, axis in enumerate(AXIS_ORDER)}
    paths.sort(key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    return {path.stem: pd.read_csv(path) for path in paths}


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if pd.isna(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(table: pd.DataFrame) -> str:
    columns = [c for c in table.columns if c not in HIDDEN_COLUMNS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_cell(row[c])}</td>'
            if isinstance(row[c], (int, float))
            else f"<td>{_cell(row[c])}</td>"
            for c in columns
        )
        + "</tr>"
        for _, row in table.iterrows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_sweeps_page(run_root: str | Path, out_dir: str | Path, css: str = "") -> Path | None:
    """Write ``out_dir/sweeps.html``: each sweep's table and a relative link to its figure in the run.

    Args:
        run_root: The run folder.
        out_dir: The dashboard folder.
        css: The dashboard's stylesheet.

    Returns:
        The page's path, or ``None`` when the run holds no sweep (nothing is written).
    """
    tables = sweep_tables(run_root)
    if not tables:
        return None
    out = Path(out_dir)
    sections = []
    for axis, table in tables.items():
        figure = Path(run_root) / "sweeps" / f"{axis}.html"
        link = ""
        if figure.is_file():
            href = Path(os.path.relpath(figure.resolve(), out.resolve())).as_posix()
            link = f'<p><a href="{html.escape(href)}">the {html.escape(axis)} figure</a> (plotly)</p>'
        sections.append(
            f'<section id="sweep-{html.escape(axis)}"><h2>{html.escape(axis)}</h2>'
            f'<p class="meta">{len(table)} points, from sweeps/{html.escape(axis)}.csv</p>'
            f"{_table(table)}{link}</section>"
        )
    page = out / "sweeps.html"
    atomic_write_text(
        page,
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<title>Sweeps · vis_steer_lens</title>\n<link rel="icon" href="data:,">\n'
        f"<style>{css}</style>\n</head>\n<body>\n"
        '<p><a href="index.html">&larr; all features</a></p>\n<h1>Sweeps (ablations)</h1>\n'
        '<p class="meta">Each axis explains the same features with one setting changed '
        "(<code>vis-steer-lens sweep --axis AXIS</code>); accuracy is on the clear features of the "
        "ground truth, with 95% bootstrap intervals.</p>\n" + "\n".join(sections) + "\n</body>\n</html>\n",
    )
    return page


__all__ = ["AXIS_ORDER", "sweep_tables", "write_sweeps_page"]

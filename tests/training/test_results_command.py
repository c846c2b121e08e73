"""``t2mir results`` rebuilds the index and Table 1 from the committed evaluation files, and the
committed README / docs/results.md tables are what it builds; checkpoint selection uses training tasks."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from model_factory import write_checkpoint

from training.evaluation.results import (
    EVALS,
    SPEC,
    TABLE_BEGIN,
    TABLE_END,
    TABLE_FILES,
    build,
    index_markdown,
    table_markdown,
)
from training.evaluation.select import select

REPO = Path(__file__).resolve().parents[2]


def test_committed_tables_and_index_are_up_to_date():
    spec = tomllib.loads((REPO / SPEC).read_text())
    table = table_markdown(REPO, spec)
    for name in TABLE_FILES:
        text = (REPO / name).read_text()
        assert f"{TABLE_BEGIN}\n{table}{TABLE_END}" in text, f"{name}: run `make results`"
    assert (REPO / EVALS / "INDEX.md").read_text() == index_markdown(REPO), "run `make results`"


def test_every_family_and_variant_has_a_row():
    spec = tomllib.loads((REPO / SPEC).read_text())
    table = table_markdown(REPO, spec).splitlines()[2:]
    assert len(table) == 6 * 4
    assert sum("not trained" in row for row in table) == 24 - len(spec["cell"])


def test_every_committed_eval_file_is_indexed():
    index = index_markdown(REPO)
    for path in (REPO / EVALS).rglob("*.json"):
        assert f"| {path.relative_to(REPO / EVALS).as_posix()} |" in index


def test_results_rebuilds_everything_on_the_committed_files(tmp_path):
    for part in ("docs", "training/configs"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    for png in (tmp_path / "docs").glob("*.png"):
        png.unlink()
    written = build(tmp_path)
    spec = tomllib.loads((REPO / SPEC).read_text())
    for figure in spec["figure"]:
        assert (tmp_path / figure["png"]).stat().st_size > 0
    assert (tmp_path / "README.md").read_text() == (REPO / "README.md").read_text()
    assert len(written) == 3 + len(spec["figure"])


def test_select_uses_training_tasks_only(tmp_path):
    a = write_checkpoint(tmp_path / "a", "a", "1", seed=0)
    b = write_checkpoint(tmp_path / "b", "b", "1", seed=1)
    rows = select([str(a), str(b)], (101, 102), validation=3, episodes=2)
    assert {row["checkpoint"] for row in rows} == {str(a), str(b)}
    assert all(row["training_tasks"] == 3 for row in rows)
    assert rows[0]["best_mean"]["mean"] >= rows[1]["best_mean"]["mean"]
    assert len(rows[0]["best_mean"]["per_seed"]) == 2


def test_selection_files_are_indexed_one_candidate_a_row(tmp_path):
    row = {"checkpoint": "C", "training_tasks": 20, "split_seed": 0, "episodes": 100}
    stat = {"mean": 80.0, "ci95": [79.0, 81.0], "per_seed": [80.0]}
    rows = [{**row, "unrewarded_context": rule, "best_mean": stat} for rule in ("drop", "keep")]
    (tmp_path / EVALS).mkdir(parents=True)
    (tmp_path / EVALS / "choice.json").write_text(
        json.dumps({"command": "python -m X", "seeds": [1], "rows": rows})
    )
    index = index_markdown(tmp_path)
    assert (
        "| choice.json | C, unrewarded context drop | 20 (split seed 0) | 100 | 1 | 80.00 (79.00 .. 81.00) |"
        in index
    )
    assert "C, unrewarded context keep" in index and "`python -m X`" in index


def test_a_file_without_markers_is_refused(tmp_path):
    from training.evaluation.results import replace_block

    with pytest.raises(ValueError, match="results-table"):
        replace_block("no markers here", "| table |\n")

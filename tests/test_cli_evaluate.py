"""End-to-end tests of ``cellect evaluate`` on small files written with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from napari_cellect.cli import main
from napari_cellect.evaluate import HEADLINE_KEYS

#: one cell dividing at t1 and one plain track, in our minimal CSV columns
GT_ROWS = [
    (0, 0, 2.0, 10.0, 10.0, -1),
    (1, 1, 2.0, 10.0, 10.0, 0),
    (2, 2, 2.0, 0.0, 10.0, 1),
    (3, 2, 2.0, 20.0, 10.0, 1),
    (10, 0, 4.0, 80.0, 80.0, -1),
    (11, 1, 4.0, 80.0, 80.0, 10),
    (12, 2, 4.0, 80.0, 80.0, 11),
]
COLUMNS = ["id", "t", "z", "y", "x", "parent_id"]


def write_csv(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def run_json(capsys, *argv: str) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_identical_csvs_score_one_with_exactly_the_headline_keys(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    pred = write_csv(tmp_path / "pred.csv", GT_ROWS)
    scores = run_json(capsys, str(pred), str(gt))
    assert list(scores) == list(HEADLINE_KEYS)
    assert set(scores) == {
        "det_precision",
        "det_recall",
        "det_f1",
        "link_precision",
        "link_recall",
        "link_f1",
        "div_precision",
        "div_recall",
        "div_f1",
        "tra",
        "n_gt",
        "n_pred",
    }
    assert all(scores[k] == 1.0 for k in HEADLINE_KEYS[:-2])
    assert scores["n_gt"] == scores["n_pred"] == len(GT_ROWS)


def test_errors_and_max_dist_change_the_json(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    rows = [r for r in GT_ROWS if r[0] != 3] + [(3, 2, 2.0, 20.0, 10.0, -1)]  # lose one daughter
    rows = [(i, t, z, y, x + 2.0, p) for i, t, z, y, x, p in rows]  # shift 2 px in x
    pred = write_csv(tmp_path / "pred.csv", rows)
    scores = run_json(capsys, str(pred), str(gt), "--max-dist", "3")
    assert scores["det_f1"] == 1.0
    assert scores["link_recall"] == pytest.approx(4 / 5)
    assert scores["div_recall"] == 0.0
    assert 0 < scores["tra"] < 1
    far = run_json(capsys, str(pred), str(gt), "--max-dist", "1.5")
    assert far["det_f1"] == 0.0 and far["tra"] == 0.0


def test_table_output_is_readable(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    assert main(["evaluate", str(gt), str(gt)]) == 0
    out = capsys.readouterr().out
    assert "detection" in out and "links" in out and "divisions" in out
    assert "TRA 1.0000" in out
    assert "7 predicted vs 7 GT nodes" in out


def test_z_ratio_option_changes_matching(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    one_slice_off = [(i, t, z + 1, y, x, p) for i, t, z, y, x, p in GT_ROWS]
    pred = write_csv(tmp_path / "pred.csv", one_slice_off)
    assert run_json(capsys, str(pred), str(gt), "--max-dist", "3")["det_f1"] == 1.0
    assert run_json(capsys, str(pred), str(gt), "--max-dist", "3", "--z-ratio", "5")["det_f1"] == 0


def test_linajea_tracks_txt_ground_truth_uses_world_z(tmp_path, capsys):
    """tracks.txt stores z as slice x 5; with the default z ratio it matches our slice CSV."""
    gt_txt = tmp_path / "tracks.txt"
    table = pd.DataFrame(GT_ROWS, columns=["cell_id", "t", "z", "y", "x", "parent_id"])
    table["z"] *= 5.0
    table["radius"] = 8.0
    table = table[["t", "z", "y", "x", "cell_id", "parent_id", "radius"]]
    table.to_csv(gt_txt, sep="\t", index=False)
    pred = write_csv(tmp_path / "pred.csv", GT_ROWS)
    scores = run_json(capsys, str(pred), str(gt_txt))
    assert scores["tra"] == 1.0 and scores["n_gt"] == len(GT_ROWS)


def test_missing_path_exits_2_with_one_line(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    code = main(["evaluate", str(tmp_path / "nope.csv"), str(gt), "--json"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nope.csv" in err and err.startswith("cellect evaluate: error")


def test_bad_file_exits_2_naming_the_file(tmp_path, capsys):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,t,z,y,x,parent_id\n1,0,0,abc,0,-1\n")
    code = main(["evaluate", str(bad), str(gt)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and err.count("\n") == 1


def test_empty_ground_truth_exits_2(tmp_path, capsys):
    gt = tmp_path / "gt.csv"
    pd.DataFrame(columns=COLUMNS).to_csv(gt, index=False)
    pred = write_csv(tmp_path / "pred.csv", GT_ROWS)
    assert main(["evaluate", str(pred), str(gt)]) == 2
    assert "no nodes" in capsys.readouterr().err


def test_bad_option_values_are_usage_errors(tmp_path):
    gt = write_csv(tmp_path / "gt.csv", GT_ROWS)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(gt), str(gt), "--max-dist", "-1"])
    assert exc.value.code == 2

"""``cellect train`` (src/napari_cellect/_cli/train.py)."""

from __future__ import annotations

import dataclasses

import pytest

from napari_cellect.cli import main
from napari_cellect.data.synthetic import PRESETS, write_synthetic
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.train.checkpoint import load_checkpoint

TINY = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "1",
    "--crop",
    "4",
    "32",
    "32",
    "--device",
    "cpu",
    "--val-frames",
    "0",
    "--calibration-frames",
    "0",
]


def _train_args(images, annotations, out, *extra: str) -> list[str]:
    """``cellect train IMAGES --annotations CSV -o OUT`` with the tiny settings, then ``extra``."""
    return ["train", str(images), "--annotations", str(annotations), "-o", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    config = dataclasses.replace(
        PRESETS["default"],
        frames=3,
        shape=(4, 32, 32),
        n_cells=4,
        radius_range=(4.0, 5.0),
        z_ratio=2.0,
        seed=3,
    )
    paths = write_synthetic(root / "data", config)
    return paths


def test_one_tiny_epoch_end_to_end(dataset, tmp_path, capsys):
    out = tmp_path / "model.pt"
    code = main(_train_args(dataset.root / "images", dataset.tracks, out, "--workers", "1"))
    assert code == 0
    bundle = ModelBundle.load(out)
    assert bundle.metadata.name == "model"
    assert bundle.metadata.history[-1]["steps"] == 2
    assert load_checkpoint(tmp_path / "model.pt.ckpt")["train_config"]["workers"] == 1
    assert "wrote" in capsys.readouterr().out


def test_init_starts_from_the_bundled_model(dataset, tmp_path):
    out = tmp_path / "tuned.pt"
    code = main(_train_args(dataset.root / "images", dataset.tracks, out, "--init", "default"))
    assert code == 0
    events = [e["event"] for e in ModelBundle.load(out).metadata.history]
    assert events[-2:] == ["initialised", "train"]


def write_csv(path, rows):
    path.write_text("id,t,z,y,x,parent_id\n" + "".join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows,message",
    [
        ([], "empty"),
        (["1,7,1,10,10,-1", "2,8,1,10,10,1"], "no annotation lies inside the images"),
        (["1,0,1,500,500,-1"], "no annotation lies inside the images"),
    ],
)
def test_bad_annotations_exit_2(dataset, tmp_path, capsys, rows, message):
    ann = write_csv(tmp_path / "ann.csv", rows)
    code = main(_train_args(dataset.root / "images", ann, tmp_path / "m.pt"))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "ann.csv" in err
    assert not (tmp_path / "m.pt").exists()


def test_missing_files_exit_2(dataset, tmp_path, capsys):
    code = main(_train_args(tmp_path / "nope", dataset.tracks, tmp_path / "m.pt"))
    assert code == 2 and "nope" in capsys.readouterr().err
    code = main(_train_args(dataset.root / "images", tmp_path / "x.csv", tmp_path / "m.pt"))
    assert code == 2 and "x.csv" in capsys.readouterr().err
    code = main(_train_args(dataset.root / "images", dataset.tracks, tmp_path / "no" / "m.pt"))
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(
        _train_args(
            dataset.root / "images",
            dataset.tracks,
            tmp_path / "m.pt",
            "--resume",
            str(tmp_path / "old.ckpt"),
        )
    )
    assert code == 2 and "old.ckpt" in capsys.readouterr().err
    code = main(
        _train_args(
            dataset.root / "images",
            dataset.tracks,
            tmp_path / "m.pt",
            "--init",
            str(tmp_path / "w.pt"),
        )
    )
    assert code == 2 and "w.pt" in capsys.readouterr().err


def test_mismatched_series_and_options_exit_2(dataset, tmp_path, capsys):
    images = str(dataset.root / "images")
    code = main(
        [
            "train",
            images,
            images,
            "--annotations",
            str(dataset.tracks),
            "-o",
            str(tmp_path / "m.pt"),
            *TINY,
        ]
    )
    assert code == 2 and "one annotation file per training image series" in capsys.readouterr().err
    code = main(
        [
            "train",
            images,
            "--annotations",
            str(dataset.tracks),
            "-o",
            str(tmp_path / "m.pt"),
            "--val-images",
            images,
            *TINY,
        ]
    )
    assert code == 2 and "--val-annotations" in capsys.readouterr().err
    code = main(_train_args(images, dataset.tracks, tmp_path / "m.pt", "--crop", "0", "32", "32"))
    assert code == 2 and "crop" in capsys.readouterr().err
    code = main(_train_args(images, dataset.tracks, tmp_path / "m.pt", "--workers", "-1"))
    assert code == 2 and "workers must be >= 0, found -1" in capsys.readouterr().err


def test_crop_must_fit_the_network(dataset, tmp_path, capsys):
    code = main(
        _train_args(
            dataset.root / "images", dataset.tracks, tmp_path / "m.pt", "--crop", "4", "30", "32"
        )
    )
    assert code == 2 and "multiple" in capsys.readouterr().err

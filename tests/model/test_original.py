import pytest
import torch

from napari_cellect.cli import main
from napari_cellect.errors import ModelError
from napari_cellect.model.bundle import ModelBundle
from napari_cellect.model.original import (
    expected_scorer_shapes,
    expected_unet_shapes,
    import_original,
    permute_unet_kernels,
)
from napari_cellect.model.unet import UNet3D, unet_preset


def test_expected_shapes_are_the_published_layout(layout):
    assert {k: list(v) for k, v in expected_unet_shapes("maxpool").items()} == layout["unet"]
    assert {k: list(v) for k, v in expected_scorer_shapes("link").items()} == layout["EX+"]
    assert {k: list(v) for k, v in expected_scorer_shapes("merge").items()} == layout["EN+"]


def test_kernel_permutation_reproduces_the_original_axis_order():
    """The same network run in the original layout (B, C, row, col, Z) with pooling (2, 2, 1)
    and, after the kernel permutation, in ours (B, C, Z, row, col) gives the same maps."""
    torch.manual_seed(0)
    original_layout = UNet3D(unet_preset("cellect-original", pooling=(2, 2, 1))).eval()
    ours = UNet3D(unet_preset("cellect-original")).eval()
    ours.load_state_dict(permute_unet_kernels(original_layout.state_dict()))
    x_original = torch.randn(1, 2, 16, 32, 3)  # row, col, z: every axis a different size
    with torch.inference_mode():
        expected = original_layout(x_original)
        found = ours(x_original.permute(0, 1, 4, 2, 3))
    # float32 sums in another order in the two layouts: differences of ~1e-4 after 60 layers
    for a, b in zip(expected, found):
        torch.testing.assert_close(b, a.permute(0, 1, 4, 2, 3), rtol=1e-3, atol=1e-3)
    # a wrong permutation (e.g. plain reversal) does not
    wrong = UNet3D(unet_preset("cellect-original")).eval()
    wrong.load_state_dict(
        {
            k: v.permute(0, 1, 4, 3, 2) if v.ndim == 5 else v
            for k, v in original_layout.state_dict().items()
        }
    )
    with torch.inference_mode():
        error = (wrong(x_original.permute(0, 1, 4, 2, 3)).seg - found.seg).abs().max()
    assert error > 100 * 1e-3


def test_import_original_builds_a_working_bundle(original_files, tmp_path):
    bundle = import_original(
        original_files["unet"], original_files["link"], original_files["merge"]
    )
    raw = torch.load(original_files["unet"], weights_only=True)
    state = bundle.unet.state_dict()
    key = "conv3d_c1_1.weight"
    assert torch.equal(state[key], raw[key].permute(0, 1, 4, 2, 3))
    assert not torch.equal(state[key], raw[key])
    link_raw = torch.load(original_files["link"], weights_only=True)
    assert all(torch.equal(v, link_raw[k]) for k, v in bundle.link_scorer.state_dict().items())
    assert bundle.link_scorer.config.kind == "link" and bundle.merge_scorer.config.kind == "merge"
    assert bundle.normalization.mode == "cellect-log" and bundle.normalization.offset == 1900.0
    assert bundle.unet_config.downsampling == "maxpool"
    assert bundle.metadata.history[0]["event"] == "import"
    with torch.inference_mode():
        out = bundle.unet(torch.randn(1, 2, 2, 32, 32))
    assert all(torch.isfinite(t).all() for t in out)
    loaded = ModelBundle.load(bundle.save(tmp_path / "original.pt"))
    assert torch.equal(loaded.unet.state_dict()[key], state[key])


def test_import_detects_the_strided_variant(original_files, tmp_path, make_random_state):
    shapes = {k: list(v) for k, v in expected_unet_shapes("strided").items()}
    path = tmp_path / "U-strided.pth"
    torch.save(make_random_state(shapes, seed=4), path)
    bundle = import_original(path, original_files["link"], original_files["merge"])
    assert bundle.unet_config.downsampling == "strided"


def _rewrite(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("which", "change", "message"),
    [
        ("unet", lambda s: s.pop("conv3d_l4.weight"), r"missing 1 key\(s\): conv3d_l4.weight"),
        ("unet", lambda s: s.update(extra=torch.zeros(2)), r"unexpected 1 key\(s\): extra"),
        (
            "unet",
            lambda s: s.update({"conv3d_f1.weight": torch.zeros(32, 32, 1, 1, 1)}),
            r"wrong shape .*conv3d_f1.weight \(32, 32, 1, 1, 1\) \(expected \(64, 32, 1, 1, 1\)\)",
        ),
        (
            "merge",
            lambda s: s.pop("bnx.running_mean"),
            "EN weights.*missing 1 key.*bnx.running_mean",
        ),
        (
            "link",
            lambda s: s.update({"l4.weight": torch.zeros(64, 16)}),
            r"EX weights.*l4.weight \(64, 16\)",
        ),
    ],
)
def test_wrong_checkpoints_name_file_and_keys(original_files, which, change, message):
    _rewrite(original_files[which], change)
    with pytest.raises(ModelError, match=message) as info:
        import_original(original_files["unet"], original_files["link"], original_files["merge"])
    assert str(original_files[which]) in str(info.value)


def test_swapped_scorers_are_explained_in_the_spelling_of_the_interface(
    original_files, tmp_path, capsys
):
    with pytest.raises(ModelError, match="were link_path and merge_path swapped") as info:
        import_original(original_files["unet"], original_files["merge"], original_files["link"])
    assert "--" not in str(info.value)
    files = [original_files[k] for k in ("unet", "merge", "link")]  # link and merge swapped
    argv = ["import-weights", "--unet", str(files[0]), "--link", str(files[1])]
    assert main([*argv, "--merge", str(files[2]), "-o", str(tmp_path / "o.pt")]) == 2
    assert "were --link and --merge swapped" in capsys.readouterr().err


def test_not_a_state_dict(original_files, tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ModelError, match=r"as a state dict .* found Tensor"):
        import_original(path, original_files["link"], original_files["merge"])
    with pytest.raises(ModelError, match="file not found"):
        import_original(tmp_path / "missing.pth", original_files["link"], original_files["merge"])


def test_data_parallel_prefix_is_accepted(original_files):
    _rewrite(
        original_files["merge"], lambda s: s.update({f"module.{k}": s.pop(k) for k in list(s)})
    )
    bundle = import_original(
        original_files["unet"], original_files["link"], original_files["merge"]
    )
    assert bundle.merge_scorer.config.kind == "merge"


def test_cli_import_weights_end_to_end(original_files, tmp_path, capsys):
    out = tmp_path / "original.pt"
    argv = [
        "import-weights",
        "--unet",
        str(original_files["unet"]),
        "--link",
        str(original_files["link"]),
        "--merge",
        str(original_files["merge"]),
        "-o",
        str(out),
        "--name",
        "mskcc",
    ]
    assert main(argv) == 0
    bundle = ModelBundle.load(out)
    assert bundle.metadata.name == "mskcc"
    assert bundle.unet_config.architecture == "cellect-original"
    # refuses to overwrite without --force
    assert main(argv) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_cli_import_weights_reports_bad_keys_in_one_line(original_files, tmp_path, capsys):
    _rewrite(original_files["link"], lambda s: s.pop("cx.bias"))
    out = tmp_path / "original.pt"
    code = main(
        [
            "import-weights",
            "--unet",
            str(original_files["unet"]),
            "--link",
            str(original_files["link"]),
            "--merge",
            str(original_files["merge"]),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("cellect import-weights: error:") and "cx.bias" in err
    assert "\n" not in err
    assert not out.exists()

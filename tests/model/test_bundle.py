import datetime
import logging
import pickle

import numpy as np
import pytest
import torch

from napari_cellect.errors import InputError, ModelError
from napari_cellect.model import bundle as bundle_module
from napari_cellect.model.bundle import BUNDLE_FORMAT, BundleMetadata, ModelBundle
from napari_cellect.model.pair_scorer import PairScorer, PairScorerConfig
from napari_cellect.settings.conversion import config_from_dict, config_to_dict
from napari_cellect.settings.detection import DetectionConfig
from napari_cellect.settings.linking import LinkingConfig
from napari_cellect.settings.merge import MergeConfig
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tracking import TrackingConfig

X = torch.randn(1, 2, 2, 16, 16, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def small() -> ModelBundle:
    return ModelBundle.random("small", seed=0)


@pytest.fixture
def saved(tmp_path, small):
    return small.save(tmp_path / "model.pt")


def _scores(bundle: ModelBundle, kind: str):
    gen = torch.Generator().manual_seed(1)
    e = bundle.unet_config.embedding_dim
    args = (
        torch.randn(4, e, generator=gen),
        torch.randn(4, 5, e, generator=gen),
        torch.randn(4, 5, 3, generator=gen),
        torch.rand(4, generator=gen),
        torch.rand(4, 5, generator=gen),
        torch.rand(4, 2, generator=gen),
        torch.rand(4, 5, 2, generator=gen),
    )
    scorer = bundle.merge_scorer if kind == "merge" else bundle.link_scorer
    with torch.inference_mode():
        return scorer.score(*args).logits


def test_round_trip_gives_identical_outputs(small, saved):
    small.metadata.record("finetune", corrections=np.int64(12), source=saved.parent)
    small.save(saved)
    loaded = ModelBundle.load(saved)
    with torch.inference_mode():
        for a, b in zip(small.unet(X), loaded.unet(X)):
            assert torch.equal(a, b)
    for kind in ("merge", "link"):
        assert torch.equal(_scores(small, kind), _scores(loaded, kind))
    assert loaded.unet_config == small.unet_config
    assert loaded.merge_config == small.merge_config and loaded.link_config == small.link_config
    assert loaded.thresholds == small.thresholds
    assert loaded.normalization == small.normalization
    assert loaded.metadata.name == small.metadata.name
    assert loaded.metadata.history[:-1] == small.metadata.history[:-1]
    assert loaded.metadata.history[-1]["event"] == "finetune"
    assert loaded.metadata.history[-1]["corrections"] == 12  # numpy scalar stored as int
    assert loaded.metadata.history[-1]["source"] == str(saved.parent)
    assert not loaded.unet.training


def test_small_bundle_is_small(saved, small):
    assert saved.stat().st_size < 4_000_000
    assert small.n_parameters() < 1_000_000


def test_file_is_a_plain_dict_that_loads_with_weights_only(saved):
    data = torch.load(saved, weights_only=True)
    assert data["format"] == BUNDLE_FORMAT and data["version"] == 1
    assert isinstance(data["unet_config"], dict) and isinstance(data["thresholds"]["link"], dict)


def test_random_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = ModelBundle.random("small", seed=7)
    b = ModelBundle.random("small", seed=7)
    assert torch.equal(torch.rand(3), expected)
    c = ModelBundle.random("small", seed=8)
    for (name, pa), pb, _pc in zip(
        a.unet.state_dict().items(), b.unet.state_dict().values(), c.unet.state_dict().values()
    ):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.unet.parameters(), c.unet.parameters()))


def test_random_original_uses_the_original_preprocessing_and_thresholds():
    b = ModelBundle.random("cellect-original")
    assert b.normalization.mode == "cellect-log"
    assert b.thresholds == TrackingConfig.cellect_original()
    assert b.merge_config.architecture == "cellect-original"


# ---------------------------------------------------------------------------- bad files


def _edit(saved, path, change):
    data = torch.load(saved, weights_only=True)
    change(data)
    torch.save(data, path)


def _drop_unet_key(d):
    d["unet"].pop(next(iter(d["unet"])))


def _reshape_link_weight(d):
    key = next(k for k in d["link"] if k.endswith("weight"))
    d["link"][key] = torch.zeros(3, 3)


BAD_FILES = {
    "text": (lambda p, s: p.write_text("not a model\n"), "not a PyTorch file"),
    "empty": (lambda p, s: p.write_bytes(b""), "the file is empty"),
    "half a pickle": (
        lambda p, s: p.write_bytes(pickle.dumps({"a": 1})[:6]),
        "truncated or damaged",
    ),
    "truncated": (
        lambda p, s: p.write_bytes(s.read_bytes()[: s.stat().st_size // 2]),
        "truncated or damaged",
    ),
    "python pickle": (
        lambda p, s: p.write_bytes(pickle.dumps(logging.getLogger("x"))),
        "plain Python pickle",
    ),
    "unsafe objects": (
        lambda p, s: torch.save({"when": datetime.date(2020, 1, 1)}, p),
        "never loaded, for safety",
    ),
    "raw state dict": (
        lambda p, s: torch.save(PairScorer().state_dict(), p),
        "plain PyTorch state dict",
    ),
    "a list": (lambda p, s: torch.save([1, 2], p), "expected a dict, found list"),
    "other dict": (lambda p, s: torch.save({"format": "something", "x": 1}, p), "expected format"),
    "newer version": (
        lambda p, s: _edit(s, p, lambda d: d.update(version=99, written_by="napari-cellect 9.1")),
        r"bundle version 99.*napari-cellect 9\.1, newer than this napari-cellect",
    ),
    "bad version": (
        lambda p, s: _edit(s, p, lambda d: d.update(version="1")),
        "unsupported bundle version '1'",
    ),
    "no thresholds": (
        lambda p, s: _edit(s, p, lambda d: d.pop("thresholds")),
        r"missing \['thresholds'\]",
    ),
    "missing key": (
        lambda p, s: _edit(s, p, _drop_unet_key),
        r"'unet' weights do not match the network: missing 1 key",
    ),
    "extra key": (
        lambda p, s: _edit(s, p, lambda d: d["merge"].update(extra=torch.zeros(1))),
        "unexpected 1 key.*extra",
    ),
    "wrong shape": (lambda p, s: _edit(s, p, _reshape_link_weight), r"wrong shape .*\(3, 3\)"),
    "bad config": (
        lambda p, s: _edit(s, p, lambda d: d["unet_config"].update(norm="layer")),
        "invalid configuration.*norm",
    ),
    "unknown field": (
        lambda p, s: _edit(s, p, lambda d: d["link_config"].update(size=3)),
        "unknown PairScorerConfig field",
    ),
    "bad threshold": (
        lambda p, s: _edit(s, p, lambda d: d["thresholds"]["link"].update(link_threshold=2.0)),
        "link_threshold must be in",
    ),
    "swapped scorers": (
        lambda p, s: _edit(
            s, p, lambda d: d.update(merge=d["link"], merge_config=d["link_config"])
        ),
        "merge_scorer has kind 'link'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_a_model_error_naming_the_file(tmp_path, saved, case):
    make, message = BAD_FILES[case]
    path = tmp_path / "bad.pt"
    make(path, saved)
    with pytest.raises(ModelError, match=message) as info:
        ModelBundle.load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        ModelBundle.load(tmp_path / "nope.pt")
    with pytest.raises(ModelError, match="found a folder"):
        ModelBundle.load(tmp_path)


def test_load_default(tmp_path, monkeypatch, small):
    monkeypatch.setattr(bundle_module, "DEFAULT_BUNDLE_PATH", tmp_path / "default.pt")
    with pytest.raises(ModelError, match="default model is not installed"):
        ModelBundle.load_default()
    small.save(tmp_path / "default.pt")
    assert ModelBundle.load_default().metadata == small.metadata


def test_save_is_atomic(tmp_path, saved, small, monkeypatch):
    before = saved.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        small.save(saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    with pytest.raises(InputError, match="does not exist"):
        small.save(tmp_path / "no" / "model.pt")


def test_inconsistent_parts_are_rejected(small):
    wrong_dim = PairScorer(PairScorerConfig(kind="link", embedding_dim=16))
    with pytest.raises(ModelError, match="expects embeddings of length 16, the U-Net makes 64"):
        ModelBundle(small.unet, small.merge_scorer, wrong_dim)
    original = ModelBundle.random("cellect-original")
    with pytest.raises(ModelError, match=r"thresholds\.link\.k is 7"):
        ModelBundle(
            original.unet,
            original.merge_scorer,
            original.link_scorer,
            thresholds=TrackingConfig(link=LinkingConfig(k=7)),
        )


def test_normalize_uses_the_bundle_settings(small):
    pair = np.random.default_rng(0).integers(100, 5000, size=(2, 3, 16, 16)).astype(np.uint16)
    out = small.normalize(pair)
    assert out.dtype == np.float32 and out.shape == pair.shape
    lo, hi = np.percentile(pair, [1.0, 99.8])
    np.testing.assert_allclose(out, (pair - lo) / (hi - lo), rtol=1e-4, atol=1e-5)


def test_candidate_scorer_for_tracking(small):
    from napari_cellect.track.detections import Detections

    rng = np.random.default_rng(0)
    det = Detections(
        0,
        rng.uniform(0, 50, (6, 3)),
        rng.normal(size=(6, 64)),
        np.full(6, 4.0),
        rng.uniform(0, 1, (6, 2)),
        np.ones(6),
    )
    scores = small.candidate_scorer("link").score(det, det, np.tile(np.arange(5), (6, 1)), 2.0)
    assert scores.p_match.shape == (6, 5) and scores.p_divide.shape == (6,)
    with pytest.raises(InputError, match="'merge' or 'link'"):
        small.candidate_scorer("split")


# ---------------------------------------------------------------------------- configs


def test_tracking_config_round_trip_and_forward_compatibility(caplog):
    config = TrackingConfig(
        detection=DetectionConfig(border_margin=(1, 2, 2), centre_mode="ordinal"),
        link=LinkingConfig(appear_cost=1.5, gap_closing=True),
    )
    values = config_to_dict(config)
    assert values["detection"]["border_margin"] == [1, 2, 2]
    assert config_from_dict(TrackingConfig, values) == config
    # a file from a newer version: unknown fields are ignored with a warning, missing ones default
    values["link"]["future_knob"] = 3
    del values["merge"]["symmetric"]
    with caplog.at_level(logging.WARNING):
        again = config_from_dict(TrackingConfig, values)
    assert again == config
    assert "future_knob" in caplog.text
    with pytest.raises(InputError, match="unknown LinkingConfig field"):
        config_from_dict(LinkingConfig, {"future_knob": 3}, strict=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DetectionConfig(threshold=1.5), r"threshold must be in \[0, 1\]"),
        (lambda: DetectionConfig(border_margin=(1, 2)), "border_margin must be 3 integers"),
        (lambda: MergeConfig(k=0), "k must be an integer >= 1"),
        (lambda: MergeConfig(symmetric="min"), "'mean' or 'max'"),
        (lambda: LinkingConfig(appear_cost=float("inf")), "must be finite"),
        (lambda: NormalizationConfig(low_percentile=50, high_percentile=10), "0 <= low < high"),
        (lambda: NormalizationConfig(mode="zscore"), "mode must be one of"),
    ],
)
def test_config_validation(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_original_bundle_carries_the_original_settings():
    bundle = ModelBundle.random("cellect-original")
    assert bundle.thresholds.detection.centre_mode == "ordinal"
    assert bundle.normalization.mode == "cellect-log"


def test_metadata_record():
    meta = BundleMetadata(name="m")
    meta.record("train", epochs=3)
    assert meta.history[0]["event"] == "train" and meta.history[0]["epochs"] == 3
    assert "date" in meta.history[0]

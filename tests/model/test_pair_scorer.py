import numpy as np
import pytest
import torch

from napari_cellect.errors import InputError
from napari_cellect.model.pair_scorer import (
    MASKED_LOGIT,
    OriginalEXNet,
    PairScorer,
    PairScorerConfig,
    _padded_indices,
    build_scorer,
    pair_features,
)

E = 8


def _inputs(m: int = 6, k: int = 5, e: int = E, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "query_emb": torch.randn(m, e, generator=gen),
        "cand_emb": torch.randn(m, k, e, generator=gen),
        "offsets": torch.randn(m, k, 3, generator=gen) * 5,
        "query_radius": torch.rand(m, generator=gen) * 5 + 2,
        "cand_radius": torch.rand(m, k, generator=gen) * 5 + 2,
        "query_div": torch.rand(m, 2, generator=gen),
        "cand_div": torch.rand(m, k, 2, generator=gen),
    }


def _scorer(kind: str, architecture: str = "set", seed: int = 0):
    torch.manual_seed(seed)
    e = 64 if architecture == "cellect-original" else E
    config = PairScorerConfig(kind=kind, architecture=architecture, embedding_dim=e)
    return build_scorer(config).eval()


def test_pair_features_follow_the_original_definitions():
    q = torch.tensor([[3.0, 4.0]])
    c = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    offsets = torch.tensor([[[0.0, -3.0, 4.0], [6.0, 0.0, -8.0]]])  # distances 5 and 10
    f = pair_features(
        q,
        c,
        offsets,
        query_radius=torch.tensor([4.0]),
        cand_radius=torch.tensor([[6.0, 12.0]]),
        query_div=torch.tensor([[0.9, 0.1]]),
        cand_div=torch.tensor([[[0.2, 0.7], [0.0, 0.3]]]),
    )
    torch.testing.assert_close(f["emb_diff"], torch.tensor([[[0.0, 0.0], [-3.0, -2.0]]]))
    torch.testing.assert_close(f["emb_prod"][0, 0], torch.tensor([9.0, 16.0]) / 25.0)
    torch.testing.assert_close(f["emb_prod"][0, 1], torch.tensor([0.0, 8.0]) / 10.0)
    torch.testing.assert_close(f["cosine"][0, :, 0], torch.tensor([1.0, 0.8]))
    torch.testing.assert_close(f["emb_dist"][0, :, 0], torch.tensor([0.0, 13.0**0.5]))
    torch.testing.assert_close(f["offsets"], offsets.abs())
    expected_size = torch.tensor(
        [
            [6 - 4, 6 / 5, 5, 6 - 5, 1, 6 / (5 + 1e-4)],
            [12 - 4, 12 / 5, 10, 12 - 10, 1, 12 / (10 + 1e-4)],
        ]
    )
    torch.testing.assert_close(f["size"][0], expected_size)
    expected_div = torch.tensor(
        [[0.9, 0.1, 0.2, 0.7, 1.0, 0.9 * 0.7], [0.9, 0.1, 0.0, 0.3, 0.0, 0.9 * 0.3]]
    )
    torch.testing.assert_close(f["division"][0], expected_div)
    torch.testing.assert_close(f["query"], torch.tensor([[4.0, 0.9, 0.1]]))


def test_pair_features_reject_wrong_shapes():
    args = _inputs()
    args["cand_radius"] = torch.rand(6, 4)
    with pytest.raises(InputError, match=r"cand_radius must have shape \(6, 5\), found \(6, 4\)"):
        pair_features(**args)


@pytest.mark.parametrize("architecture", ["set", "cellect-original"])
@pytest.mark.parametrize("kind", ["merge", "link"])
def test_output_shapes_and_logit_layout(kind, architecture):
    scorer = _scorer(kind, architecture)
    e = scorer.config.embedding_dim
    with torch.inference_mode():
        out = scorer.score(**_inputs(m=7, e=e))
    assert out.candidates.shape == (7, 5)
    assert out.none.shape == (7,)
    if kind == "link":
        assert out.division.shape == (7, 2)
        assert out.logits.shape == (7, 8)
    else:
        assert out.division is None
        assert out.logits.shape == (7, 6)
    match, none, divide = out.probabilities()
    assert ((match >= 0) & (match <= 1)).all() and ((none >= 0) & (none <= 1)).all()
    assert (divide is None) == (kind == "merge")


@pytest.mark.parametrize("kind", ["merge", "link"])
def test_set_scorer_is_permutation_equivariant(kind):
    scorer = _scorer(kind)
    args = _inputs(m=9)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = {
        key: value[:, perm] if key.startswith("cand") or key == "offsets" else value
        for key, value in args.items()
    }
    with torch.inference_mode():
        a = scorer.score(**args)
        b = scorer.score(**permuted)
    torch.testing.assert_close(b.candidates, a.candidates[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.none, a.none, rtol=1e-5, atol=1e-5)
    if kind == "link":
        torch.testing.assert_close(b.division, a.division, rtol=1e-5, atol=1e-5)
    # ...but it is not blind to the rivals: changing one candidate moves the others' scores
    changed = dict(args, cand_emb=args["cand_emb"].clone())
    changed["cand_emb"][:, 4] += 3.0
    with torch.inference_mode():
        c = scorer.score(**changed)
    assert not torch.allclose(c.candidates[:, :4], a.candidates[:, :4])


def test_original_scorer_depends_on_candidate_order():
    scorer = _scorer("link", "cellect-original")
    args = _inputs(e=64)
    perm = torch.tensor([1, 0, 2, 3, 4])
    permuted = {
        k: v[:, perm] if k.startswith("cand") or k == "offsets" else v for k, v in args.items()
    }
    with torch.inference_mode():
        a, b = scorer.score(**args), scorer.score(**permuted)
    assert not torch.allclose(b.candidates, a.candidates[:, perm])


def test_mask_hides_padded_candidates_completely():
    scorer = _scorer("link")
    args = _inputs(m=4)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 3:] = False
    mask[2, :] = False  # a query without any candidate
    with torch.inference_mode():
        a = scorer.score(**args, mask=mask)
        junk = {k: v.clone() for k, v in args.items()}
        for key in ("cand_emb", "offsets", "cand_radius", "cand_div"):
            junk[key][:, 3:] = 1e3
        b = scorer.score(**junk, mask=mask)
    assert (a.candidates[~mask] == MASKED_LOGIT).all()
    assert torch.sigmoid(a.candidates[~mask]).max() == 0
    torch.testing.assert_close(a.candidates[mask], b.candidates[mask])
    torch.testing.assert_close(a.none, b.none)
    torch.testing.assert_close(a.division, b.division)
    assert torch.isfinite(a.none).all() and torch.isfinite(a.division).all()
    with pytest.raises(InputError, match="candidate mask must have shape"):
        scorer.score(**args, mask=mask[:, :4])


@pytest.mark.parametrize("k", [1, 3, 8])
def test_set_scorer_accepts_any_number_of_candidates(k):
    with torch.inference_mode():
        out = _scorer("merge").score(**_inputs(m=3, k=k))
    assert out.candidates.shape == (3, k)


def test_original_scorer_needs_exactly_five_candidates():
    with pytest.raises(InputError, match="exactly 5 candidates"):
        _scorer("merge", "cellect-original").score(**_inputs(k=4, e=64))
    with pytest.raises(InputError, match="needs k=5 and embedding_dim=64"):
        PairScorerConfig(architecture="cellect-original", k=6)


@pytest.mark.parametrize(
    ("kind", "section", "n_params"), [("merge", "EN+", 191_716), ("link", "EX+", 191_850)]
)
def test_original_scorer_matches_the_published_layout(layout, kind, section, n_params):
    net = OriginalEXNet(PairScorerConfig(kind=kind, architecture="cellect-original"))
    assert [(k, list(v.shape)) for k, v in net.state_dict().items()] == list(
        layout[section].items()
    )
    assert sum(p.numel() for p in net.parameters()) == n_params


def _reference_exnet(net: OriginalEXNet, f: dict) -> torch.Tensor:
    """docs/method.md §5.4 written out literally: per candidate, two Conv2d on the 2 x 64 image."""
    lrelu = torch.nn.functional.leaky_relu
    m = f["query_emb"].shape[0]
    per_candidate = []
    for j in range(5):
        image = torch.stack([f["query_emb"], f["cand_emb"][:, j]], dim=1)[:, None]  # (M, 1, 2, 64)
        a = lrelu(net.bnc(net.c1(image)), 0.01)
        b = lrelu(net.bnc(net.c2(image)), 0.01)
        per_candidate.append(net.cx(torch.cat([a, b], dim=1).reshape(m, 1024)))
    inputs = [
        torch.cat(per_candidate, dim=1),
        f["emb_diff"].reshape(m, -1),
        f["emb_prod"].reshape(m, -1),
        f["offsets"][..., [1, 2, 0]].reshape(m, -1),
        f["size"].reshape(m, -1),
        f["division"].reshape(m, -1),
    ]
    layers = [
        (net.l1, net.bn1),
        (net.l2, net.bn2),
        (net.l3, net.bn3),
        (net.l4, net.bn4),
        (net.l5, net.bn5),
        (net.l6, net.bn6),
    ]
    hidden = torch.cat(
        [lrelu(bn(linear(x)), 0.01) for (linear, bn), x in zip(layers, inputs)], dim=1
    )
    hidden = net.bn7(lrelu(net.fc(hidden), 0.01))
    return net.out(lrelu(net.fc2(hidden), 0.01))


@pytest.mark.parametrize("kind", ["merge", "link"])
def test_original_scorer_equals_a_literal_implementation(kind, make_random_state, layout):
    net = OriginalEXNet(PairScorerConfig(kind=kind, architecture="cellect-original")).eval()
    section = "EN+" if kind == "merge" else "EX+"
    net.load_state_dict(make_random_state(layout[section], seed=9))
    features = pair_features(**_inputs(m=5, e=64))
    with torch.inference_mode():
        found = net(features).logits
        expected = _reference_exnet(net, features)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_original_scorer_feeds_features_in_the_original_order():
    scorer = _scorer("link", "cellect-original")
    seen = {}
    for name in ("l2", "l4", "l5", "l6"):
        getattr(scorer, name).register_forward_hook(
            lambda module, inputs, output, name=name: seen.__setitem__(name, inputs[0])
        )
    args = _inputs(e=64)
    features = pair_features(**args)
    with torch.inference_mode():
        scorer(features)
    offsets = args["offsets"].abs()
    # offsets go in as |drow|, |dcol|, |dz * z_ratio| = our (y, x, z), candidate after candidate
    torch.testing.assert_close(seen["l4"][0, :3], offsets[0, 0, [1, 2, 0]])
    torch.testing.assert_close(seen["l4"][0, 3:6], offsets[0, 1, [1, 2, 0]])
    torch.testing.assert_close(seen["l2"], features["emb_diff"].reshape(6, -1))
    torch.testing.assert_close(seen["l5"], features["size"].reshape(6, -1))
    torch.testing.assert_close(seen["l6"], features["division"].reshape(6, -1))


@pytest.mark.parametrize("architecture", ["set", "cellect-original"])
def test_gradients_flow(architecture):
    scorer = _scorer("link", architecture).train()
    out = scorer.score(**_inputs(m=8, e=scorer.config.embedding_dim))
    (out.logits**2).mean().backward()
    unused = {"bnx", "bny", "outc"}
    missing = [
        n
        for n, p in scorer.named_parameters()
        if n.split(".")[0] not in unused and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


def test_config_round_trip_and_validation():
    config = PairScorerConfig(kind="merge", k=7, hidden=32)
    assert PairScorerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="kind must be one of"):
        PairScorerConfig(kind="split")
    with pytest.raises(InputError, match="needs architecture 'set'"):
        PairScorer(PairScorerConfig(architecture="cellect-original"))


def test_padded_indices_repeat_the_preceding_real_candidate():
    idx = np.array([[3, 4, -1, -1, -1], [-1, -1, 7, -1, 9], [-1] * 5])
    valid = idx >= 0
    np.testing.assert_array_equal(
        _padded_indices(idx, valid, repeat_last=True), [[3, 4, 4, 4, 4], [7, 7, 7, 7, 9], [0] * 5]
    )
    np.testing.assert_array_equal(
        _padded_indices(idx, valid, repeat_last=False), [[3, 4, 0, 0, 0], [0, 0, 7, 0, 9], [0] * 5]
    )

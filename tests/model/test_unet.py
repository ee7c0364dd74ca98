import pytest
import torch

from napari_cellect.errors import InputError, ModelError
from napari_cellect.model.unet import (
    CompactUNet3D,
    OriginalUNet3D,
    UNet3D,
    UNetConfig,
    UNetOutput,
    is_channels_last,
    space_to_depth,
    unet_preset,
    upsample_linear,
)

PRESETS = ["small", "cellect-original"]


def _net(preset: str, seed: int = 0) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(unet_preset(preset)).eval()


def _expected_channels(config: UNetConfig) -> list[int]:
    return [3, config.centre_levels, config.embedding_dim, 2, 1]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("shape", [(1, 2, 8, 32, 32), (2, 2, 3, 16, 48), (1, 2, 1, 32, 32)])
def test_output_shapes_at_input_resolution(preset, shape):
    net = _net(preset)
    with torch.inference_mode():
        out = net(torch.randn(shape))
    assert isinstance(out, UNetOutput)
    b, _, z, y, x = shape
    for tensor, channels in zip(out, _expected_channels(net.config)):
        assert tuple(tensor.shape) == (b, channels, z, y, x)
        assert torch.isfinite(tensor).all()
    assert (out.radius >= 0).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_size_multiple_is_documented_and_enforced(preset):
    net = _net(preset)
    assert net.size_multiple == (1, 16, 16)
    with pytest.raises(InputError, match=r"Y=24 \(multiple of 16\)"):
        net(torch.randn(1, 2, 4, 24, 32))
    with pytest.raises(InputError, match=r"X=33"):
        net(torch.randn(1, 2, 4, 32, 33))
    with pytest.raises(InputError, match=r"\(B, 2, Z, Y, X\)"):
        net(torch.randn(1, 3, 4, 32, 32))


def test_single_voxel_bottleneck_is_rejected_for_instance_norm_only():
    with pytest.raises(InputError, match="too small for instance normalisation"):
        _net("cellect-original")(torch.randn(1, 2, 1, 16, 16))
    with torch.inference_mode():
        out = _net("small")(torch.randn(1, 2, 1, 16, 16))  # group norm: fine
    assert out.seg.shape == (1, 3, 1, 16, 16)


def test_size_multiple_follows_stem_pooling_and_cen_depth():
    config = unet_preset("small", depth=3, cen_depth=4, pooling=(2, 2, 2))
    assert config.size_multiple == (8, 16, 16)  # stem (1, 2, 2) x 2**3


@pytest.mark.parametrize("preset", PRESETS)
def test_gradients_reach_every_parameter(preset):
    net = _net(preset).train()
    out = net(torch.randn(1, 2, 4, 32, 32))
    loss = sum(t.float().pow(2).mean() for t in out)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_presets_build_the_right_classes():
    assert isinstance(UNet3D(unet_preset("small")), CompactUNet3D)
    assert isinstance(UNet3D(unet_preset("cellect-original")), OriginalUNet3D)
    assert isinstance(UNet3D(), CompactUNet3D)
    with pytest.raises(ModelError, match="unknown U-Net preset 'big'"):
        unet_preset("big")
    with pytest.raises(InputError, match="needs architecture 'compact'"):
        CompactUNet3D(unet_preset("cellect-original"))


def test_original_state_dict_matches_the_published_layout_exactly(layout):
    net = UNet3D(unet_preset("cellect-original"))
    found = {key: list(value.shape) for key, value in net.state_dict().items()}
    assert found == layout["unet"]
    assert net.n_parameters() == 2_541_972
    assert sum(p.numel() for p in net.lnet.parameters()) == 111_876


def test_original_strided_variant_differs_only_in_downsampling_keys(layout):
    net = UNet3D(unet_preset("cellect-original", downsampling="strided"))
    keys = set(net.state_dict())
    published = set(layout["unet"])
    assert published - keys == {f"conv3d_c{k}.1.weight" for k in range(2, 6)} | {
        f"conv3d_c{k}s2.1.weight" for k in range(2, 6)
    }
    assert keys - published == {f"conv3d_c{k}.weight" for k in range(2, 6)} | {
        f"conv3d_c{k}s2.weight" for k in range(2, 6)
    }
    assert net.n_parameters() == 2_541_972


@pytest.mark.parametrize("preset", PRESETS)
def test_channels_last_gives_the_same_result(preset):
    net = _net(preset)
    x = torch.randn(1, 2, 4, 32, 32)
    with torch.inference_mode():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last_3d)
        fast = net(x.contiguous(memory_format=torch.channels_last_3d))
    for a, b in zip(reference, fast):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_channels_last_input_runs_the_whole_compact_network_channels_last():
    """The stem's rearrangement once turned channels-last input back into the default layout,
    so the network ran without the faster kernels: the trunk and the embedding must stay in it."""
    net = _net("small").to(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 2, 4, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        features = net.trunk_features(x)
        out = net(x, coarse_embedding=True)
    assert is_channels_last(features.fine) and is_channels_last(features.skip)
    assert is_channels_last(out.embedding)


def test_space_to_depth_keeps_the_layout_and_the_channel_order():
    x = torch.randn(2, 2, 3, 8, 12)
    plain = space_to_depth(x, (1, 2, 2))
    last = space_to_depth(x.contiguous(memory_format=torch.channels_last_3d), (1, 2, 2))
    assert is_channels_last(last) and not is_channels_last(plain)
    assert torch.equal(plain, last)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_upsampling_without_a_z_change_is_trilinear(layout):
    x = torch.randn(2, 5, 3, 6, 7).contiguous(memory_format=layout)
    for size in [(3, 12, 14), (6, 12, 14)]:  # the second changes Z: trilinear itself
        expected = torch.nn.functional.interpolate(
            x, size=size, mode="trilinear", align_corners=False
        )
        torch.testing.assert_close(upsample_linear(x, size), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
def test_one_group_norm_of_a_channels_last_input_is_torchs_group_norm(affine):
    from napari_cellect.model.unet import GroupNorm

    torch.manual_seed(3)
    norm = GroupNorm(1, 4, affine=affine)
    if affine:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    base = torch.randn(2, 4, 3, 8, 8) * 5 + 40  # a large offset: the variance must not cancel
    plain = base.clone().requires_grad_()
    last = base.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    expected = torch.nn.functional.group_norm(plain, 1, norm.weight, norm.bias, norm.eps)
    got = norm(last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert is_channels_last(got)
    weights = torch.randn_like(base)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(last.grad, plain.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_the_embedding_is_the_1x1_conv_of_both_levels_side_by_side(layout):
    """The embedding is computed without upsampling the coarser level; it must equal the 1x1
    conv of the finest level concatenated with the coarser one upsampled (nearest)."""
    net = _net("small").to(memory_format=layout)
    x = torch.randn(2, 2, 2, 32, 32).contiguous(memory_format=layout)
    features = net.trunk_features(x)
    got = net.embedding_from(features)
    coarse = torch.nn.functional.interpolate(
        features.coarse, size=features.fine.shape[2:], mode="nearest"
    )
    expected = torch.nn.functional.conv3d(
        torch.cat([features.fine, coarse], dim=1), net.embed.weight, net.embed.bias
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert net.embed.weight.grad is not None and torch.isfinite(net.embed.weight.grad).all()


def test_eval_mode_is_deterministic_and_dropout_acts_in_training():
    net = _net("cellect-original")
    x = torch.randn(1, 2, 2, 32, 32)
    with torch.no_grad():
        a, b = net(x).seg, net(x).seg
        assert torch.equal(a, b)
        net.train()
        torch.manual_seed(1)
        c = net(x).seg
    assert not torch.allclose(a, c)


def test_space_to_depth_is_a_lossless_rearrangement():
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 2, 4, 6)
    out = space_to_depth(x, (1, 2, 2))
    assert out.shape == (1, 8, 2, 2, 3)
    # channel c * 4 + fy * 2 + fx holds x[c, z, 2y + fy, 2x + fx]
    for c in range(2):
        for fy in range(2):
            for fx in range(2):
                assert torch.equal(out[0, c * 4 + fy * 2 + fx], x[0, c, :, fy::2, fx::2])
    assert torch.equal(torch.sort(out.flatten()).values, torch.sort(x.flatten()).values)


def test_config_round_trip_and_validation():
    config = unet_preset("small", embedding_dim=16)
    values = config.to_dict()
    assert values["pooling"] == [1, 2, 2]
    assert UNetConfig.from_dict(values) == config
    with pytest.raises(InputError, match=r"unknown UNetConfig field\(s\) \['width'\]"):
        UNetConfig.from_dict({**values, "width": 3})
    with pytest.raises(InputError, match="norm must be one of"):
        UNetConfig.from_dict({**values, "norm": "layer"})
    with pytest.raises(InputError, match="cellect-original has 5 levels"):
        unet_preset("cellect-original", depth=4)


def test_embedding_dim_is_configurable():
    net = UNet3D(unet_preset("small", embedding_dim=16)).eval()
    with torch.inference_mode():
        out = net(torch.randn(1, 2, 2, 16, 16))
    assert out.embedding.shape == (1, 16, 2, 16, 16)

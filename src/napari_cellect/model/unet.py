"""The two-frame 3D U-Net with five heads (docs/method.md §3).

Input ``x`` is ``(B, 2, Z, Y, X)``: channel 0 = frame t, channel 1 = frame t+1, both normalised
together (``infer/normalize.py``, settings in the model bundle). Every output describes
**frame t** and has the input's full ``(Z, Y, X)`` size; see :class:`UNetOutput`.

Two architectures share this interface:

- ``compact`` (preset ``small``, our default). Built for CPU speed: the two frames are folded
  into channels at half XY resolution (space-to-depth, lossless), a residual U-Net with GroupNorm
  runs there (4 levels, 1/2 to 1/16 of the XY resolution), a tiny second U-Net (the CEN) refines
  the centre map from the segmentation logits, their softmax and the two input channels, and the
  heads are upsampled back to full resolution (trilinear for the logits and the radius, nearest
  for the embedding). Nuclei are several pixels wide, so half-resolution heads lose nothing the
  detector's sub-voxel refinement does not recover; a 41 x 512 x 512 frame pair takes about 3 s
  on 2 CPU cores.
- ``cellect-original`` (preset ``cellect-original``). The original CELLECT network, re-written from
  the description: parameter names and shapes match the original checkpoints exactly, so weights
  imported by :mod:`napari_cellect.model.original` load strictly.

Pooling is only in Y and X by default (``(1, 2, 2)``) because Z is anisotropic. Y and X must be
multiples of :attr:`UNet3D.size_multiple`; padding is the tiler's job (``infer/tiling.py``), and
:meth:`UNet3D.forward` raises :class:`~napari_cellect.errors.InputError` for other sizes.

Normalisation layers compute statistics per sample (GroupNorm / InstanceNorm), so predictions
depend slightly on the tile content; the tiler's overlap hides the seams.

Memory: the full-resolution outputs hold 3 + 5 + E + 2 + 1 channels (75 for E = 64), i.e. 300
bytes per voxel in float32, most of it the embedding: 0.8 GB for a 41 x 256 x 256 tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_cellect.errors import InputError, ModelError
from napari_cellect.model.conv import Conv3d
from napari_cellect.settings.conversion import config_from_dict, config_to_dict

ARCHITECTURES = ("compact", "cellect-original")
NORMS = ("group", "instance", "batch", "none")
RADIUS_ACTIVATIONS = ("softplus", "relu")
DOWNSAMPLINGS = ("maxpool", "strided")

#: Number of input channels: frame t and frame t+1.
IN_CHANNELS = 2
#: Number of semantic classes: background, nucleus, other (e.g. polar bodies).
SEG_CLASSES = 3
#: Number of division channels: [mother about to divide, newborn daughter in frame t+1].
DIVISION_CHANNELS = 2


class UNetOutput(NamedTuple):
    """What :class:`UNet3D` returns; every tensor is at the input's full ``(Z, Y, X)``
    (the embedding on its own coarser grid when asked for ``coarse_embedding``)."""

    seg: Tensor
    """(B, 3, Z, Y, X) logits: background, nucleus, other. Use softmax / argmax."""
    centre: Tensor
    """(B, L, Z, Y, X) ordinal centre-level logits (L = ``centre_levels``, default 5); the last
    level means "at a cell centre". Peaks of the last level are the detections."""
    embedding: Tensor
    """(B, E, Z, Y, X) per-voxel embedding (no normalisation); read at the detections."""
    division: Tensor
    """(B, 2, Z, Y, X) logits (use sigmoid): ch0 = this frame-t cell divides before t+1,
    ch1 = a newborn daughter sits here in frame t+1."""
    radius: Tensor
    """(B, 1, Z, Y, X) nucleus radius in XY pixels of the input, >= 0."""


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet3D`; saved in the model bundle."""

    preset: str = "small"
    """Name of the preset this config was derived from (informational only)."""
    architecture: str = "compact"
    """``compact`` (ours, CPU friendly) or ``cellect-original`` (checkpoint compatible)."""
    base_width: int = 8
    """Channels of the first (finest) level; each deeper level doubles it."""
    depth: int = 4
    """Number of resolution levels (``depth - 1`` poolings). ``cellect-original`` needs 5."""
    embedding_dim: int = 64
    """Length E of the per-voxel embedding vector."""
    pooling: tuple[int, int, int] = (1, 2, 2)
    """Pooling factor (z, y, x) between levels; z is not pooled by default (anisotropy)."""
    stem: tuple[int, int, int] = (1, 2, 2)
    """``compact`` only: space-to-depth factor (z, y, x) applied to the input first, so the whole
    network runs at this reduced resolution and the heads are upsampled back at the end."""
    norm: str = "group"
    """Normalisation layer: ``group``, ``instance`` (no affine), ``batch`` or ``none``."""
    norm_group_size: int = 4
    """``group`` norm: channels per group."""
    dropout: float = 0.1
    """Dropout3d probability inside encoder blocks (training only)."""
    negative_slope: float = 0.01
    """LeakyReLU slope."""
    centre_levels: int = 5
    """Number of ordinal centre levels L."""
    cen_base_width: int = 4
    """Width of the first level of the centre-refinement U-Net (CEN)."""
    cen_depth: int = 3
    """``compact`` only: levels of the CEN (``cellect-original`` uses 5, like its trunk)."""
    radius_activation: str = "softplus"
    """Keeps the radius >= 0: ``softplus`` (smooth gradients) or ``relu`` (original)."""
    downsampling: str = "maxpool"
    """``cellect-original`` only: its two published variants. ``maxpool`` (file ``con7s``,
    checkpoints ``*x3rdstr0*``; the layout in cellect-checkpoint-layout.json) or ``strided``
    (file ``con7``, checkpoints ``*x3rd*``). ``compact`` always uses strided convs."""

    def __post_init__(self) -> None:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(
                f"architecture must be one of {ARCHITECTURES}, found {self.architecture!r}"
            )
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {NORMS}, found {self.norm!r}")
        if self.radius_activation not in RADIUS_ACTIVATIONS:
            problems.append(
                f"radius_activation must be one of {RADIUS_ACTIVATIONS}, found {self.radius_activation!r}"
            )
        for name in (
            "base_width",
            "depth",
            "embedding_dim",
            "centre_levels",
            "cen_base_width",
            "cen_depth",
            "norm_group_size",
        ):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.centre_levels < 2:
            problems.append(f"centre_levels must be >= 2, found {self.centre_levels}")
        for name in ("pooling", "stem"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) < 1 for v in value):
                problems.append(f"{name} must be 3 positive integers (z, y, x), found {value}")
        if self.downsampling not in DOWNSAMPLINGS:
            problems.append(
                f"downsampling must be one of {DOWNSAMPLINGS}, found {self.downsampling!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), found {self.dropout}")
        if self.architecture == "cellect-original":
            if self.depth != 5:
                problems.append(f"cellect-original has 5 levels, found depth={self.depth}")
            if self.norm != "instance":
                problems.append(f"cellect-original uses instance norm, found {self.norm!r}")
            if tuple(self.stem) != (1, 1, 1):
                problems.append(f"cellect-original has no stem, found stem={self.stem}")
            if self.cen_depth != 5:
                problems.append(
                    f"cellect-original's CEN has 5 levels, found cen_depth={self.cen_depth}"
                )
        if problems:
            raise InputError("invalid UNetConfig: " + "; ".join(problems))
        object.__setattr__(self, "pooling", tuple(int(v) for v in self.pooling))
        object.__setattr__(self, "stem", tuple(int(v) for v in self.stem))

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        """(z, y, x): input sizes must be multiples of these (stem x all poolings of the deeper
        of the trunk and the CEN)."""
        scale = [p ** (max(self.depth, self.cen_depth) - 1) for p in self.pooling]
        return (self.stem[0] * scale[0], self.stem[1] * scale[1], self.stem[2] * scale[2])

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), for the bundle file."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown fields are an error (they change the network)."""
        return config_from_dict(cls, values, strict=True)


_PRESETS: dict[str, UNetConfig] = {
    # 0.41 M parameters (1.7 MB): space-to-depth stem, 4 levels at 1/2 .. 1/16 XY resolution.
    "small": UNetConfig(preset="small"),
    # The original CELLECT network (docs/method.md §3.3): 2.54 M parameters.
    "cellect-original": UNetConfig(
        preset="cellect-original",
        architecture="cellect-original",
        base_width=8,
        depth=5,
        stem=(1, 1, 1),
        norm="instance",
        dropout=0.6,
        cen_base_width=2,
        cen_depth=5,
        radius_activation="relu",
    ),
}


def preset_names() -> tuple[str, ...]:
    return tuple(_PRESETS)


def unet_preset(name: str, **overrides: Any) -> UNetConfig:
    """The config of a named preset (``small``, ``cellect-original``), optionally changed."""
    if name not in _PRESETS:
        raise ModelError(f"unknown U-Net preset {name!r}; expected one of {list(_PRESETS)}")
    config = _PRESETS[name]
    if overrides:
        config = replace(config, **overrides)
    return config


# ------------------------------------------------------------------------------- public model


class UNet3D(nn.Module):
    """Two-frame 3D U-Net: ``x`` (B, 2, Z, Y, X) -> :class:`UNetOutput` for frame t.

    ``UNet3D(config)`` builds the architecture named by ``config.architecture``
    (:class:`CompactUNet3D` or :class:`OriginalUNet3D`, both subclasses of this one).
    ``state_dict()`` keys of ``cellect-original`` are exactly the original checkpoint's.

    For fast CPU inference convert model and input to ``torch.channels_last_3d`` and run under
    ``torch.inference_mode()``.
    """

    def __new__(cls, config: UNetConfig | None = None) -> UNet3D:
        if cls is UNet3D:
            architecture = (config or unet_preset("small")).architecture
            cls = CompactUNet3D if architecture == "compact" else OriginalUNet3D
        return super().__new__(cls)

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or unet_preset("small")

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        """(z, y, x): Z, Y and X of the input must be multiples of these; the tiler pads to them.
        (1, 16, 16) for both presets: Z is never pooled, so any Z >= 1 works. Instance-norm
        networks (``cellect-original``) also need more than one voxel at the deepest level,
        e.g. (1, 32, 16) or (2, 16, 16) at least."""
        return self.config.size_multiple

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is (B, 2, Z, Y, X) with sizes the net accepts."""
        if x.ndim != 5 or x.shape[1] != IN_CHANNELS:
            raise InputError(f"U-Net input must be (B, 2, Z, Y, X), found shape {tuple(x.shape)}")
        bad = [
            f"{axis}={size} (multiple of {m})"
            for axis, size, m in zip("ZYX", x.shape[2:], self.size_multiple)
            if size % m
        ]
        if bad:
            raise InputError(
                "U-Net input sizes must be multiples of UNet3D.size_multiple "
                f"{self.size_multiple}; found " + ", ".join(bad) + " (pad the tile first)"
            )
        bottleneck = math.prod(s // m for s, m in zip(x.shape[2:], self.size_multiple))
        if self.config.norm == "instance" and bottleneck < 2:
            raise InputError(
                "U-Net input too small for instance normalisation: the deepest level would hold "
                f"one voxel; found (Z, Y, X) = {tuple(x.shape[2:])}, need at least twice "
                f"{self.size_multiple} along one axis"
            )

    @property
    def embedding_stride(self) -> tuple[int, int, int]:
        """(z, y, x) step of the grid the embedding is computed on, in input voxels."""
        return (1, 1, 1)

    def forward(self, x: Tensor, *, coarse_embedding: bool = False) -> UNetOutput:
        """The five heads of frame t. With ``coarse_embedding`` the embedding stays on the grid
        it is computed on (:attr:`embedding_stride`); its value at input voxel ``v`` is at
        ``v // embedding_stride``, the same value the full-resolution map (its nearest-neighbour
        upsampling) holds at ``v``. Inference reads the embedding only at detections, so it
        skips the upsampling of the largest head (a third of its memory)."""
        self.check_input(x)
        return self._forward(x, coarse_embedding)

    def _forward(self, x: Tensor, coarse_embedding: bool = False) -> UNetOutput:
        raise NotImplementedError

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------- building blocks


def _norm(kind: str, channels: int, group_size: int) -> nn.Module:
    if kind == "group":
        groups = max(1, channels // group_size)
        while channels % groups:  # GroupNorm needs a divisor of the channel count
            groups -= 1
        return GroupNorm(groups, channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.Identity()


def _conv(c_in: int, c_out: int, kernel: int = 3, bias: bool = False) -> Conv3d:
    """A same-padding conv; bias-free by default because a normalisation follows."""
    return Conv3d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)


def is_channels_last(x: Tensor) -> bool:
    """Whether a 5-D tensor is laid out channels-last (``torch.channels_last_3d``) rather than
    in the default layout (a tensor with one channel or one voxel can be both: then False)."""
    return (
        x.ndim == 5
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and not x.is_contiguous()
    )


def space_to_depth(x: Tensor, factor: tuple[int, int, int]) -> Tensor:
    """(B, C, Z, Y, X) -> (B, C*fz*fy*fx, Z/fz, Y/fy, X/fx), a lossless 3D pixel-unshuffle.

    The result keeps the input's memory layout: a channels-last input gives a channels-last
    result, so the whole network behind the stem runs channels-last (2-3x faster narrow
    convolutions on the CPU)."""
    fz, fy, fx = factor
    if (fz, fy, fx) == (1, 1, 1):
        return x
    b, c, z, y, x_ = x.shape
    blocks = x.reshape(b, c, z // fz, fz, y // fy, fy, x_ // fx, fx)
    shape = (b, c * fz * fy * fx, z // fz, y // fy, x_ // fx)
    if is_channels_last(x):
        # (b, z', y', x', c, fz, fy, fx): channels innermost, in the same order as below
        voxels = blocks.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, *shape[2:], shape[1])
        return voxels.permute(0, 4, 1, 2, 3)
    return blocks.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(shape)


def upsample_linear(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Trilinear upsampling (``align_corners=False``) to ``size``. Where Z keeps its size (a
    stem that does not fold Z) it is bilinear in Y and X slice by slice (the Z weights are then
    1 and 0; the same to float rounding) and about twice as fast."""
    b, c, z = x.shape[:3]
    if size[0] != z:
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    if is_channels_last(x):
        # (b*z, c, y, x) slices that are channels-last in 2D: a view, and a view back
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * z, c, *x.shape[3:])
        up = F.interpolate(slices, size=size[1:], mode="bilinear", align_corners=False)
        return up.reshape(b, z, c, *size[1:]).permute(0, 2, 1, 3, 4)
    slices = x.reshape(b, c * z, *x.shape[3:])
    up = F.interpolate(slices, size=size[1:], mode="bilinear", align_corners=False)
    return up.reshape(b, c, *size)


class GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm`, with the statistics of a one-group norm of a channels-last
    input taken over the whole sample at once: torch's own channels-last kernel is several
    times slower for the narrow layers that use one group (4 channels). Same parameters, same
    results to float32 rounding, differentiable."""

    def forward(self, x: Tensor) -> Tensor:
        if self.num_groups != 1 or not is_channels_last(x):
            return super().forward(x)
        n, c = x.shape[:2]
        # two passes (mean, then the mean square of the deviations): as exact as torch's
        # var_mean and five times faster, whose one-pass reduction is not parallel here
        values = x.permute(0, 2, 3, 4, 1).reshape(n, -1)
        mean = values.mean(dim=1)
        deviation = values - mean[:, None]
        var = (deviation * deviation).mean(dim=1)
        scale = torch.rsqrt(var + self.eps)[:, None]  # (n, 1)
        if self.affine:
            scale = scale * self.weight[None]  # (n, c)
            shift = self.bias[None] - mean[:, None] * scale
        else:
            scale = scale.expand(n, c)
            shift = -mean[:, None] * scale
        return torch.addcmul(shift.view(n, c, 1, 1, 1), x, scale.view(n, c, 1, 1, 1))


class ResBlock(nn.Module):
    """conv-norm-act-(dropout)-conv-norm plus a (projected) shortcut, then act."""

    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig, dropout: float = 0.0):
        super().__init__()
        bias = cfg.norm == "none"
        self.conv1 = _conv(c_in, c_out, bias=bias)
        self.norm1 = _norm(cfg.norm, c_out, cfg.norm_group_size)
        self.conv2 = _conv(c_out, c_out, bias=bias)
        self.norm2 = _norm(cfg.norm, c_out, cfg.norm_group_size)
        self.act = nn.LeakyReLU(cfg.negative_slope, inplace=True)
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.skip = nn.Identity() if c_in == c_out else _conv(c_in, c_out, kernel=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(self.drop(out)))
        return self.act(out + self.skip(x))


class CompactUNet(nn.Module):
    """Residual U-Net body: an encoder of ResBlocks with strided-conv pooling, a decoder with
    transposed-conv upsampling and additive skips. ``forward`` returns every decoder level."""

    def __init__(self, c_in: int, base: int, depth: int, cfg: UNetConfig, dropout: float):
        super().__init__()
        widths = [base * 2**level for level in range(depth)]
        self.widths = widths
        pool = cfg.pooling
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            c_prev = c_in if level == 0 else width
            if level > 0:
                self.down.append(Conv3d(widths[level - 1], width, pool, stride=pool, bias=False))
            self.enc.append(ResBlock(c_prev, width, cfg, dropout))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            self.up.append(
                nn.ConvTranspose3d(widths[level + 1], widths[level], pool, stride=pool, bias=False)
            )
            self.dec.append(ResBlock(widths[level], widths[level], cfg))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Decoder outputs, coarsest first; the last one is at the input resolution."""
        return self.decode(self.encode(x))

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder outputs, finest first (the skips; the last one is the bottleneck)."""
        skips = []
        out = x
        for level, block in enumerate(self.enc):
            if level > 0:
                out = self.down[level - 1](out)
            out = block(out)
            skips.append(out)
        return skips

    def decode(self, skips: list[Tensor]) -> list[Tensor]:
        """Decoder outputs of :meth:`encode`'s, coarsest first."""
        out = skips[-1]
        decoded = [out]
        for up, block, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            out = block(up(out) + skip)
            decoded.append(out)
        return decoded

    def last_block(self, coarser: Tensor, skip: Tensor) -> Tensor:
        """The finest decoder level again, from the level above it and the finest skip."""
        return self.dec[-1](self.up[-1](coarser) + skip)


class TrunkFeatures(NamedTuple):
    """The compact trunk's outputs that its heads read (at the stem's resolution)."""

    fine: Tensor
    """(B, W, z, y, x) finest decoder level."""
    coarse: Tensor | None
    """(B, 2W, z, y/p, x/p) the level above it (None for a one-level U-Net)."""
    skip: Tensor
    """(B, W, z, y, x) finest encoder level (the last decoder block's skip)."""
    pooled_input: Tensor
    """(B, 2, z, y, x) the input averaged to the stem's resolution (the CEN reads it)."""


class CompactUNet3D(UNet3D):
    """The ``compact`` architecture (preset ``small``)."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__(config or unet_preset("small"))
        cfg = self.config
        if cfg.architecture != "compact":
            raise InputError(
                f"CompactUNet3D needs architecture 'compact', found {cfg.architecture!r}"
            )
        stem_voxels = cfg.stem[0] * cfg.stem[1] * cfg.stem[2]
        self.trunk = CompactUNet(
            IN_CHANNELS * stem_voxels, cfg.base_width, cfg.depth, cfg, cfg.dropout
        )
        width = cfg.base_width
        # segmentation (3) + division (2) + radius (1) + trunk centre logits (L), one 1x1 conv
        self.heads = Conv3d(width, SEG_CLASSES + DIVISION_CHANNELS + 1 + cfg.centre_levels, 1)
        # the embedding sees the two finest decoder levels (more context than the finest alone)
        coarse = self.trunk.widths[1] if cfg.depth > 1 else 0
        self.embed = Conv3d(width + coarse, cfg.embedding_dim, 1)
        # CEN: seg logits + softmax + the 2 input channels (average-pooled to the stem resolution)
        cen_in = 2 * SEG_CLASSES + IN_CHANNELS
        self.cen = CompactUNet(cen_in, cfg.cen_base_width, cfg.cen_depth, cfg, dropout=0.0)
        self.cen_out = Conv3d(cfg.cen_base_width, cfg.centre_levels, 1)

    @property
    def embedding_stride(self) -> tuple[int, int, int]:
        return self.config.stem

    def embedding_from(self, features: TrunkFeatures, *, redo_last_block: bool = False) -> Tensor:
        """The embedding alone, on its coarse grid (:attr:`embedding_stride`)."""
        return self._embedding(self._fine(features, redo_last_block), features.coarse)

    def _fine(self, features: TrunkFeatures, redo_last_block: bool) -> Tensor:
        if not redo_last_block:
            return features.fine
        if features.coarse is None:
            raise InputError("redo_last_block needs a U-Net of depth > 1")
        return self.trunk.last_block(features.coarse, features.skip)

    def _embedding(self, fine: Tensor, coarse: Tensor | None) -> Tensor:
        """The embedding sees the two finest decoder levels (more context than the finest).

        It is ``embed`` (a 1x1 conv) of the finest level and the coarser one upsampled (nearest)
        beside it, computed without that upsampling and concatenation: a 1x1 conv is linear in
        its input channels and commutes with nearest upsampling, so the coarse level's share is
        computed on its own grid and broadcast to the finer one."""
        if coarse is None:
            return self.embed(fine)
        weight, width = self.embed.weight, fine.shape[1]
        out = self.embed._conv_forward(fine, weight[:, :width], self.embed.bias)
        share = self.embed._conv_forward(coarse, weight[:, width:], None)
        n, e, z, y, x = out.shape
        pz, py, px = (size // c for size, c in zip(out.shape[2:], share.shape[2:]))
        blocks = out.view(n, e, z // pz, pz, y // py, py, x // px, px)
        summed = blocks + share[:, :, :, None, :, None, :, None]
        return summed.reshape(n, e, z, y, x)

    def _forward(self, x: Tensor, coarse_embedding: bool = False) -> UNetOutput:
        return self.heads_from(self.trunk_features(x), coarse_embedding=coarse_embedding)

    def trunk_features(self, x: Tensor) -> TrunkFeatures:
        """What the heads read (:meth:`heads_from`): detector adaptation computes it once per
        frame and trains the heads (and the last decoder block) on it."""
        cfg = self.config
        skips = self.trunk.encode(space_to_depth(x, cfg.stem))
        decoded = self.trunk.decode(skips)
        pooled_input = F.avg_pool3d(x, cfg.stem, cfg.stem) if cfg.stem != (1, 1, 1) else x
        return TrunkFeatures(
            decoded[-1], decoded[-2] if cfg.depth > 1 else None, skips[0], pooled_input
        )

    def heads_from(
        self,
        features: TrunkFeatures,
        *,
        coarse_embedding: bool = False,
        redo_last_block: bool = False,
        cen_grad: bool = True,
    ) -> UNetOutput:
        """The five heads from :meth:`trunk_features`; with ``redo_last_block`` the finest
        decoder level is computed again from the level above it (so it can be trained); with
        ``cen_grad`` False the centre-refinement network runs without gradients (its output
        still follows the segmentation logits)."""
        cfg = self.config
        fine = self._fine(features, redo_last_block)
        heads = self.heads(fine)
        seg = heads[:, :SEG_CLASSES]
        division = heads[:, SEG_CLASSES : SEG_CLASSES + DIVISION_CHANNELS]
        radius = heads[:, SEG_CLASSES + DIVISION_CHANNELS : SEG_CLASSES + DIVISION_CHANNELS + 1]
        centre_trunk = heads[:, SEG_CLASSES + DIVISION_CHANNELS + 1 :]

        cen_in = torch.cat([seg, torch.softmax(seg, dim=1), features.pooled_input], dim=1)
        with torch.set_grad_enabled(cen_grad and torch.is_grad_enabled()):
            cen = self.cen(cen_in)[-1]
        centre = centre_trunk + self.cen_out(cen)
        embedding = self._embedding(fine, features.coarse)

        radius = F.softplus(radius) if cfg.radius_activation == "softplus" else F.relu(radius)
        small = torch.cat([seg, centre, division, radius], dim=1)
        if cfg.stem != (1, 1, 1):
            z, y, x = (n * f for n, f in zip(fine.shape[2:], cfg.stem))
            size = (z, y, x)
            small = upsample_linear(small, size)
            if not coarse_embedding:
                embedding = F.interpolate(embedding, size=size, mode="nearest")
        # trilinear interpolation of values >= 0 stays >= 0, so the radius needs no re-clamp
        sizes = [SEG_CLASSES, cfg.centre_levels, DIVISION_CHANNELS, 1]
        seg, centre, division, radius = torch.split(small, sizes, dim=1)
        return UNetOutput(seg, centre, embedding, division, radius)


# ---------------------------------------------------------------- the original CELLECT network


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.01)


def _inorm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=False)


def _up_block(c_in: int, c_out: int, pool: tuple[int, int, int]) -> nn.Sequential:
    """`norm_lrelu_upscale_conv_norm_lrelu_*`: IN, LReLU, nearest upsampling, conv, IN, LReLU."""
    return nn.Sequential(
        _inorm(c_in),
        _lrelu(),
        nn.Upsample(scale_factor=pool, mode="nearest"),
        _conv(c_in, c_out),
        _inorm(c_out),
        _lrelu(),
    )


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """`conv_norm_lrelu_*`: conv, IN, LReLU."""
    return nn.Sequential(_conv(c_in, c_out), _inorm(c_out), _lrelu())


class _IsenseeMixin:
    """The parts the original trunk and its CEN (`LNet3D`) share: the Isensee-style encoder,
    pre-activation residual blocks (`norm_lrelu_conv_cK`, applied twice per level with shared
    weights), the decoder and the deep-supervision 1x1 convs. Attribute names are those of the
    original checkpoints (docs/method.md §3.3, cellect-checkpoint-layout.json)."""

    def _build_template(
        self, c_in: int, n_out: int, base: int, cfg: UNetConfig, residual_down: bool
    ) -> None:
        """``residual_down``: the trunk's two-path downsampling (conv, conv + 1x1 projection,
        pooled by MaxPool or by stride, see ``UNetConfig.downsampling``); else (the CEN) a single
        strided 3x3x3 conv."""
        self.residual_down = residual_down
        pool = cfg.pooling
        self.dropout3d = nn.Dropout3d(cfg.dropout)
        self.lrelu = _lrelu()
        self.upsample = nn.Upsample(scale_factor=pool, mode="nearest")
        w = [base * 2**k for k in range(5)]
        self.conv3d_c1_1 = _conv(c_in, w[0])
        self.conv3d_c1_2 = _conv(w[0], w[0])
        self.lrelu_conv_c1 = nn.Sequential(_lrelu(), _conv(w[0], w[0]))
        self.inorm3d_c1 = _inorm(w[0])
        for k in range(1, 5):
            level = k + 1
            down: nn.Module
            if residual_down and cfg.downsampling == "maxpool":
                # `con7s`: MaxPool -> 3x3x3 conv -> 3x3x3 conv, plus MaxPool -> 1x1x1 projection
                down = nn.Sequential(nn.MaxPool3d(pool), _conv(w[k - 1], w[k]))
                setattr(self, f"conv3d_c{level}", down)
                setattr(self, f"conv3d_c{level}s1", _conv(w[k], w[k]))
                shortcut: nn.Module = nn.Sequential(
                    nn.MaxPool3d(pool), _conv(w[k - 1], w[k], kernel=1)
                )
                setattr(self, f"conv3d_c{level}s2", shortcut)
            elif residual_down:
                # `con7`: strided 3x3x3 conv -> 3x3x3 conv, plus a strided 1x1x1 projection
                down = Conv3d(w[k - 1], w[k], 3, stride=pool, padding=1, bias=False)
                setattr(self, f"conv3d_c{level}", down)
                setattr(self, f"conv3d_c{level}s1", _conv(w[k], w[k]))
                shortcut = Conv3d(w[k - 1], w[k], 1, stride=pool, bias=False)
                setattr(self, f"conv3d_c{level}s2", shortcut)
            else:  # CEN: one strided 3x3x3 conv
                down = Conv3d(w[k - 1], w[k], 3, stride=pool, padding=1, bias=False)
                setattr(self, f"conv3d_c{level}", down)
            block = nn.Sequential(_inorm(w[k]), _lrelu(), _conv(w[k], w[k]))
            setattr(self, f"norm_lrelu_conv_c{level}", block)
            if level < 5:
                setattr(self, f"inorm3d_c{level}", _inorm(w[k]))
        self.norm_lrelu_upscale_conv_norm_lrelu_l0 = _up_block(w[4], w[3], pool)
        self.conv3d_l0 = _conv(w[3], w[3], kernel=1)
        self.inorm3d_l0 = _inorm(w[3])
        for level, k in ((1, 3), (2, 2), (3, 1)):
            setattr(self, f"conv_norm_lrelu_l{level}", _conv_block(2 * w[k], 2 * w[k]))
            setattr(self, f"conv3d_l{level}", _conv(2 * w[k], w[k], kernel=1))
            setattr(
                self,
                f"norm_lrelu_upscale_conv_norm_lrelu_l{level}",
                _up_block(w[k], w[k - 1], pool),
            )
        self.conv_norm_lrelu_l4 = _conv_block(2 * w[0], 2 * w[0])
        self.conv3d_l4 = _conv(2 * w[0], n_out, kernel=1)
        self.ds2_1x1_conv3d = _conv(2 * w[2], n_out, kernel=1)
        self.ds3_1x1_conv3d = _conv(2 * w[1], n_out, kernel=1)

    def _down(self, level: int, x: Tensor) -> Tensor:
        conv = getattr(self, f"conv3d_c{level}")
        if self.residual_down:
            main = getattr(self, f"conv3d_c{level}s1")(conv(x))
            return main + getattr(self, f"conv3d_c{level}s2")(x)
        return conv(x)

    def _residual_level(self, level: int, x: Tensor) -> Tensor:
        block = getattr(self, f"norm_lrelu_conv_c{level}")
        residual = self._down(level, x)
        out = block(residual)
        out = self.dropout3d(out)
        out = block(out)  # the same block instance again: shared weights, as in the original
        return out + residual

    def _run_template(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(output logits incl. deep supervision, deep-supervision sum, the full-resolution
        decoder features after the concat with context 1 (2 * base channels))."""
        lrelu = self.lrelu
        out = self.conv3d_c1_1(x)
        residual = out
        out = self.conv3d_c1_2(lrelu(out))
        out = self.lrelu_conv_c1(self.dropout3d(out))
        out = out + residual
        context = [lrelu(out)]  # context 1 is taken before the instance norm
        out = lrelu(self.inorm3d_c1(out))
        for level in (2, 3, 4):
            out = self._residual_level(level, out)
            out = lrelu(getattr(self, f"inorm3d_c{level}")(out))
            context.append(out)
        out = self._residual_level(5, out)
        out = self.norm_lrelu_upscale_conv_norm_lrelu_l0(out)
        out = lrelu(self.inorm3d_l0(self.conv3d_l0(out)))
        deep = []
        for level in (1, 2, 3):
            out = torch.cat([out, context[4 - level]], dim=1)
            out = getattr(self, f"conv_norm_lrelu_l{level}")(out)
            if level > 1:
                deep.append(out)  # ds2 at 1/4, ds3 at 1/2 of the XY resolution
            out = getattr(self, f"conv3d_l{level}")(out)
            out = getattr(self, f"norm_lrelu_upscale_conv_norm_lrelu_l{level}")(out)
        features = torch.cat([out, context[0]], dim=1)
        out = self.conv3d_l4(self.conv_norm_lrelu_l4(features))
        ds_sum = self.upsample(self.ds2_1x1_conv3d(deep[0])) + self.ds3_1x1_conv3d(deep[1])
        ds_sum = self.upsample(ds_sum)
        return out + ds_sum, ds_sum, features


class LNet3D(nn.Module, _IsenseeMixin):
    """The original centre-refinement network ("CEN"): base width 2, strided-conv pooling, fed
    with the 3 segmentation logits, their softmax and the 2 input channels."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        c_in = 2 * SEG_CLASSES + IN_CHANNELS
        self._build_template(c_in, cfg.centre_levels, cfg.cen_base_width, cfg, residual_down=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._run_template(x)[0]


class OriginalUNet3D(UNet3D, _IsenseeMixin):
    """The original CELLECT `UNet3D(2, 6)` (docs/method.md §3.3), in either published variant
    (``config.downsampling``: ``maxpool`` = `con7s`, whose keys cellect-checkpoint-layout.json
    lists, or ``strided`` = `con7`).

    The 6-channel `seg_layer` is split into segmentation (0-2), division (3-4) and radius (5,
    through ReLU). The embedding trunk reads the full-resolution decoder features, and after
    one conv concatenates the 6-channel deep-supervision sum. Where the description leaves a
    detail open we chose: no activation between the two 3x3x3 convs of a downsampling step, and
    the CEN's dropout equals the trunk's.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__(config or unet_preset("cellect-original"))
        cfg = self.config
        if cfg.architecture != "cellect-original":
            raise InputError(
                f"OriginalUNet3D needs architecture 'cellect-original', found {cfg.architecture!r}"
            )
        n_out = SEG_CLASSES + DIVISION_CHANNELS + 1
        self._build_template(IN_CHANNELS, n_out, cfg.base_width, cfg, residual_down=True)
        w0 = cfg.base_width
        trunk = 4 * w0  # 32 for base 8
        self.conv_norm_lrelu_f = _conv_block(2 * w0, trunk)
        self.conv3d_f = _conv(trunk, trunk, kernel=1)
        self.conv_norm_lrelu_f1 = _conv_block(trunk + n_out, trunk)
        self.conv3d_f1 = _conv(trunk, cfg.embedding_dim, kernel=1)
        self.lnet = LNet3D(cfg)

    def _forward(self, x: Tensor, coarse_embedding: bool = False) -> UNetOutput:
        seg_layer, ds_sum, features = self._run_template(x)
        seg = seg_layer[:, :SEG_CLASSES]
        division = seg_layer[:, SEG_CLASSES : SEG_CLASSES + DIVISION_CHANNELS]
        radius = seg_layer[:, SEG_CLASSES + DIVISION_CHANNELS :]
        radius = F.relu(radius) if self.config.radius_activation == "relu" else F.softplus(radius)
        emb = self.conv3d_f(self.conv_norm_lrelu_f(features))
        emb = self.conv3d_f1(self.conv_norm_lrelu_f1(torch.cat([emb, ds_sum], dim=1)))
        centre = self.lnet(torch.cat([seg, torch.softmax(seg, dim=1), x], dim=1))
        return UNetOutput(seg, centre, emb, division, radius)

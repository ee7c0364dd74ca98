"""Import of original CELLECT checkpoints into a :class:`ModelBundle`.

The original publishes three ``torch.save``'d state dicts (docs/method.md §3.3, §5.4):

- the U-Net ``U-ext+-*.pth`` (2.54 M parameters, in one of two variants: ``*x3rdstr0*`` = MaxPool
  downsampling, ``*x3rd*`` = strided convs; detected from the keys),
- ``EX+-*.pth``, the inter-frame scorer -> our ``link`` scorer,
- ``EN+-*.pth``, the intra-frame scorer -> our ``merge`` scorer.

Every file is loaded with ``weights_only=True`` and checked key by key and shape by shape against
our re-implementations (:class:`~napari_cellect.model.unet.OriginalUNet3D`,
:class:`~napari_cellect.model.pair_scorer.OriginalEXNet`), whose names and shapes are those of
cellect-checkpoint-layout.json.

**Axis order.** The original's tensors are ``(B, C, row, col, Z)`` (Z last; its "x" is the image
row), ours are ``(B, C, Z, Y, X)`` with Y = row and X = col. A conv kernel
``(out, in, k_row, k_col, k_z)`` therefore becomes ``(out, in, k_z, k_row, k_col)``:
``weight.permute(0, 1, 4, 2, 3)`` (:func:`permute_unet_kernels`). All kernels are 3x3x3 or 1x1x1,
so the shapes do not change, but the values move. Its pooling (2, 2, 1) over (row, col, Z) is
our (1, 2, 2). The scorers have no spatial kernels; their offset features are fed in the
original's (row, col, z) order by :class:`OriginalEXNet`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from napari_cellect.errors import ModelError
from napari_cellect.model.bundle import (
    BundleMetadata,
    ModelBundle,
    load_checked,
    read_torch_file,
    state_dict_problems,
)
from napari_cellect.model.pair_scorer import OriginalEXNet, PairScorerConfig
from napari_cellect.model.unet import UNet3D, UNetConfig, unet_preset
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tracking import TrackingConfig

logger = logging.getLogger(__name__)

#: Which scorer each original file feeds: our kind -> (original name, n logits).
SCORERS = {"link": ("EX", 8), "merge": ("EN", 6)}
#: How each file is named in messages, by the interface in use (our file kind -> its name).
PYTHON_NAMES = {"unet": "unet_path", "link": "link_path", "merge": "merge_path"}
CLI_NAMES = {"unet": "--unet", "link": "--link", "merge": "--merge"}

#: A key only the MaxPool (`con7s`) variant has, and one only the strided (`con7`) variant has.
_MAXPOOL_KEY = "conv3d_c2.1.weight"
_STRIDED_KEY = "conv3d_c2.weight"


def original_unet_config(downsampling: str = "maxpool") -> UNetConfig:
    return unet_preset("cellect-original", downsampling=downsampling)


def original_scorer_config(kind: str) -> PairScorerConfig:
    return PairScorerConfig(kind=kind, architecture="cellect-original")


def expected_unet_shapes(downsampling: str = "maxpool") -> dict[str, torch.Size]:
    """Key -> shape of an original U-Net checkpoint (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = UNet3D(original_unet_config(downsampling))
    return {k: v.shape for k, v in net.state_dict().items()}


def expected_scorer_shapes(kind: str) -> dict[str, torch.Size]:
    """Key -> shape of an original ``EN+`` (kind ``merge``) or ``EX+`` (``link``) checkpoint."""
    with torch.device("meta"):
        net = OriginalEXNet(original_scorer_config(kind))
    return {k: v.shape for k, v in net.state_dict().items()}


def read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    """Load a checkpoint that should be a plain state dict; a ``module.`` prefix (DataParallel)
    is removed. ``what`` names it in errors, e.g. ``"the original U-Net weights (--unet)"``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: {what} file not found")
    state = read_torch_file(path, what)
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        found = "an empty dict" if isinstance(state, Mapping) else type(state).__name__
        raise ModelError(
            f"{path}: expected {what} as a state dict (a dict of tensors), found {found}"
        )
    state = dict(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def unet_variant(state: Mapping[str, Tensor]) -> str:
    """``maxpool`` or ``strided``, from the keys of an original U-Net state dict (``maxpool`` when
    neither marker key is present, so the error lists the differences to the documented layout)."""
    if _STRIDED_KEY in state and _MAXPOOL_KEY not in state:
        return "strided"
    return "maxpool"


def permute_unet_kernels(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original (out, in, row, col, z) conv kernels -> ours (out, in, z, row, col); other tensors
    are copied unchanged."""
    return {
        key: value.permute(0, 1, 4, 2, 3).contiguous() if value.ndim == 5 else value.clone()
        for key, value in state.items()
    }


def load_original_unet(path: str | Path, names: Mapping[str, str] = PYTHON_NAMES) -> UNet3D:
    """Our :class:`OriginalUNet3D` holding the weights of an original U-Net checkpoint
    (``names``: how messages name the files, :data:`PYTHON_NAMES` or :data:`CLI_NAMES`)."""
    what = f"the original U-Net weights ({names['unet']})"
    state = read_state_dict(path, what)
    variant = unet_variant(state)
    problems = state_dict_problems(state, expected_unet_shapes(variant))
    if problems:
        raise ModelError(
            f"{path}: {what} do not match the CELLECT U-Net ({variant} variant): "
            + "; ".join(problems)
        )
    unet = UNet3D(original_unet_config(variant))
    load_checked(unet, permute_unet_kernels(state), f"{path}: {what}")
    return unet


def load_original_scorer(
    path: str | Path, kind: str, names: Mapping[str, str] = PYTHON_NAMES
) -> OriginalEXNet:
    """Our :class:`OriginalEXNet` holding an original ``EX+`` (``link``) or ``EN+`` (``merge``)
    checkpoint (``names`` as :func:`load_original_unet`)."""
    name, n_logits = SCORERS[kind]
    what = f"the original {name} weights ({names[kind]})"
    state = read_state_dict(path, what)
    out = state.get("out.weight")
    if isinstance(out, Tensor) and out.ndim == 2 and out.shape[0] != n_logits:
        other = next(
            (
                f"an original {n} file ({names[k]})"
                for k, (n, c) in SCORERS.items()
                if c == out.shape[0]
            ),
            "no known CELLECT scorer",
        )
        raise ModelError(
            f"{path}: expected {what} with {n_logits} outputs, found out.weight of shape "
            f"{tuple(out.shape)}, which is {other}; were {names['link']} and {names['merge']} "
            "swapped?"
        )
    problems = state_dict_problems(state, expected_scorer_shapes(kind))
    if problems:
        raise ModelError(
            f"{path}: {what} do not match the CELLECT {name} network: " + "; ".join(problems)
        )
    scorer = OriginalEXNet(original_scorer_config(kind))
    load_checked(scorer, state, f"{path}: {what}")
    return scorer


def import_original(
    unet_path: str | Path,
    link_path: str | Path,
    merge_path: str | Path,
    name: str = "cellect-original",
    names: Mapping[str, str] = PYTHON_NAMES,
) -> ModelBundle:
    """A bundle of the original U-Net + EX (link) + EN (merge) weights, with the original's
    ``cellect-log`` normalisation (+1900 offset, log1p: the data the weights were trained on) and
    thresholds (:meth:`TrackingConfig.cellect_original`). ``names``: how messages name the three
    files (the arguments here; ``cellect import-weights`` passes :data:`CLI_NAMES`)."""
    unet = load_original_unet(unet_path, names)
    link = load_original_scorer(link_path, "link", names)
    merge = load_original_scorer(merge_path, "merge", names)
    metadata = BundleMetadata(
        name=name,
        trained_on="mskcc-confocal (original CELLECT training)",
        notes=(
            "Imported original CELLECT weights (GPL-2.0 project; check the licence before "
            "redistributing this file). Expects intensities like 16-bit mskcc data and "
            "z spacing about 5x the XY spacing."
        ),
    )
    metadata.record(
        "import",
        unet=Path(unet_path).name,
        link=Path(link_path).name,
        merge=Path(merge_path).name,
        unet_variant=unet.config.downsampling,
    )
    bundle = ModelBundle(
        unet,
        merge,
        link,
        thresholds=TrackingConfig.cellect_original(),
        normalization=NormalizationConfig(mode="cellect-log"),
        metadata=metadata,
    )
    logger.info(
        "imported original CELLECT weights: U-Net %s (%s variant), EX %s, EN %s",
        unet_path,
        unet.config.downsampling,
        link_path,
        merge_path,
    )
    return bundle.eval()

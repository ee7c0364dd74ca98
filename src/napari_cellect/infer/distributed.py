"""The U-Net stage on a dask.distributed cluster: one task per frame pair.

The client submits frame pairs, a bounded number at a time (so its memory does not grow with
the length of the series), and gets each frame's Detections back for merging and linking.
Workers load the model once per process (it reaches them as bytes, kept by digest) and read
their own two frames: an image series opened from files is opened again on the worker from
the same path (the files must be on storage every worker sees); an array that lives only in
the client's memory travels with its task, two frames at a time.

The scheduler, not this module, retries: a task whose worker dies is given to another worker
(``distributed.scheduler.allowed-failures`` times). Finished frames are saved to the
detection cache as they arrive, in any order, so a run stopped at any point redoes at most the
frame pairs that were in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from napari_cellect.errors import Cancelled, InputError, SchedulerError
from napari_cellect.track.detections import Detections, FrameCache

if TYPE_CHECKING:
    from distributed import Client  # untyped: Any to the checker

    from napari_cellect.data.arrays import ImageData, ImageInput
    from napari_cellect.data.images import ImageSequence
    from napari_cellect.model.bundle import ModelBundle

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: seconds to wait for a scheduler to answer, and for it to have at least one worker
CONNECT_TIMEOUT_S = 5.0
WORKER_WAIT_S = 120.0
#: how often a waiting client looks at ``should_stop``
_POLL_S = 0.5
INSTALL_HINT = "pip install 'napari-cellect[distributed]'"


def _import_distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as err:
        raise SchedulerError(
            f"a scheduler was given but dask.distributed is not installed ({INSTALL_HINT})"
        ) from err
    return distributed


def parse_scheduler(scheduler: str) -> tuple[str, int | str]:
    """``'local:N'`` -> ``('local', N)``; ``'tcp://HOST:PORT'`` (any dask address) ->
    ``('address', text)``."""
    text = str(scheduler).strip()
    if text.startswith("local:"):
        count = text.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise InputError(
                f"scheduler: expected local:N with N a whole number >= 1, found {text!r}"
            )
        return "local", int(count)
    if "://" not in text:
        raise InputError(
            f"scheduler: expected an address like tcp://HOST:PORT or local:N, found {text!r}"
        )
    return "address", text


@contextlib.contextmanager
def connect(scheduler: str | Client) -> Iterator[Client]:
    """A dask Client for ``scheduler``: an existing Client (left open), ``'local:N'`` (a
    LocalCluster of N one-thread worker processes, closed on exit) or a scheduler address.
    A client made here is not dask's default scheduler: frames this process reads itself
    (division refinement) are read here, not through the cluster.

    Raises SchedulerError within :data:`CONNECT_TIMEOUT_S` seconds when the scheduler does not
    answer, and within :data:`WORKER_WAIT_S` when it has no worker.
    """
    distributed = _import_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    kind, value = parse_scheduler(str(scheduler))
    if kind == "local":
        with (
            distributed.LocalCluster(
                n_workers=int(value), threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            logger.info(
                "started a LocalCluster of %d workers at %s", value, cluster.scheduler_address
            )
            yield client
        return
    try:
        _handshake(distributed, str(value))
        client = distributed.Client(value, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise SchedulerError(
            f"cannot reach the dask scheduler at {value} within {CONNECT_TIMEOUT_S:g} s "
            f"({str(err) or type(err).__name__}); expected a running `dask scheduler` reachable "
            "from this machine"
        ) from err
    except ValueError as err:  # dask: an unknown address scheme
        raise InputError(
            f"scheduler: expected an address like tcp://HOST:PORT or local:N, found {value!r} "
            f"({err})"
        ) from err
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError) as err:
            raise SchedulerError(
                f"the dask scheduler at {value} has no worker after {WORKER_WAIT_S:g} s; "
                "expected at least one `dask worker` connected to it"
            ) from err
        yield client
    finally:
        client.close()


def _handshake(distributed: ModuleType, address: str) -> None:
    """Connect to ``address`` and read the scheduler's handshake, within CONNECT_TIMEOUT_S.

    dask's own connect times out on a refused or unreachable address but waits for ever for
    the handshake of a peer that accepts the connection and never answers (a hung scheduler,
    another service on that port). This runs it on a loop of its own, in a thread (the caller
    may have a running loop), and gives up at the deadline. Raises TimeoutError or OSError.
    """

    async def greet() -> None:
        comm = await asyncio.wait_for(
            distributed.comm.connect(address, timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S
        )
        await comm.close()

    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(greet())
        except BaseException as err:  # handed to the caller's thread
            failed.append(err)

    thread = threading.Thread(target=run, name="cellect-scheduler-handshake", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 5.0)
    if thread.is_alive():
        raise TimeoutError("no answer")
    if failed:
        raise failed[0]


# ------------------------------------------------------------------------------ worker side


#: where a worker opens the images: (path, axes, shape of the series)
_Source = tuple[str, "str | None", tuple[int, ...]]


@dataclass(frozen=True)
class _Settings:
    z_ratio: float
    tile: Sequence[int] | None
    cell_radius: float | None
    device: str
    keep_foreground: bool


_models: dict[str, ModelBundle] = {}
_models_lock = threading.Lock()


def _worker_model(key: str, blob: bytes) -> ModelBundle:
    """The bundle of ``key``, loaded once per process (only the latest one is kept)."""
    import torch

    from napari_cellect.model.bundle import ModelBundle

    with _models_lock:
        if key not in _models:
            data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            _models.clear()
            _models[key] = ModelBundle.from_dict(data, source=f"model {key[:12]}")
            logger.info("worker loaded model %s", key[:12])
        return _models[key]


@functools.lru_cache(maxsize=4)
def _worker_images(path: str, axes: str | None) -> ImageSequence:
    from napari_cellect.data.images import open_sequence

    return open_sequence(path, axes)


def _predict_task(
    blob: bytes,
    key: str,
    source: _Source | None,
    pair: np.ndarray | None,
    t: int,
    settings: _Settings,
) -> tuple[Detections, np.ndarray | None]:
    """Runs on a worker: the Detections of frame ``t`` and its packed foreground mask."""
    from napari_cellect.infer.predict import predict_sequence

    bundle = _worker_model(key, blob)
    images: ImageData
    if pair is not None:  # frames sent by the client: (t, t+1), or (t, t) for the last frame
        images, index = pair, 0
    else:
        assert source is not None, "the client sends the frames or where to read them"
        path, axes, shape = source
        try:
            images = _worker_images(path, axes).data
        except InputError as err:
            raise InputError(
                f"{err} (on a dask worker: the images must be on storage every "
                "worker sees, at the same path)"
            ) from err
        if tuple(images.shape) != tuple(shape):
            raise InputError(
                f"a dask worker sees images of shape {tuple(images.shape)}, the "
                f"client {tuple(shape)}: not the same files",
                path,
            )
        index = t
    masks: list[np.ndarray] = []

    def on_heads(_: int, heads: dict[str, np.ndarray]) -> None:
        masks.append(np.packbits(np.argmax(heads["seg"], axis=0) == 1))

    dets = next(
        predict_sequence(
            images,
            bundle,
            z_ratio=settings.z_ratio,
            device=settings.device,
            tile=settings.tile,
            frames=[index],
            cell_radius=settings.cell_radius,
            on_heads=on_heads if settings.keep_foreground else None,
        )
    )
    if dets.t != t:
        dets = replace(dets, t=t)
    return dets, (masks[0] if masks else None)


def _model_bytes(bundle: ModelBundle) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(bundle.to_dict(), buffer)
    return buffer.getvalue()


def _return(value: T) -> T:
    return value


# ------------------------------------------------------------------------------ client side


def _image_source(images: ImageInput, shape: tuple[int, ...]) -> _Source | None:
    """``(path, axes, shape)`` a worker opens the images from; None for images in memory."""
    origin = getattr(images, "origin", None)
    if origin is None:
        return None
    return str(origin[0]), origin[1], shape


def predict_distributed(
    images: ImageInput,
    bundle: ModelBundle,
    client: Client,
    *,
    z_ratio: float,
    device: str = "auto",
    tile: Sequence[int] | None = None,
    cell_radius: float | None = None,
    cache: FrameCache | None = None,
    keep_foreground: bool = False,
    should_stop: Callable[[], bool] | None = None,
    window: int | None = None,
) -> Iterator[tuple[Detections, np.ndarray | None]]:
    """Every frame's Detections, in frame order, with the U-Net run on ``client``'s workers.

    Yields ``(detections, packed_foreground)``; the packed mask (``np.packbits`` of the
    frame's (Z, Y, X) foreground) only with ``keep_foreground`` and for frames the U-Net ran
    on. Frames in ``cache`` are loaded, not predicted; predicted ones are saved to it as soon
    as they arrive. At most ``window`` frames (default: twice the workers' threads) are
    submitted beyond the last one yielded.
    """
    distributed = _import_distributed()
    array = images.data if not hasattr(images, "shape") and hasattr(images, "data") else images
    data = cast("ImageData", array)
    shape = tuple(int(s) for s in data.shape)
    n_frames = shape[0]
    source = _image_source(images, shape)
    settings = _Settings(float(z_ratio), tile, cell_radius, str(device), keep_foreground)
    blob = _model_bytes(bundle)
    key = hashlib.sha256(blob).hexdigest()
    if window is None:
        window = max(2, 2 * sum(client.nthreads().values()))
    cached = set(cache.frames()) if cache is not None else set()
    if cache is not None and cached:
        logger.info(
            "%d of %d frames already in %s",
            len(cached & set(range(n_frames))),
            n_frames,
            cache.folder,
        )
    run = uuid.uuid4().hex[:8]  # task keys of this run, unlike those of any other
    # a task (not scattered data), so the scheduler can make it again if its worker dies
    model = client.submit(_return, blob, key=f"cellect-model-{key[:12]}-{run}", pure=False)
    todo = [t for t in range(n_frames) if t not in cached]
    running: dict[Any, int] = {}  # dask futures (untyped) -> frame
    arrived: dict[int, tuple[Detections, np.ndarray | None]] = {}
    idle_since: list[float] = []  # when the cluster was first seen without workers

    def check_workers() -> None:
        if client.nthreads():
            idle_since.clear()
            return
        idle_since[:] = idle_since or [time.monotonic()]
        if time.monotonic() - idle_since[0] > WORKER_WAIT_S:
            raise SchedulerError(
                f"the dask cluster has had no worker for {WORKER_WAIT_S:g} s; expected workers "
                "to run the frame pairs (the frames done so far are in the cache: run again to "
                "resume)"
            )

    def submit_up_to(limit: int) -> None:
        while todo and todo[0] < limit:
            t = todo.pop(0)
            pair = None
            if source is None:
                nxt = min(t + 1, n_frames - 1)
                pair = client.scatter(np.stack([np.asarray(data[t]), np.asarray(data[nxt])]))
            future = client.submit(
                _predict_task,
                model,
                key,
                source,
                pair,
                t,
                settings,
                key=f"cellect-frame-{t}-{run}",
                pure=False,
            )
            running[future] = t

    def collect() -> None:
        try:
            finished = distributed.wait(
                list(running), timeout=_POLL_S, return_when="FIRST_COMPLETED"
            ).done
        except TimeoutError:
            check_workers()
            return
        for future in finished:
            t = running.pop(future)
            try:
                dets, mask = future.result()
            except distributed.KilledWorker as err:
                raise SchedulerError(
                    f"frame pair {t}: every worker that ran it died ({err}); expected workers "
                    "with enough memory for one frame pair"
                ) from err
            except concurrent.futures.CancelledError as err:
                raise SchedulerError(
                    f"frame pair {t} was cancelled by the cluster ({err}): the scheduler may be "
                    "gone; the frames done so far are in the cache, run again to resume"
                ) from err
            future.release()
            if cache is not None:
                cache.save(dets)
            arrived[t] = (dets, mask)

    try:
        for t in range(n_frames):
            if should_stop is not None and should_stop():
                raise Cancelled(f"prediction cancelled after {t} of {n_frames} frames")
            submit_up_to(t + window)
            while t not in arrived and t not in cached:
                if should_stop is not None and should_stop():
                    raise Cancelled(f"prediction cancelled after {t} of {n_frames} frames")
                collect()
                submit_up_to(t + window)
            if t in arrived:
                yield arrived.pop(t)
            elif cache is not None:  # t is in ``cached``, which only a cache fills
                yield cache.load(t), None
    finally:
        if running:
            client.cancel(list(running))
        model.release()

"""Training crops drawn ahead of the network, in worker processes (``TrainConfig.workers``).

Cutting a crop, rendering its targets and augmenting it is numpy work of about 0.1 s per sample:
on a GPU that is most of a training step. :class:`SamplePool` draws the samples of an epoch in
worker processes while the network trains on earlier ones. Sample ``i`` of step ``s`` of epoch
``e`` draws from its own random stream ``(seed, e, s, i)``, so a run gives the same samples
whatever the number of workers, and a resumed run the same as one never stopped.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from napari_cellect.train.data import Sampler, TrainSample

__all__ = ["SamplePool", "sample_rng"]

_WORKER_SAMPLER: Sampler | None = None


def sample_rng(seed: int, epoch: int, step: int, index: int) -> np.random.Generator:
    """The random stream of one training sample."""
    return np.random.default_rng([seed, epoch, step, index])


def _init_worker(sampler: Sampler) -> None:
    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    if "dask" in sys.modules:
        # lazy (dask) images: a forked worker has none of the parent's scheduler threads, so
        # dask's threaded scheduler would wait for them forever; read them in this process
        import dask

        dask.config.set(scheduler="synchronous")


def _draw(seed: int, epoch: int, step: int, index: int) -> TrainSample:
    assert _WORKER_SAMPLER is not None, "worker started without a sampler"
    return _WORKER_SAMPLER.sample(sample_rng(seed, epoch, step, index))


class SamplePool:
    """Yields the batches of an epoch; ``workers`` processes draw them ahead (0: in this one)."""

    def __init__(self, sampler: Sampler, workers: int = 0):
        self.sampler = sampler
        self.workers = int(workers)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # fork shares the training images with the workers instead of pickling them
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(self.sampler,),
            )
        return self._executor

    def batches(
        self, seed: int, epoch: int, steps: range, batch_size: int
    ) -> Generator[list[TrainSample], None, None]:
        """The batches of ``steps`` (step numbers within the epoch), in order; ``close()`` it to
        cancel the samples drawn ahead."""
        if self.workers <= 0:
            for step in steps:
                yield [
                    self.sampler.sample(sample_rng(seed, epoch, step, i)) for i in range(batch_size)
                ]
            return
        pool = self._pool()
        jobs = ((step, i) for step in steps for i in range(batch_size))
        ahead = max(2 * self.workers, batch_size)
        pending: deque[Future[TrainSample]] = deque()
        try:
            for _ in steps:
                while len(pending) < ahead + batch_size:
                    job = next(jobs, None)
                    if job is None:
                        break
                    pending.append(pool.submit(_draw, seed, epoch, *job))
                yield [pending.popleft().result() for _ in range(batch_size)]
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the worker processes (a later epoch starts them again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

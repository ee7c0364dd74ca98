"""Training crops drawn in worker processes (src/napari_cellect/train/sample_pool.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellect.data.images import open_sequence
from napari_cellect.train.data import Sampler, SamplingConfig
from napari_cellect.train.sample_pool import SamplePool


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "tiff-series"])
def test_workers_draw_the_same_batches_in_the_same_order(sequences, lazy, tmp_path):
    train, _ = sequences  # tests/train/conftest.py
    if lazy:  # a TIFF series read lazily (dask), as `cellect train` reads it
        images, graph, z = train[0]
        for t, frame in enumerate(images):
            tifffile.imwrite(
                tmp_path / f"t{t:03d}.tif",
                frame,
                photometric="minisblack",
                metadata={"axes": "ZYX"},
            )
        train = [(open_sequence(tmp_path).data, graph, z)]
    sampler = Sampler(train, SamplingConfig(crop=(4, 32, 32)))
    alone = list(SamplePool(sampler, 0).batches(seed=3, epoch=1, steps=range(4), batch_size=3))
    pool = SamplePool(sampler, 2)
    try:
        drawn = list(pool.batches(seed=3, epoch=1, steps=range(4), batch_size=3))
        # an epoch left early (cancelled training) leaves the pool usable
        partial = pool.batches(seed=3, epoch=2, steps=range(4), batch_size=3)
        next(partial)
        partial.close()
        again = list(pool.batches(seed=3, epoch=1, steps=range(1, 2), batch_size=3))
    finally:
        pool.close()
    assert [len(b) for b in drawn] == [3, 3, 3, 3]
    for batch_a, batch_b in zip(alone, drawn):
        for a, b in zip(batch_a, batch_b):
            assert (a.t, a.origin) == (b.t, b.origin)
            np.testing.assert_array_equal(a.images, b.images)
    # the samples differ within a batch and between steps
    assert len({(s.t, s.origin, float(s.images.sum())) for b in drawn for s in b}) > 6
    for a, b in zip(alone[1], again[0]):
        np.testing.assert_array_equal(a.images, b.images)

"""Defaults of the file readers that the command line shows."""

from __future__ import annotations

#: z spacing in xy pixels of the mskcc-confocal data: linajea ``tracks.txt`` stores z as
#: slice x 5, so its z is divided by this unless a z_ratio is given (``data/annotations.py``)
LINAJEA_Z_RATIO = 5.0

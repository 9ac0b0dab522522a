"""scikit-learn's copy of the UCI handwritten digits: 1,797 8x8 grey images of 0-9, offline.

Source: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
Repository (1998); shipped with scikit-learn as `sklearn.datasets.load_digits`. Small enough to
train on a CPU in seconds, so it is the data set of tests and smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ticketsearch.core.data.datasets import DATASETS, DatasetInfo, RawDataset
from ticketsearch.core.data.splits import stratified_split

# The data set has no official test split: hold out a fixed, stratified 360 images (20%, 36 per
# class) chosen with a fixed seed, so every run everywhere tests on the same images.
TEST_SIZE = 360
TEST_SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSource:
    # mean/std: computed once from the 1,437 training images scaled to [0, 1]
    # (tests/test_data.py checks that they still match).
    info: DatasetInfo = DatasetInfo("digits", 10, 1, 8, (0.3058,), (0.3759,))

    def load(self, root: Path, download: bool) -> RawDataset:
        """Ignores root and download: the data ships with scikit-learn."""
        # Imported here, not at the top: scikit-learn takes ~5 s to import on this 2-core machine.
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Values are counts of set pixels in 4x4 blocks, 0..16; scale to 0..255 (16 -> 255).
        x = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
        y = torch.from_numpy(bunch.target.astype(np.int64))
        train_idx, test_idx = stratified_split(y, TEST_SIZE, TEST_SPLIT_SEED)
        return RawDataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], self.info)


DATASETS.register("digits")(DigitsSource())

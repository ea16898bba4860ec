"""The images carry the signal fine-tuning needs: category2 is recoverable from pixels alone.

A nearest-centroid classifier on 32x32 thumbnails of the train split, scored on the test split,
must beat both chance and the majority class by a wide margin. The same classifier on shuffled
labels must not: that is the control showing the score comes from the pictures.
"""
from __future__ import annotations

import collections
import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from generator.api import GenerateConfig, generate_to_dir


def _thumbnails(out, split):
    x, y = [], []
    for path in sorted((out / "data").glob(f"{split}-*.parquet")):
        for row in pq.read_table(path, columns=["category2_code", "image"]).to_pylist():
            img = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
            x.append(np.asarray(img, np.float32).ravel())
            y.append(row["category2_code"])
    x = np.stack(x)
    # Per-image standardisation: the classifier must read shapes and surfaces, not the exposure.
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    return x, np.array(y)


def _nearest_centroid(x_train, y_train, x_test):
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
    return classes[distances.argmin(1)]


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal") / "run"
    generate_to_dir(GenerateConfig(rows=1200, seed=11, image_size=64, test_fraction=0.25), out)
    return _thumbnails(out, "train"), _thumbnails(out, "test")


def test_category2_is_recoverable_from_thumbnails(split_data):
    (x_train, y_train), (x_test, y_test) = split_data
    accuracy = float((_nearest_centroid(x_train, y_train, x_test) == y_test).mean())
    classes = len(np.unique(y_train))
    majority = collections.Counter(y_train).most_common(1)[0][0]
    majority_rate = float((y_test == majority).mean())
    assert classes >= 10
    assert accuracy > 4 / classes, (accuracy, classes)             # chance is 1 / classes
    assert accuracy > 2 * majority_rate, (accuracy, majority_rate)


def test_shuffled_labels_score_near_chance(split_data):
    (x_train, y_train), (x_test, y_test) = split_data
    shuffled = np.random.default_rng(0).permutation(y_train)
    accuracy = float((_nearest_centroid(x_train, shuffled, x_test) == y_test).mean())
    real = float((_nearest_centroid(x_train, y_train, x_test) == y_test).mean())
    assert accuracy < real / 2

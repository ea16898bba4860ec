"""Same seed, same rows: two small runs hashed against digests committed here.

A guard against accidental changes to what a seed draws: the catalogue and its RNG, the renderer, the
JPEG settings, the split, the shard layout, and (the augmented run) the source reader, augmentation and
privacy guard. A refactor must leave both digests as they are.

The digest is of the rows as read back - file names, column names, every value (JSON, floats as repr) and
the sha256 of each image's bytes, in shard and row order - not of the parquet files' bytes, which also
record the pyarrow version that wrote them. The JPEG bytes themselves come from Pillow's libjpeg, so a
Pillow upgrade may move a digest without any change of ours. After a deliberate change of the output (or
such an upgrade, checked by eye on a contact sheet), re-pin: ``python tests/test_golden_output.py``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from generator.api import GenerateConfig, write_run
from generator.schema import IMAGE_COLUMN

SOURCE = Path(__file__).resolve().parents[1] / "samples" / "source_catalog"

# name -> (config, digest of its rows). Several shards per split; small, so the test takes seconds.
RUNS = {
    "synthetic": (dict(rows=24, seed=3, image_size=64, test_fraction=0.25, rows_per_shard=7),
                  "fd57578246e28950316810ed89e1ee38ae2ea8351f0b3ed249ce6f5324e3584c"),
    "augmented": (dict(rows=12, seed=5, image_size=64, test_fraction=0.25, rows_per_shard=5, source=str(SOURCE)),
                  "6d5f1e3b9a5001132df76dd4deaeb107a200c6331592d4d957008bbeb8dd034a"),
}


def rows_digest(out: Path) -> str:
    """sha256 of a run's rows as read back: names, values and image hashes, in shard and row order."""
    h = hashlib.sha256()
    for path in sorted((Path(out) / "data").glob("*.parquet")):
        table = pq.read_table(path)
        h.update(json.dumps([path.name, table.column_names]).encode())
        for row in table.to_pylist():
            image = row.pop(IMAGE_COLUMN)
            h.update(json.dumps(row, sort_keys=True).encode())
            h.update(json.dumps(image["path"]).encode() + hashlib.sha256(image["bytes"]).digest())
    return h.hexdigest()


def digest_of(name: str, tmp: Path) -> str:
    config, _ = RUNS[name]
    report = write_run(GenerateConfig(**config), tmp / name, quiet=True)
    assert report.complete and report.privacy_passed
    return rows_digest(report.out)


def test_synthetic_rows_are_what_they_were(tmp_path):
    assert digest_of("synthetic", tmp_path) == RUNS["synthetic"][1]


def test_augmented_rows_are_what_they_were(tmp_path):
    assert digest_of("augmented", tmp_path) == RUNS["augmented"][1]


def test_the_digest_is_of_the_rows_not_the_file(tmp_path):
    """Rewriting the same rows with other parquet settings (another writer version, say) keeps the digest."""
    config, _ = RUNS["synthetic"]
    out = write_run(GenerateConfig(**{**config, "rows": 8}), tmp_path / "a", quiet=True).out
    before = rows_digest(out)
    for path in (out / "data").glob("*.parquet"):
        pq.write_table(pq.read_table(path), path, compression="gzip", write_statistics=False)
    assert rows_digest(out) == before


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            print(f"{name}: {digest_of(name, Path(tmp))}")

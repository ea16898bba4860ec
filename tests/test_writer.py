"""Writer: exact splits, loadable shards, byte-identical for any num_proc / --shard, resumable."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from generator.api import SyntheticRows
from generator.schema import COLUMN_NAMES, features
from generator.taxonomy import load
from generator.writer import (DATA_DIR, MANIFEST_DIR, WriteError, parquet_schema, plan_splits, write_shards)

ROWS = 250


@pytest.fixture(scope="module")
def source():
    # 32 px images: the writer's behaviour does not depend on the picture size, and it keeps tests fast.
    return SyntheticRows(load("burberry_us"), seed=3, num_rows=ROWS, image_size=32)


@pytest.fixture(scope="module")
def plan():
    return plan_splits(ROWS, 0.2, rows_per_shard=60, seed=3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, source, plan):
    out = tmp_path_factory.mktemp("reference")
    result = write_shards(source, out, plan)
    return out, result


def _hashes(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("n,fraction,train,test", [(3040, 0.1, 2736, 304), (1, 0.1, 1, 0), (2, 0.5, 1, 1),
                                                   (10, 0.0, 10, 0), (5, 0.99, 1, 4), (1001, 0.25, 751, 250)])
def test_split_sizes_are_exact(n, fraction, train, test):
    plan = plan_splits(n, fraction, rows_per_shard=100, seed=0)
    assert (plan.train_rows, plan.test_rows) == (train, test)
    indices = [i for spec in plan.shards for i in plan.source_indices(spec)]
    assert sorted(indices) == list(range(n))  # every row in exactly one split and one shard
    names = [s.name for s in plan.shards]
    assert len(set(names)) == len(names)


def test_split_is_seeded_and_shuffled():
    a, b = plan_splits(3040, 0.1, 1000, seed=0), plan_splits(3040, 0.1, 1000, seed=1)
    test_a = a.source_indices(a.shards[-1])
    assert test_a != b.source_indices(b.shards[-1])
    assert test_a != sorted(test_a) and max(test_a) > 2000  # not simply the first rows
    assert [s.name for s in a.shards] == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                                          "train-00002-of-00003.parquet", "test-00000-of-00001.parquet"]


def test_schema_metadata_is_what_datasets_writes():
    meta = json.loads(parquet_schema().metadata[b"huggingface"])
    assert meta["info"]["features"] == features().to_dict()
    assert datasets.Features.from_arrow_schema(parquet_schema()) == features()


def test_shards_load_with_datasets_and_hold_the_planned_rows(reference, source, plan, tmp_path):
    out, result = reference
    assert result.complete and sorted(result.written) == sorted(s.name for s in plan.shards)
    ds = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 200, "test": 50}
    assert ds["train"].features == features() and list(ds["train"].column_names) == list(COLUMN_NAMES)
    first = ds["train"][0]
    assert first["image"].size == (32, 32)
    expected = source(plan.source_indices(plan.shards[0])[0])
    assert first["title"] == expected["title"] and first["product_code"] == expected["product_code"]
    # small row groups, so a streaming reader never holds a whole shard
    meta = pq.ParquetFile(out / DATA_DIR / plan.shards[0].name).metadata
    assert meta.num_row_groups == 1 and meta.row_group(0).num_rows == 60
    stats = result.split_stats()
    assert stats["train"].rows == 200 and stats["test"].rows == 50
    assert stats["test"].category2 == dict(__import__("collections").Counter(ds["test"]["category2_code"]))


def test_num_proc_does_not_change_a_byte(reference, source, plan, tmp_path):
    out, _ = reference
    result = write_shards(source, tmp_path, plan, num_proc=2)
    assert result.complete
    assert _hashes(tmp_path) == _hashes(out)


def test_machines_of_a_fleet_write_disjoint_shares_of_one_dataset(reference, source, plan, tmp_path):
    out, _ = reference
    first = write_shards(source, tmp_path, plan, shard=(0, 2))
    assert not first.complete and first.written == sorted(s.name for s in plan.shards[0::2])
    second = write_shards(source, tmp_path, plan, shard=(1, 2))
    assert second.complete and second.written == sorted(s.name for s in plan.shards[1::2])
    assert _hashes(tmp_path) == _hashes(out)


def test_resume_redoes_only_missing_or_damaged_shards(reference, source, plan, tmp_path):
    out, _ = reference
    write_shards(source, tmp_path, plan)
    names = [s.name for s in plan.shards]
    (tmp_path / DATA_DIR / names[0]).unlink()                      # lost shard
    damaged = tmp_path / DATA_DIR / names[1]                        # same size, one byte changed
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (tmp_path / MANIFEST_DIR / f"{names[2]}.json").unlink()         # shard whose record never landed
    again = write_shards(source, tmp_path, plan)
    assert again.written == sorted(names[:3]) and sorted(again.skipped) == sorted(names[3:])
    assert _hashes(tmp_path) == _hashes(out)


class _Crashing:
    """A source that fails at one index, like a run killed in the middle of a shard."""

    def __init__(self, inner, bad_index):
        self.inner, self.bad_index = inner, bad_index

    def __len__(self):
        return len(self.inner)

    def __call__(self, index):
        if index == self.bad_index:
            raise RuntimeError("boom")
        return self.inner(index)

    def describe(self):
        return self.inner.describe()


def test_an_interrupted_shard_leaves_no_partial_file_and_resumes(reference, source, plan, tmp_path):
    out, _ = reference
    victim = plan.shards[2]
    with pytest.raises(RuntimeError, match="boom"):
        write_shards(_Crashing(source, plan.source_indices(victim)[30]), tmp_path, plan)
    left = sorted(p.name for p in (tmp_path / DATA_DIR).iterdir())
    assert left == sorted(s.name for s in plan.shards[:2])  # finished shards kept, no temp files, no torso
    again = write_shards(source, tmp_path, plan)
    assert sorted(again.skipped) == sorted(s.name for s in plan.shards[:2])
    assert _hashes(tmp_path) == _hashes(out)


def test_joining_a_different_run_is_refused(reference, source, tmp_path):
    write_shards(source, tmp_path, plan_splits(ROWS, 0.2, 60, seed=3))
    before = _hashes(tmp_path)
    with pytest.raises(WriteError, match="different run") as info:
        write_shards(source, tmp_path, plan_splits(ROWS, 0.3, 60, seed=3))
    assert "\n" not in str(info.value) and "test_rows" in str(info.value)
    assert _hashes(tmp_path) == before


def test_a_source_with_wrong_columns_is_named(tmp_path, source):
    class Partial(_Crashing):
        def __call__(self, index):
            row = self.inner(index)
            del row["price"]
            return row

    with pytest.raises(ValueError, match=r"missing \['price'\]"):
        write_shards(Partial(source, -1), tmp_path, plan_splits(ROWS, 0.2, 60, seed=3))

"""The Python API: config validation, generate() in memory == generate_to_dir() on disk, custom sources."""
from __future__ import annotations

import datasets
import pyarrow.parquet as pq
import pytest

from generator.api import GenerateConfig, GenerateError, SyntheticRows, generate, generate_to_dir, write_run
from generator.schema import features
from generator.taxonomy import load


@pytest.mark.parametrize("field,value", [("rows", 0), ("rows", 2.5), ("seed", -1), ("image_size", 16),
                                         ("test_fraction", 1.0), ("num_proc", 0), ("rows_per_shard", 0),
                                         ("jpeg_quality", 100), ("rows", True)])
def test_config_rejects_bad_values_in_one_line(field, value):
    with pytest.raises(GenerateError) as info:
        GenerateConfig(**{field: value})
    assert str(info.value).startswith(f"{field} must be") and "\n" not in str(info.value)


def test_defaults_are_the_public_table_shape():
    c = GenerateConfig()
    assert (c.rows, c.image_size, c.test_fraction, c.taxonomy) == (3040, 336, 0.1, "burberry_us")


def test_generate_in_memory_matches_the_folder(tmp_path):
    config = GenerateConfig(rows=20, seed=5, image_size=32)
    dsd = generate(config)
    assert isinstance(dsd, datasets.DatasetDict)
    assert {k: v.num_rows for k, v in dsd.items()} == {"train": 18, "test": 2}
    assert dsd["train"].features == features()
    out = generate_to_dir(config, tmp_path / "run")
    on_disk = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    in_memory = dsd["train"].cast_column("image", datasets.Image(decode=False)).to_list()
    assert in_memory == on_disk


def test_a_custom_row_source_is_written_like_any_other(tmp_path):
    """The augmentation side plugs its rows in here: anything with len, __call__ and describe."""
    inner = SyntheticRows(load("valmora_it"), seed=1, num_rows=8, image_size=32)

    class Marked:
        def __len__(self):
            return len(inner)

        def __call__(self, index):
            return {**inner(index), "website_name": "AUGMENTED"}

        def describe(self):
            return {"kind": "test-augmented", "pretty_name": "Augmented rows"}

    report = write_run(GenerateConfig(rows=8, taxonomy="valmora_it", test_fraction=0.25), tmp_path / "run",
                       source=Marked(), quiet=True)
    assert report.complete and report.rows_written == 8
    table = pq.read_table(tmp_path / "run" / "data" / "train-00000-of-00001.parquet")
    assert set(table.column("website_name").to_pylist()) == {"AUGMENTED"}
    assert "# Augmented rows" in (tmp_path / "run" / "README.md").read_text()
    with pytest.raises(GenerateError, match="has 8 rows but rows=9"):
        write_run(GenerateConfig(rows=9), tmp_path / "other", source=Marked(), quiet=True)


def test_the_generator_runs_without_torch(tmp_path):
    """The generator is the light part: it must import and write a dataset where torch is absent."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "from generator.cli import main\n"
            f"raise SystemExit(main(['--rows', '6', '--image-size', '32', '--quiet', '--out', {str(tmp_path / 'o')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "o" / "README.md").is_file() and (tmp_path / "o" / "privacy_report.json").is_file()

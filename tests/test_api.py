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


def test_push_is_an_api_step(tmp_path, monkeypatch):
    """generate_to_dir(push=...) writes, then hands the folder to push_dir, which calls the Hub client."""
    from generator import hub
    from generator.api import push_dir

    seen = []
    monkeypatch.setattr(hub, "push_dataset", lambda local_dir, repo_id=None, **kw: seen.append((local_dir, repo_id, kw))
                        or "http://hub/datasets/x")
    config = GenerateConfig(rows=6, image_size=32)
    out = generate_to_dir(config, tmp_path / "a", push=True, private=True)
    generate_to_dir(config, tmp_path / "b", push="me/cat")
    generate_to_dir(config, tmp_path / "c")                         # push=False: nothing sent
    assert push_dir(out, "me/again", force=True) == "http://hub/datasets/x"
    assert seen == [(str(out), None, {"private": True}), (str(tmp_path / "b"), "me/cat", {"private": False}),
                    (str(out), "me/again", {"private": False, "force": True})]
    with pytest.raises(GenerateError, match="push needs a complete run"):  # one machine's share of a fleet
        generate_to_dir(GenerateConfig(rows=6, image_size=32, rows_per_shard=3), tmp_path / "d", shard=(0, 2),
                        push=True)
    assert len(seen) == 3


def test_code_fingerprint_covers_every_module_that_decides_row_bytes(tmp_path, monkeypatch):
    """Resume and fleet joins compare it: every module of the render package counts, in a stable order."""
    from generator import api, augment, fingerprint

    here = fingerprint.HERE
    files = [p.relative_to(here).as_posix() for p in fingerprint.modules_of(*api.ROW_MODULES)]
    render = [f for f in files if f.startswith("render/")]
    assert render == sorted(p.relative_to(here).as_posix() for p in (here / "render").glob("*.py")) and len(render) > 5
    assert {"catalog.py", "permutation.py", "taxonomy.py", "writer.py", "schema.py"} <= set(files)
    augmented = [p.relative_to(here).as_posix() for p in fingerprint.modules_of(*augment.ROW_MODULES)]
    assert {"privacy/guard.py", "sources/reader.py", "augment.py"} <= set(augmented)
    assert all(p.is_file() for p in fingerprint.modules_of(*api.ROW_MODULES, *augment.ROW_MODULES))

    before = api.code_fingerprint()
    assert before == api.code_fingerprint() and len(before) == 12
    copy = tmp_path / "generator"
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((here / name).read_bytes())
    monkeypatch.setattr(fingerprint, "HERE", copy)
    assert api.code_fingerprint() == before                        # same code elsewhere: same fingerprint
    studio = copy / "render" / "studio.py"
    studio.write_text(studio.read_text() + "\n# a change\n")
    assert api.code_fingerprint() != before                        # any render module changes it

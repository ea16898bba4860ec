"""gen-samples: a small run end to end, and every bad input -> one line, exit 2, nothing written."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generator import cli, hub, writer
from generator.schema import arrow_schema
from generator.taxonomy import BUILTIN_DIR

SMALL = ["--rows", "12", "--image-size", "32", "--quiet"]


def _run(argv, capsys):
    """main(argv) -> (exit code, stderr lines)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_small_run_writes_the_dataset_card_and_sheet(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run([*SMALL, "--out", str(out)], capsys)
    assert code == 0 and err == []
    train = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    test = pq.read_table(out / "data" / "test-00000-of-00001.parquet")
    assert (train.num_rows, test.num_rows) == (11, 1)
    assert train.schema.remove_metadata() == arrow_schema()
    assert (out / "README.md").read_text().startswith("---\n")
    assert (out / "contact_sheet.png").stat().st_size > 0


def test_summary_and_default_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(["--rows", "5", "--image-size", "32", "--seed", "4"], capsys)
    assert code == 0
    out = tmp_path / "out" / "burberry_us-5rows-seed4"
    assert (out / "README.md").is_file()
    assert "5 rows in" in " ".join(err) and "rows/s" in " ".join(err) and str(Path("out") / out.name) in " ".join(err)


def _taxonomy_file(tmp_path: Path, broken: bool) -> str:
    text = (BUILTIN_DIR / "burberry_us.toml").read_text()
    path = tmp_path / "tax" / "mine.toml"
    path.parent.mkdir()
    path.write_text(text.replace('silhouette = "tote"', 'silhouette = "teapot"') if broken else text)
    return str(path)


BAD = {
    "rows zero": (["--rows", "0"], "--rows must be a whole number >= 1 (got '0')"),
    "rows negative": (["--rows", "-5"], "--rows must be a whole number >= 1 (got '-5')"),
    "rows text": (["--rows", "abc"], "--rows must be a whole number >= 1 (got 'abc')"),
    "test fraction": (["--test-fraction", "1.5"], "--test-fraction must be a number from 0 to below 1"),
    "image size": (["--image-size", "8"], "image_size must be a whole number from 32 to 2048"),
    "shard": (["--shard", "3/2"], "--shard must be i/N with 0 <= i < N"),
    "unknown flag": (["--rowz", "3"], "unrecognized arguments: --rowz 3"),
    "unknown taxonomy": (["--taxonomy", "nope"], "unknown taxonomy 'nope'; use one of: burberry_us"),
    "invalid taxonomy": (["--taxonomy", "BROKEN"], "unknown silhouette 'teapot'"),
    "shard with overwrite": (["--shard", "0/2", "--overwrite"], "--overwrite cannot be combined with --shard"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    argv, message = BAD[case]
    argv = [_taxonomy_file(tmp_path, broken=True) if a == "BROKEN" else a for a in argv]
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    code, err = _run([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("gen-samples: error: "), err
    assert message in err[0]
    assert _snapshot(tmp_path) == before and not out.exists()


def test_out_that_is_a_file_or_inside_one(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    for out, message in ((f, "is a file"), (f / "sub", "is inside a file")):
        code, err = _run([*SMALL, "--out", str(out)], capsys)
        assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("gen-samples: error: ")
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"] and f.read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a read-only /proc (Linux)")
def test_unwritable_out(capsys):
    code, err = _run([*SMALL, "--out", "/proc/gen-samples-test/run"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("gen-samples: error: ")
    assert "/proc/gen-samples-test/run" in err[0]
    assert not Path("/proc/gen-samples-test").exists()


def test_non_empty_out_needs_overwrite_and_overwrite_swaps_only_when_done(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    before = _snapshot(tmp_path)
    code, err = _run([*SMALL, "--out", str(out)], capsys)
    assert code == 2 and "is not empty" in err[0] and "--overwrite" in err[0] and len(err) == 1
    assert _snapshot(tmp_path) == before

    # An --overwrite run that dies leaves the old folder untouched.
    real = writer.write_shard
    monkeypatch.setattr(writer, "write_shard", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("power cut")))
    with pytest.raises(RuntimeError):
        cli.main([*SMALL, "--out", str(out), "--overwrite"])
    assert (out / "notes.txt").read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    monkeypatch.setattr(writer, "write_shard", real)
    code, err = _run([*SMALL, "--out", str(out), "--overwrite"], capsys)
    assert code == 0
    assert not (out / "notes.txt").exists() and (out / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old folders left behind


def test_existing_run_needs_resume_and_resume_finishes_it(tmp_path, capsys, monkeypatch):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    args = ["--rows", "30", "--image-size", "32", "--rows-per-shard", "10", "--quiet"]
    real = writer.write_shard
    calls = []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(writer, "write_shard", dies_on_third)
    code, err = _run([*args, "--out", str(out)], capsys)
    assert code == 130 and "--resume" in err[0]
    assert len(list((out / "data").glob("*.parquet"))) == 2 and not (out / "README.md").exists()
    monkeypatch.setattr(writer, "write_shard", real)

    code, err = _run([*args, "--out", str(out)], capsys)
    assert code == 2 and "already holds a gen-samples run" in err[0] and "--resume" in err[0]
    code, _ = _run([*args, "--out", str(out), "--resume"], capsys)
    assert code == 0 and (out / "README.md").is_file()
    assert _run([*args, "--out", str(fresh)], capsys)[0] == 0
    assert _snapshot(out) == _snapshot(fresh)


def test_resume_of_a_folder_that_holds_no_run(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    code, err = _run([*SMALL, "--out", str(tmp_path), "--resume"], capsys)
    assert code == 2 and "holds no gen-samples run" in err[0]


def test_push_failure_keeps_the_local_copy_and_exits_1(tmp_path, capsys, monkeypatch):
    seen = {}

    def failing_push(local_dir, repo_id=None, **kw):
        seen.update(local_dir=local_dir, repo_id=repo_id, **kw)
        raise hub.PushError("the Hub said no: check your token")

    monkeypatch.setattr(hub, "push_dataset", failing_push)
    out = tmp_path / "run"
    code, err = _run([*SMALL, "--out", str(out), "--push", "me/cat", "--private"], capsys)
    assert code == 1
    assert err == [f"gen-samples: error: the Hub said no: check your token (local copy kept at {out})"]
    assert seen == {"local_dir": str(out), "repo_id": "me/cat", "private": True}
    assert (out / "README.md").is_file()


def test_push_subcommand_and_default_repo(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(hub, "push_dataset", lambda local_dir, repo_id=None, **kw: seen.append((local_dir, repo_id, kw)))
    out = tmp_path / "run"
    assert _run([*SMALL, "--out", str(out), "--push"], capsys)[0] == 0
    assert _run(["push", str(out), "--repo", "me/other"], capsys)[0] == 0
    assert seen == [(str(out), None, {"private": False}), (str(out), "me/other", {"private": False})]


def test_console_script_gives_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "--rows", "abc", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gen-samples: error: --rows must be a whole number >= 1 (got 'abc')"
    assert not (tmp_path / "o").exists()


def test_a_fleet_builds_one_dataset_and_a_resume_adds_the_card(tmp_path, capsys):
    args = ["--rows", "40", "--image-size", "32", "--rows-per-shard", "10", "--quiet"]
    a, b, fresh = tmp_path / "machine-a", tmp_path / "machine-b", tmp_path / "fresh"
    assert _run([*args, "--out", str(a), "--shard", "0/2"], capsys)[0] == 0
    assert _run([*args, "--out", str(b), "--shard", "1/2"], capsys)[0] == 0
    assert not (a / "README.md").exists() and not (b / "README.md").exists()
    for sub in ("data", ".manifest"):  # gather b's files into a, as rsync or a shared bucket would
        for f in (b / sub).iterdir():
            (a / sub / f.name).write_bytes(f.read_bytes())
    code, _ = _run([*args, "--out", str(a), "--resume"], capsys)
    assert code == 0 and (a / "README.md").is_file()
    assert _run([*args, "--out", str(fresh)], capsys)[0] == 0
    assert _snapshot(a) == _snapshot(fresh)


def test_machines_sharing_one_folder_need_no_extra_step(tmp_path, capsys):
    args = ["--rows", "30", "--image-size", "32", "--rows-per-shard", "10", "--quiet", "--out", str(tmp_path / "o")]
    assert _run([*args, "--shard", "1/2"], capsys)[0] == 0
    assert not (tmp_path / "o" / "README.md").exists()
    assert _run([*args, "--shard", "0/2"], capsys)[0] == 0
    assert (tmp_path / "o" / "README.md").is_file()  # the last machine to finish writes the card


SOURCE = Path(__file__).resolve().parent.parent / "samples" / "source_catalog"


def test_source_run_reports_skips_and_writes_private_faithful_rows(tmp_path, capsys):
    import json

    out = tmp_path / "aug"
    code, err = _run(["--source", str(SOURCE), "--rows", "300", "--image-size", "64", "--out", str(out),
                      "--privacy", "strict"], capsys)
    assert code == 0, err
    said = " ".join(err)
    assert "read 340 rows, kept 312, skipped 28" in said and "image_truncated" in said
    privacy = json.loads((out / "privacy_report.json").read_text())
    assert privacy["passed"] and privacy["rows"] == 300
    assert privacy["exact_copies"]["rows"] == 0 and privacy["identifiers"]["rows_with_source_identifier"] == 0
    for key in ("metadata_dcr", "image_dcr_bits"):
        assert privacy[key]["generated"]["p5"] >= privacy[key]["source_baseline"]["p5"]
    card = (out / "README.md").read_text()
    assert "## Privacy" in card and "## Fidelity" in card and "## Source catalogue" in card
    assert json.loads((out / "fidelity_report.json").read_text())["overall_score"] > 0.8


def test_synthetic_runs_get_a_privacy_report_even_with_the_guard_off(tmp_path, capsys):
    on, off = tmp_path / "on", tmp_path / "off"
    assert _run([*SMALL, "--out", str(on)], capsys)[0] == 0
    assert _run([*SMALL, "--out", str(off), "--privacy", "off"], capsys)[0] == 0
    assert (on / "privacy_report.json").is_file() and "## Privacy" in (on / "README.md").read_text()
    assert (off / "privacy_report.json").is_file()  # saying the guard was off (tests/test_hardening_run.py)
    # The guard reports; it does not change what synthetic rows are.
    assert (on / "data" / "train-00000-of-00001.parquet").read_bytes() == \
        (off / "data" / "train-00000-of-00001.parquet").read_bytes()


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "nope.csv", "no such file or folder"),
    (lambda tmp: (tmp / "empty.csv").write_text("a,b\n1,2\n") and tmp / "empty.csv", "missing column 'title'"),
])
def test_bad_source_is_one_line_and_writes_nothing(tmp_path, capsys, make, expected):
    out = tmp_path / "out"
    code, err = _run([*SMALL, "--source", str(make(tmp_path)), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("gen-samples: error: --source ")
    assert expected in err[0]
    assert not out.exists() or not any(out.iterdir())

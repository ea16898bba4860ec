"""gen-samples under hostile conditions (issue 17: items 5, 7, 8, 9 and 13's --resume --overwrite).

Each failure is one line on stderr with an exit code, and leaves nothing half-written: no shard without a
card, no empty data/, no temporary file. Workers die with the parent and stay quiet on Ctrl-C.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generator import api
from generator.api import GenerateConfig, GenerateError, SyntheticRows, write_run
from generator.taxonomy import load
from test_cli import _run, _snapshot  # main(argv) -> (code, stderr lines); a folder's file digests

SMALL = ["--rows", "12", "--image-size", "32", "--quiet"]
SHARDED = ["--rows", "30", "--image-size", "32", "--rows-per-shard", "10", "--quiet", "--num-proc", "1"]
SOURCE = Path(__file__).resolve().parent.parent / "samples" / "source_catalog"
HINT = "gen-samples: interrupted; complete shards are kept: run the same command with --resume to finish"




def _temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if ".tmp-" in p.name or p.name.endswith(".incoming"))


def _one_line(code, err) -> str:
    assert code == 2 and len(err) == 1 and err[0].startswith("gen-samples: error: "), (code, err)
    return err[0]


# --------------------------------------------------------------------------------------------------
# 5: --privacy off


def test_source_run_with_privacy_off_finishes_with_card_and_reports(tmp_path, capsys):
    out = tmp_path / "aug"
    code, err = _run(["--source", str(SOURCE), "--rows", "40", "--image-size", "32", "--out", str(out),
                      "--privacy", "off", "--quiet", "--num-proc", "1"], capsys)
    assert code == 0, err
    assert err == []
    assert (out / "README.md").is_file() and (out / "fidelity_report.json").is_file()
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["guard"] == "off" and report["level"] == "off" and report["rows"] == 40
    assert "The privacy guard was off" in (out / "README.md").read_text()


def test_synthetic_run_with_privacy_off_still_gets_a_privacy_report(tmp_path, capsys):
    on, off = tmp_path / "on", tmp_path / "off"
    assert _run([*SMALL, "--out", str(on)], capsys)[0] == 0
    code, err = _run([*SMALL, "--out", str(off), "--privacy", "off"], capsys)
    assert code == 0 and err == []
    report = json.loads((off / "privacy_report.json").read_text())
    assert report["guard"] == "off" and report["level"] == "off" and report["passed"] is True
    assert json.loads((on / "privacy_report.json").read_text())["guard"] == "on"
    card = (off / "README.md").read_text()
    assert "## Privacy" in card and "**The privacy guard was off** (`--privacy off`)" in card
    # The guard reports; it does not change what synthetic rows are.
    assert _snapshot(on / "data") == _snapshot(off / "data")


# --------------------------------------------------------------------------------------------------
# 7 and 13: one-line errors, nothing half-written


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("manifest, says", [
    ("[]", "holds a JSON list"), ("1", "holds a JSON int"), ('"x"', "holds a JSON str"),
    (_deep(100_000), "is unreadable"),
])
def test_resume_of_a_manifest_that_is_not_an_object(tmp_path, capsys, manifest, says):
    out = tmp_path / "run"
    (out / ".manifest").mkdir(parents=True)
    (out / ".manifest" / "run.json").write_text(manifest)
    before = _snapshot(tmp_path)
    line = _one_line(*_run([*SMALL, "--out", str(out), "--resume"], capsys))
    assert f"{out / '.manifest' / 'run.json'} " in line and says in line and "--overwrite" in line
    assert len(line) < 400
    assert _snapshot(tmp_path) == before  # no data/ folder made before the refusal


@pytest.mark.parametrize("out", [".", "..", "sub/..", "{cwd}"])
def test_overwrite_of_the_current_folder_or_a_parent_is_refused_up_front(tmp_path, capsys, monkeypatch, out):
    cwd = tmp_path / "here"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "notes.txt").write_text("precious")
    monkeypatch.chdir(cwd)
    before = _snapshot(tmp_path)
    out = out.format(cwd=cwd)
    line = _one_line(*_run([*SMALL, "--out", out, "--overwrite"], capsys))
    assert line == (f"gen-samples: error: --out {out} is the current folder or holds it, and --overwrite would "
                    "replace it; choose a folder below the current one, or cd out of it first")
    assert _snapshot(tmp_path) == before  # no ..incoming, nothing written


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run([*SHARDED, "--out", str(out)], capsys)[0] == 0
    before = _snapshot(tmp_path)
    line = _one_line(*_run(["--rows", "3", "--image-size", "32", "--quiet", "--out", str(out), "--resume",
                            "--overwrite"], capsys))
    assert "--resume and --overwrite cannot be combined" in line
    assert _snapshot(tmp_path) == before  # the 30-row run is still there, untouched
    with pytest.raises(GenerateError, match="cannot be combined"):
        write_run(GenerateConfig(rows=3, image_size=32), out, resume=True, overwrite=True, quiet=True)


# --------------------------------------------------------------------------------------------------
# 9 (and 7's card): a full disk


Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))


def test_a_run_that_clearly_cannot_fit_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    _free(monkeypatch, 1_000_000)
    out = tmp_path / "a" / "run"
    line = _one_line(*_run(["--rows", "200", "--image-size", "336", "--quiet", "--out", str(out)], capsys))
    needed = api.estimated_bytes(200, 336)
    assert line == (f"gen-samples: error: not enough disk space for --out {out}: this run needs about "
                    f"{needed / 1e6:.0f} MB (200 rows at 336x336 px), only 1 MB free there; free some space "
                    "or choose another --out")
    assert list(tmp_path.iterdir()) == []

    _free(monkeypatch, needed)  # enough: the estimate is not a refusal in disguise
    assert _run(["--rows", "200", "--image-size", "336", "--quiet", "--out", str(out)], capsys)[0] == 0


def test_a_resume_needs_room_only_for_the_missing_shards(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert _run([*SHARDED, "--out", str(out)], capsys)[0] == 0
    (out / "data" / "train-00001-of-00003.parquet").unlink()
    (out / "README.md").unlink()
    _free(monkeypatch, 1)
    line = _one_line(*_run([*SHARDED, "--out", str(out), "--resume"], capsys))
    assert "needs about" in line and "(10 rows at 32x32 px)" in line


@pytest.mark.parametrize("size", [64, 336])
def test_the_estimate_is_close_to_what_a_run_writes(tmp_path, size):
    rows = 150
    out = write_run(GenerateConfig(rows=rows, image_size=size), tmp_path / "run", quiet=True).out
    shards = sum(p.stat().st_size for p in (out / "data").iterdir())
    others = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) - shards
    assert 0.85 < shards / (api.estimated_bytes(rows, size) - api.RUN_EXTRA_BYTES) < 1.15
    assert others < api.RUN_EXTRA_BYTES  # card, contact sheet, reports and manifests


REAL_WRITE_TABLE = pq.ParquetWriter.write_table


def _disk_fills_after(monkeypatch, tables: int) -> None:
    """The disk fills up while the (tables + 1)-th row group is written, in this process."""
    real = REAL_WRITE_TABLE
    calls = []

    def write_table(self, *a, **k):
        calls.append(1)
        if len(calls) > tables:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)


def _assert_disk_full_message(line: str, out: Path, rows: int) -> None:
    assert line.startswith(f"gen-samples: error: the disk filled up while writing --out {out} (")
    assert f"this run needs about 2 MB ({rows:,} rows at 32x32 px) and " in line
    assert "were free when it started; nothing of this run was kept; free some space or choose another --out" in line


@pytest.mark.parametrize("exists", [False, True])
def test_disk_full_while_writing_shards_leaves_no_dataset(tmp_path, capsys, monkeypatch, exists):
    out = tmp_path / "new" / "run"
    if exists:
        out.mkdir(parents=True)
    _disk_fills_after(monkeypatch, 2)  # two complete shards, then the third fails
    line = _one_line(*_run([*SHARDED, "--out", str(out)], capsys))
    _assert_disk_full_message(line, out, 30)
    if exists:
        assert list(out.iterdir()) == []  # the folder given stays; no empty data/ in it
    else:
        assert list(tmp_path.iterdir()) == []  # the folders this run made are gone


def test_disk_full_during_a_resume_keeps_what_was_there(tmp_path, capsys, monkeypatch):
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    assert _run([*SHARDED, "--out", str(out)], capsys)[0] == 0
    for name in ("README.md", "contact_sheet.png", "privacy_report.json", "data/test-00000-of-00001.parquet",
                 "data/train-00002-of-00003.parquet"):
        (out / name).unlink()
    before = _snapshot(out)
    _disk_fills_after(monkeypatch, 1)
    line = _one_line(*_run([*SHARDED, "--out", str(out), "--resume"], capsys))
    assert "the disk filled up" in line and "(10 rows at 32x32 px)" in line  # one shard of 10 rows still to go
    assert _snapshot(out) == before  # the shard this call finished went too; the earlier ones stayed
    monkeypatch.setattr(pq.ParquetWriter, "write_table", REAL_WRITE_TABLE)  # room again
    assert _run([*SHARDED, "--out", str(out), "--resume"], capsys)[0] == 0
    assert _run([*SHARDED, "--out", str(fresh)], capsys)[0] == 0
    assert _snapshot(out) == _snapshot(fresh)


def _disk_fills_on(monkeypatch, name: str) -> None:
    """Writing the temporary file of ``name`` gets half way, then the disk is full."""
    real_text, real_bytes = Path.write_text, Path.write_bytes

    def full(self, data, real):
        if self.name.startswith(f".{name}.tmp-"):
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_text", lambda self, data, *a, **k: full(self, data, real_text))
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: full(self, data, real_bytes))


@pytest.mark.parametrize("name", ["README.md", "privacy_report.json"])
def test_disk_full_while_writing_the_card_or_a_report(tmp_path, capsys, monkeypatch, name):
    out = tmp_path / "run"
    _disk_fills_on(monkeypatch, name)
    line = _one_line(*_run([*SMALL, "--out", str(out)], capsys))
    _assert_disk_full_message(line, out, 12)
    assert list(tmp_path.iterdir()) == []  # no shards without a card, no torn .README.md.tmp-*


def test_disk_full_on_a_fleet_machine_keeps_the_shared_folder_but_no_temporary_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "shared"
    assert _run([*SHARDED, "--out", str(out), "--shard", "1/2"], capsys)[0] == 0
    _disk_fills_on(monkeypatch, "README.md")  # the last machine to finish writes the card
    line = _one_line(*_run([*SHARDED, "--out", str(out), "--shard", "0/2"], capsys))
    assert line.startswith(f"gen-samples: error: the disk filled up while writing --out {out} (")
    assert "this machine's finished shards are kept (run the same command again once there is room)" in line
    assert len(list((out / "data").glob("*.parquet"))) == 4 and not (out / "README.md").exists()
    assert _temporaries(tmp_path) == []  # the half-written .README.md.tmp-* went


def test_disk_full_while_overwriting_keeps_the_old_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert _run([*SMALL, "--out", str(out)], capsys)[0] == 0
    before = _snapshot(tmp_path)
    _disk_fills_on(monkeypatch, "README.md")
    line = _one_line(*_run([*SMALL, "--seed", "1", "--out", str(out), "--overwrite"], capsys))
    assert "the disk filled up while writing --out" in line
    assert _snapshot(tmp_path) == before and _temporaries(tmp_path) == []


PARENT_ENV = "GEN_SAMPLES_TEST_PARENT"


class _DiskFullInTheWorker(SyntheticRows):
    """The worker process finds the disk full at its first row; the parent waits for that before its own
    rows, so the worker always gets a shard (it starts a second or more after the parent)."""

    def __init__(self, marker: Path):
        super().__init__(load("burberry_us"), seed=0, num_rows=40, image_size=32)
        self.marker = str(marker)

    def __call__(self, index):
        if os.environ.get(PARENT_ENV) != str(os.getpid()):
            Path(self.marker).touch()
            raise OSError(errno.ENOSPC, "No space left on device")
        assert _wait_for(lambda: Path(self.marker).exists(), timeout=120), "the worker never made a row"
        return super().__call__(index)


def test_disk_full_in_a_worker_process_leaves_no_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv(PARENT_ENV, str(os.getpid()))  # inherited by the spawned worker, whose pid differs
    out = tmp_path / "run"
    with pytest.raises(GenerateError) as info:
        write_run(GenerateConfig(rows=40, image_size=32, rows_per_shard=5, num_proc=2), out, quiet=True,
                  source=_DiskFullInTheWorker(tmp_path / "marker"))
    assert str(info.value).startswith(f"the disk filled up while writing --out {out} (No space left on device)")
    assert "nothing of this run was kept" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]


# --------------------------------------------------------------------------------------------------
# 8: worker processes


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has stopped working


def _workers(parent: int) -> list[int]:
    return [pid for pid in _children(parent) if b"spawn_main" in _cmdline(pid)]  # not the resource tracker


def _children(parent: int) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if (_proc_stat(pid) or ["", "0"])[1] == str(parent)]


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def _wait_for(what, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return None


def _terminal_ctrl_c() -> None:
    """In the child before exec: Ctrl-C as a terminal's foreground job has it. A suite started in the
    background of a non-interactive shell (``pytest &``) inherits SIGINT ignored, and an ignored SIGINT
    stays ignored across exec, so gen-samples would rightly never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_busy_run(out: Path, **popen) -> tuple[subprocess.Popen, list[int]]:
    """A two-process gen-samples far from done, once its worker is busy (its second thread runs)."""
    # 100,000 rows take minutes: the run is always stopped half way through.
    argv = [sys.executable, "-m", "generator.cli", "--rows", "100000", "--image-size", "32", "--rows-per-shard",
            "50", "--num-proc", "2", "--privacy", "off", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_terminal_ctrl_c, **popen)

    def busy() -> list[int]:
        # The parent claims the first shard while the worker is still importing; once that shard is there,
        # the parent has done its own late imports too (a Ctrl-C during an import can be lost in CPython).
        if not any((out / "data").glob("train-00000-of-*.parquet")):
            return []
        return [w for w in _workers(proc.pid) if len(list(Path(f"/proc/{w}/task").iterdir())) >= 2]

    workers = _wait_for(busy, timeout=120)
    assert workers, "the worker process never started"
    return proc, workers


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed test left running
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


@linux_only
def test_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "run"
    proc, workers = _start_busy_run(out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.kill()
        proc.wait(timeout=30)
        shards = len(list((out / "data").glob("*.parquet")))
        assert _wait_for(lambda: not any(_alive(w) for w in workers), timeout=30), "a worker outlived its parent"
        # At most the shard it was finishing when the parent died.
        assert len(list((out / "data").glob("*.parquet"))) <= shards + len(workers)
    finally:
        _stop_group(proc)


@linux_only
def test_ctrl_c_is_one_hint_from_the_parent_and_no_worker_traceback(tmp_path):
    out = tmp_path / "run"
    proc, workers = _start_busy_run(out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group gets it
        _, stderr = proc.communicate(timeout=120)  # returns once every process holding stderr is gone
        assert proc.returncode == 130, stderr
        assert stderr.strip() == HINT
        assert not any(_alive(w) for w in workers)
        assert list((out / "data").glob(".*.tmp-*")) == []  # the worker's unfinished shard went too
    finally:
        _stop_group(proc)


def _report_workers(parent: int) -> list[int]:
    """The forked processes that scan the shards for the privacy report (same command line as the parent)."""
    return [pid for pid in _children(parent) if b"generator.cli" in _cmdline(pid)]


@linux_only
def test_ctrl_c_while_the_privacy_report_is_measured_is_one_hint_too(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "generator.cli", "--rows", "10000", "--image-size", "32", "--rows-per-shard", "500",
            "--num-proc", "2", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_terminal_ctrl_c)
    try:
        scanners = _wait_for(lambda: _report_workers(proc.pid), timeout=240, step=0.02)
        assert scanners, "the privacy report was never measured in worker processes"
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        assert stderr.strip() == HINT
        assert not (out / "README.md").exists()
    finally:
        _stop_group(proc)

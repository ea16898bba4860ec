"""Pushing to the Hub, end to end, against the Hub-compatible server in tests/_hub_server.py.

The real ``huggingface_hub`` and ``datasets`` code does every request over HTTP; nothing inside them
is patched. Every push and every load runs in a fresh Python process because both libraries read
HF_ENDPOINT, HF_HOME, HF_HUB_DISABLE_XET... once, when they are imported.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
ALICE, ALICE_TOKEN = "alice", "hf_aliceSecretToken0123456789abcdefXYZ"
BOB, BOB_TOKEN = "bob", "hf_bobSecretToken9876543210fedcbaXYZ"
TOKENS = (ALICE_TOKEN, BOB_TOKEN)
HAS_CLI = importlib.util.find_spec("generator.cli") is not None
N_TRAIN, N_TEST = 12, 4

# Same contract as the CLI: one line on stderr, exit code 1, local copy kept.
API_PUSH = """
import json, sys
from generator.hub import PushError, push_dataset
args = json.loads(sys.argv[1])
try:
    url = push_dataset(args["dir"], args["repo"], private=args["private"], max_shard_size=args["max_shard_size"])
except PushError as err:
    print(f"gen-samples: error: {err} (local copy kept at {args['dir']})", file=sys.stderr)
    sys.exit(1)
print(url)
"""

LOAD = """
import base64, json, sys
import datasets
repo = sys.argv[1]
dd = datasets.load_dataset(repo).cast_column("image", datasets.Image(decode=False))
out = {}
for split, ds in dd.items():
    rows = ds.to_list()
    for row in rows:
        row["image"] = base64.b64encode(row["image"]["bytes"]).decode()
    out[split] = rows
print("ROWS=" + json.dumps(out))
"""


@dataclasses.dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclasses.dataclass
class LocalRun:
    path: Path
    digest: str

    def intact(self) -> bool:
        return _digest(self.path) == self.digest


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _rows(n: int, offset: int, rng) -> list[dict]:
    from PIL import Image

    rows = []
    for k in range(offset, offset + n):
        # Noise compresses badly: a few KB per JPEG, so a small max_shard_size gives several shards.
        pixels = rng.integers(0, 256, size=(48, 48, 3), dtype="uint8")
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        rows.append({
            "website_name": "BURBERRY", "competence_date": "2023-03-01", "country_code": "us",
            "currency_code": "USD", "brand": "Burberry", "category1_code": "WOMAN", "category2_code": "OUTERWEAR",
            "category3_code": "QUILTED JACKETS", "product_code": 80_000 + k, "title": f"Quilted Jacket No. {k}",
            "itemurl": f"https://example.invalid/item/{k}", "imageurl": f"https://example.invalid/img/{k}.jpg",
            "full_price": 1000.0 + k * 10.5, "price": 900.0 + k, "full_price_eur": 950.25 + k, "price_eur": 855.5 + k,
            "flg_discount": k % 2, "image": {"bytes": buf.getvalue(), "path": None},
        })
    return rows


CARD = """---
license: cc-by-4.0
pretty_name: Synthetic Burberry US catalogue
task_categories:
- image-to-text
tags:
- synthetic
- privacy-safe
---

# Synthetic Burberry US catalogue

## Schema

| column | type |
|---|---|
| title | string |
| image | image |

## Generation parameters

rows: 16, seed: 0

## Privacy report

No row is closer than the threshold to any public row.

## Fidelity report

Marginals match within tolerance.

![contact sheet](contact_sheet.png)
"""


@pytest.fixture(scope="module")
def local_run_dir(tmp_path_factory) -> Path:
    """A local run shaped like the writer's output: data/<split>-0000i-of-0000n.parquet + card + assets."""
    import datasets
    import numpy as np
    from PIL import Image

    from generator.schema import features

    out = tmp_path_factory.mktemp("run") / "burberry-us"
    (out / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, 100)):
        ds = datasets.Dataset.from_list(_rows(n, offset, rng), features=features())
        ds.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    (out / "README.md").write_text(CARD, encoding="utf-8")
    Image.fromarray(rng.integers(0, 256, size=(64, 96, 3), dtype="uint8")).save(out / "contact_sheet.png")
    (out / "privacy_report.json").write_text(json.dumps({"min_distance": 0.41, "passed": True}), encoding="utf-8")
    (out / "fidelity_report.json").write_text(json.dumps({"ks_full_price": 0.03}), encoding="utf-8")
    return out


@pytest.fixture
def local_run(local_run_dir) -> LocalRun:
    return LocalRun(local_run_dir, _digest(local_run_dir))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh local Hub, and an environment pointing the clients at it (inherited by subprocesses)."""
    with LocalHub(tmp_path / "hub") as server:
        server.add_user(ALICE, ALICE_TOKEN)
        server.add_user(BOB, BOB_TOKEN)
        for name in list(os.environ):
            if name.lower().endswith("_proxy") or name.startswith(("HF_", "HUGGING")) or name.startswith("GEN_SAMPLES_"):
                monkeypatch.delenv(name)
        home = tmp_path / "hf-home"
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
        monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # hf_xet is installed, and the local hub speaks LFS only
        monkeypatch.setenv("HF_HUB_DISABLE_UPDATE_CHECK", "1")
        monkeypatch.setenv("GEN_SAMPLES_HUB_RETRY_WAIT", "0.05")
        monkeypatch.setenv("GEN_SAMPLES_HUB_TIMEOUT", "20")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        yield server
        assert server.unknown_routes == [], f"the clients called routes the local hub lacks: {server.unknown_routes}"


def run_python(code: str, *args: str, timeout: float = 120) -> Result:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def push(local: Path, repo: str | None, *, private: bool = False, max_shard_size: str = "500MB", via: str = "auto") -> Result:
    """Push through the CLI when it exists (and the options allow), else through the Python API."""
    if via == "cli" or (via == "auto" and HAS_CLI and max_shard_size == "500MB" and repo is not None):
        cmd = [sys.executable, "-m", "generator.cli", "push", str(local), "--repo", repo] + (["--private"] if private else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        return Result(proc.returncode, proc.stdout, proc.stderr)
    args = {"dir": str(local), "repo": repo, "private": private, "max_shard_size": max_shard_size}
    return run_python(API_PUSH, json.dumps(args))


def load_from_hub(repo: str, tmp_path: Path, token: str | None = None) -> dict[str, list[dict]]:
    """``datasets.load_dataset(repo)`` in a fresh process with empty caches."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "reader-home"), HF_HUB_CACHE=str(tmp_path / "reader-home" / "hub"),
               HF_DATASETS_CACHE=str(tmp_path / "reader-home" / "datasets"))
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    proc = subprocess.run([sys.executable, "-c", LOAD, repo], capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("ROWS="))
    return json.loads(line.removeprefix("ROWS="))


def local_rows(local: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    out = {}
    for split in ("train", "test"):
        rows = pq.read_table(sorted((local / "data").glob(f"{split}-*.parquet"))).to_pylist()
        for row in rows:
            row["image"] = base64.b64encode(row["image"]["bytes"]).decode()
        out[split] = rows
    return out


def hub_rows(hub: LocalHub, repo: str) -> dict[str, list[dict]]:
    """Rows of the shards committed on the hub, read straight from its storage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    files = hub.files(repo)
    for split in ("train", "test"):
        paths = sorted(p for p in files if p.startswith(f"data/{split}-"))
        table = pa.concat_tables(pq.read_table(io.BytesIO(hub.read(repo, p))) for p in paths)
        rows = table.to_pylist()
        for row in rows:
            row["image"] = base64.b64encode(row["image"]["bytes"]).decode()
        out[split] = rows
    return out


def shard_files(hub: LocalHub, repo: str) -> list[str]:
    return sorted(p for p in hub.files(repo) if p.endswith(".parquet"))


def uploaded_oids(hub: LocalHub, since: int = 0) -> list[str]:
    """sha256 of the LFS objects stored since request number ``since``."""
    return [r["path"].split("?")[0].rsplit("/", 1)[1] for r in hub.requests[since:]
            if r["route"] == "lfs_upload" and r["status"] == 200]


def assert_failed(result: Result, local: LocalRun, *fragments: str) -> str:
    """Exit code 1, exactly one error line holding ``fragments``, no traceback, no token, local copy intact."""
    assert result.rc == 1, result.output[-3000:]
    assert "Traceback" not in result.output, result.err[-3000:]
    errors = [line for line in result.err.splitlines() if "error:" in line]
    assert len(errors) == 1, result.err[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert f"local copy kept at {local.path}" in result.err  # its exact place is checked by the CLI test below
    for token in TOKENS:
        assert token not in result.output
    assert local.intact()
    return errors[0]


def assert_pushed(result: Result, hub: LocalHub, repo: str) -> None:
    assert result.rc == 0, result.output[-3000:]
    assert f"{hub.url}/datasets/{repo}" in result.output
    for token in TOKENS:
        assert token not in result.output


# ---------------------------------------------------------------- round trip


def test_round_trip_same_rows_same_image_bytes_and_merged_card(hub, local_run, tmp_path):
    repo = f"{ALICE}/burberry-us-catalogue"
    result = push(local_run.path, repo, via="api")
    assert_pushed(result, hub, repo)
    assert local_run.intact()

    expected = local_rows(local_run.path)
    loaded = load_from_hub(repo, tmp_path)  # anonymous: the repo is public
    assert {k: len(v) for k, v in loaded.items()} == {"train": N_TRAIN, "test": N_TEST}
    assert loaded == expected  # every column of every row, and every image byte for byte

    files = hub.files(repo)
    assert shard_files(hub, repo) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    for name in ("contact_sheet.png", "privacy_report.json", "fidelity_report.json"):
        assert hub.read(repo, name) == (local_run.path / name).read_bytes()
    assert files["contact_sheet.png"].is_lfs and files["data/train-00000-of-00001.parquet"].is_lfs

    card = hub.read(repo, "README.md").decode()
    for section in ("## Schema", "## Generation parameters", "## Privacy report", "## Fidelity report", "contact_sheet.png"):
        assert section in card
    from huggingface_hub import DatasetCard

    data = DatasetCard(card).data
    assert data["license"] == "cc-by-4.0" and data["pretty_name"] == "Synthetic Burberry US catalogue"
    assert data["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    splits = {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]}
    assert splits == {"train": N_TRAIN, "test": N_TEST}
    assert {"name": "image", "dtype": "image"} in data["dataset_info"]["features"]
    assert not any(token in card for token in TOKENS)
    # Two commits on top of the repo's initial one: the shards, then the card with the assets.
    assert [c.title for c in hub.history(repo)] == [
        "Add dataset card, contact sheet and reports", "Upload dataset shards", "initial commit"]

    # Pushing the same run again sends no bytes and makes no commit.
    head, mark = hub.history(repo)[0].oid, len(hub.requests)
    assert_pushed(push(local_run.path, repo, via="api"), hub, repo)
    assert uploaded_oids(hub, mark) == []
    assert hub.history(repo)[0].oid == head


def test_default_repo_name_saved_login_and_private(hub, local_run, tmp_path, monkeypatch):
    # No HF_TOKEN: the token comes from the saved login, as after `hf auth login`.
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "hf-home").mkdir(exist_ok=True)
    (tmp_path / "hf-home" / "token").write_text(ALICE_TOKEN)
    code = API_PUSH.replace(
        "print(url)", "print(url)\nfrom generator.hub import default_repo_id\nprint(default_repo_id('Burberry', 'United States', 3040))"
    )
    args = {"dir": str(local_run.path), "repo": None, "private": True, "max_shard_size": "500MB"}
    result = run_python(code, json.dumps(args))
    assert_pushed(result, hub, f"{ALICE}/burberry-us-16-rows")
    assert result.out.splitlines()[-1] == f"{ALICE}/burberry-united-states-3040-rows"
    assert hub.repos[("dataset", f"{ALICE}/burberry-us-16-rows")].private
    assert local_run.intact()


# ---------------------------------------------------------------- failures


def test_no_token(hub, local_run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # and HF_HOME holds no saved login
    error = assert_failed(push(local_run.path, f"{ALICE}/x"), local_run, "no Hugging Face token", "hf auth login", "HF_TOKEN")
    assert "huggingface-cli login" in error
    assert hub.requests == []


def test_bad_token_401(hub, local_run, monkeypatch):
    bad = "hf_notARealToken000000000000000000000"
    monkeypatch.setenv("HF_TOKEN", bad)
    result = push(local_run.path, f"{ALICE}/x")
    assert_failed(result, local_run, "rejected your token", "401")
    assert bad not in result.output
    assert [r["status"] for r in hub.calls("whoami")] == [401]


@pytest.mark.parametrize("repo_exists", [False, True], ids=["create-in-other-namespace", "write-to-others-repo"])
def test_repo_owned_by_someone_else_403(hub, local_run, repo_exists):
    repo = f"{BOB}/catalogue"
    if repo_exists:
        hub.create_repo(repo)
    before = hub.files(repo) if repo_exists else None
    assert_failed(push(local_run.path, repo), local_run, "403", repo, "own user")
    if repo_exists:
        assert hub.files(repo) == before  # nothing landed in bob's repo
    else:
        assert ("dataset", repo) not in hub.repos


def test_connection_refused(hub, local_run):
    hub.stop()
    host = hub.url.removeprefix("http://")
    assert_failed(push(local_run.path, f"{ALICE}/x"), local_run, "connection refused", host)


def test_dns_failure(hub, local_run, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")  # .invalid never resolves (RFC 6761)
    assert_failed(push(local_run.path, f"{ALICE}/x"), local_run, "cannot resolve hub.invalid", "DNS")


def test_endpoint_timeout(hub, local_run, monkeypatch):
    monkeypatch.setenv("GEN_SAMPLES_HUB_TIMEOUT", "1")
    hub.fail("repo_info", status=500, hang=30)  # the hub stops answering in the middle of the push
    assert_failed(push(local_run.path, f"{ALICE}/x"), local_run, "did not answer within 1s", "GEN_SAMPLES_HUB_TIMEOUT")


def test_rate_limited_then_recovers_with_backoff(hub, local_run):
    repo = f"{ALICE}/x"
    hub.fail("repo_info", 429, times=2, headers={"Retry-After": "0"})
    result = push(local_run.path, repo)
    assert_pushed(result, hub, repo)
    assert "rate limited" in result.err
    assert [r["status"] for r in hub.calls("repo_info")][:3] == [429, 429, 404]
    assert shard_files(hub, repo) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]


def test_rate_limited_for_good(hub, local_run):
    hub.fail("whoami", 429, times=100)
    assert_failed(push(local_run.path, f"{ALICE}/x"), local_run, "429", "after 4 tries", "wait a few minutes")
    assert len(hub.calls("whoami")) == 4  # GEN_SAMPLES_HUB_RETRIES' default


def test_conflicting_commits_for_good_409(hub, local_run):
    repo = f"{ALICE}/x"
    hub.fail("commit", 409, times=100, message="Another commit is in progress on this branch")
    error = assert_failed(push(local_run.path, repo), local_run, "409 conflict", repo, "again")
    assert "gen-samples push" in error
    assert [r["status"] for r in hub.calls("commit")] == [409, 409]  # retried once, on a fresh head


@pytest.mark.parametrize("commit", ["shards", "card"])
def test_concurrent_commit_412_is_retried_on_the_new_head(hub, local_run, commit):
    repo = f"{ALICE}/x"
    # Someone else commits right before our commit reaches the hub: the hub answers 412 (stale parent).
    hub.before("commit", lambda: hub.commit_files(repo, {"NOTES.md": b"theirs"}), skip=0 if commit == "shards" else 1)
    result = push(local_run.path, repo)
    assert_pushed(result, hub, repo)
    assert [r["status"] for r in hub.calls("commit")] == ([412, 200, 200] if commit == "shards" else [200, 412, 200])
    assert hub.read(repo, "NOTES.md") == b"theirs"  # their change survives
    assert "## Privacy report" in hub.read(repo, "README.md").decode()
    assert shard_files(hub, repo) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]


def test_token_never_printed_even_when_the_hub_echoes_it(hub, local_run, monkeypatch):
    monkeypatch.setenv("HF_DEBUG", "1")  # huggingface_hub logs every request as a curl command
    hub.fail("preupload", 400, message=f"token {ALICE_TOKEN} may not upload here")
    result = push(local_run.path, f"{ALICE}/x")
    assert "curl" in result.err  # the verbose log really was produced
    assert_failed(result, local_run, "400", "***")


# ---------------------------------------------------------------- bad input (in process: nothing is sent)


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", ["missing", "no-shards", "incomplete-split", "bad-repo-id", "token-in-card", "token-in-report"])
def test_bad_input_is_refused_before_anything_is_sent(hub, local_run_dir, tmp_path, case):
    from generator.hub import LocalRunError, PushError, push_dataset

    local, repo = tmp_path / "run", f"{ALICE}/x"
    expected = {
        "missing": "no local dataset at", "no-shards": "no shards in", "incomplete-split": "the train split",
        "bad-repo-id": "not a valid repo id", "token-in-card": "README.md contains your Hugging Face token",
        "token-in-report": "privacy_report.json contains your Hugging Face token",
    }[case]
    if case != "missing":
        _copy_run(local_run_dir, local)
    if case == "no-shards":
        shutil.rmtree(local / "data")
    elif case == "incomplete-split":  # shard 0 of 2 is there, shard 1 is not: a run still being written
        (local / "data" / "train-00000-of-00001.parquet").rename(local / "data" / "train-00000-of-00002.parquet")
    elif case == "bad-repo-id":
        repo = f"{ALICE}/two--dashes"
    elif case == "token-in-card":
        (local / "README.md").write_text(CARD + f"\nHF_TOKEN={ALICE_TOKEN}\n", encoding="utf-8")
    elif case == "token-in-report":
        (local / "privacy_report.json").write_text(json.dumps({"token": ALICE_TOKEN}), encoding="utf-8")
    before = _digest(local) if local.exists() else None
    with pytest.raises(LocalRunError) as info:
        push_dataset(local, repo, token=ALICE_TOKEN)
    assert isinstance(info.value, PushError)
    message = str(info.value)
    assert expected in message and "\n" not in message and ALICE_TOKEN not in message
    assert hub.requests == []
    assert (_digest(local) if local.exists() else None) == before


def test_push_error_is_one_line():
    from generator.hub import PushError

    assert str(PushError("first line\n  second   line\n")) == "first line second line"


def test_merge_card_keeps_datasets_shard_metadata_and_our_text():
    from huggingface_hub import DatasetCard

    from generator.hub import merge_card

    ours = CARD.replace("tags:", "configs:\n- config_name: default\n  data_files: local/*.parquet\ntags:")
    theirs = (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "dataset_info:\n  splits:\n  - name: train\n    num_examples: 12\nlicense: mit\nsize_categories:\n- n<1K\n---\n"
        "# Dataset Card for x\n"
    )
    merged = DatasetCard(merge_card(ours, theirs))
    assert merged.data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert merged.data["dataset_info"]["splits"][0]["num_examples"] == 12
    assert merged.data["license"] == "cc-by-4.0"  # ours wins outside the shard metadata
    assert merged.data["size_categories"] == ["n<1K"]  # theirs kept where we say nothing
    assert merged.text == DatasetCard(CARD).text and "Dataset Card for x" not in merged.text


# ---------------------------------------------------------------- resuming


def test_resume_after_upload_failure_uploads_only_what_is_missing(hub, local_run):
    repo = f"{ALICE}/x"
    hub.fail("lfs_upload", 403, skip=2, message="Request has expired")  # the 3rd shard upload fails
    first = push(local_run.path, repo, max_shard_size="20KB")
    assert_failed(first, local_run, "403")
    uploaded_before = uploaded_oids(hub)
    assert len(uploaded_before) == 2
    assert shard_files(hub, repo) == []  # nothing committed yet

    mark = len(hub.requests)
    second = push(local_run.path, repo, max_shard_size="20KB")
    assert_pushed(second, hub, repo)
    shards = shard_files(hub, repo)
    train = [p for p in shards if "/train-" in p]
    test = [p for p in shards if "/test-" in p]
    assert len(train) > 1 and len(test) >= 1
    n = len(train)
    assert train == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    # The shards that made it the first time are not sent again; everything else is sent exactly once.
    uploaded_after = uploaded_oids(hub, mark)
    assert not set(uploaded_before) & set(uploaded_after)
    assert len(uploaded_after) == len(set(uploaded_after)) == len(shards) - 2 + 1  # + contact sheet
    assert hub_rows(hub, repo) == local_rows(local_run.path)


def test_resume_after_card_failure_leaves_one_set_of_shards(hub, local_run):
    repo = f"{ALICE}/x"
    hub.fail("commit", 500, skip=1)  # shards are committed, then the card commit fails
    first = push(local_run.path, repo, max_shard_size="20KB")
    assert_failed(first, local_run, "server error (500)", "uploading the dataset card")
    several = shard_files(hub, repo)
    assert len(several) > 2
    assert "## Privacy report" not in hub.read(repo, "README.md").decode()

    # Pushed again with other shard sizes: the stale shards are removed, not left next to the new ones.
    second = push(local_run.path, repo)
    assert_pushed(second, hub, repo)
    assert shard_files(hub, repo) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert "## Privacy report" in hub.read(repo, "README.md").decode()
    assert hub.read(repo, "contact_sheet.png") == (local_run.path / "contact_sheet.png").read_bytes()
    assert hub_rows(hub, repo) == local_rows(local_run.path)


# ---------------------------------------------------------------- CLI


needs_cli = pytest.mark.skipif(not HAS_CLI, reason="generator/cli.py is not written yet")


@needs_cli
def test_cli_push_command(hub, local_run):
    # The installed console script when there is one, else the module it runs.
    exe = shutil.which("gen-samples", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "generator.cli"]
    repo = f"{ALICE}/from-cli"
    proc = subprocess.run([*cmd, "push", str(local_run.path), "--repo", repo], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shard_files(hub, repo) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert ALICE_TOKEN not in proc.stdout + proc.stderr
    assert local_run.intact()


@needs_cli
def test_generate_then_push_what_the_writer_wrote(hub, tmp_path):
    pytest.importorskip("generator.api")
    out, repo = tmp_path / "generated", f"{ALICE}/generated"
    proc = subprocess.run(
        [sys.executable, "-m", "generator.cli", "--rows", "24", "--seed", "0", "--out", str(out), "--push", repo],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub_rows(hub, repo) == local_rows(out) and sum(map(len, local_rows(out).values())) == 24
    assert hub.read(repo, "README.md").decode().count("configs:") == 1
    assert hub.read(repo, "contact_sheet.png") == (out / "contact_sheet.png").read_bytes()
    # The card links report.html and embeds its figures: every one it names is on the Hub too.
    card = hub.read(repo, "README.md").decode()
    figures = sorted(p.name for p in out.glob("report_*.png"))
    assert figures and all(f"]({name})" in card for name in figures) and "](report.html)" in card
    for name in ["report.html", *figures]:
        assert hub.read(repo, name) == (out / name).read_bytes()


def test_the_push_takes_every_figure_the_report_can_write():
    pytest.importorskip("generator.report")
    from generator.hub.local import ASSET_FILENAMES
    from generator.report.dataset import CARD_FIGURES, REPORT_FILENAME

    assert {REPORT_FILENAME, *(png for png, _ in CARD_FIGURES.values())} <= set(ASSET_FILENAMES)


@needs_cli
def test_cli_push_failure_is_one_line_exit_1(hub, local_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_notARealToken000000000000000000000")
    result = push(local_run.path, f"{ALICE}/x", via="cli")
    line = assert_failed(result, local_run, "rejected your token")
    # The agreed CLI contract: `gen-samples: error: <msg> (local copy kept at OUT)`, all on one line.
    assert line.startswith("gen-samples: error: ")
    assert line.endswith(f"(local copy kept at {local_run.path})")
    assert result.err.strip().splitlines()[-1] == line

"""Issue 17, items 2 and 4: `gen-samples push` refuses what the tool itself rejected unless --force (and
then says so, on stderr and in the card); a token given as the repo id is refused and never echoed; a
blank HF_TOKEN is no token.

Pushes go through the CLI in a fresh process (huggingface_hub and datasets read HF_* once, on import)
to the loopback Hub of tests/_hub_server.py, as in tests/test_hub.py, whose fixture and helpers we reuse.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_hub import ALICE, ALICE_TOKEN, REPO_ROOT, Result, _digest, hub, shard_files  # noqa: F401 (hub: fixture)

# Shaped like a Hugging Face token (hf_ + 34 letters and digits) but not one the loopback Hub knows.
FAKE_TOKEN = "hf_" + "Qz7" * 11 + "k"
SHARDS = ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
WARNING = "Warning: this dataset failed gen-samples' checks and was pushed anyway with `--force`."


def gen_samples(*args: str | Path) -> Result:
    proc = subprocess.run([sys.executable, "-m", "generator.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one stderr line `gen-samples: error: ...` holding ``fragments``, no traceback."""
    assert result.rc == code, result.output[-3000:]
    assert "Traceback" not in result.output, result.err[-3000:]
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gen-samples: error: "), result.err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert ALICE_TOKEN not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A complete, passed run written by gen-samples itself (card, reports, manifest)."""
    from generator.api import GenerateConfig, write_run

    out = tmp_path_factory.mktemp("generated") / "run"
    report = write_run(GenerateConfig(rows=12, image_size=32, num_proc=1), out, quiet=True)
    assert report.complete and report.privacy_passed
    assert json.loads((out / "privacy_report.json").read_text())["passed"] is True
    return out


@pytest.fixture
def run(generated, tmp_path) -> Path:
    """A copy of the generated run that a test may break."""
    return Path(shutil.copytree(generated, tmp_path / "run"))


def _fail_privacy(run: Path) -> None:
    report = json.loads((run / "privacy_report.json").read_text())
    (run / "privacy_report.json").write_text(json.dumps({**report, "passed": False}))


def _crash(run: Path) -> None:
    """What a run killed after its shards but before its card and reports leaves."""
    for name in ("README.md", "privacy_report.json", "contact_sheet.png"):
        (run / name).unlink()


# ---------------------------------------------------------------- item 2: incomplete or failed runs


def _fleet_shard_folder(tmp_path: Path) -> Path:
    """One machine's folder of a 2-machine fleet: train written, test left to the other machine, no card."""
    from generator.api import GenerateConfig, write_run

    out = tmp_path / "machine-0"
    report = write_run(GenerateConfig(rows=12, image_size=32, num_proc=1), out, shard=(0, 2), quiet=True)
    assert not report.complete and (out / "data" / "train-00000-of-00001.parquet").is_file()
    return out


REFUSED = {
    # case: (how to break the run, what the one error line must say)
    "privacy-failed": (_fail_privacy, ['its privacy check did not pass (privacy_report.json does not say "passed": true)']),
    "privacy-passed-as-string": (
        lambda r: (r / "privacy_report.json").write_text(json.dumps({"passed": "true"})),
        ["its privacy check did not pass"]),
    "crashed-no-card-no-report": (_crash, ["no dataset card (README.md)", "no privacy report (privacy_report.json)"]),
    "test-split-deleted": (lambda r: (r / "data" / "test-00000-of-00001.parquet").unlink(),
                           ["the test split is not all written (0 of 1 shard files)"]),
    "shard-without-record": (lambda r: (r / ".manifest" / "train-00000-of-00001.parquet.json").unlink(),
                             ["1 shard files do not match their manifest records"]),
    "split-not-planned": (
        lambda r: shutil.copy(r / "data" / "test-00000-of-00001.parquet", r / "data" / "validation-00000-of-00001.parquet"),
        ["data/ holds shard files of a split its manifest does not plan (validation)"]),
    "manifest-is-a-list": (lambda r: (r / ".manifest" / "run.json").write_text("[]"),
                           ["its manifest (.manifest/run.json) is unreadable"]),
    "manifest-is-a-string": (lambda r: (r / ".manifest" / "run.json").write_text('"x"'),
                             ["its manifest (.manifest/run.json) is unreadable"]),
    "manifest-nested-deep": (lambda r: (r / ".manifest" / "run.json").write_text("[" * 100_000),
                             ["its manifest (.manifest/run.json) is unreadable"]),
    "report-not-json": (lambda r: (r / "privacy_report.json").write_text("{passed: yes"),
                        ["its privacy report (privacy_report.json) is unreadable"]),
}


@pytest.mark.parametrize("case", [*REFUSED, "fleet-shard-folder"])
def test_push_refuses_a_run_that_is_not_complete_and_passed(hub, run, tmp_path, case):
    if case == "fleet-shard-folder":
        run = _fleet_shard_folder(tmp_path)
        expected = ["no dataset card", "no privacy report", "the test split is not all written (0 of 1 shard files)"]
    else:
        breaks, expected = REFUSED[case]
        breaks(run)
    before = _digest(run)
    repo = f"{ALICE}/refused"
    result = gen_samples("push", run, "--repo", repo)
    line = assert_one_line_error(result, 2, f"{run} is not a complete run that passed its checks", *expected,
                                 "--resume", "--force")
    assert "local copy kept" not in line  # bad input: nothing was sent, the folder is named already
    assert hub.requests == [] and ("dataset", repo) not in hub.repos  # not even the token was checked
    assert _digest(run) == before


def test_the_python_api_refuses_too(hub, run):
    from generator.hub import LocalRunError, push_dataset

    _fail_privacy(run)
    with pytest.raises(LocalRunError, match="privacy check did not pass.*force"):
        push_dataset(run, f"{ALICE}/refused", token=ALICE_TOKEN)
    assert hub.requests == []


def test_a_complete_passed_run_pushes_without_warning(hub, run):
    # Guard against over-refusing: the writer's own output is what push must accept as it is.
    repo = f"{ALICE}/fine"
    result = gen_samples("push", run, "--repo", repo)
    assert result.rc == 0, result.output[-3000:]
    assert "warning" not in result.err.lower()
    assert shard_files(hub, repo) == SHARDS
    assert WARNING not in hub.read(repo, "README.md").decode()


@pytest.mark.parametrize("case", ["privacy-failed", "crashed-no-card-no-report"])
def test_force_pushes_with_a_warning_printed_and_on_the_card(hub, run, case):
    from huggingface_hub import DatasetCard

    breaks, expected = REFUSED[case]
    breaks(run)
    before = _digest(run)
    repo = f"{ALICE}/forced"
    result = gen_samples("push", run, "--repo", repo, "--force")
    assert result.rc == 0, result.output[-3000:]
    assert "Traceback" not in result.output and ALICE_TOKEN not in result.output
    printed = " ".join(result.err.split())
    assert "warning: pushing" in printed and "--force" in printed and all(e in printed for e in expected)
    assert shard_files(hub, repo) == SHARDS
    card = hub.read(repo, "README.md").decode()
    text = DatasetCard(card).text
    # Visible: the first thing of the card's text, naming what failed; no local path in it.
    assert text.lstrip().startswith(f"> **{WARNING}**"), text[:500]
    assert all(e in text for e in expected)
    assert str(run.parent) not in card
    assert DatasetCard(card).data["configs"]  # still a loadable card: datasets' YAML kept
    if case == "crashed-no-card-no-report":
        # The card is the one datasets wrote (there is none locally): pushing again keeps one warning.
        again = gen_samples("push", run, "--repo", repo, "--force")
        assert again.rc == 0, again.output[-3000:]
        assert hub.read(repo, "README.md").decode().count(WARNING) == 1
    else:
        assert "## Privacy" in text  # the run's own card, under the warning
    assert _digest(run) == before


# ---------------------------------------------------------------- item 4: tokens where they do not belong


@pytest.mark.parametrize("where", ["push-repo-bare", "push-repo-namespaced", "push-repo-suffixed", "generate-push",
                                   "push-dir"])
def test_a_token_given_as_repo_id_or_folder_is_refused_and_not_echoed(hub, run, tmp_path, where):
    out = tmp_path / "new-run"
    if where == "push-repo-bare":
        result = gen_samples("push", run, "--repo", FAKE_TOKEN)
    elif where == "push-repo-namespaced":
        result = gen_samples("push", run, "--repo", f"{ALICE}/{FAKE_TOKEN}")
    elif where == "push-repo-suffixed":
        result = gen_samples("push", run, "--repo", f"{ALICE}/{FAKE_TOKEN}-copy")
    elif where == "generate-push":
        result = gen_samples("--rows", "12", "--image-size", "32", "--quiet", "--out", out, "--push", FAKE_TOKEN)
    else:  # the token pasted where the folder goes
        result = gen_samples("push", tmp_path / FAKE_TOKEN, "--repo", f"{ALICE}/x")
    if where == "push-dir":
        assert_one_line_error(result, 2, "no local dataset at", "hf_***")
    else:
        flag = "--push" if where == "generate-push" else "--repo"
        assert_one_line_error(result, 2, f"{flag} looks like a Hugging Face token", "was not used", "HF_TOKEN")
    assert FAKE_TOKEN[3:15] not in result.output  # not even part of it
    assert hub.requests == [] and hub.repos == {}
    assert not out.exists()  # generate --push refused before writing anything


def test_the_python_api_refuses_a_token_as_repo_id_without_echoing_it(hub, run):
    from generator.hub import LocalRunError, push_dataset

    with pytest.raises(LocalRunError) as info:
        push_dataset(run, f"{ALICE}/{FAKE_TOKEN}", token=ALICE_TOKEN)
    assert "looks like a Hugging Face token" in str(info.value) and FAKE_TOKEN[3:15] not in str(info.value)
    assert hub.requests == [] and hub.repos == {}


def test_names_that_merely_contain_hf_are_still_repo_ids():
    from generator.hub import check_repo_id

    # Too short for a token, or not letters and digits all the way: refusing these would be a false alarm.
    for fine in (f"{ALICE}/hf_dataset", "hf_" + "a" * 29, f"{ALICE}/hf_{'a' * 20}_{'b' * 20}"):
        check_repo_id(fine)


@pytest.mark.parametrize("blank", [" ", "\n", " \t "], ids=["space", "newline", "spaces-and-tab"])
def test_a_blank_hf_token_is_no_token(hub, run, monkeypatch, blank):
    monkeypatch.setenv("HF_TOKEN", blank)  # and HF_HOME holds no saved login
    result = gen_samples("push", run, "--repo", f"{ALICE}/x")
    assert_one_line_error(result, 1, "no Hugging Face token found", "hf auth login", f"local copy kept at {run}")
    assert "contains your Hugging Face token" not in result.output
    assert hub.requests == []


@pytest.mark.parametrize("hf_token", ["blank-saved-login", "padded"])
def test_a_blank_or_padded_hf_token_still_pushes(hub, run, tmp_path, monkeypatch, hf_token):
    if hf_token == "blank-saved-login":  # as huggingface_hub does: a blank HF_TOKEN falls back to the login
        monkeypatch.setenv("HF_TOKEN", " ")
        (tmp_path / "hf-home").mkdir(exist_ok=True)
        (tmp_path / "hf-home" / "token").write_text(ALICE_TOKEN)
    else:  # pasted with its newline
        monkeypatch.setenv("HF_TOKEN", f" {ALICE_TOKEN}\n")
    repo = f"{ALICE}/x"
    result = gen_samples("push", run, "--repo", repo)
    assert result.rc == 0, result.output[-3000:]
    assert ALICE_TOKEN not in result.output
    assert shard_files(hub, repo) == SHARDS

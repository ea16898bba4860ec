"""Checks of a local run before anything is sent: a complete run that passed its checks, the shard
files of its splits, its card and reports (never holding the token), and the repo id it goes to."""
from __future__ import annotations

import json
import re
from pathlib import Path
from generator.hub.client import _TOKEN_LIKE, LocalRunError



# Files of a local run that go up with the card, besides the shards.
CARD_FILENAME = "README.md"
PRIVACY_FILENAME = "privacy_report.json"  # as generator.quality writes it (not imported: it pulls in numpy, PIL)
# The card links report.html and embeds its figures, so they travel with it (names as generator.report
# writes them, not imported: it pulls in PIL; tests/test_hub.py checks they agree).
REPORT_FILES = ("report.html", "report_categories.png", "report_prices.png", "report_fidelity.png", "report_colours.png")
ASSET_FILENAMES = ("contact_sheet.png", PRIVACY_FILENAME, "fidelity_report.json", "limits.json", *REPORT_FILES)


SPLIT_ORDER = ("train", "validation", "test")  # how splits are listed on the Hub; others follow by name
_SHARD_RE = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


# First line of the warning a forced push puts at the top of the card; finding it keeps a re-push from
# adding a second one.
FORCED_WARNING_TITLE = "> **Warning: this dataset failed gen-samples' checks and was pushed anyway with `--force`.**"


def _read_card_and_assets(local: Path, token: str) -> tuple[str, dict[str, bytes]]:
    """Our card and the files that go up with it, refused if any of them holds the token."""
    try:
        card = (local / CARD_FILENAME).read_text(encoding="utf-8") if (local / CARD_FILENAME).exists() else ""
        assets = {name: (local / name).read_bytes() for name in ASSET_FILENAMES if (local / name).exists()}
    except (OSError, UnicodeDecodeError) as err:
        raise LocalRunError(f"cannot read the card or reports in {local} ({err}): write them again with gen-samples") from None
    for name, content in [(CARD_FILENAME, card.encode()), *assets.items()]:
        if token.encode() in content:
            raise LocalRunError(f"{local / name} contains your Hugging Face token: remove it, then push again")
    return card, assets


def _local_splits(local: Path) -> dict[str, list[Path]]:
    """split -> its shard files, checked complete (a run still being written must not be pushed)."""
    if not local.is_dir():
        raise LocalRunError(f"no local dataset at {local}: run gen-samples to write one, or pass the folder it wrote")
    data = local / "data"
    splits: dict[str, list[Path]] = {}
    counts: dict[str, set[int]] = {}
    for path in sorted(data.glob("*.parquet")) if data.is_dir() else []:
        match = _SHARD_RE.match(path.name)
        if match:
            splits.setdefault(match["split"], []).append(path)
            counts.setdefault(match["split"], set()).add(int(match["count"]))
    if not splits:
        raise LocalRunError(
            f"no shards in {data} (expected data/<split>-00000-of-0000N.parquet): "
            f"is {local} a folder written by gen-samples?"
        )
    for split, files in splits.items():
        if len(counts[split]) != 1 or len(files) != counts[split].pop():
            raise LocalRunError(
                f"the {split} split in {data} is incomplete or mixes runs ({len(files)} shard files): "
                "finish the run with gen-samples --resume, then push"
            )
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return dict(sorted(splits.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _run_problems(local: Path, splits: dict[str, list[Path]]) -> list[str]:
    """Why ``local`` is not a complete run that passed its checks (empty when it is).

    Each reason is worded for the card of a forced push too, so it names files relative to the run,
    never a local path.
    """
    problems = []
    if not (local / CARD_FILENAME).is_file():
        problems.append(f"no dataset card ({CARD_FILENAME}): the run did not finish")
    report = _read_json(local / PRIVACY_FILENAME)
    if report is _MISSING:
        problems.append(f"no privacy report ({PRIVACY_FILENAME})")
    elif not isinstance(report, dict):
        problems.append(f"its privacy report ({PRIVACY_FILENAME}) is unreadable")
    elif report.get("passed") is not True:  # only a real JSON true: "false", 1 or null are not a pass
        problems.append(f'its privacy check did not pass ({PRIVACY_FILENAME} does not say "passed": true)')
    return problems + _manifest_problems(local, splits)


def _manifest_problems(local: Path, splits: dict[str, list[Path]]) -> list[str]:
    """Splits and shard files the run's manifest plans but ``data/`` lacks (a fleet machine's folder, a
    shard deleted), splits it does not plan, and shard files that do not match their record."""
    from generator.writer import MANIFEST_DIR, RUN_FILE, SPLITS, SplitPlan

    where = f"{MANIFEST_DIR}/{RUN_FILE}"
    params = _read_json(local / MANIFEST_DIR / RUN_FILE)
    if params is _MISSING:
        # Not laid out by gen-samples' writer (assembled by hand): the shard names _local_splits checked
        # are all there is to go by.
        return []
    numbers = [params.get(key) for key in ("rows", "test_rows", "rows_per_shard")] if isinstance(params, dict) else []
    if not (len(numbers) == 3 and all(type(n) is int for n in numbers)
            and 0 <= numbers[1] < numbers[0] and numbers[2] >= 1):
        return [f"its manifest ({where}) is unreadable"]
    plan = SplitPlan(num_rows=numbers[0], test_rows=numbers[1], rows_per_shard=numbers[2], seed=0)
    # Shard counts by arithmetic, not plan.shards: a hostile manifest could plan billions of names.
    planned = {s: -(-plan.split_rows(s) // plan.rows_per_shard) for s in SPLITS if plan.split_rows(s)}
    problems = []
    for split, count in planned.items():
        files = splits.get(split, [])
        # _local_splits made sure a split's files are all N of one N: N must be the planned count.
        if len(files) != count:
            problems.append(f"the {split} split is not all written ({len(files)} of {count} shard files)")
    problems += [f"data/ holds shard files of a split its manifest does not plan ({split})"
                 for split in splits if split not in planned]
    unmatched = 0
    for path in (p for files in splits.values() for p in files):
        record = _read_json(local / MANIFEST_DIR / f"{path.name}.json")
        if not isinstance(record, dict) or record.get("bytes") != path.stat().st_size:
            unmatched += 1  # the writer records a shard right after writing it: no record, not finished
    if unmatched:
        problems.append(f"{unmatched} shard files do not match their manifest records")
    return problems


_MISSING = object()  # _read_json of a file that is not there


def _read_json(path: Path):
    """The JSON in ``path``, ``_MISSING`` if there is no such file, None if it cannot be read or parsed."""
    if not path.is_file():
        return _MISSING
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
        return None


def _forced_warning(problems: list[str]) -> str:
    return (f"{FORCED_WARNING_TITLE}\n> It is not a complete run that passed its checks: {'; '.join(problems)}. "
            "Do not use or share it as a checked dataset.\n")


def _with_warning(card: str, warning: str) -> str:
    """``card`` with ``warning`` first in its markdown text (after the YAML header), at most once."""
    if FORCED_WARNING_TITLE in card:
        return card
    header = re.match(r"---\n.*?\n---\n", card, flags=re.S)
    cut = header.end() if header else 0
    body = card[cut:].lstrip("\n")
    return f"{card[:cut]}\n{warning}\n{body}"


def _count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def check_repo_id(repo_id: str, flag: str | None = None) -> None:
    """Refuse (``LocalRunError``) a repo id the Hub would not take, or one that looks like a token.

    ``flag`` names the option in the message (the CLI checks ``--repo`` / ``--push`` before any work).
    A token-shaped id is never used (it would create a public repo named after the token) nor echoed.
    """
    if _TOKEN_LIKE.search(repo_id):
        raise LocalRunError(
            f"{flag or 'the repo id'} looks like a Hugging Face token (hf_ and 30 or more letters and digits), so "
            "it was not used: name the repo, e.g. <user>/<name>, and give the token through HF_TOKEN or "
            "`hf auth login`; revoke it at https://huggingface.co/settings/tokens if others may have seen it"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id if "/" in repo_id else f"user/{repo_id}")
    except HFValidationError:
        raise LocalRunError(
            f"{flag + ' ' if flag else ''}{repo_id!r} is not a valid repo id: use <user or org>/<name> with "
            "letters, digits, '-', '_' or '.'"
        ) from None


def _full_repo_id(repo_id: str | None, user: str, local: Path, splits: dict[str, list[Path]]) -> str:
    """The repo to push to: as given, under the user when bare, or named after the run."""
    if repo_id is not None:
        return repo_id if "/" in repo_id else f"{user}/{repo_id}"
    import pyarrow.parquet as pq

    first = pq.read_table(splits[next(iter(splits))][0], columns=["brand", "country_code"]).slice(0, 1).to_pylist()
    if not first:
        raise LocalRunError(f"{local} has no rows: nothing to push")
    rows = sum(_count_rows(files) for files in splits.values())
    return f"{user}/{_slug(_default_name(first[0]['brand'], first[0]['country_code'], rows))}"


def _default_name(brand: str, country: str, rows: int) -> str:
    return f"{brand}-{country}-{rows}-rows"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:96] or "dataset"

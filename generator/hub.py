"""Push a generated dataset (already written locally) to the Hugging Face Hub.

The local run is the source of truth: we only read it. The push is two commits:

1. ``DatasetDict.push_to_hub`` uploads the parquet shards (images embedded) and writes a card whose
   YAML holds ``configs`` / ``dataset_info`` for the shards it uploaded;
2. one commit with our card (its YAML merged with the one ``datasets`` wrote), the contact sheet and
   the privacy / fidelity reports.

Only a complete run that passed its checks is pushed: its card, a privacy report saying
``"passed": true`` and every shard file its manifest plans. ``force=True`` (``--force``) pushes any other
anyway, with a warning printed and at the top of the card on the Hub.

Running the same push again after a failure finishes the job: ``push_to_hub`` rewrites identical
shards (the Hub already has their bytes, so nothing is re-uploaded), deletes stale ones under
``data/`` and the second commit is repeated. Every failure becomes a one-line ``PushError`` that says
what to do; the token never appears in it.

Knobs for slow networks (and fast tests): ``GEN_SAMPLES_HUB_TIMEOUT`` (seconds without an answer
before a request fails, default 60), ``GEN_SAMPLES_HUB_RETRIES`` (tries on rate limiting / busy Hub,
default 4) and ``GEN_SAMPLES_HUB_RETRY_WAIT`` (first backoff in seconds, doubled each time, default 2).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from generator.schema import IMAGE_COLUMN

T = TypeVar("T")

# Files of a local run that go up with the card, besides the shards.
CARD_FILENAME = "README.md"
PRIVACY_FILENAME = "privacy_report.json"  # as generator.quality writes it (not imported: it pulls in numpy, PIL)
ASSET_FILENAMES = ("contact_sheet.png", PRIVACY_FILENAME, "fidelity_report.json", "limits.json")
# Keys of the card's YAML that describe the shards on the Hub: datasets writes them, we keep its version.
DATASETS_OWNED_KEYS = ("configs", "dataset_info")
# Statuses worth waiting for: rate limiting and a busy or restarting Hub.
RETRY_STATUSES = (429, 502, 503, 504)
CONFLICT_STATUSES = (409, 412)
SPLIT_ORDER = ("train", "validation", "test")  # how splits are listed on the Hub; others follow by name
_SHARD_RE = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
_LOGIN_HINT = "run `hf auth login` (formerly `huggingface-cli login`) or set HF_TOKEN"
# Something shaped like a Hugging Face token (``hf_`` + ~34 letters and digits). 30+ catches every real
# one while no sensible repo or folder name matches; used to refuse and to redact, never to authenticate.
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")
# First line of the warning a forced push puts at the top of the card; finding it keeps a re-push from
# adding a second one.
FORCED_WARNING_TITLE = "> **Warning: this dataset failed gen-samples' checks and was pushed anyway with `--force`.**"


class PushError(Exception):
    """A push that failed: one line saying what failed and what to do. Never contains the token."""

    def __init__(self, message: str):
        # Token-shaped text is redacted too: a token pasted as the folder or repo name is never echoed.
        super().__init__(_TOKEN_LIKE.sub("hf_***", " ".join(str(message).split())))


class LocalRunError(PushError):
    """The folder to push is not a complete gen-samples run: bad input, nothing was sent."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying when the Hub rate-limits us or is busy."""

    timeout_s: float = 60.0  # a request that gets no answer for this long fails
    attempts: int = 4  # tries per step on 429 / 502 / 503 / 504
    first_wait_s: float = 2.0  # doubled after each try; a Retry-After header wins (capped at max_wait_s)
    max_wait_s: float = 60.0

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise PushError(f"{name}={raw!r} is not a number: set it to a number of seconds or unset it") from None

        return cls(
            timeout_s=number("GEN_SAMPLES_HUB_TIMEOUT", cls.timeout_s),
            attempts=max(1, int(number("GEN_SAMPLES_HUB_RETRIES", cls.attempts))),
            first_wait_s=number("GEN_SAMPLES_HUB_RETRY_WAIT", cls.first_wait_s),
        )


def push_dataset(
    local_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    private: bool = False,
    token: str | None = None,
    max_shard_size: str | int = "500MB",
    num_proc: int | None = None,
    console=None,
    force: bool = False,
) -> str:
    """Push the run in ``local_dir`` to the dataset repo ``repo_id`` and return the dataset's URL.

    ``repo_id`` defaults to ``<your user>/<brand>-<country>-<rows>-rows``; a bare name goes under your
    user. ``private`` only applies when the repo is created. The token comes from ``token``, else
    ``HF_TOKEN``, else the saved login; the endpoint from ``HF_ENDPOINT``.

    A folder that is not a complete run that passed its checks is refused (``LocalRunError``, nothing
    sent) unless ``force``: then it is pushed with a warning printed and at the top of its card.
    """
    console = console if console is not None else _default_console()
    local = Path(local_dir)
    if repo_id is not None:
        check_repo_id(repo_id)  # first: a token pasted as the repo id is refused whatever else is wrong
    splits = _local_splits(local)
    problems = _run_problems(local, splits)
    token = _resolve_token(token)
    card, assets = _read_card_and_assets(local, token)  # a token in them is refused first, --force or not
    if problems and not force:
        raise LocalRunError(
            f"{local} is not a complete run that passed its checks: {'; '.join(problems)}. Finish it with "
            "`gen-samples --resume` or generate it again, or pass --force to push it anyway with a warning in its card"
        )
    warning = _forced_warning(problems) if problems else None
    if problems:
        from rich.markup import escape

        _say(console, f"[yellow]warning:[/] pushing {escape(str(local))} with --force although "
                      f"{escape('; '.join(problems))}; its card on the Hub will say so")
    policy = RetryPolicy.from_env()
    endpoint = _endpoint()
    api = _api(endpoint, token)
    where = _Where(step="reading the local dataset", repo_id=repo_id or "the Hub", local=local)
    scratch_dir = tempfile.TemporaryDirectory(prefix="gen-samples-push-")
    with _one_line_errors(token, endpoint, policy, where), scratch_dir as scratch:
        rows = {name: _count_rows(files) for name, files in splits.items()}
        where.step = "checking your token"
        user = _retrying(lambda: api.whoami(token=token)["name"], policy, console, where.step)
        repo_id = where.repo_id = _full_repo_id(repo_id, user, local, splits)
        counts = ", ".join(f"{name}: {n}" for name, n in rows.items())
        _say(console, f"Pushing {sum(rows.values())} rows ({counts}) to {endpoint}/datasets/{repo_id}")

        where.step = "reading the local dataset"
        dataset = _load_local(splits, Path(scratch) / "datasets-cache")
        where.step = "uploading the shards"
        push_shards = lambda: dataset.push_to_hub(  # noqa: E731
            repo_id,
            private=private,
            token=token,
            max_shard_size=max_shard_size,
            num_proc=num_proc,
            embed_external_files=True,
            commit_message="Upload dataset shards",
        )
        _retrying(push_shards, policy, console, where.step, conflict_retries=1)
        where.step = "uploading the dataset card"
        commit_card = lambda: _commit_card_and_assets(  # noqa: E731
            api, repo_id, card, assets, token, Path(scratch) / "hub-cache", console, warning
        )
        _retrying(commit_card, policy, console, where.step)
        if private and not api.repo_info(repo_id, repo_type="dataset").private:
            _say(console, f"[yellow]note:[/] {repo_id} already existed and is public: --private only applies to new repos")
    url = f"{endpoint}/datasets/{repo_id}"
    _say(console, f"Pushed to {url}")
    return url


def default_repo_id(brand: str, country: str, rows: int, token: str | None = None) -> str:
    """``<whoami user>/<brand>-<country>-<rows>-rows``, slugified: the name a push gets by default."""
    token = _resolve_token(token)
    policy = RetryPolicy.from_env()
    endpoint = _endpoint()
    api = _api(endpoint, token)
    where = _Where(step="checking your token", repo_id="the Hub")
    with _one_line_errors(token, endpoint, policy, where):
        user = _retrying(lambda: api.whoami(token=token)["name"], policy, None, where.step)
    return f"{user}/{_slug(_default_name(brand, country, rows))}"


def merge_card(ours: str, from_datasets: str) -> str:
    """Our card (YAML + markdown) with the ``configs`` / ``dataset_info`` that ``datasets`` wrote.

    ``datasets`` knows the shards it uploaded, so its keys win; any other key it wrote that we do not
    set is kept too, and the markdown body is ours.
    """
    from huggingface_hub import DatasetCard

    card = DatasetCard(ours, ignore_metadata_errors=True)
    theirs = DatasetCard(from_datasets, ignore_metadata_errors=True).data.to_dict()
    for key, value in theirs.items():
        if key in DATASETS_OWNED_KEYS or card.data.get(key) is None:
            card.data[key] = value
    return str(card)


# ---------------------------------------------------------------- steps


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


def _commit_card_and_assets(
    api, repo_id: str, ours: str, assets: dict[str, bytes], token: str, cache_dir: Path, console,
    warning: str | None = None,
) -> None:
    """One commit: our card merged with datasets' YAML, plus the contact sheet and the reports.

    ``warning`` (a forced push) goes at the top of the card's text, after the merge: a run with no card
    of its own gets it on the card ``datasets`` wrote.

    The commit names the head it was built from, so a concurrent change to the card makes it fail
    (412) instead of silently dropping that change; we then rebuild on the new head once.
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in (1, 2):
        head = api.repo_info(repo_id, repo_type="dataset", token=token).sha
        hub_card_path = api.hf_hub_download(
            repo_id, CARD_FILENAME, repo_type="dataset", revision=head, token=token, cache_dir=cache_dir
        )
        hub_card = Path(hub_card_path).read_text(encoding="utf-8")
        card = merge_card(ours, hub_card) if ours else hub_card
        if warning:
            card = _with_warning(card, warning)
        operations = [CommitOperationAdd(CARD_FILENAME, card.encode())]
        operations += [CommitOperationAdd(name, content) for name, content in assets.items()]
        try:
            api.create_commit(
                repo_id,
                operations,
                commit_message="Add dataset card, contact sheet and reports",
                repo_type="dataset",
                token=token,
                parent_commit=head,
            )
            return
        except HfHubHTTPError as err:
            if _status(err) not in CONFLICT_STATUSES or attempt == 2:
                raise
            _say(console, f"[yellow]{repo_id} changed while we pushed; rebuilding the card on the new head[/]")


def _retrying(fn: Callable[[], T], policy: RetryPolicy, console, step: str, conflict_retries: int = 0) -> T:
    """Call ``fn``; wait and retry on rate limiting or a busy Hub, retry conflicts ``conflict_retries`` times.

    huggingface_hub already retries uploads and some metadata calls on 429/5xx; this covers the calls
    it makes only once (whoami, repo info, commits) and gives every step the same patience.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            status = _status(err)
            if status in CONFLICT_STATUSES and conflict_retries > 0:
                conflict_retries -= 1
                _say(console, f"[yellow]conflicting commit while {step}; retrying on the new head[/]")
                continue
            attempt += 1
            if status not in RETRY_STATUSES or attempt >= policy.attempts:
                raise
            wait = min(policy.max_wait_s, _retry_after(err) or policy.first_wait_s * 2 ** (attempt - 1))
            reason = "rate limited" if status == 429 else f"Hub busy ({status})"
            _say(console, f"[yellow]{reason} while {step}; retry {attempt}/{policy.attempts - 1} in {wait:g}s[/]")
            time.sleep(wait)


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message, soft_wrap=True)


def _load_local(splits: dict[str, list[Path]], cache_dir: Path):
    """The local shards as a DatasetDict, with ``image`` decoded as the ``Image`` feature."""
    import datasets

    if datasets.config.HF_ENDPOINT.rstrip("/") != _endpoint():
        # Both libraries read HF_ENDPOINT when imported: shards and card would land on different Hubs.
        raise PushError(
            f"HF_ENDPOINT changed between imports (datasets: {datasets.config.HF_ENDPOINT}, huggingface_hub: "
            f"{_endpoint()}): set it before starting Python"
        )
    data_files = {name: [str(p) for p in files] for name, files in splits.items()}
    dataset = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(cache_dir))
    if IMAGE_COLUMN in dataset.column_names[next(iter(dataset))] and not isinstance(
        dataset[next(iter(dataset))].features[IMAGE_COLUMN], datasets.Image
    ):
        # Shards written by pyarrow alone carry the {bytes, path} struct without the feature metadata.
        dataset = dataset.cast_column(IMAGE_COLUMN, datasets.Image())
    return dataset


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


# ---------------------------------------------------------------- plumbing


def _api(endpoint: str, token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="gen-samples")


def _endpoint() -> str:
    # Read from huggingface_hub, not datasets: failing early (no token, no network) stays cheap.
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _resolve_token(token: str | None) -> str:
    # Stripped, as huggingface_hub reads HF_TOKEN: a blank one (HF_TOKEN=" ") is no token, not a " " to
    # look for in the card, and a pasted trailing newline is not part of the token.
    for given in (token, os.environ.get("HF_TOKEN")):
        if given and given.strip():
            return given.strip()
    from huggingface_hub import get_token

    saved = get_token()
    if not saved:
        raise PushError(f"no Hugging Face token found: {_LOGIN_HINT}, then push again")
    return saved


def _default_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@dataclasses.dataclass
class _Where:
    """What a push was doing, for the error message."""

    step: str
    repo_id: str
    local: Path | None = None


@contextlib.contextmanager
def _one_line_errors(token: str, endpoint: str, policy: RetryPolicy, where: _Where) -> Iterator[None]:
    """Turn whatever goes wrong while talking to the Hub into a one-line PushError without the token."""
    try:
        with _request_timeout(policy.timeout_s):
            yield
    except PushError as err:
        raise type(err)(_redact(str(err), token)) from None
    except Exception as err:
        message = _explain(err, where=where, endpoint=endpoint, policy=policy)
        raise PushError(_redact(message, token)) from None


@contextlib.contextmanager
def _request_timeout(seconds: float) -> Iterator[None]:
    """Give every huggingface_hub request that has no timeout of its own one of ``seconds``.

    huggingface_hub's client has no default timeout and many of its calls pass ``timeout=None``, so an
    endpoint that stops answering would hang the push forever. We install, through the public
    ``set_client_factory``, a client whose transport fills in the missing timeouts, and put the
    previous factory back afterwards. (Worker processes of ``num_proc`` use their own default client.)
    """
    from huggingface_hub.utils import _http, get_session, set_client_factory

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if previous is None:  # unknown huggingface_hub internals: keep its behaviour rather than guess
        yield
        return
    # The HTTP library huggingface_hub is built on: httpx for 1.x, httpx2 for 2.x.
    httpx = importlib.import_module(type(get_session()).__module__.split(".")[0])
    hooks = get_session().event_hooks  # keep its request hooks (offline mode, request ids)

    class DefaultTimeout(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request):
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                key: seconds if given.get(key) is None else given[key] for key in ("connect", "read", "write", "pool")
            }
            return self.inner.handle_request(request)

        def close(self) -> None:
            self.inner.close()

    set_client_factory(lambda: httpx.Client(event_hooks=hooks, follow_redirects=True, transport=DefaultTimeout()))
    try:
        yield
    finally:
        set_client_factory(previous)


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what caused it (datasets and huggingface_hub wrap the HTTP errors we care about)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is(err: BaseException, *class_names: str) -> bool:
    return any(cls.__name__ in class_names for cls in type(err).__mro__)


def _status(err: BaseException) -> int | None:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return int(response.status_code)
    return None


def _retry_after(err: BaseException) -> float | None:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None:
            value = response.headers.get("Retry-After", "")
            return float(value) if value.strip().isdigit() else None
    return None


def _server_message(err: BaseException) -> str:
    for cause in _causes(err):
        response = getattr(cause, "response", None)
        if response is not None:
            return response.headers.get("X-Error-Message", "")
    return ""


def _explain(err: BaseException, *, where: _Where, endpoint: str, policy: RetryPolicy) -> str:
    """One line for a failed push: what failed, and what the user can do about it."""
    step, repo_id = where.step, where.repo_id
    host = endpoint.split("://", 1)[-1].split("/")[0]
    again = "then push again"
    if "/" in repo_id and where.local is not None:
        again = f"then run `gen-samples push {where.local} --repo {repo_id}` again"
    status = _status(err)
    causes = list(_causes(err))
    if any(_is(c, "LocalTokenNotFoundError") for c in causes):
        return f"no Hugging Face token found: {_LOGIN_HINT}, then push again"
    if any(_is(c, "OfflineModeIsEnabled") for c in causes):
        return f"HF_HUB_OFFLINE is set, so nothing can be pushed: unset it, {again}"
    if status == 401:
        return (
            f"the Hub at {host} rejected your token (401 Unauthorized) while {step}: it is invalid or expired; "
            f"create a new one at https://huggingface.co/settings/tokens and {_LOGIN_HINT}"
        )
    if status == 403:
        return (
            f"your token may not write to dataset {repo_id} (403 Forbidden) while {step}: the repo belongs to "
            f"another user or org, or the token is read-only; push to a repo under your own user "
            f"(--repo <your user>/<name>) or use a token with write access"
        )
    if status == 404 and any(_is(c, "RepositoryNotFoundError") for c in causes):
        return (
            f"dataset {repo_id} not found or not accessible with your token (404) while {step}: "
            f"check the repo id and the token's permissions"
        )
    if status in CONFLICT_STATUSES:
        return (
            f"someone else committed to {repo_id} while we pushed ({status} conflict, still there after a retry): "
            f"wait for the other push to finish, {again}"
        )
    if status == 429:
        return (
            f"the Hub rate-limited us (429 Too Many Requests) after {policy.attempts} tries while {step}: "
            f"wait a few minutes, {again}"
        )
    if status is not None and status >= 500:
        return f"the Hub had a server error ({status}) while {step}: try again later; {again}"
    timeouts = ("TimeoutException", "TimeoutError", "ReadTimeout", "ConnectTimeout")
    if any(_is(c, *timeouts) or isinstance(c, socket.timeout) for c in causes):
        return (
            f"the Hub at {host} did not answer within {policy.timeout_s:g}s while {step}: check your network "
            f"or set GEN_SAMPLES_HUB_TIMEOUT to wait longer, {again}"
        )
    if any(_is(c, "ConnectError", "ConnectionError", "NetworkError", "OSError") for c in causes):
        text = " ".join(str(c) for c in causes).lower()
        dns = ("name or service not known", "name resolution", "nodename nor servname", "getaddrinfo")
        if any(isinstance(c, socket.gaierror) for c in causes) or any(s in text for s in dns):
            return (
                f"cannot resolve {host} (DNS lookup failed: no network?) while {step}: "
                f"check your connection and HF_ENDPOINT, {again}"
            )
        if "refused" in text:
            return (
                f"connection refused by {host} while {step}: the Hub is unreachable "
                f"(no network, or a wrong HF_ENDPOINT); {again}"
            )
        if "reset" in text or "disconnected" in text or "closed" in text:
            return f"the connection to {host} dropped while {step}: check your network, {again}"
    if status is not None:
        detail = _server_message(err) or type(err).__name__
        return f"the Hub answered {status} while {step}: {detail}; {again}"
    if any(_is(c, "ValueError") and "metadata" in str(c).lower() for c in causes):
        reason = str(err).splitlines()[-1]
        return f"the dataset card's YAML header was refused while {step}: {reason}; fix README.md, {again}"
    first_line = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"push to {repo_id} failed while {step}: {type(err).__name__}: {first_line}"


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _default_name(brand: str, country: str, rows: int) -> str:
    return f"{brand}-{country}-{rows}-rows"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:96] or "dataset"

"""The push: the shards through ``datasets``, then one commit with our card (merged with the YAML
``datasets`` wrote), the contact sheet and the reports."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from generator.hub.client import (CONFLICT_STATUSES, LocalRunError, PushError, RetryPolicy, _api, _default_console,
                                  _endpoint, _one_line_errors, _resolve_token, _retrying, _say, _status, _Where)
from generator.hub.local import (CARD_FILENAME, _count_rows, _default_name, _forced_warning, _full_repo_id,
                                 _local_splits, _read_card_and_assets, _run_problems, _slug, _with_warning,
                                 check_repo_id)
from generator.schema import IMAGE_COLUMN


# Keys of the card's YAML that describe the shards on the Hub: datasets writes them, we keep its version.
DATASETS_OWNED_KEYS = ("configs", "dataset_info")


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

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

The package: :mod:`.local` (checks of the local run), :mod:`.push` (the two commits) and :mod:`.client`
(token, endpoint, retries, timeouts, one-line errors).
"""
from __future__ import annotations

from generator.hub.client import CONFLICT_STATUSES, RETRY_STATUSES, LocalRunError, PushError, RetryPolicy
from generator.hub.local import (ASSET_FILENAMES, CARD_FILENAME, FORCED_WARNING_TITLE, PRIVACY_FILENAME, SPLIT_ORDER,
                                 check_repo_id)
from generator.hub.push import DATASETS_OWNED_KEYS, default_repo_id, merge_card, push_dataset

__all__ = ["ASSET_FILENAMES", "CARD_FILENAME", "CONFLICT_STATUSES", "DATASETS_OWNED_KEYS", "FORCED_WARNING_TITLE",
           "PRIVACY_FILENAME", "RETRY_STATUSES", "SPLIT_ORDER", "LocalRunError", "PushError", "RetryPolicy",
           "check_repo_id", "default_repo_id", "merge_card", "push_dataset"]

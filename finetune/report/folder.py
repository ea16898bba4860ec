"""Read what a finished ``run-finetune`` folder holds, for its report: the settings (config.json), the
evaluation (metrics.json, predictions.jsonl: one line a test row, ``index`` its position in the test split),
the training log (train_log.jsonl), and the test images from the dataset folder the run used.

Metrics and predictions are required (a run that never finished has no report); a missing or damaged
training log leaves the curves out, and a dataset that cannot be reached leaves the gallery text-only,
each with a line saying why.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, LOG_FILE = "config.json", "metrics.json", "predictions.jsonl", "train_log.jsonl"
THUMB_PX = 96            # thumbnails are at most this wide and high
THUMBS_MAX = 2_000       # test rows past this many are shown without their image (the page stays small)


class RunReportError(ValueError):
    """A folder that holds no finished run; ``str(err)`` is one line with the fix."""


@dataclass
class RunFolder:
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    log: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)           # what was left out, and why
    thumbs: dict[int, str] = field(default_factory=dict)     # test row index -> data: URI of its thumbnail
    images_note: str = ""                                     # why the gallery has no (or not every) image


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunReportError(f"{path.parent} has no {path.name}: give the folder of a finished run-finetune run "
                             f"(its {what} is written when the run ends)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunReportError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("a line is not a JSON object")
            rows.append(row)
    return rows


def read_run(folder: str | Path, *, images: bool = True) -> RunFolder:
    """The run in ``folder``; ``images``: also the thumbnails of the evaluated test rows."""
    path = Path(folder)
    if not path.is_dir():
        raise RunReportError(f"{folder} is not a folder; give the folder a run-finetune run wrote (its --out)")
    metrics = _json_file(path / METRICS_FILE, "evaluation")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("model"), dict):
        raise RunReportError(f"{path / METRICS_FILE} holds no evaluation (no \"model\" figures); rerun the evaluation")
    config = _json_file(path / CONFIG_FILE, "settings") if (path / CONFIG_FILE).exists() else {}
    try:
        predictions = _jsonl(path / PREDICTIONS_FILE)
    except FileNotFoundError:
        raise RunReportError(f"{path} has no {PREDICTIONS_FILE}: give the folder of a finished run") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunReportError(f"cannot read {path / PREDICTIONS_FILE}: {str(err).splitlines()[0]}") from None
    run = RunFolder(path, config if isinstance(config, dict) else {}, metrics, predictions)
    try:
        run.log = _jsonl(path / LOG_FILE)
    except FileNotFoundError:
        run.notes.append(f"no {LOG_FILE}: no training curves")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        run.notes.append(f"{LOG_FILE} unreadable ({str(err).splitlines()[0]}): no training curves")
    if images:
        run.thumbs, run.images_note = test_thumbnails(run)
    return run


def test_thumbnails(run: RunFolder) -> tuple[dict[int, str], str]:
    """Thumbnails of the evaluated test rows, read from the run's dataset as the run read it (same split,
    same order), and a note when some or all are missing. A row whose title differs from the prediction's
    truth means the dataset changed since the run: no images then."""
    dataset = run.config.get("dataset")
    if not dataset:
        return {}, "the run's config.json names no dataset"
    if not Path(str(dataset)).expanduser().is_dir():
        return {}, (f"the run's dataset {dataset!r} is not a folder here (a Hub id, or moved): images are shown "
                    "only from a local dataset folder")
    try:
        test = _test_split(str(dataset), run.config)
    except Exception as err:  # noqa: BLE001 - any failure to read the images leaves the gallery text-only
        return {}, f"cannot read the test images of {dataset!r}: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    thumbs, unreadable = {}, 0
    for p in run.predictions[:THUMBS_MAX]:
        i = p.get("index")
        if not isinstance(i, int) or not 0 <= i < len(test):
            return {}, f"prediction index {i!r} is not a row of the test split of {dataset!r}: no images"
        row = test[i]
        if row["title"] != p.get("true_title"):
            return {}, f"test row {i} of {dataset!r} is not the row evaluated (the dataset changed since the run): no images"
        uri = _thumbnail(row["image"])
        unreadable += uri is None
        if uri is not None:
            thumbs[i] = uri
    notes = []
    if unreadable:
        notes.append(f"{unreadable} image(s) could not be decoded")
    if len(run.predictions) > THUMBS_MAX:
        notes.append(f"images for the first {THUMBS_MAX:,} of {len(run.predictions):,} rows")
    return thumbs, "; ".join(notes)


def _test_split(dataset: str, config: dict[str, Any]):
    from finetune.data import load_splits  # deferred: datasets

    test = load_splits(dataset, seed=int(config.get("seed") or 0))["test"]
    limit = config.get("max_eval_samples")
    if isinstance(limit, int) and limit < len(test):
        test = test.select(range(limit))
    return test.select_columns(["title", "image"])


def _thumbnail(image: Any) -> str | None:
    from PIL import Image

    data = image.get("bytes") if isinstance(image, dict) else None
    if data is None and isinstance(image, dict) and image.get("path"):
        try:
            data = Path(image["path"]).read_bytes()
        except OSError:
            return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a broken image is a tile without a picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

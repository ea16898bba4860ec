"""The report over a finished dataset (``privacy_report``), its verdict and failure message, and its
section of the dataset card."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from generator.privacy.guard import OFF_ADVICE, PrivacyGuard, _reuse
from generator.privacy.measures import (_content_key, _identifier_hits, _image_bytes, _price_key, _stats,
                                        hash_distances, normalise_title, phash_pair, row_pii)
from generator.sources import SourceCatalog


def privacy_report(rows: Any, source: SourceCatalog | None, level: str = "strict",
                   rejections: Mapping[str, int] | None = None, rows_dropped: int = 0,
                   num_proc: int = 1) -> dict[str, Any]:
    """Privacy measures of a generated dataset against its source (or alone when ``source`` is None).

    ``rows``: an iterable of row dicts, a ``datasets.Dataset`` / ``DatasetDict``, an Arrow table, or a
    folder of parquet shards. ``rejections``: reason -> count of attempts the writer regenerated.
    ``num_proc`` > 1 scans the shards of a folder in that many processes (hashing images is the cost).
    """
    guard = PrivacyGuard(source, level)
    t = guard.thresholds
    files = _shard_files(rows) if isinstance(rows, (str, Path)) else None
    if files is not None and num_proc > 1 and len(files) > 1:
        import multiprocessing as mp
        from contextlib import ExitStack
        from functools import partial

        from generator.interrupts import ignore_sigint_in_worker, sigint_held

        # fork: the guard (and the source's images in it) is inherited, not pickled per task. Workers
        # leave Ctrl-C to the parent alone (a worker would print a KeyboardInterrupt traceback).
        with ExitStack() as stack:
            with sigint_held():  # a Ctrl-C meanwhile is raised on leaving, and the stack terminates the pool
                pool = stack.enter_context(
                    mp.get_context("fork").Pool(min(num_proc, len(files)), initializer=ignore_sigint_in_worker))
            parts = pool.map(partial(_scan, guard=guard), [[f] for f in files])
    else:
        parts = [_scan(files if files is not None else rows, guard)]
    scan = _Scan.merge(parts)
    n = scan.n
    hashes_a = np.array(scan.hashes, dtype=np.uint64)
    mirrors_a = np.array(scan.mirrors, dtype=np.uint64)
    report: dict[str, Any] = {
        "level": level, "rows": n, "source": source.origin if source is not None else None,
        "thresholds": asdict(t) | {"targets": guard.targets},
        "identifiers": {"rows_with_source_identifier": scan.id_count, "by_column": dict(scan.id_rows)},
        "pii": {"rows": scan.pii_count, "by_kind": dict(scan.pii_rows),
                "method": "regex for emails and phone numbers (9-15 digits with separators); names: a first "
                          "name followed by a last name from Faker's en_US lists, or an honorific and a "
                          "last name, minus a stoplist of product words"},
        "near_duplicate_images": _near_duplicates(hashes_a, mirrors_a, t.near_duplicate_bits),
        "regenerated": {"attempts_rejected": int(sum((rejections or {}).values())),
                        "by_reason": dict(rejections or {}), "rows_dropped": int(rows_dropped)},
    }
    if source is not None and n:
        meta_dcr = guard.metadata_dcr(scan.metas)
        img_dcr = guard.image_dcr(hashes_a, mirrors_a) if len(hashes_a) else np.zeros(0)
        report["exact_copies"] = {"rows": scan.exact, "row_rate": scan.exact / n,
                                  "title_price_pairs": scan.title_price, "title_price_rate": scan.title_price / n}
        report["metadata_dcr"] = _vs_baseline(meta_dcr, guard.baseline["metadata_dcr"])
        report["image_dcr_bits"] = _vs_baseline(img_dcr, guard.baseline["image_dcr_bits"])
    report["passed"] = _passed(report)
    if not report["passed"]:
        report["failure"] = _failure(report, len(source.rows) if source is not None else None)
    return report


def _failure(report: Mapping[str, Any], source_rows: int | None) -> str:
    """Why a report did not pass, with its numbers, and what would pass: one line for the terminal and JSON."""
    found: list[str] = []
    ids = report["identifiers"]["rows_with_source_identifier"]
    if ids:
        found.append(f"{ids} rows hold a source identifier")
    kinds = set(report["thresholds"]["pii_kinds"]) | {"email", "phone"}
    pii = {k: v for k, v in report["pii"]["by_kind"].items() if k in kinds and v}
    if pii:
        found.append("rows hold personal data (" + ", ".join(f"{k}: {v}" for k, v in sorted(pii.items())) + ")")
    ex = report.get("exact_copies")
    if ex and (ex["rows"] or ex["title_price_pairs"]):
        found.append(f"{ex['rows']} rows copy a source row and {ex['title_price_pairs']} its (title, full price)")
    close = []
    for key, what, unit in (("metadata_dcr", "metadata", ""), ("image_dcr_bits", "image", " bits")):
        d = report.get(key) or {}
        g, b = d.get("generated", {}), d.get("source_baseline", {})
        stats = ["p5"] + (["median"] if report["level"] == "strict" else [])
        for stat in stats:
            if d.get(f"{stat}_at_least_baseline") is False:
                close.append(f"{what} distance to the source {stat} {g[stat]:g}{unit} "
                             f"< the source's own {b[stat]:g}{unit}")
    if close:
        share = (report.get("image_dcr_bits") or {}).get("share_below_baseline_p5")
        found.append("generated rows sit closer to the source than its rows sit to each other ("
                     + "; ".join(close) + (f"; {share:.0%} of images below the source's p5" if share else "") + ")")
    what = "; ".join(found) or "a check did not pass"
    off = "" if report["level"] == "off" else f", or {OFF_ADVICE}"  # a report of an unguarded run: already off
    if close and source_rows is not None and not (ids or pii or (ex and ex["rows"])):
        # The share of close rows does not depend on how many rows are made, so fewer --rows would not help.
        return (f"{what}; the baseline comes from {_reuse(source_rows, report['rows'])}. What would pass: a source "
                f"with more rows (its rows then sit closer to each other, which lowers the bar){off}; fewer --rows "
                "would not help, as the share of close rows does not depend on the row count")
    return f"{what}; fix what the rows are made from (source or taxonomy){off.replace(', or ', ', or use ')}"


def failure_message(run_dir: str | Path, filename: str = "privacy_report.json") -> str:
    """The one-line error for a run whose privacy report did not pass (``gen-samples`` prints it)."""
    import json

    path = Path(run_dir) / filename
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        level, failure = report["level"], report.get("failure") or "a check did not pass"
    except (OSError, ValueError, KeyError, TypeError):
        level, failure = "", "the report could not be read"
    return (f"the {level + ' ' if level else ''}privacy check failed: {failure}; see {path} and do not share "
            "this dataset as it is")


@dataclass
class _Scan:
    """What one pass over some rows found; parts from several processes merge in order."""

    n: int = 0
    exact: int = 0
    title_price: int = 0
    id_count: int = 0
    pii_count: int = 0
    id_rows: Counter = field(default_factory=Counter)
    pii_rows: Counter = field(default_factory=Counter)
    metas: list = field(default_factory=list)
    hashes: list = field(default_factory=list)
    mirrors: list = field(default_factory=list)

    @classmethod
    def merge(cls, parts: list["_Scan"]) -> "_Scan":
        out = cls()
        for p in parts:
            out.n += p.n
            out.exact += p.exact
            out.title_price += p.title_price
            out.id_count += p.id_count
            out.pii_count += p.pii_count
            out.id_rows.update(p.id_rows)
            out.pii_rows.update(p.pii_rows)
            out.metas += p.metas
            out.hashes += p.hashes
            out.mirrors += p.mirrors
        return out


def _shard_files(folder: str | Path) -> list[Path]:
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        raise ValueError(f"{folder}: no parquet shards found; point at the dataset folder gen-samples wrote")
    return files


def _scan(rows: Any, guard: PrivacyGuard) -> _Scan:
    s = _Scan()
    for row in iter_rows(rows):
        s.n += 1
        if guard.meta is not None:  # metadata DCR needs a source; synthetic runs need not hold the rows
            s.metas.append({k: row.get(k) for k in ("category1_code", "category2_code", "category3_code", "title",
                                                     "full_price")})
            s.exact += _content_key(row) in guard.content_keys
            s.title_price += (normalise_title(row.get("title")), _price_key(row.get("full_price"))) in guard.title_prices
        hits = _identifier_hits(row, guard.identifiers) if guard.identifiers else []
        s.id_rows.update(hits)
        s.id_count += bool(hits)
        kinds = row_pii(row)
        s.pii_rows.update(kinds)
        s.pii_count += bool(kinds)
        image = _image_bytes(row)
        if image is not None:
            h, m = phash_pair(image)
            s.hashes.append(h)
            s.mirrors.append(m)
    return s


def _vs_baseline(values: np.ndarray, baseline: dict[str, float]) -> dict[str, Any]:
    stats = _stats(values)
    out = {"generated": stats, "source_baseline": baseline}
    if stats.get("n") and baseline.get("n"):
        out["share_below_baseline_p5"] = round(float((values < baseline["p5"]).mean()), 4)
        out["p5_at_least_baseline"] = bool(stats["p5"] >= baseline["p5"])
        out["median_at_least_baseline"] = bool(stats["median"] >= baseline["median"])
    return out


NEAR_DUPLICATE_QUERIES = 10_000  # above this, the rate is estimated from evenly spaced rows


def _near_duplicates(hashes: np.ndarray, mirrors: np.ndarray, bits: int) -> dict[str, Any]:
    """Share of generated images with another generated image within ``bits`` (flip-invariant).

    All pairs cost O(n^2): past ``NEAR_DUPLICATE_QUERIES`` rows an evenly spaced sample of rows is
    compared with every row, so a million-row run stays within seconds and a flat memory budget.
    """
    m = len(hashes)
    if m < 2:
        return {"rate": 0.0, "rows": 0, "bits": bits}
    queries = np.arange(m) if m <= NEAR_DUPLICATE_QUERIES else np.linspace(0, m - 1, NEAR_DUPLICATE_QUERIES).astype(np.int64)
    has_dup = np.zeros(len(queries), dtype=bool)
    step = max(1, (1 << 23) // m)  # ~8 M distances (uint8) per block, whatever m is
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        has_dup[start:start + step] = hash_distances(hashes, mirrors, q).min(1) <= bits
    rate = float(has_dup.mean())
    out = {"rate": round(rate, 4), "rows": int(round(rate * m)), "bits": bits}
    if len(queries) < m:
        out["estimated_from"] = len(queries)
    return out


def _passed(report: dict[str, Any]) -> bool:
    """No identifier, no PII the level cares about (contact details at least), no copy, and DCR at least
    the source's own baseline: the 5th percentile, and at ``strict`` the median too."""
    ok = report["identifiers"]["rows_with_source_identifier"] == 0
    kinds = set(report["thresholds"]["pii_kinds"]) | {"email", "phone"}
    ok &= not any(report["pii"]["by_kind"].get(k) for k in kinds)
    if "exact_copies" in report:
        ok &= report["exact_copies"]["rows"] == 0 and report["exact_copies"]["title_price_pairs"] == 0
        for key in ("metadata_dcr", "image_dcr_bits"):
            ok &= report[key].get("p5_at_least_baseline", True)
            if report["level"] == "strict":
                ok &= report[key].get("median_at_least_baseline", True)
    return bool(ok)


def iter_rows(rows: Any) -> Iterator[dict[str, Any]]:
    """Row dicts from whatever holds them, images as raw bytes (never decoded to PIL here)."""
    if isinstance(rows, (str, Path)) or (isinstance(rows, list) and rows and isinstance(rows[0], Path)):
        import pyarrow.parquet as pq

        files = _shard_files(rows) if isinstance(rows, (str, Path)) else rows
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                yield from batch.to_pylist()
        return
    if hasattr(rows, "to_batches") and hasattr(rows, "schema"):  # a pyarrow Table
        for batch in rows.to_batches(max_chunksize=256):
            yield from batch.to_pylist()
        return
    if not type(rows).__module__.startswith("datasets"):  # lists, generators: importing datasets costs ~1 s
        yield from rows
        return
    import datasets

    if isinstance(rows, datasets.DatasetDict):
        for split in rows.values():
            yield from iter_rows(split)
        return
    if isinstance(rows, datasets.Dataset):
        for column, feature in rows.features.items():
            if isinstance(feature, datasets.Image):
                rows = rows.cast_column(column, datasets.Image(decode=False))
        for batch in rows.with_format("arrow").iter(batch_size=256):
            yield from batch.to_pylist()
        return
    yield from rows


# --------------------------------------------------------------------------------------------------
# Markdown for the dataset card


def render_privacy_section(report: Mapping[str, Any]) -> str:
    """Markdown body for the card, without a heading: ``extra_sections={"Privacy": render_privacy_section(r)}``."""
    from generator.card import md_code  # the card owns markdown escaping

    lines: list[str] = []
    verdict = "passed" if report.get("passed") else "**did not pass**"
    source = (f"against {md_code(report['source'], table=False)}" if report.get("source")
              else "(no source: synthetic data)")
    lines.append(f"Checked at level `{report['level']}` {source}: {verdict}, over {report['rows']} rows.")
    lines += ["", "| check | result |", "| --- | --- |"]
    if "exact_copies" in report:
        ex = report["exact_copies"]
        lines.append(f"| exact copies of source rows | {ex['rows']} ({ex['row_rate']:.2%}) |")
        lines.append(f"| (title, full price) pairs copied | {ex['title_price_pairs']} ({ex['title_price_rate']:.2%}) |")
        for key, label, unit in (("metadata_dcr", "metadata DCR (Gower, 0-1)", ""),
                                 ("image_dcr_bits", "image DCR (pHash bits of 64)", "")):
            d = report[key]
            g, b = d["generated"], d["source_baseline"]
            if g.get("n"):
                lines.append(f"| {label}: p5 / median | {g['p5']:g} / {g['median']:g} vs source's own "
                             f"nearest neighbour {b.get('p5', float('nan')):g} / {b.get('median', float('nan')):g} |")
    ids = report["identifiers"]
    lines.append(f"| rows holding a source identifier or URL | {ids['rows_with_source_identifier']} |")
    pii = report["pii"]
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(pii["by_kind"].items())) or "none"
    lines.append(f"| rows with PII in text columns | {pii['rows']} ({kinds}) |")
    nd = report["near_duplicate_images"]
    lines.append(f"| generated images with a near-duplicate (≤ {nd['bits']} bits) | {nd['rows']} ({nd['rate']:.2%}) |")
    reg = report["regenerated"]
    by = ", ".join(f"{k}: {v}" for k, v in sorted(reg["by_reason"].items())) or "none"
    lines.append(f"| attempts rejected and regenerated | {reg['attempts_rejected']} ({by}) |")
    lines.append(f"| rows dropped | {reg['rows_dropped']} |")
    lines.append("")
    if "exact_copies" in report:
        lines.append("DCR is each row's distance to its closest source record; the baseline is each source row's "
                     "distance to its closest other source row. ")
    lines[-1] += "PII: " + pii["method"] + "."
    return "\n".join(lines) + "\n"

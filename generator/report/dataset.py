"""``report.html`` of a dataset folder, and the two or three figures its card embeds as PNG.

    from generator.api import write_dataset_report
    write_dataset_report("out/catalogue")      # -> out/catalogue/report.html (and report_*.png)

Only what the folder holds is shown: the overview and gallery always, distributions of every row, the
privacy section when ``privacy_report.json`` is there, fidelity and the skipped source rows for augmented
runs, the data's own limit when ``limits.json`` is. Same folder, same bytes (no clock, sorted keys).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

import generator.report.raster as raster
from generator.report.distributions import distributions_section
from generator.report.fidelity_view import fidelity_section, limits_section
from generator.report.folder import GALLERY_MAX, REPORT_FILES, ReportError, RunFolder, read_folder
from generator.report.gallery import gallery_section
from generator.report.page import Section, cards, esc, note, render_page, table
from generator.report.privacy_view import privacy_section, source_rows_section
from generator.report.thumbs import make_thumbs, near_duplicate_pairs
from generator.writer import atomic_write_bytes, atomic_write_text

REPORT_FILENAME = "report.html"
# The card's figures, in order of preference (at most CARD_FIGURE_COUNT of those the report has).
CARD_FIGURES = {"categories": ("report_categories.png", "Category tree: category2 and category3 shares"),
                "prices": ("report_prices.png", "Full price per category2"),
                "fidelity": ("report_fidelity.png", "Fidelity: column shapes against the source"),
                "colours": ("report_colours.png", "Colours named in the titles")}
CARD_FIGURE_COUNT = 3
PAIRS_SHOWN = 24

__all__ = ["CARD_FIGURES", "REPORT_FILENAME", "ReportError", "card_figures", "write_dataset_report"]


def write_dataset_report(folder: str | Path, *, num_proc: int = 1, gallery_max: int = GALLERY_MAX) -> Path:
    """Write ``report.html`` (and the card's ``report_*.png`` figures) into the dataset ``folder``; return its path.
    ``num_proc``: processes that make the thumbnails (same bytes for any value). Raises :class:`ReportError`
    (one line) for a folder that holds no gen-samples dataset."""
    run = read_folder(folder, gallery_max)
    sections, gallery = build_sections(run, num_proc)
    figures = {name: fig for s in sections for name, fig in s.figures.items()}
    for name in [n for n in CARD_FIGURES if n in figures][:CARD_FIGURE_COUNT]:
        atomic_write_bytes(run.path / CARD_FIGURES[name][0], raster.png(figures[name]))
    src = run.source
    title = str(src.get("pretty_name") or run.path.name)
    subtitle = (f"{run.rows:,} rows · {src.get('kind', 'dataset')} · seed {src.get('seed', '?')} · "
                f"{src.get('image_size', '?')} px images · made by gen-samples")
    out = run.path / REPORT_FILENAME
    atomic_write_text(out, render_page(title, subtitle, sections, gallery=gallery))
    return out


def build_sections(run: RunFolder, num_proc: int = 1):
    """The page's sections in order, and the gallery's data; sections without data in the folder are left out."""
    thumbs = make_thumbs(run.images, num_proc)
    privacy = run.reports.get("privacy")
    bits = int(((privacy or {}).get("near_duplicate_images") or {}).get("bits", 4))
    pairs, has_dup = near_duplicate_pairs(thumbs.hashes, thumbs.mirrors, bits, PAIRS_SHOWN)
    flags = has_dup.astype(np.int64)
    if privacy and (privacy.get("pii") or {}).get("rows"):
        flags |= 2 * _pii_rows(run)
    gallery_sec, gallery = gallery_section(run, thumbs, flags)
    sections = [_overview(run), gallery_sec, distributions_section(run)]
    if privacy:
        sections.append(privacy_section(privacy, thumbs, run.gallery_rows, pairs, flags))
        if isinstance(privacy.get("source_rows"), Mapping):
            sections.append(source_rows_section(privacy["source_rows"]))
    if run.reports.get("fidelity"):
        sections.append(fidelity_section(run.reports["fidelity"]))
    if run.reports.get("limits"):
        sections.append(limits_section(run.reports["limits"]))
    return sections, gallery


def _pii_rows(run: RunFolder) -> np.ndarray:
    """1 for each gallery row whose text holds PII (the privacy report's own measure), else 0."""
    from generator.privacy.measures import row_pii

    cols = run.columns
    keys = ("title", "category1_code", "category2_code", "category3_code")
    return np.array([bool(row_pii({k: cols[k][i] for k in keys})) for i in run.gallery_rows], dtype=np.int64)


def _overview(run: RunFolder) -> Section:
    cols, src = run.columns, run.source
    n_test = sum(1 for s in cols["split"] if s == "test")
    disc = sum(1 for v in cols["flg_discount"] if v)
    body = cards([(f"{run.rows:,}", "rows"), (f"{run.rows - n_test:,} / {n_test:,}", "train / test"),
                  (f"{disc / max(run.rows, 1):.1%}", "discounted"), (str(src.get("kind", "?")), "kind"),
                  (str(src.get("seed", "?")), "seed"), (f"{run.shard_files}", "parquet shards")])
    if run.params.get("rows") and run.params["rows"] != run.rows:
        body += note(f"This folder holds {run.rows:,} of the run's {run.params['rows']:,} rows: some shards are "
                     "still to come (a fleet run); the report is rebuilt once the run is complete.")
    keep = ("generator", "taxonomy", "source", "brand", "country_code", "currency_code", "image_size", "privacy",
            "version", "code")
    rows = [[k, _short(src[k])] for k in keep if k in src]
    complete = run.params.get("rows") == run.rows  # the card and contact sheet come with a complete run's report
    present = [name for name in ("README.md", "contact_sheet.png", *REPORT_FILES.values())
               if (run.path / name).is_file() or (complete and name in ("README.md", "contact_sheet.png"))]
    links = " · ".join(f'<a href="{esc(n)}">{esc(n)}</a>' for n in present)
    body += table(["parameter", "value"], rows) + f"<p>Files beside this report: {links}</p>"
    if run.unreadable:
        body += note("Unreadable, left out: " + ", ".join(run.unreadable))
    return Section("overview", "Overview", body)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def card_figures(folder: str | Path) -> list[tuple[str, str]]:
    """(file name, alt text) of the card figures present in ``folder``, in the card's order."""
    path = Path(folder)
    return [CARD_FIGURES[n] for n in CARD_FIGURES if (path / CARD_FIGURES[n][0]).is_file()][:CARD_FIGURE_COUNT]

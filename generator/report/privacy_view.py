"""The privacy section, from ``privacy_report.json``: the verdict and its checks, distance to the closest
source record (DCR) of the generated rows against the source's own nearest-neighbour baseline, the attempts
the guard regenerated, the closest near-duplicate image pairs side by side, and the flagged rows (each a
link that opens it in the gallery)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

import generator.report.svg as svg
from generator.report.page import Section, cards, esc, figure, note, table, thumb
from generator.report.thumbs import Thumbs

ROW_LINKS = 200     # flagged rows listed as links (all of them are in the gallery's "flagged only" filter)
STATS = ("min", "p5", "median", "mean")


def privacy_section(report: Mapping[str, Any], thumbs: Thumbs, gallery_rows: Sequence[int],
                    pairs: Sequence[tuple[int, int, int]], flags: np.ndarray) -> Section:
    figs: dict[str, svg.Figure] = {}
    passed = bool(report.get("passed"))
    nd = report.get("near_duplicate_images") or {}
    body = cards([("passed" if passed else "did not pass", f"verdict at level {report.get('level', '?')}"),
                  (f"{report.get('rows', 0):,}", "rows checked"),
                  (f"{(report.get('identifiers') or {}).get('rows_with_source_identifier', 0):,}",
                   "rows with a source identifier"),
                  (f"{(report.get('pii') or {}).get('rows', 0):,}", "rows with PII in text"),
                  (f"{nd.get('rows', 0):,} ({nd.get('rate', 0):.1%})", f"near-duplicate images (≤ {nd.get('bits', '?')} bits)")])
    if report.get("guard") == "off":
        body += note("The privacy guard was off while this run was written (--privacy off): the measures were "
                     "taken afterwards and no row was regenerated.")
    if report.get("failure"):
        body += f'<p class="bad">{esc(report["failure"])}</p>'
    body += _dcr(report, figs) + _regenerated(report)
    body += _pairs_html(pairs, thumbs, gallery_rows, nd)
    body += _flagged_html(flags, gallery_rows)
    return Section("privacy", "Privacy", body, figs)


def _dcr(report: Mapping[str, Any], figs: dict[str, svg.Figure]) -> str:
    parts = []
    for key, what, unit in (("metadata_dcr", "Metadata DCR (Gower distance, 0-1)", ""),
                            ("image_dcr_bits", "Image DCR (pHash bits of 64)", " bits")):
        d = report.get(key) or {}
        gen, base = d.get("generated") or {}, d.get("source_baseline") or {}
        if not gen.get("n"):
            continue
        series = {f"generated rows → closest source row (n={gen['n']:,})": [gen.get(s) for s in STATS]}
        if base.get("n"):
            series[f"source rows → closest other source row (n={base['n']:,})"] = [base.get(s) for s in STATS]
        fig = svg.bar_chart(list(STATS), series, title=what, width=520, label_chars=8)
        figs.setdefault("privacy", fig)
        share = d.get("share_below_baseline_p5")
        cap = ("Farther is more private: the generated rows should sit at least as far from the source as its "
               "rows sit from each other." + (f" {share:.1%} of generated rows fall below the baseline's p5."
                                              if share is not None else ""))
        parts.append(figure(fig, cap))
    if not parts:
        return note("No source: DCR is measured against a source catalogue, so a synthetic run has none.")
    return ("<h3>Distance to the closest record</h3>" + "".join(parts)
            + note("privacy_report.json keeps the distributions' summary (min, 5th percentile, median, mean), not each "
                   "row's distance, so these are its quantiles side by side rather than full histograms."))


def _regenerated(report: Mapping[str, Any]) -> str:
    reg = report.get("regenerated") or {}
    by = reg.get("by_reason") or {}
    text = (f"{reg.get('attempts_rejected', 0):,} attempts rejected and regenerated, "
            f"{reg.get('rows_dropped', 0):,} rows dropped.")
    if not by:
        return note(text)
    keys = sorted(by, key=lambda k: (-by[k], k))
    fig = svg.bar_chart([k.replace("_", " ") for k in keys], [by[k] for k in keys],
                        title="Attempts the guard rejected, by reason", width=460)
    return "<h3>Regenerated</h3>" + figure(fig, text)


def _pairs_html(pairs, thumbs: Thumbs, gallery_rows: Sequence[int], nd: Mapping[str, Any]) -> str:
    if not pairs:
        return note("No two gallery images are near-duplicates.") if not nd.get("rows") else ""
    items = []
    for i, j, d in pairs:
        a = thumb(gallery_rows[i], *Thumbs.slot(i), label=f"row {gallery_rows[i]}")
        b = thumb(gallery_rows[j], *Thumbs.slot(j), label=f"row {gallery_rows[j]}")
        items.append(f'<span class="pair">{a}{b}<span>{d} bit{"s" if d != 1 else ""}</span></span>')
    return ("<h3>Closest near-duplicate image pairs</h3>"
            + note(f"The {len(pairs)} closest pairs of gallery images within {nd.get('bits', '?')} bits of the "
                   "perceptual hash (either one mirrored), as the privacy report counts them. Click one to open "
                   "its row.") + "<div>" + "".join(items) + "</div>")


def _flagged_html(flags: np.ndarray, gallery_rows: Sequence[int]) -> str:
    out = []
    for bit, name in ((1, "near-duplicate image"), (2, "PII in a text column")):
        rows = [gallery_rows[g] for g in np.nonzero(flags & bit)[0]]
        if not rows:
            continue
        links = "".join(f'<a href="#gallery" data-row="{r}">#{r}</a>' for r in rows[:ROW_LINKS])
        more = f" … and {len(rows) - ROW_LINKS:,} more" if len(rows) > ROW_LINKS else ""
        out.append(f"<p><b>{len(rows):,}</b> gallery rows flagged: {esc(name)}. "
                   f'<button data-flag="1">show every flagged row in the gallery</button></p>'
                   f'<p class="rowlinks">{links}{esc(more)}</p>')
    return ("<h3>Flagged rows</h3>" + "".join(out)) if out else ""


def source_rows_section(source_rows: Mapping[str, Any]) -> Section:
    """The source rows the reader skipped (with their reasons and example rows) and the repairs it made."""
    skipped, repaired = source_rows.get("skipped") or {}, source_rows.get("repaired") or {}
    examples = source_rows.get("examples") or {}
    body = cards([(f"{source_rows.get('rows_read', 0):,}", "source rows read"),
                  (f"{source_rows.get('rows_kept', 0):,}", "kept"),
                  (f"{source_rows.get('rows_skipped', 0):,}", "skipped")])
    if skipped:
        keys = sorted(skipped, key=lambda k: (-skipped[k], k))
        body += figure(svg.bar_chart([k.replace("_", " ") for k in keys], [skipped[k] for k in keys],
                                     title="Source rows skipped, by reason", width=520, label_chars=30))
        body += table(["skipped because", "rows", "for example"],
                      [[k.replace("_", " "), skipped[k], ", ".join(examples.get(k, []))] for k in keys], numeric=(1,))
    if repaired:
        keys = sorted(repaired, key=lambda k: (-repaired[k], k))
        body += "<h3>Repaired on reading</h3>" + table(
            ["repair", "rows", "for example"], [[k.replace("_", " "), repaired[k], ", ".join(examples.get(k, []))]
                                                for k in keys], numeric=(1,))
    return Section("source", "Source rows", body)

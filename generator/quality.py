"""The reports every finished run gets: privacy (always; with the guard off it says so) and fidelity (against a
source).

Both are written as JSON beside the data (``privacy_report.json``, ``fidelity_report.json``) and as
markdown sections of the dataset card, so whoever downloads the dataset sees them. A synthetic run also
gets the data's own limit (``limits.json``, :mod:`generator.limits`): what a perfect reader of its images
could score on the test split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.card import LIMITS_HEADING, render_limits_section
from generator.fidelity import fidelity_report, render_fidelity_section
from generator.privacy import privacy_report, render_privacy_section
from generator.sources import SourceCatalog
from generator.taxonomy import Taxonomy
from generator.writer import DATA_DIR, atomic_write_text

PRIVACY_FILENAME = "privacy_report.json"
FIDELITY_FILENAME = "fidelity_report.json"


@dataclass
class QualityReports:
    privacy: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None     # what a perfect image reader could score (synthetic runs)
    sections: dict[str, str] = field(default_factory=dict)   # card heading -> markdown

    @property
    def privacy_passed(self) -> bool:
        return self.privacy is None or bool(self.privacy.get("passed"))


def write_reports(out: Path, *, level: str, source: SourceCatalog | None = None,
                  source_report: dict[str, Any] | None = None, rejections: dict[str, int] | None = None,
                  num_proc: int = 1, taxonomy: Taxonomy | None = None) -> QualityReports:
    """Measure the complete run in ``out`` and write its JSON reports; return them with card sections.
    ``taxonomy``: the one that drew the rows (synthetic runs), for the data's own limit (``limits.json``)."""
    reports = QualityReports()
    data = out / DATA_DIR
    if taxonomy is not None:
        reports.sections[LIMITS_HEADING] = _limits_section(out, taxonomy, reports)
    if source_report is not None:
        reports.sections["Source catalogue"] = _source_section(source_report)
    # Every dataset gets a privacy report (as --help says); with --privacy off no row was checked while it
    # was written, so the report says the guard was off and only measures the result.
    reports.privacy = privacy_report(data, source, level, rejections=rejections, num_proc=num_proc)
    reports.privacy["guard"] = "off" if level == "off" else "on"
    if source_report is not None:
        reports.privacy["source_rows"] = source_report.get("source_rows")
    atomic_write_text(out / PRIVACY_FILENAME, json.dumps(reports.privacy, indent=2, sort_keys=True) + "\n")
    reports.sections["Privacy"] = render_privacy_section(reports.privacy)
    if level == "off":
        reports.sections["Privacy"] = ("**The privacy guard was off** (`--privacy off`): no row was checked or "
                                       "regenerated while writing; the measures below were taken afterwards.\n\n"
                                       + reports.sections["Privacy"])
    if source is not None:
        reports.fidelity = fidelity_report(data, source)
        atomic_write_text(out / FIDELITY_FILENAME, json.dumps(reports.fidelity, indent=2, sort_keys=True) + "\n")
        reports.sections["Fidelity"] = render_fidelity_section(reports.fidelity)
    return reports


def _limits_section(out: Path, taxonomy: Taxonomy, reports: QualityReports) -> str:
    from generator import limits

    try:
        result = limits.from_run(out, taxonomy)
    except limits.LimitsError as err:  # rows the taxonomy's generator could not have drawn: say so, go on
        return f"Not computed: {err}."
    limits.write_json(out, result)
    reports.limits = result.to_dict()
    return render_limits_section(reports.limits)


def _source_section(report: dict[str, Any]) -> str:
    rows = report.get("source_rows", {})
    lines = [f"Augmented from `{report.get('source')}`: {rows.get('rows_read', '?')} rows read, "
             f"{rows.get('rows_kept', '?')} kept, {rows.get('rows_skipped', 0)} skipped; "
             f"{report.get('rows_excluded_pii', 0)} rows with personal data in their text were never used.", ""]
    skipped = rows.get("skipped") or {}
    if skipped:
        lines += ["| rows skipped because | count |", "|---|---:|"]
        lines += [f"| {reason.replace('_', ' ')} | {count} |" for reason, count in sorted(skipped.items())]
    repaired = rows.get("repaired") or {}
    if repaired:
        lines += ["", "| repaired on reading | count |", "|---|---:|"]
        lines += [f"| {note.replace('_', ' ')} | {count} |" for note, count in sorted(repaired.items())]
    return "\n".join(lines)

"""report.html of a fine-tuning run: one self-contained page (inline SVG charts, inline thumbnails, a small
script; nothing fetched when it is viewed), built from what the run folder holds.

folder.py     read the run folder (config, metrics, predictions, training log) and the test images
charts.py     lines with markers and reference lines, the confusion heatmap, the price scatter
sections.py   overview, training curves, evaluation beside baselines and limit, categories, prices, unparsed
gallery.py    every evaluated test row: image, truth, answer, parse status, price error (sortable)

    write_run_report("runs/finetune")    # -> runs/finetune/report.html; `run-finetune report DIR` does this
"""
from __future__ import annotations

import os
from pathlib import Path

from .folder import RunReportError, read_run

REPORT_FILENAME = "report.html"

__all__ = ["REPORT_FILENAME", "RunReportError", "build_html", "write_after_run", "write_run_report"]


def build_html(folder: str | Path) -> str:
    from generator.api import report_page

    from . import sections
    from .gallery import gallery

    run = read_run(folder)
    parts = [sections.overview(run), sections.curves(run), sections.evaluation(run), sections.categories(run),
             sections.prices(run), gallery(run), sections.unparsed(run)]
    cfg = run.config
    title = f"Fine-tuning run: {Path(folder).resolve().name}"
    subtitle = (f"{cfg.get('model', '?')} ({cfg.get('method', '?')}) on {cfg.get('dataset', '?')}; "
                f"{run.metrics.get('n_test', len(run.predictions))} test rows evaluated")
    return report_page.render_page(title, subtitle, [s for s in parts if s is not None])


def write_run_report(folder: str | Path) -> Path:
    """Write ``folder/report.html`` (to a temporary name, then renamed); same folder, same bytes."""
    html = build_html(folder)
    path = Path(folder) / REPORT_FILENAME
    tmp = path.with_name(f".{REPORT_FILENAME}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_after_run(folder: str | Path) -> str:
    """The report at the end of a run: a line to print. A report that fails never fails the finished run."""
    try:
        path = write_run_report(folder)
    except Exception as err:  # noqa: BLE001 - the run's results are written; the page is a view of them
        return f"[yellow]warning: no report.html ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); " \
               f"retry with run-finetune report {folder}"
    return f"report: {path}"

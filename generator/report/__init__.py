"""HTML reports (one self-contained file, no network at view time) and their chart primitives.

svg.py            Figure and tiny SVG charts (bars, histogram, box plot, treemap, scatter, lines)
raster.py         a Figure as PNG (the dataset card embeds a few)
page.py           the HTML shell, CSS, the gallery's script, section helpers
folder.py         read a dataset folder (rows, gallery images, JSON reports)
thumbs.py         sprite-sheet thumbnails and perceptual hashes, one decode a row; near-duplicate pairs
gallery.py, distributions.py, privacy_view.py, fidelity_view.py   one section each
dataset.py        write_dataset_report(folder): the dataset's report.html and the card's figures
"""
from generator.report.dataset import CARD_FIGURES, REPORT_FILENAME, card_figures, write_dataset_report
from generator.report.folder import ReportError

__all__ = ["CARD_FIGURES", "REPORT_FILENAME", "ReportError", "card_figures", "write_dataset_report"]

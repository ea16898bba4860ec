"""The gallery section: every gallery row (thumbnail, title, category path, price, discount) as JSON for the
page's script, which filters (text or ``#row``, category, split, discounted, flagged) and pages it."""
from __future__ import annotations

import numpy as np

import generator.report.thumbs as thumbs_mod
from generator.report.folder import RunFolder
from generator.report.page import Gallery, Section, esc, note

PER_PAGE = 48
FLAG_NAMES = ("near-duplicate image", "PII in text")    # bit 0, bit 1 of a row's flags


def gallery_section(run: RunFolder, thumbs: thumbs_mod.Thumbs, flags: np.ndarray) -> tuple[Section, Gallery]:
    cols = run.columns
    paths: dict[tuple[str, str, str], int] = {}
    rows = []
    for g, i in enumerate(run.gallery_rows):
        path = (str(cols["category1_code"][i]), str(cols["category2_code"][i]), str(cols["category3_code"][i]))
        rows.append([i, 0 if cols["split"][i] == "train" else 1, str(cols["title"][i] or ""),
                     paths.setdefault(path, len(paths)), _price(cols["full_price"][i]), _price(cols["price"][i]),
                     int(cols["flg_discount"][i] or 0), int(flags[g])])
    data = {"rows": rows, "paths": [list(p) for p in paths], "splits": ["train", "test"],
            "cat_options": _category_options(paths), "currency": str(run.source.get("currency_code", "")),
            "per_page": PER_PAGE, "tile": thumbs_mod.TILE, "cols": thumbs_mod.COLUMNS,
            "per_sheet": thumbs_mod.PER_SHEET, "flag_names": list(FLAG_NAMES)}
    shown = (f"All {run.rows:,} rows" if len(rows) == run.rows else
             f"The first {len(rows):,} of {run.rows:,} rows (each split in proportion)")
    flag_box = ('<label><input type="checkbox" id="flag"> flagged only</label>' if flags.any() else "")
    body = (note(f"{shown}, {PER_PAGE} a page. Search a title or a category word, or #row for one row; "
                 "add #q=...&cat=...&split=...&page=N to the address to open the page filtered.")
            + '<div class="controls"><input type="search" id="q" placeholder="search titles, or #row">'
            '<select id="cat"><option value="">all categories</option></select>'
            '<select id="split"><option value="">train and test</option><option value="train">train</option>'
            '<option value="test">test</option></select>'
            '<label><input type="checkbox" id="disc"> discounted only</label>' + flag_box +
            '<button id="reset">reset</button><button id="prev">‹ prev</button><span id="pageno"></span>'
            '<button id="next">next ›</button><b id="count"></b></div><div id="grid"></div>'
            f'<noscript>{esc("The gallery needs JavaScript; the other sections do not.")}</noscript>')
    return Section("gallery", "Gallery", body), Gallery(data, thumbs.sheets)


def _price(v) -> float:
    try:
        return round(float(v), 2)
    except (TypeError, ValueError):
        return 0.0


def _category_options(paths: dict[tuple[str, str, str], int]) -> list[list[str]]:
    """Select options ``[value, label]``: category1s, then category2s, then category2 / category3 paths."""
    out: list[list[str]] = []
    for level, prefix in ((1, ""), (2, "— "), (3, "—— ")):
        values = sorted({p[0] if level == 1 else p[1] if level == 2 else f"{p[1]} / {p[2]}" for p in paths})
        out += [[f"{level}:{v}", prefix + v] for v in values]
    return out


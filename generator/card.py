"""The dataset card (README.md with the Hub's YAML header) and the contact sheet of a written run.

Statistics are gathered per shard while it is written (:class:`SplitStats`, mergeable and saved in the
shard's manifest record), so the card of a million-row run, or of a run built by a fleet, is made from
the manifests alone, without reading the rows again.
"""
from __future__ import annotations

import io
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml
from PIL import Image, ImageDraw, ImageFont

from generator.schema import ANSWER_TEMPLATE, IMAGE_COLUMN, METADATA_COLUMNS

CARD_FILENAME = "README.md"
CONTACT_SHEET_FILENAME = "contact_sheet.png"

COLUMN_DOCS = {
    "website_name": "storefront the row belongs to",
    "competence_date": "snapshot date, `YYYY-MM-DD` (string, as in the public table)",
    "country_code": "storefront country",
    "currency_code": "currency of `full_price` and `price`",
    "brand": "brand",
    "category1_code": "department: WOMAN, MAN, KIDS",
    "category2_code": "product family, e.g. OUTERWEAR, BAGS, SHOES",
    "category3_code": "product type within the family; `N.A.` where the storefront gives none",
    "product_code": "8-digit product code, unique within the dataset",
    "title": "product title: colour, pattern, material and item words, all visible in the image",
    "itemurl": "product page URL on a reserved example domain (never a real shop)",
    "imageurl": "image URL on a reserved example domain (never a real shop)",
    "full_price": "list price in `currency_code`, on the brand's price points",
    "price": "selling price: `full_price`, or the discounted price when `flg_discount` is 1",
    "full_price_eur": "`full_price` converted to EUR",
    "price_eur": "`price` converted to EUR",
    "flg_discount": "1 when the product is discounted",
    IMAGE_COLUMN: "product photo (JPEG), rendered from the row's metadata",
}


@dataclass
class SplitStats:
    """Counts and price histograms of some rows; ``merge`` adds another's (shards -> splits)."""

    rows: int = 0
    discounted: int = 0
    category1: Counter = field(default_factory=Counter)
    category2: Counter = field(default_factory=Counter)
    category3: Counter = field(default_factory=Counter)          # "CATEGORY2 / CATEGORY3"
    # category2 -> Counter of full prices: exact medians from price points without keeping the rows
    full_price: dict[str, Counter] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.discounted += int(row["flg_discount"])
        c2 = row["category2_code"]
        self.category1[row["category1_code"]] += 1
        self.category2[c2] += 1
        self.category3[f"{c2} / {row['category3_code']}"] += 1
        self.full_price.setdefault(c2, Counter())[float(row["full_price"])] += 1

    def merge(self, other: "SplitStats") -> None:
        self.rows += other.rows
        self.discounted += other.discounted
        self.category1.update(other.category1)
        self.category2.update(other.category2)
        self.category3.update(other.category3)
        for c2, prices in other.full_price.items():
            self.full_price.setdefault(c2, Counter()).update(prices)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "discounted": self.discounted,
            "category1": dict(sorted(self.category1.items())), "category2": dict(sorted(self.category2.items())),
            "category3": dict(sorted(self.category3.items())),
            "full_price": {c2: sorted([p, n] for p, n in prices.items()) for c2, prices in sorted(self.full_price.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SplitStats":
        return cls(rows=d["rows"], discounted=d["discounted"], category1=Counter(d["category1"]),
                   category2=Counter(d["category2"]), category3=Counter(d["category3"]),
                   full_price={c2: Counter({float(p): n for p, n in pairs}) for c2, pairs in d["full_price"].items()})


def price_summary(prices: Counter) -> dict[str, float]:
    """min / median / mean / max of a price histogram."""
    n = sum(prices.values())
    ordered = sorted(prices.items())
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    seen, lo, hi = 0, None, None
    for price, count in ordered:
        if lo is None and seen + count > lo_rank:
            lo = price
        if seen + count > hi_rank:
            hi = price
            break
        seen += count
    return {"min": ordered[0][0], "median": (lo + hi) / 2, "mean": sum(p * c for p, c in ordered) / n,
            "max": ordered[-1][0]}


# --------------------------------------------------------------------------------------------------
# Markdown escaping: labels come from taxonomy files and source tables, so they may hold anything


# Bidirectional overrides: they reorder what a reader sees ("Trojan source"), so they are shown, not obeyed.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def md_text(value: Any) -> str:
    """``value`` on one markdown line: control characters (newline, ESC, ...) shown escaped (``\\n``)."""
    return "".join(repr(ch)[1:-1] if ch in _BIDI or unicodedata.category(ch) == "Cc" else ch for ch in str(value))


def md_cell(value: Any) -> str:
    """``value`` as one table cell: on one line, and a ``|`` (or a backslash before one) cannot split it."""
    return md_text(value).replace("\\", "\\\\").replace("|", "\\|")


def md_code(value: Any, *, table: bool = True) -> str:
    """``value`` as inline code (in a table cell when ``table``): a backtick inside cannot end the span."""
    text = md_text(value)
    if table:  # GFM splits cells before parsing code spans: only "\|" keeps a pipe inside the cell
        text = re.sub(r"(\\*)\|", lambda m: m.group(1) * 2 + "\\|", text)
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)
    return f"{fence} {text} {fence}"


# --------------------------------------------------------------------------------------------------
# The card


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows."""
    if n < 1000:
        return "n<1K"
    labels = ["1K", "10K", "100K", "1M", "10M", "100M", "1B"]
    k = min(int(math.log10(n)) - 3, len(labels) - 2)
    return f"{labels[k]}<n<{labels[k + 1]}"


def card_yaml(splits: dict[str, SplitStats], params: dict[str, Any], sizes: dict[str, tuple[int, int]]) -> dict:
    """The YAML header: what the Hub shows and what ``load_dataset(repo_id)`` reads."""
    source = params.get("source", {})
    names = {"string": "string", "int64": "int64", "double": "float64"}
    features = [{"name": n, "dtype": names[str(t)]} for n, t in METADATA_COLUMNS]
    features.append({"name": IMAGE_COLUMN, "dtype": "image"})
    total = sum(s.rows for s in splits.values())
    return {
        "license": source.get("license", "cc-by-4.0"),
        "pretty_name": source.get("pretty_name", "Synthetic product catalogue"),
        "task_categories": ["image-text-to-text", "image-classification"],
        "language": ["en"],
        "tags": ["synthetic", "fashion", "e-commerce", "product-catalog", "price-prediction", "gen-samples"],
        "size_categories": [size_category(total)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
        "dataset_info": {
            "features": features,
            "splits": [{"name": s, "num_bytes": sizes.get(s, (0, 0))[1], "num_examples": st.rows}
                       for s, st in splits.items()],
            "download_size": sum(b for b, _ in sizes.values()),
            "dataset_size": sum(a for _, a in sizes.values()),
        },
    }


def render_card(
    splits: dict[str, SplitStats],
    params: dict[str, Any],
    *,
    sizes: dict[str, tuple[int, int]] | None = None,
    extra_sections: dict[str, str] | None = None,
    contact_sheet: str | None = CONTACT_SHEET_FILENAME,
) -> str:
    """README.md text. ``sizes``: split -> (parquet bytes, arrow bytes). ``extra_sections``: heading ->
    markdown appended as ``## heading`` sections (privacy and fidelity reports go there)."""
    sizes = sizes or {}
    source = params.get("source", {})
    header = yaml.safe_dump(card_yaml(splits, params, sizes), sort_keys=False, allow_unicode=True, width=1000)
    total = SplitStats()
    for st in splits.values():
        total.merge(st)
    currency = source.get("currency_code", "")
    title = md_text(source.get("pretty_name", "Synthetic product catalogue"))
    out = ["---", header.rstrip(), "---", "", f"# {title}", ""]
    if source.get("description"):
        out += [md_text(source["description"]).rstrip(".") + ".", ""]
    out += [
        "Every row is **synthetic**: titles, prices, codes and URLs are drawn from a taxonomy file and each "
        "image is rendered from its row's metadata by `gen-samples`, so the category, colour, material and "
        "pattern of a product are visible in its picture; trim and hardware vary at random and say nothing "
        "about the price. URLs point at reserved example "
        "domains, never at a real shop. No real product data or photo was used.",
        "",
    ]
    if contact_sheet:
        out += [f"![Contact sheet: the first training images]({contact_sheet})", ""]
    out += ["## Splits", "", "| split | rows | discounted |", "|---|---:|---:|"]
    out += [f"| {md_cell(s)} | {st.rows:,} | {st.discounted:,} |" for s, st in splits.items()]
    out += [f"| **total** | **{total.rows:,}** | **{total.discounted:,}** |", ""]
    out += ["```python", "from datasets import load_dataset", "",
            'ds = load_dataset("parquet", data_dir="path/to/this/folder")  # or load_dataset("<repo id>")',
            "```", ""]
    out += ["## Columns", "", "Same columns and types as the public *Burberry product prices, United States* table, "
            "plus `image` (the `datasets` `Image` feature).", "", "| column | type | description |", "|---|---|---|"]
    names = {"string": "string", "int64": "int64", "double": "float64"}
    out += [f"| `{n}` | {names[str(t)]} | {COLUMN_DOCS.get(n, '')} |" for n, t in METADATA_COLUMNS]
    out += [f"| `{IMAGE_COLUMN}` | image | {COLUMN_DOCS[IMAGE_COLUMN]} |", ""]
    out += ["A vision-language model is fine-tuned to answer, from the image alone:", "",
            f"`{ANSWER_TEMPLATE}`", ""]
    out += ["## Generation parameters", "", "| parameter | value |", "|---|---|"]
    flat = {**{k: v for k, v in source.items() if k not in ("description",)},
            **{k: v for k, v in params.items() if k not in ("source", "format")}}
    out += [f"| {md_cell(k)} | {md_code(v)} |" for k, v in flat.items()]
    out += ["", "The same parameters give byte-identical files, whatever the number of worker processes or "
            "machines that wrote them.", ""]
    out += [f"## Prices per category2 (`full_price`, {currency})" if currency else "## Prices per category2", "",
            "| category2 | rows | min | median | mean | max |", "|---|---:|---:|---:|---:|---:|"]
    for c2, n in sorted(total.category2.items(), key=lambda kv: (-kv[1], kv[0])):
        p = price_summary(total.full_price[c2])
        out.append(f"| {md_cell(c2)} | {n:,} | {p['min']:,.0f} | {p['median']:,.0f} | {p['mean']:,.0f} | {p['max']:,.0f} |")
    out += ["", "## Category distribution", "", "| category1 | rows | share |", "|---|---:|---:|"]
    out += [f"| {md_cell(c)} | {n:,} | {n / total.rows:.1%} |"
            for c, n in sorted(total.category1.items(), key=lambda kv: -kv[1])]
    out += ["", "| category2 / category3 | rows | share |", "|---|---:|---:|"]
    out += [f"| {md_cell(c)} | {n:,} | {n / total.rows:.1%} |" for c, n in sorted(total.category3.items())]
    out.append("")
    for heading, body in (extra_sections or {}).items():
        out += [f"## {heading}", "", body.rstrip(), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# The HTML report (generator.report writes it and the figures)

REPORT_HEADING = "Browse the rows"


def render_report_section(figures: Iterable[tuple[str, str]], report: str = "report.html") -> str:
    """The card section that links ``report`` and embeds its ``figures`` ((PNG file, alt text) pairs)."""
    lines = [f"[`{report}`]({report}) beside this card is one self-contained page (no network needed): a filterable, "
             "paginated gallery of every row with its thumbnail, the distributions, and the privacy (and, for "
             "augmented runs, fidelity) reports as charts. Download it and open it in a browser; "
             f"`gen-samples report DIR` rebuilds it.", ""]
    lines += [f"![{md_text(alt)}]({name})" for name, alt in figures]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The data's own limit (generator.limits computes it; limits.json holds the numbers)

LIMITS_HEADING = "What a perfect image reader could score"


def render_limits_section(limits: dict[str, Any]) -> str:
    """The card section of ``limits.json``: the perfect reader's scores next to the majority baselines."""
    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    n_test = limits.get("n_test", 0)
    if not n_test:
        return "There is no test split to score a reader on (`--test-fraction 0`), so no limit is given."
    majority = limits.get("majority_accuracy", {})
    lines = [f"A reader that sees everything the renderer draws, and knows exactly how the generator drew each "
             f"label, still confuses values drawn alike. This is what it scores on the {n_test:,} test rows, next "
             "to always answering the train split's most frequent value: read a fine-tune's accuracy against the "
             "limit, not against 100 %.", "",
             "| label | perfect image reader (limit) | majority baseline |", "|---|---:|---:|"]
    for label in ("category3", "category2", "colour", "material", "pattern"):
        lines.append(f"| {label} accuracy | {pct(limits.get(f'{label}_accuracy'))} | {pct(majority.get(label))} |")
    lines.append(f"| price MAPE (`full_price`) | {pct(limits.get('price_mape'))} | "
                 f"{pct(limits.get('price_mape_global_median'))} (global median) |")
    lines += ["", "The price limit is the median price of what the picture shows (department, category, material, "
              "pattern, colour); trim and hardware are drawn at random and carry no price. The median price of "
              f"the true category3 scores {pct(limits.get('price_mape_category3_median'))}."]
    alike = []
    for label, pairs in (limits.get("confusable") or {}).items():
        if pairs and label != "silhouette":
            alike.append(f"{md_text(label)}: " + ", ".join(" ~ ".join(md_text(v) for v in pair) for pair in pairs))
    if alike:
        lines += ["", "Drawn alike (a reader may still tell some apart by another attribute): " + "; ".join(alike) + "."]
    lines += ["", "Computed by `generator.limits` from the taxonomy and the renderer's own tables; the numbers are "
              "in `limits.json`."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The contact sheet


def contact_sheet(rows: Iterable[dict[str, Any]], columns: int = 8, tile: int = 128) -> Image.Image:
    """A grid of row images, each captioned with its category3 (category2 where that is "N.A.") and full price.

    The caption has two lines, the category on the first and the price on the second, and the category's
    font shrinks until the whole name fits: a cut name ("TRENCH COA") reads as another category.
    """
    rows = list(rows)
    if not rows:
        return Image.new("RGB", (tile, tile), "white")
    line_h = max(12, tile // 8)
    size = max(8, line_h - 3)
    font = ImageFont.load_default(size=size)
    n_rows = math.ceil(len(rows) / columns)
    sheet = Image.new("RGB", (columns * tile, n_rows * (tile + 2 * line_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows):
        x, y = (k % columns) * tile, (k // columns) * (tile + 2 * line_h)
        with Image.open(io.BytesIO(row[IMAGE_COLUMN]["bytes"])) as img:
            sheet.paste(img.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR), (x, y))
        name = caption_name(row)
        draw.text((x + 3, y + tile + 1), name, fill=(40, 40, 40), font=fitting_font(draw, name, tile - 6, size))
        draw.text((x + 3, y + tile + line_h), f"{row['full_price']:,.0f}", fill=(90, 90, 90), font=font)
    return sheet


def caption_name(row: dict[str, Any]) -> str:
    name = str(row["category3_code"])
    if name == "N.A." and row.get("category2_code"):
        name = str(row["category2_code"])  # "N.A." says nothing on a picture
    return name


def fitting_font(draw: ImageDraw.ImageDraw, text: str, width: int, size: int, smallest: int = 5):
    """The default font at ``size``, or smaller until ``text`` fits ``width`` (never below ``smallest``)."""
    font = ImageFont.load_default(size=size)
    while size > smallest and draw.textlength(text, font=font) > width:
        size -= 1
        font = ImageFont.load_default(size=size)
    return font


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # optimize=True would cost 0.3 s for 3% smaller
    return buf.getvalue()

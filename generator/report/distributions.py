"""The distributions section: the category tree (treemap), full price per category2 (box plots on a log
axis), the share of discounted rows and how deep the discounts go, and, when the run's taxonomy is at hand
(synthetic runs), the colours and materials its titles name."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

import generator.report.svg as svg
from generator.report.folder import RunFolder
from generator.report.page import Section, figure, note


def distributions_section(run: RunFolder) -> Section:
    cols, currency = run.columns, run.source.get("currency_code", "")
    figs: dict[str, svg.Figure] = {}
    tree: dict[str, Counter] = defaultdict(Counter)
    for c2, c3 in zip(cols["category2_code"], cols["category3_code"]):
        tree[str(c2)][str(c3)] += 1
    figs["categories"] = svg.treemap({k: dict(v) for k, v in sorted(tree.items())}, width=900, height=420,
                                     title=f"Category tree: category2 › category3 ({run.rows:,} rows)")
    c1 = Counter(str(v) for v in cols["category1_code"])
    c1_fig = svg.bar_chart(sorted(c1), [c1[k] for k in sorted(c1)], title="Rows per category1", width=380)
    figs["prices"] = svg.box_plot(_price_boxes(cols), title=f"Full price per category2 ({currency}, log axis)",
                                  width=640, label_chars=30, x_label=f"full_price ({currency})")
    disc_fig, depth_fig = _discount_figures(cols)
    body = (figure(figs["categories"], "Area is the share of rows; hover a block for its count.")
            + figure(c1_fig) + figure(figs["prices"], "Box: quartiles; line: median; whiskers: min and max.")
            + figure(disc_fig) + (figure(depth_fig) if depth_fig else ""))
    shares = _title_shares(run)
    if shares:
        colours, materials = shares
        figs["colours"] = colours
        body += "<h3>Colours and materials in the titles</h3>" + figure(colours) + figure(materials)
    else:
        body += note("Colour and material shares need the taxonomy that drew the rows (synthetic runs); "
                     "this run's titles are not parsed without it.")
    return Section("distributions", "Distributions", body, figs)


def _price_boxes(cols: dict[str, list]) -> dict[str, dict[str, float]]:
    by: dict[str, list[float]] = defaultdict(list)
    for c2, p in zip(cols["category2_code"], cols["full_price"]):
        if p is not None and p > 0:
            by[str(c2)].append(float(p))
    out = {}
    for c2, prices in sorted(by.items(), key=lambda kv: (-float(np.median(kv[1])), kv[0])):
        q = np.percentile(prices, [0, 25, 50, 75, 100])
        out[c2] = {"min": q[0], "q1": q[1], "median": q[2], "q3": q[3], "max": q[4], "n": len(prices)}
    return out


def _discount_figures(cols: dict[str, list]) -> tuple[svg.Figure, svg.Figure | None]:
    rows, disc = Counter(), Counter()
    depths = []
    for c2, flag, full, price in zip(cols["category2_code"], cols["flg_discount"], cols["full_price"], cols["price"]):
        rows[str(c2)] += 1
        if flag:
            disc[str(c2)] += 1
            if full and price is not None and full > 0:
                depths.append(100 * (1 - float(price) / float(full)))
    total = sum(rows.values()) or 1
    labels = ["all rows"] + sorted(rows, key=lambda k: (-disc[k] / rows[k], k))
    values = [100 * sum(disc.values()) / total] + [100 * disc[k] / rows[k] for k in labels[1:]]
    share = svg.bar_chart(labels, values, title="Discounted rows (% of each category2)", width=460,
                          value_fmt=lambda v: f"{v:.1f}%", max_value=max(values + [1]))
    if not depths:
        return share, None
    edges = [float(e) for e in range(0, 101, 5)]
    counts = np.histogram(depths, bins=edges)[0].tolist()
    depth = svg.histogram(edges, {"": counts}, title=f"Discount depth ({len(depths):,} discounted rows)", width=420,
                          x_label="% off the full price")
    return share, depth


def _title_shares(run: RunFolder) -> tuple[svg.Figure, svg.Figure] | None:
    """Colour and material shares from the titles, with the taxonomy named in run.json (if it loads and is
    the one that drew the rows)."""
    src = run.source
    if src.get("kind") != "synthetic" or not src.get("taxonomy"):
        return None
    from generator import taxonomy as taxonomy_mod

    try:
        tax = taxonomy_mod.load(src["taxonomy"], check_renderer=False)
    except (taxonomy_mod.TaxonomyError, OSError, ValueError):
        return None
    if src.get("taxonomy_sha256") and tax.sha256[:16] != src["taxonomy_sha256"]:
        return None
    colours = sorted(tax.colours, key=lambda c: -len(c.name))
    materials = sorted({m.name for m in tax.materials}, key=lambda m: -len(m))
    cn, mn = Counter(), Counter()
    for title in run.columns["title"]:
        t = f" {title} "
        cn[next((c.name for c in colours if t.startswith(f" {c.name} ")), "other")] += 1
        mn[next((m for m in materials if f" {m} " in t), "other")] += 1
    rgb = {c.name: "#%02x%02x%02x" % c.rgb for c in tax.colours} | {"other": "#bbbbbb"}
    top_c = sorted(cn, key=lambda k: (-cn[k], k))[:20]
    top_m = sorted(mn, key=lambda k: (-mn[k], k))[:20]
    n = max(run.rows, 1)
    pct = {"value_fmt": lambda v: f"{v:.1f}%"}
    return (svg.bar_chart(top_c, [100 * cn[k] / n for k in top_c], title="Colours (% of rows; bar = the colour drawn)",
                          width=460, colors=[rgb[k] for k in top_c], **pct),
            svg.bar_chart(top_m, [100 * mn[k] / n for k in top_m], title="Materials (% of rows)", width=460, **pct))


"""report.html of a dataset folder (generator/report/): what it shows, that it works offline, same bytes
twice, ``gen-samples report DIR``, and (when a Chromium binary is there) that its script runs in a real browser."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from _browser import CHROMIUM, SKIP_REASON, chromium
from generator.api import GenerateConfig, ReportError, report_svg, write_dataset_report, write_run
from generator.cli import main
from generator.report.fidelity_view import fidelity_section
from generator.report.gallery import PER_PAGE
from generator.report.thumbs import PER_SHEET

SOURCE = Path(__file__).resolve().parents[1] / "samples" / "source_catalog"
ROWS = 120


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "syn"
    write_run(GenerateConfig(rows=ROWS, seed=3, image_size=64, test_fraction=0.25, rows_per_shard=50), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def augmented(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "aug"
    write_run(GenerateConfig(rows=40, seed=5, image_size=64, source=str(SOURCE)), out, quiet=True)
    return out


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def _gallery(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', html, re.S)[1])


def test_synthetic_report_has_its_sections_and_every_row(synthetic):
    html = (synthetic / "report.html").read_text(encoding="utf-8")
    assert _sections(html) == ["overview", "gallery", "distributions", "privacy", "limits"]
    data = _gallery(html)
    assert [r[0] for r in data["rows"]] == list(range(ROWS))           # every row, in dataset order
    assert sum(r[1] == 1 for r in data["rows"]) == 30                  # the test split: 25% of 120
    assert len(re.findall(r"\.s\d+\{background-image:url\(data:image/jpeg;base64,", html)) == math.ceil(ROWS / PER_SHEET)
    privacy = json.loads((synthetic / "privacy_report.json").read_text())
    flagged = sum(1 for r in data["rows"] if r[7] & 1)
    # the page recomputes the pairs from its own decode of each image: within a row or two of the report's count
    assert abs(flagged - privacy["near_duplicate_images"]["rows"]) <= 2
    if flagged:
        assert f"<b>{flagged:,}</b> gallery rows flagged" in html
    assert "Category tree" in html and "Full price per category2" in html and "Colours (% of rows" in html
    assert html.count("<svg") >= 6


def test_augmented_report_shows_fidelity_and_skipped_source_rows(augmented):
    html = (augmented / "report.html").read_text(encoding="utf-8")
    assert _sections(html) == ["overview", "gallery", "distributions", "privacy", "source", "fidelity"]
    privacy = json.loads((augmented / "privacy_report.json").read_text())
    fidelity = json.loads((augmented / "fidelity_report.json").read_text())
    for reason, count in privacy["source_rows"]["skipped"].items():
        assert f"<td>{reason.replace('_', ' ')}</td><td class=num>{count}</td>" in html
    assert "Metadata DCR" in html and "Image DCR" in html                 # against the source's own baseline
    assert f"{100 * fidelity['overall_score']:.1f}%" in html
    pairs = fidelity["column_pair_trends"]["pairs"]
    counted = sum(p.get("meets_threshold", True) is not False for p in pairs.values())
    assert counted < len(pairs)  # SDMetrics counts only pairs where the source shows a relation
    assert f"weakest of the {counted} pairs counted" in html
    assert html.count("<td>yes</td>") == counted and html.count("<td>no</td>") == len(pairs) - counted
    assert len(_gallery(html)["rows"]) == 40


def test_fidelity_distributions_become_real_vs_synthetic_histograms():
    report = {"overall_score": 0.9, "column_shapes": {"score": 0.9, "columns": {}},
              "distributions": {"full_price": {"edges": [0, 10, 20], "real": [3, 1], "synthetic": [2, 2]},
                                "category1_code": {"labels": ["MAN", "WOMAN"], "real": [1, 3], "synthetic": [2, 2]}}}
    body = fidelity_section(report).body
    assert "Real vs synthetic, per column" in body and body.count("<svg") == 2


def test_report_works_offline(synthetic, augmented):
    for folder in (synthetic, augmented):
        html = (folder / "report.html").read_text(encoding="utf-8")
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
        assert not re.search(r"""url\(\s*["']?(?:https?:)?//""", html, re.I)
        assert "<link" not in html and "@import" not in html
        assert not re.search(r"<script[^>]+src=", html)


def test_same_folder_same_bytes_whatever_the_processes(synthetic, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    first = (synthetic / "report.html").read_bytes()
    pngs = {p.name: p.read_bytes() for p in synthetic.glob("report_*.png")}
    for num_proc in (1, 2):
        write_dataset_report(copy, num_proc=num_proc)
        assert (copy / "report.html").read_bytes() == first
        assert {p.name: p.read_bytes() for p in copy.glob("report_*.png")} == pngs


def test_card_links_the_report_and_embeds_its_figures(synthetic, augmented):
    for folder, figures in ((synthetic, ("report_categories.png", "report_prices.png", "report_colours.png")),
                            (augmented, ("report_categories.png", "report_prices.png", "report_fidelity.png"))):
        card = (folder / "README.md").read_text(encoding="utf-8")
        assert "](report.html)" in card
        for name in figures:
            assert f"]({name})" in card
            assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gen_samples_report_rebuilds_it(synthetic, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(synthetic, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy), "--num-proc", "1"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (copy / "report.html").read_bytes() == (synthetic / "report.html").read_bytes()


@pytest.mark.parametrize("make", ["missing", "empty", "no_shards", "broken_manifest"])
def test_a_bad_dir_is_one_line_and_exit_2(tmp_path, capsys, make):
    folder = tmp_path / "x"
    if make != "missing":
        folder.mkdir()
    if make in ("no_shards", "broken_manifest"):
        (folder / ".manifest").mkdir()
        (folder / ".manifest" / "run.json").write_text("{}" if make == "no_shards" else "{")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gen-samples: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "report.html").exists()
    with pytest.raises(ReportError):
        write_dataset_report(folder)


def test_each_fleet_shard_gets_a_report_and_the_joined_run_the_full_one(tmp_path):
    config = GenerateConfig(rows=60, seed=2, image_size=32, rows_per_shard=20)
    out = tmp_path / "fleet"
    write_run(config, out, shard=(0, 2), quiet=True)
    html = (out / "report.html").read_text(encoding="utf-8")
    partial = len(_gallery(html)["rows"])
    assert 0 < partial < 60 and "still to come" in html and not (out / "README.md").exists()
    write_run(config, out, shard=(1, 2), quiet=True)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert len(_gallery(html)["rows"]) == 60 and "still to come" not in html and (out / "README.md").exists()


def test_svg_primitives_are_plain_and_stable():
    tree = {"A": {"a1": 6, "a2": 2}, "B": {"b1": 3, "b2": 1}}
    fig = report_svg.treemap(tree, width=400, height=200)
    leaves = [i for i in fig.items if isinstance(i, report_svg.Rect) and i.tip]
    assert len(leaves) == 4 and all(r.w > 0 and r.h > 0 for r in leaves)
    # the leaves fill the area (group headers and borders aside), each in proportion to its value
    assert sum(r.w * r.h for r in leaves) == pytest.approx(400 * 200, rel=0.12)
    area = {r.tip.split(":")[0]: r.w * r.h for r in leaves}
    assert area["A / a1"] == pytest.approx(3 * area["A / a2"], rel=0.01)
    assert area["A / a1"] + area["A / a2"] == pytest.approx(2 * (area["B / b1"] + area["B / b2"]), rel=0.15)
    charts = [fig, report_svg.bar_chart(["x", "y"], [1, 2]), report_svg.box_plot(
        {"g": {"min": 1, "q1": 2, "median": 3, "q3": 4, "max": 50, "n": 9}}),
        report_svg.histogram([0, 1, 2], {"": [3, 4]}), report_svg.scatter([(1, 2), (10, 20)], log_x=True, log_y=True),
        report_svg.line_chart({"loss": [(0, 2.0), (1, 1.0)]})]
    for chart in charts:
        text = chart.svg()
        assert text.startswith("<svg") and text.endswith("</svg>") and text == chart.svg()


# --------------------------------------------------------------------------------------------------
# In a real browser

def _tiles(dom: str) -> list[int]:
    grid = re.search(r'<div id="grid">(.*?)</div><noscript>', dom, re.S)[1]
    return [int(x) for x in re.findall(r'<div class="tile[^"]*" data-row="(\d+)"', grid)]


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_the_gallery_pages_and_filters_in_headless_chromium(synthetic, tmp_path):
    url = (synthetic / "report.html").resolve().as_uri()
    done = chromium("--virtual-time-budget=5000", "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr   # no script error, no console output
    assert done.requests == []                                           # nor any request to the network
    dom = done.stdout
    assert _tiles(dom) == list(range(PER_PAGE))                          # the script built the first page
    assert f"page 1 / {math.ceil(ROWS / PER_PAGE)}" in dom and f"{ROWS} of {ROWS} rows" in dom
    # a filter in the address narrows the gallery: the test split, its second page
    done = chromium("--virtual-time-budget=5000", "--dump-dom", url + "#split=test&page=1")
    assert done.requests == []                                           # paging fetches nothing either
    dom = done.stdout
    test_rows = [r[0] for r in _gallery(dom)["rows"] if r[1] == 1]
    assert _tiles(dom) == test_rows[:PER_PAGE] and f"{len(test_rows)} of {ROWS} rows" in dom
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", url + "#q=%237").stdout
    assert _tiles(dom) == [7]
    shot = tmp_path / "shot.png"
    chromium("--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 20_000


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_the_browser_check_sees_a_request_the_page_makes(synthetic, tmp_path):
    # the no-request assertion above is only worth something if it catches one: the same page plus one image
    html = (synthetic / "report.html").read_text(encoding="utf-8")
    page = tmp_path / "report.html"
    page.write_text(html.replace("<body>", '<body><img src="http://example.invalid/x.png">', 1), encoding="utf-8")
    done = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert done.returncode == 0 and done.requests == ["http://example.invalid/x.png"]

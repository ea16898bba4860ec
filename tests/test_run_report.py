"""report.html of a fine-tuning run (finetune/report/): written when a run finishes, its sections and
counts, the same bytes from `run-finetune report DIR`, a text-only gallery without the dataset, one-line
errors, and (when a Chromium binary is there) that its script builds the gallery in a real browser."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from _browser import CHROMIUM, SKIP_REASON, chromium
from _ft_fixtures import dataset_dir, tiny_config
from finetune.cli import main
from finetune.report import RunReportError, build_html, write_run_report
from finetune.report.charts import confusion_counts, confusion_heatmap

pytest.importorskip("torch")
N_TEST = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from finetune.train import train

    root = tmp_path_factory.mktemp("run_report")
    data = dataset_dir(root / "data", n_train=32, n_test=N_TEST)
    out = root / "run"
    train(tiny_config(data, out, max_steps=4, eval_every=2))
    return out


def _html(folder: Path) -> str:
    return (folder / "report.html").read_text(encoding="utf-8")


def _gallery(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="pred-data">(.*?)</script>', html, re.S)[1])


def _cells(html: str) -> dict[tuple[str, str], int]:
    return {(t, a): int(n) for t, a, n in re.findall(r"<title>true (.*?) -&gt; answered (.*?): (\d+) \(", html)}


def test_a_finished_run_writes_its_report_with_every_section(run):
    html = _html(run)
    metrics = json.loads((run / "metrics.json").read_text())
    sections = re.findall(r'<section id="([^"]+)">', html)
    assert sections[:6] == ["overview", "training", "evaluation", "categories", "prices", "gallery"]
    assert ("unparsed" in sections) == bool(metrics["n_unparsed"])
    for title in ("Training loss", "Learning rate", "Samples per second", "Peak memory (GiB)",
                  "Accuracy vs training samples seen", "Model, baseline and the data&#x27;s limit"):
        assert title in html, title
    # the evaluation table: the model beside each baseline
    assert "<th class=num>majority category</th>" in html and "<th class=num>median price</th>" in html
    rows = _gallery(html)["rows"]
    assert [r[0] for r in rows] == list(range(N_TEST))                          # every evaluated test row
    assert all(r[1].startswith("data:image/jpeg;base64,") for r in rows)       # each with its image
    assert sum(_cells(html).values()) == metrics["n_parsed"]                  # the matrix: the parsed answers
    assert {t for t, _ in _cells(html)} == set(metrics["per_category3"])      # a row a true class


def test_confusion_matrix_cells_sum_to_the_parsed_answers():
    def p(i, true, answer, parsed=True):
        return {"index": i, "true_category3_code": true, "category3_code": answer, "parsed": parsed}
    preds = [p(0, "SCARVES", "scarves"), p(1, "SCARVES", "SNEAKERS"), p(2, "SNEAKERS", "SNEAKERS"),
             p(3, "SNEAKERS", None, parsed=False), p(4, "SCARVES", "HATS")]
    preds += [p(5 + k, "SNEAKERS", f"MADE UP {k}") for k in range(10)]          # more extra answers than columns
    rows, cols, counts = confusion_counts(preds)
    assert rows == ["SNEAKERS", "SCARVES"] and cols[:2] == rows and cols[-1] == "(other answers)"
    assert sum(counts.values()) == sum(x["parsed"] for x in preds) == 14
    svg = confusion_heatmap(rows, cols, counts).svg()
    assert sum(int(n) for n in re.findall(r"answered .*?: (\d+) \(", svg)) == 14


def test_run_finetune_report_rebuilds_the_same_bytes(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (copy / "report.html").read_bytes() == (run / "report.html").read_bytes()


def test_without_the_dataset_the_gallery_is_text_only_and_says_why(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["dataset"] = str(tmp_path / "moved")
    (copy / "config.json").write_text(json.dumps(config))
    html = build_html(copy)
    assert [r[1] for r in _gallery(html)["rows"]] == [""] * N_TEST
    assert "is not a folder here" in html and "data:image/jpeg" not in html


def test_report_works_offline(run):
    html = _html(run)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert "<link" not in html and "@import" not in html and not re.search(r"<script[^>]+src=", html)


@pytest.mark.parametrize("make", ["missing", "empty", "broken_metrics", "no_predictions"])
def test_a_bad_dir_is_one_line_and_exit_2(tmp_path, capsys, make):
    folder = tmp_path / "x"
    if make != "missing":
        folder.mkdir()
    if make == "broken_metrics":
        (folder / "metrics.json").write_text("{")
    if make == "no_predictions":
        (folder / "metrics.json").write_text('{"model": {}}')
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("run-finetune: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "report.html").exists()
    with pytest.raises(RunReportError):
        write_run_report(folder)


def _rows(dom: str) -> list[int]:
    body = re.search(r'<tbody id="pbody">(.*?)</tbody>', dom, re.S)[1]
    return [int(x) for x in re.findall(r'<tr data-row="(\d+)"', body)]


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_the_gallery_script_runs_in_headless_chromium(run):
    url = (run / "report.html").resolve().as_uri()
    done = chromium("--virtual-time-budget=5000", "--dump-dom", url + "#sort=row")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr
    assert done.requests == []                    # no request to the network (tests/_browser.py reads the NetLog)
    dom = done.stdout
    assert _rows(dom) == list(range(N_TEST)) and f"{N_TEST} of {N_TEST} rows" in dom
    body = re.search(r'<tbody id="pbody">(.*?)</tbody>', dom, re.S)[1]
    assert body.count('<img alt="test row ') == N_TEST
    metrics = json.loads((run / "metrics.json").read_text())
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", url + "#show=unparsed").stdout
    assert len(_rows(dom)) == metrics["n_test"] - metrics["n_parsed"]

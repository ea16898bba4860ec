"""bench-report on small hand-made pytest-benchmark results: the table, the plots, the errors."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from bench import report

CPU = "Test CPU @ 2.0GHz"
GPU = "NVIDIA H100 80GB HBM3"


def _bench(name: str, **info) -> dict:
    return {"name": name, "fullname": f"bench/x.py::{name}", "group": None, "params": None,
            "stats": {"mean": 0.5, "min": 0.4, "max": 0.6, "rounds": 3}, "extra_info": info}


def _headline(figure, value, unit):
    return {"figure": figure, "value": value, "unit": unit}


def _compare(figure, value, unit, against, reference, higher_is_better=True):
    return {"figure": figure, "value": value, "unit": unit, "against": against, "reference": reference,
            "ratio": value / reference, "higher_is_better": higher_is_better}


def _run(device_name: str, when: str, benchmarks: list[dict], node: str = "box") -> dict:
    return {"machine_info": {"node": node, "machine": "x86_64",
                             "bench": {"device": "cpu", "device_name": device_name, "cpu_count": 2,
                                       "python": "3.11.9", "torch": "2.4.0", "load_avg_1min": 0.5}},
            "commit_info": {"id": "abc"}, "datetime": when, "version": "5.1.0",
            "command": "pytest bench --benchmark-only --benchmark-save=cpu", "benchmarks": benchmarks}


def cpu_benchmarks(rows_per_s_2: float = 1555.5) -> list[dict]:
    return [
        _bench("test_render_step", kind="generate_step", series="render", device_name=CPU, rows_per_s=812.25,
               headline=_headline("rows/s", 812.25, "rows/s"), compare=[]),
        _bench("test_generate_e2e[workers1]", kind="generate_e2e", series="write_run x1", workers=1,
               rows_per_s=900.0, headline=_headline("rows/s", 900.0, "rows/s"), compare=[]),
        _bench("test_generate_e2e[workersN]", kind="generate_e2e", series="write_run x2", workers=2,
               rows_per_s=rows_per_s_2, scaling_efficiency=rows_per_s_2 / 1800,
               headline=_headline("rows/s", rows_per_s_2, "rows/s"),
               compare=[_compare("scaling efficiency", rows_per_s_2 / 1800, "", "linear", 1.0)]),
        _bench("test_gen_samples_cli[num_proc1]", kind="generate_cli", seconds=3.6,
               headline=_headline("gen-samples --rows 3040", 3.6, "s"),
               compare=[_compare("gen-samples --rows 3040", 3.6, "s", "target", 5.0, higher_is_better=False)]),
        _bench("test_train_step_cpu", kind="train_step", series="ours (lora)", model="tiny", batch_size=16,
               samples_per_s=23.5, peak_memory_gib=0.8,
               headline=_headline("samples/s", 23.5, "samples/s"),
               compare=[_compare("samples/s", 23.5, "samples/s", "public recipe", 4.7)]),
        _bench("test_reference_cpu", kind="train_step", series="public recipe", model="tiny", batch_size=1,
               samples_per_s=4.7, peak_memory_gib=1.1, headline=_headline("samples/s", 4.7, "samples/s"),
               compare=[]),
        _bench("test_accuracy[epochs1]", kind="accuracy", model="tiny", epochs=1.0, train_seconds=15.0,
               category3_accuracy=0.125, parse_rate=0.5, baseline_category3_accuracy=0.1,
               headline=_headline("category3 accuracy", 0.125, ""), compare=[]),
        _bench("test_accuracy[epochs3]", kind="accuracy", model="tiny", epochs=3.0, train_seconds=45.0,
               category3_accuracy=0.375, parse_rate=0.975, baseline_category3_accuracy=0.1,
               headline=_headline("category3 accuracy", 0.375, ""), compare=[]),
        _bench("test_plain_timing"),  # no figures recorded: the table falls back to the mean time
    ]


def _write(folder, name: str, data: dict):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def _main(args) -> tuple[int, str]:
    buf = io.StringIO()
    code = report.main([str(a) for a in args], console=Console(file=buf, width=200, color_system=None))
    return code, buf.getvalue()


def test_table_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    _write(results / "Linux-CPython-3.11-64bit", "0001_abc_cpu.json",
           _run(CPU, "2025-01-02T10:00:00.000000+00:00", cpu_benchmarks()))
    plots = tmp_path / "plots"
    code, out = _main(["--results", results, "--out", plots])
    assert code == 0
    for text in ("render_step", "812", "1,556", "0.86x worse", "3.6 s", "5 s (target)", "0.72x better",
                 "23.5 samples/s", "4.7 samples/s (public recipe)", "5.00x better", "0.125", "0.375",
                 "time per round (mean)", "pytest bench --benchmark-only --benchmark-save=cpu", CPU):
        assert text in out, text
    for name in report.PLOTS.values():
        png = plots / name
        assert png.is_file() and png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_newest_run_per_machine_unless_all(tmp_path):
    results = tmp_path / "results"
    _write(results / "m", "0001_old.json", _run(CPU, "2025-01-01T10:00:00", cpu_benchmarks(1111.0)))
    _write(results / "m", "0002_new.json", _run(CPU, "2025-01-03T10:00:00", cpu_benchmarks(1999.0)))
    gpu = [_bench("test_lora_cuda[bs8]", kind="train_step", series="ours (lora)", model="phi3v-shape",
                  batch_size=8, samples_per_s=40.0, peak_memory_gib=20.0,
                  headline=_headline("samples/s", 40.0, "samples/s"), compare=[])]
    _write(results / "m", "0003_gpu.json", _run(GPU, "2025-01-02T10:00:00", gpu, node="gpubox"))

    code, out = _main(["--results", results, "--no-plots"])
    assert code == 0
    assert "1,999" in out and "1,111" not in out and "lora_cuda[bs8]" in out and "H100" in out
    assert "newest of each machine" in out

    code, out = _main(["--results", results, "--no-plots", "--all"])
    assert code == 0 and "1,999" in out and "1,111" in out and "every saved run" in out


def test_one_file_and_empty_plots_skipped(tmp_path):
    pytest.importorskip("matplotlib")
    only_render = [b for b in cpu_benchmarks() if b["name"] == "test_render_step"]
    path = _write(tmp_path, "run.json", _run(CPU, "2025-01-02T10:00:00", only_render))
    code, out = _main(["--results", path])
    assert code == 0
    assert "skipped throughput_vs_batch_size.png" in out
    assert not list((tmp_path / "plots").glob("*.png"))


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no saved benchmark results"),
    (lambda d: _write(d, "x.json", {"not": "a run"}), "none of the 1 JSON file"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, message):
    results = tmp_path / "results"
    setup(results)
    with pytest.raises(SystemExit) as exc:
        report.main(["--results", str(results)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bench-report: error:") and message in err and err.count("\n") == 1


def test_unreadable_file_is_skipped_with_a_warning(tmp_path, capsys):
    results = tmp_path / "results"
    _write(results, "broken.json", {"benchmarks": []})
    (results / "broken.json").write_text("{not json")
    _write(results, "good.json", _run(CPU, "2025-01-02T10:00:00", cpu_benchmarks()))
    code, out = _main(["--results", results, "--no-plots"])
    assert code == 0 and "812" in out
    assert "warning: skipped" in capsys.readouterr().err


def test_missing_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    path = _write(tmp_path, "run.json", _run(CPU, "2025-01-02T10:00:00", cpu_benchmarks()))
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(SystemExit) as exc:
        report.main(["--results", str(path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err and err.count("\n") == 1
    assert _main(["--results", path, "--no-plots"])[0] == 0


def test_accuracy_plot_carries_the_data_limit_line(tmp_path):
    """The accuracy benchmark records the dataset's limit; the plot draws it beside the baseline."""
    results = tmp_path / "results"
    benches = cpu_benchmarks()
    for b in benches:
        if b["extra_info"].get("kind") == "accuracy":
            b["extra_info"]["limit_category3_accuracy"] = 0.97
    _write(results / "Linux-CPython-3.11-64bit", "0001_abc_cpu.json",
           _run(CPU, "2025-01-02T10:00:00.000000+00:00", benches))
    runs, _ = report.load_runs(results)
    series, lines = report.accuracy_series(runs)
    assert dict(lines)["data's limit: a perfect image reader (category3)"] == 0.97
    assert dict(lines)["majority-category baseline (category3)"] == 0.1
    assert any(s.name.startswith("category3 accuracy") for s in series)


def _gpu_benchmarks() -> list[dict]:
    return [_bench("test_reference_cuda", kind="train_step", series="public recipe", model="phi3v-shape",
                   batch_size=1, samples_per_s=3.3, peak_memory_gib=47.2, headline=_headline("samples/s", 3.3, "samples/s")),
            _bench("test_lora_cuda_preset[fast]", kind="train_step", series="ours (lora, preset fast)",
                   model="phi3v-shape", batch_size=11, samples_per_s=56.6, peak_memory_gib=31.0,
                   headline=_headline("samples/s", 56.6, "samples/s"),
                   compare=[_compare("samples/s", 56.6, "samples/s", "public recipe", 3.3),
                            _compare("samples/s", 56.6, "samples/s", "TRL SFTTrainer bs 11", 13.9)])]


def test_html_page_compares_runs_per_machine_and_suite(tmp_path):
    results = tmp_path / "results"
    old, new = cpu_benchmarks(1111.0), cpu_benchmarks(1999.0)
    for runs in (old, new):
        for b in runs:
            kind = b["extra_info"].get("kind", "")
            b["fullname"] = f"bench/bench_{'train' if kind == 'train_step' else kind.split('_')[0] or 'misc'}.py::{b['name']}"
    _write(results / "cpu", "0001_old.json", _run(CPU, "2025-01-01T10:00:00", old))
    _write(results / "cpu", "0002_new.json", _run(CPU, "2025-01-03T10:00:00", new))
    _write(results / "gpu", "0001_h100.json", _run(GPU, "2025-01-02T10:00:00", _gpu_benchmarks(), node="gpubox"))
    page = tmp_path / "page" / "bench.html"
    code, out = _main(["--results", results, "--no-plots", "--html", page])
    assert code == 0 and f"wrote {page}" in out.replace("\n", "")
    html = page.read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)">', html) == ["m0", "m1"]          # one section a machine
    first, second = html[html.index('<section id="m0">'):html.index('<section id="m1">')], html[html.index('<section id="m1">'):]
    cpu, gpu = first, second                               # the machine with the newest run first
    assert "<h2>H100 80GB HBM3 (gpubox)</h2>" in gpu and "<h2>Test @ 2.0GHz (box)</h2>" in cpu
    # --benchmark-compare: the same benchmark across the machine's saved runs, the newest against the one before
    assert "<th class=num>0001_old</th><th class=num>0002_new</th>" in cpu
    row = re.search(r"<tr><td>generate_e2e\[workersN\]</td>(.*?)</tr>", cpu)[1]
    assert "1,111" in row and "1,999" in row and "+79.9%" in row
    assert "relative to its first saved run" in cpu and "1.80x" in cpu
    for suite in ("bench_accuracy", "bench_generate", "bench_train"):
        assert f"<h3>{suite}</h3>" in cpu
    assert "Generation end to end vs workers" in cpu and "ideal (linear from the first)" in cpu
    assert "Accuracy vs training time" in cpu
    # the GPU run: recipes side by side (one bar a recipe and batch size) and ours vs peers with the ratio on it
    assert "ours (lora, preset fast) · bs 11" in gpu and "public recipe · bs 1" in gpu
    assert "Ours vs peers: samples/s" in gpu and ">17.15x</text>" in gpu and ">4.07x</text>" in gpu
    assert "0001_old" not in gpu
    # self-contained, and the same runs give the same bytes
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I) and "<script" not in html
    _main(["--results", results, "--no-plots", "--html", tmp_path / "again.html"])
    assert (tmp_path / "again.html").read_bytes() == page.read_bytes()


def test_html_page_renders_in_headless_chromium_with_no_request(tmp_path):
    """The bench page in a real browser: it loads without a console error, asks the network for
    nothing, and its charts are there as SVG with drawn marks (tests/_browser.py)."""
    from _browser import CHROMIUM, SKIP_REASON, chromium

    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    results = tmp_path / "results"
    _write(results / "cpu", "0001.json", _run(CPU, "2025-01-01T10:00:00", cpu_benchmarks(1111.0)))
    _write(results / "gpu", "0001_h100.json", _run(GPU, "2025-01-02T10:00:00", _gpu_benchmarks(), node="gpubox"))
    page = tmp_path / "bench.html"
    assert _main(["--results", results, "--no-plots", "--html", page])[0] == 0
    done = chromium("--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr
    assert done.requests == []
    svgs = re.findall(r"<svg\b.*?</svg>", done.stdout, re.S)
    assert len(svgs) >= 4 and all(re.search(r"<(rect|path|polyline|circle|line)\b", svg) for svg in svgs)
    assert ">17.15x</text>" in done.stdout               # the ratio written on the ours-vs-peers bars


def test_html_default_path_is_beside_the_results(tmp_path):
    results = tmp_path / "results"
    _write(results, "run.json", _run(CPU, "2025-01-02T10:00:00", cpu_benchmarks()))
    assert _main(["--results", results, "--no-plots", "--html"])[0] == 0
    assert (results / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_batch_size_plots_are_bars_of_what_was_measured(tmp_path):
    """A recipe measured at one batch size is a bar, not a line through one point."""
    from bench.report_html import recipe_bars

    runs, _ = report.load_runs(_write(tmp_path, "run.json", _run(GPU, "2025-01-02T10:00:00", _gpu_benchmarks())))
    fig = recipe_bars(runs, "samples_per_s", "t", "samples/s")
    bars = [i for i in fig.items if type(i).__name__ == "Rect" and i.tip]
    assert [b.tip for b in bars] == ["public recipe · bs 1: 3.3", "ours (lora, preset fast) · bs 11: 56.6"]
    assert fig.title == "t (samples/s)"

"""Shared fixtures of the benchmarks, and the switch between measuring and smoke-testing them.

Two modes, decided once per session:

* **measure** - ``--benchmark-only``, ``--benchmark-enable``, ``--benchmark-save``, ``--benchmark-autosave``
  or ``--benchmark-json`` was given: full sizes, warm-up and timed rounds. Results are stored under
  ``bench/results/`` unless ``--benchmark-storage`` says otherwise.
* **smoke** - a plain ``pytest`` run (CI): benchmarks are disabled, so each round function runs once,
  on small inputs, and GPU benchmarks skip. The code paths stay tested for about half a minute of
  the suite's time, and nothing is saved.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import measure
from finetune.speed.allocator import use_expandable_segments

# As run-finetune sets it, for every contender alike (finetune/speed/allocator.py).
use_expandable_segments()

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Test support lives beside the tests (tests/_gen_fixtures.py builds the made-up source catalogue); the
# benchmarks import it from there, whether pytest collects tests/ in the same session or bench/ alone.
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))
DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's own default
_MEASURE_OPTIONS = ("benchmark_only", "benchmark_enable", "benchmark_save", "benchmark_autosave", "benchmark_json")


def _wants_measurement(config) -> bool:
    return any(config.getoption(name, default=None) for name in _MEASURE_OPTIONS)


def pytest_configure(config):
    # pytest-benchmark builds its session in a trylast pytest_configure, so these settings are seen.
    if not hasattr(config.option, "benchmark_disable"):
        return
    config.stash[_MODE] = "measure" if _wants_measurement(config) else "smoke"
    if config.stash[_MODE] == "smoke" and not config.getoption("benchmark_skip"):
        config.option.benchmark_disable = True
    if config.getoption("benchmark_storage") == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{RESULTS_DIR}"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["bench"] = measure.environment("cuda" if _cuda_available() else "cpu")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # The command that produced a saved run travels with it.
    output_json["command"] = " ".join(["pytest", *sys.argv[1:]])


_MODE = pytest.StashKey[str]()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class Scale:
    """How big each benchmark's work is in this session's mode."""

    mode: str                   # "measure" or "smoke"
    rows: int                   # the shared generated dataset (train + test)
    test_fraction: float
    gpu_rows: int               # the dataset of the GPU benchmarks (more rows: longer epochs)
    metadata_rows: int          # rows per round of the taxonomy + metadata step
    render_rows: int            # rows per round of rendering / JPEG encoding
    e2e_rows_per_worker: int    # rows per worker per end-to-end round
    cli_rows: int               # rows of the timed ``gen-samples`` command (the product's default when measuring)
    augment_rows: int           # rows per round of augmentation and of the privacy guard
    pipeline_batches: int       # batches per round of the data pipeline (batch size: FinetuneConfig's)
    rounds: int                 # timed rounds of the CPU benchmarks
    warmup: int
    train_rounds: int           # timed training steps
    train_warmup: int
    gpu_rounds: int
    gpu_warmup: int
    accuracy_rows: int
    accuracy_epochs: tuple[float, ...]
    accuracy_eval_rows: int | None
    max_new_tokens: int

    @property
    def measuring(self) -> bool:
        return self.mode == "measure"


# Generation rounds are sized to last a few tenths of a second on a 2-core CPU (timer noise and
# lru-cache warm-up stay small); an end-to-end round needs a thousand rows per worker, or spawning
# the worker (about half a second of imports) is most of what gets measured.
MEASURE = Scale(mode="measure", rows=80, test_fraction=0.2, gpu_rows=160, metadata_rows=5000, render_rows=200,
                e2e_rows_per_worker=1000, cli_rows=3040, augment_rows=96, pipeline_batches=4, rounds=5, warmup=1,
                train_rounds=8, train_warmup=2, gpu_rounds=10, gpu_warmup=3,
                # The default catalogue's size; a third of the default budget and the whole of it (18 epochs,
                # as plain run-finetune: about 3 and 6 minutes on 2 cores, the vision warm-up included).
                accuracy_rows=3040, accuracy_epochs=(6.0, 18.0), accuracy_eval_rows=None, max_new_tokens=48)
SMOKE = Scale(mode="smoke", rows=24, test_fraction=0.25, gpu_rows=24, metadata_rows=50, render_rows=2,
              e2e_rows_per_worker=4, cli_rows=16, augment_rows=4, pipeline_batches=1, rounds=1, warmup=0,
              train_rounds=1, train_warmup=0, gpu_rounds=1, gpu_warmup=0, accuracy_rows=24,
              accuracy_epochs=(0.25,), accuracy_eval_rows=4, max_new_tokens=8)


def scale_of(config) -> Scale:
    """This session's sizes, for collection-time parametrisation (``pytest_generate_tests``)."""
    return MEASURE if config.stash.get(_MODE, "smoke") == "measure" else SMOKE


@pytest.fixture(scope="session")
def scale(request) -> Scale:
    return scale_of(request.config)


@pytest.fixture(scope="session", autouse=True)
def _offline():
    # Nothing in a benchmark may reach the network or a user's W&B account.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def cpu_workers() -> int:
    """N of the multi-worker generation benchmarks: every core (at least 2, so scaling shows)."""
    return max(2, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Data: generated by the real generator, read by the real fine-tune pipeline


def _generate(out: Path, rows: int, test_fraction: float, image_size: int = 336, seed: int = 0) -> Path:
    from generator.api import GenerateConfig, generate_to_dir

    config = GenerateConfig(rows=rows, seed=seed, image_size=image_size, test_fraction=test_fraction,
                            num_proc=min(4, os.cpu_count() or 1), rows_per_shard=max(8, rows // 4))
    return generate_to_dir(config, out)


@pytest.fixture(scope="session")
def catalog_dir(workdir, scale) -> Path:
    """A small generated catalogue (parquet shards), the data of the CPU benchmarks."""
    return _generate(workdir / "catalog", scale.rows, scale.test_fraction)


@pytest.fixture(scope="session")
def splits(catalog_dir):
    from finetune.data import load_splits

    return load_splits(str(catalog_dir))


@pytest.fixture(scope="session")
def gpu_splits(workdir, scale):
    """The GPU benchmarks' rows: enough that the warm-up and timed steps of batch 16 cover them."""
    from finetune.data import load_splits

    return load_splits(str(_generate(workdir / "gpu-catalog", scale.gpu_rows, 0.1)))


def _tokenizer_for(train_split):
    from finetune.config import FinetuneConfig
    from finetune.data import phi3_prompt, training_texts
    from finetune.tokenizer import END, IMAGE, train_tokenizer

    cfg = FinetuneConfig()
    texts = training_texts(train_split, phi3_prompt(cfg.question, IMAGE), END)
    return train_tokenizer(texts, vocab_size=cfg.tokenizer_vocab_size)


@pytest.fixture(scope="session")
def tokenizer(splits):
    """The built-in models' tokenizer, trained on the benchmark rows as run-finetune trains it."""
    return _tokenizer_for(splits["train"])


@pytest.fixture(scope="session")
def gpu_tokenizer(gpu_splits):
    return _tokenizer_for(gpu_splits["train"])


@pytest.fixture(scope="session")
def accuracy_dir(workdir, scale) -> Path:
    """The fixed dataset of the accuracy benchmark: the default catalogue's settings (seed 0, 336 px, a
    tenth for test); in measure mode its size too."""
    return _generate(workdir / "accuracy", scale.accuracy_rows, 0.1)


@pytest.fixture(scope="session")
def source_catalog(workdir, scale):
    """A real-shaped source catalogue for augmentation: ``samples/source_catalog`` when it is there,
    else the same fixture built into a temporary folder (smaller in smoke mode)."""
    from _gen_fixtures import DEFAULT_DIR, FixtureConfig, build_fixture
    from generator.sources import load_source

    if DEFAULT_DIR.is_dir() and any(DEFAULT_DIR.iterdir()):
        return load_source(DEFAULT_DIR)
    config = FixtureConfig() if scale.measuring else FixtureConfig(rows=40, extra_rows=8, recipe_rows=8)
    build_fixture(workdir / "source_catalog", config)
    return load_source(workdir / "source_catalog")


# --------------------------------------------------------------------------------------------
# Baselines measured once per session


class Baselines:
    """Figures of the reference and the peer, keyed by what was measured.

    A benchmark of the reference (or TRL) stores its figures here; a benchmark of ours that needs
    them for a ratio takes them from here, or measures them first when that benchmark was not
    selected. Either way both sides come from the same session, on the same machine.
    """

    def __init__(self):
        self._figures: dict[tuple, dict] = {}

    def put(self, key: tuple, figures: dict) -> None:
        self._figures[key] = figures

    def get(self, key: tuple, measure_fn=None) -> dict | None:
        if key not in self._figures and measure_fn is not None:
            self._figures[key] = measure_fn()
        return self._figures.get(key)


@pytest.fixture(scope="session")
def baselines() -> Baselines:
    return Baselines()


@pytest.fixture
def cuda_device(scale) -> str:
    if not _cuda_available():
        pytest.skip("no CUDA device: the GPU benchmarks run on a machine with one "
                    "(pytest bench --benchmark-only -k cuda)")
    if not scale.measuring:
        pytest.skip("GPU benchmarks only run when measuring (--benchmark-only or --benchmark-enable)")
    measure.free_cuda()
    yield "cuda"
    measure.free_cuda()

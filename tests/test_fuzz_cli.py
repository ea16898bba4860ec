"""Both command lines under generated hostile input (issue 17, "Done when": the fuzz test).

hypothesis draws, deterministically (``derandomize``), what a careless user or an attacker could hand
``gen-samples`` and ``run-finetune``:

* argv built from each parser's real options (and abbreviations, ``--flag=value``, unknown flags) with
  junk values: negative, huge, NaN, unicode digits, empty, path traversal, very long, control characters;
* ``--out`` folders in every state (new, a file, not empty, a finished run, an interrupted one, one whose
  manifest is junk, one that failed its privacy check) and ``gen-samples push`` on each of them;
* taxonomy files: the built-in one with one value or table replaced by a hostile value, or broken TOML;
* source tables for ``--source``: 0-8 row CSV or parquet files with random prices, dates, image paths
  (``..``, absolute, symlinks out), quotes, control characters, missing columns, broken images;
* run-finetune config files: TOML/YAML with wrong types, unknown keys, deep nesting, huge strings,
  alias bombs, bad encodings; model folders with a junk ``config.json``; dataset folders that are not one.

Each example runs ``main(argv)`` in this process (a subprocess only for the smoke tests at the end), in a
fresh sandbox folder that is also its working directory, and must keep what the CLIs document
(README.md, the modules' docstrings, tests/test_hardening_*.py):

* exit code 0, 1 or 2; no traceback, in this process or printed;
* a failure is exactly one ``<prog>: error: ...`` line, the last thing on stderr; for gen-samples' bad
  input (2) the only thing;
* gen-samples: exit 2 leaves the sandbox exactly as it was ("nothing written"); exit 1 (privacy check
  failed, push failed) comes after a complete run with its card; a run folder is complete (card and
  privacy report) unless it is one fleet machine's share (``--shard``); ``gen-samples push`` writes
  nothing local; no temporary file (``.tmp-*``, ``*.incoming``, ``.old-*``) is left anywhere;
* run-finetune: input that never reaches training is bad input: exit 2 (not the catch-all's exit 1),
  nothing written (no empty run folder); a run on a usable tiny dataset (forced ``--max-steps 1``) ends
  with its ``final`` model, or exits 2 with nothing written.

The budget is well under a minute on the 2-core CPU box (``time pytest tests/test_fuzz_cli.py``): tiny
``--rows``, 32 px images, one process, and run-finetune only trains in a handful of examples. By hand,
``FUZZ_CLI_SCALE=10`` runs ten times the examples from a fresh random seed (a longer hunt), and
``FUZZ_CLI_LOG=FILE`` appends each example's exit code, last stderr line and argv to FILE (to see what the
strategies reach).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from generator import cli as gen_cli  # noqa: E402
from generator.taxonomy import BUILTIN_DIR  # noqa: E402
from test_hardening_sources import COLUMNS, _row as source_row  # noqa: E402  (one source-row shape)

REPO = Path(__file__).resolve().parent.parent
SOURCE_FIXTURE = REPO / "samples" / "source_catalog"
# Shaped like a Hugging Face token (hf_ + 34 letters and digits), known to no Hub.
FAKE_TOKEN = "hf_" + "Fz9" * 11 + "q"
TOKEN_LIKE = "hf_" + "Ab1" * 11 + "z"  # handed over as a repo id: must never be echoed
# What a finished gen-samples run of BASE_GEN holds (the template every "run" state copies).
BASE_GEN = ["--rows", "8", "--image-size", "32", "--num-proc", "1"]
TEMPORARY = re.compile(r"\.tmp-|\.tmp$|\.incoming$|\.old-")
# datasets' and transformers' own progress bars: what a run-finetune stderr may hold besides its line.
PROGRESS = re.compile(r"\d+%\||[\d.?]+ ?(it|ba|files|examples|shards)/s")
CATCH_ALL = "set RUN_FINETUNE_DEBUG=1 for the traceback"


SCALE = float(os.environ.get("FUZZ_CLI_SCALE", "1"))


def _settings(n: int, **extra) -> settings:
    return settings(max_examples=max(1, round(n * SCALE)), deadline=None, derandomize=SCALE == 1, database=None,
                    print_blob=False, phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck), **extra)


# --------------------------------------------------------------------------------------------------
# The sandbox, running main(argv), and the checks every example must pass


@pytest.fixture(autouse=True)
def _no_network_no_caches(tmp_path, monkeypatch):
    """Offline, a Hub endpoint that refuses every connection, a fake token, and caches in tmp_path."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)       # read once, at import
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "caches" / name.lower()))
    monkeypatch.delenv("RUN_FINETUNE_DEBUG", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    # datasets reads HF_DATASETS_CACHE when imported (~1.5 s: not done here); if it already is, patch it.
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "caches" / "datasets"))
    if "datasets" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", str(tmp_path / "caches" / "datasets"))
    # Python's temporary folder (push's scratch copy, datasets' temporary files): checked empty after each run.
    (tmp_path / "systmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


@contextlib.contextmanager
def sandbox(tmp_path: Path):
    """A fresh folder per example: ``in/`` for the inputs made, ``w/x/y`` as the working directory (so
    ``..`` and ``../..`` stay inside), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ex-", dir=tmp_path))
    (root / "in").mkdir()
    cwd = root / "w" / "x" / "y"
    cwd.mkdir(parents=True)
    around = set(tmp_path.iterdir())
    old = os.getcwd()
    os.chdir(cwd)
    try:
        yield root
        # Nothing escaped the sandbox (../../../../x from the working directory lands here).
        escaped = {p.name for p in set(tmp_path.iterdir()) - around} - {"caches"}
        assert not escaped, f"written outside the sandbox: {sorted(escaped)}"
    finally:
        os.chdir(old)
        shutil.rmtree(root, ignore_errors=True)
        for left in (tmp_path / "systmp").iterdir():
            shutil.rmtree(left, ignore_errors=True) if left.is_dir() else left.unlink()


def call(main, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr). Any exception but SystemExit propagates:
    that is a traceback, and fails the example."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    if os.environ.get("FUZZ_CLI_LOG"):  # what each example came to, for tuning the strategies
        with open(os.environ["FUZZ_CLI_LOG"], "a", errors="backslashreplace") as log:
            last = (err.getvalue().strip().splitlines() or [""])[-1]
            log.write(f"{code}\t{last[:160]!r}\t{' '.join(argv)[:200]!r}\n")
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time (a rewrite changes it)."""
    found = {}
    for path in root.rglob("*"):
        st_ = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        found[path.relative_to(root).as_posix()] = (kind, 0 if kind == "dir" else st_.st_size,
                                                     0 if kind == "dir" else st_.st_mtime_ns)
    return found


def shown(prog: str, argv: list[str], code, out: str, err: str) -> str:
    return (f"{prog} {shlex.join(a[:80] + ('...' if len(a) > 80 else '') for a in argv)}\n"
            f"exit {code}\n--- stdout\n{_cut(out)}\n--- stderr\n{_cut(err)}")


def _cut(text: str, keep: int = 1500) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]} [...] {text[-keep:]}"


def check_output(prog: str, argv: list[str], code, out: str, err: str) -> str | None:
    """Exit code 0/1/2, no traceback, a failure is one error line and the last; returns that line."""
    info = shown(prog, argv, code, out, err)
    assert code in (0, 1, 2), info
    assert "Traceback" not in out and "Traceback" not in err, info
    if code == 0:
        assert f"{prog}: error" not in err, info
        return None
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}:")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), info
    assert err.endswith(lines[0] + "\n"), info          # nothing after it
    return lines[0]


def check_no_token(argv: list[str], out: str, err: str) -> None:
    """The token (HF_TOKEN) is never printed, and neither is a token given as the repo id (--repo, --push)."""
    info = shown("gen-samples", argv, 0, out, err)
    assert FAKE_TOKEN not in out + err, info
    flags = ("--repo", "--push", "--pus", "--pu") + (("--re", "--rep") if argv[:1] == ["push"] else ())
    as_repo = any(TOKEN_LIKE in value and (flag in flags or value.split("=", 1)[0] in flags)
                  for flag, value in zip(["", *argv], argv))
    assert not (as_repo and TOKEN_LIKE in out + err), info


def new_temporaries(before: dict, after: dict) -> list[str]:
    return sorted(p for p in after.keys() - before.keys() if TEMPORARY.search(p.rsplit("/", 1)[-1]))


def check_gen_samples_disk(root: Path, before: dict, argv: list[str], code: int, line: str | None,
                           out: str, err: str) -> None:
    after = snapshot(root)
    info = shown("gen-samples", argv, code, out, err)
    assert new_temporaries(before, after) == [], info
    if code == 2 and "--push needs a complete run" not in (line or ""):
        # Bad input: one line, nothing else said, nothing written.
        assert err.strip().splitlines() == [line] and out == "", info
        assert after == before, info + f"\nchanged: {sorted(set(after.items()) ^ set(before.items()))[:3]}"
        return
    # Every run folder this call made or changed is complete (card and privacy report), unless it is
    # one fleet machine's share of the shard files.
    changed = set()
    for path, value in after.items():
        parts = path.split("/")
        if ".manifest" in parts and before.get(path) != value:
            changed.add("/".join(parts[: parts.index(".manifest")]))
    for run in sorted(changed):
        folder = root / run
        complete = (folder / "README.md").is_file() and (folder / "privacy_report.json").is_file()
        assert complete or "--shard" in " ".join(argv) or any(a.startswith("--sh") for a in argv), info + f"\n{run}"
    if code == 1:
        assert any((root / r / "README.md").is_file() for r in changed) or (line and "push" in line), info


# --------------------------------------------------------------------------------------------------
# Inputs made in the sandbox: a value is a plain string or a Make, turned into a path by make()


@dataclass(frozen=True)
class Make:
    """An input created in the example's sandbox; ``data`` says what goes in it."""

    kind: str
    data: Any = None

    def __repr__(self) -> str:
        text = repr(self.data)
        return f"Make({self.kind!r}, {text[:3000] + '...' if len(text) > 3000 else text})"


def make(value: str | Make, root: Path, template: Path | None = None) -> str:
    if isinstance(value, str):
        return value
    kind, data = value.kind, value.data
    base = root / "in" / f"{kind}-{len(list((root / 'in').iterdir()))}"
    if kind == "text":                         # (file name, str or bytes)
        name, content = data
        base.mkdir()
        path = base / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8", "surrogatepass"))
        return str(path)
    if kind == "out":                          # an --out folder in a given state; relative to the cwd
        rel = Path(f"o{len(list(Path.cwd().iterdir()))}") / "run"
        path = Path.cwd() / rel
        _out_state(path, data, template)
        return str(rel)
    if kind == "source":
        return _source(base, data)
    if kind == "dataset":
        return _dataset(base, data)
    if kind == "model":                        # a model folder with this config.json text
        base.mkdir()
        if data is not None:
            (base / "config.json").write_text(data)
        return str(base)
    raise AssertionError(kind)


def _out_state(path: Path, state: Any, template: Path | None) -> None:
    name = state if isinstance(state, str) else state[0]
    if name == "new":
        return
    if name == "file":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a folder")
        return
    path.mkdir(parents=True)
    if name == "empty":
        return
    if name == "junk":
        (path / "notes.txt").write_text("precious")
        return
    if name == "ft_checkpoint":                # a run-finetune run folder whose only checkpoint is junk
        step = path / "checkpoints" / "step-00000005"
        step.mkdir(parents=True)
        for file in ("state.pt", "optimizer.pt", "trainable.safetensors"):
            (step / file).write_bytes(b"not a checkpoint")
        (path / "config.json").write_text("[]")
        return
    assert template is not None
    shutil.copytree(template, path, dirs_exist_ok=True)
    if name == "run":
        return
    if name == "interrupted":                  # killed after a shard: no card, no reports, a torn temp file
        for file in ("README.md", "privacy_report.json", "contact_sheet.png"):
            (path / file).unlink(missing_ok=True)
        shard = next((path / "data").glob("train-*.parquet"))
        (path / "data" / f".{shard.name}.tmp-host-1").write_bytes(shard.read_bytes()[:100])
        shard.unlink()
        return
    if name == "failed_privacy":
        report = json.loads((path / "privacy_report.json").read_text())
        (path / "privacy_report.json").write_text(json.dumps({**report, "passed": False}))
        return
    if name == "manifest":                     # ("manifest", bytes): .manifest/run.json replaced
        (path / ".manifest" / "run.json").write_bytes(state[1])
        return
    if name == "report":                       # ("report", bytes): privacy_report.json replaced
        (path / "privacy_report.json").write_bytes(state[1])
        return
    if name == "card_with_token":
        (path / "README.md").write_text((path / "README.md").read_text() + f"\ntoken: {FAKE_TOKEN}\n")
        return
    raise AssertionError(name)


OUT_STATES = st.one_of(
    st.sampled_from(["new", "file", "empty", "junk", "run", "interrupted", "failed_privacy", "card_with_token"]),
    st.tuples(st.sampled_from(["manifest", "report"]),
              st.sampled_from([b"[]", b"1", b'"x"', b"{", b"", b"\xff\xfe", b"null", b'{"format": "x"}',
                               b"[" * 5000 + b"]" * 5000, b'{"passed": "false"}', b'{"rows": -1}'])),
)


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    """A finished run of BASE_GEN, copied into the sandbox by the "run" states."""
    from generator.api import GenerateConfig, write_run

    out = tmp_path_factory.mktemp("template") / "run"
    report = write_run(GenerateConfig(rows=8, image_size=32, num_proc=1), out, quiet=True)
    assert report.complete and report.privacy_passed
    return out


# --------------------------------------------------------------------------------------------------
# Junk values


# Random text as argv can carry it: no NUL (execve cannot pass one), no lone surrogate but those Python
# makes of undecodable bytes (os.fsdecode, in JUNK; the subprocess smoke test passes such bytes for real).
ARG_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
JUNK = [
    "", " ", "-", "--", "-1", "0", "-0", "1", "00", "+3", "1.5", "1e3", "1e309", "-1e309", "nan", "NaN", "inf",
    "-inf", "0x10", "1_0", "_1", "1__0", "٣", "١٢", "１２", "²", "Ⅻ", "9" * 40, str(2**63), str(2**64),
    str(-2**63),
    "1/0", "0/0", "3/2", "-1/4", "1/-1", "a/b", "0/1/2", "/", "..", ".", "../..", "../../..", "../../in",
    "/dev/null", "/dev/null/x", "/proc/self/nope", "~nobody/x", "C:\\x", "\\\\server\\share", "\n", "\t", "\r\n",
    "é", "日本語", "😀", "\u202e\u202d", "\u200b", "\x1b[31mred\x1b[0m", "%s%n%x", "{}", "{0}", "$(id)", "`id`",
    ";rm -rf x", os.fsdecode(b"\xff\xfe"), os.fsdecode(b"o\xe9x"), "a" * 300, "a" * 5000, "ö" * 2000, "x/" * 300,
    "hf_", TOKEN_LIKE, f"user/{TOKEN_LIKE}",
]
junk = st.one_of(st.sampled_from(JUNK), st.text(ARG_CHARS, max_size=12))
# The output folder: anything relative lands inside the sandbox; absolute ones are places nothing may
# be written (we run as root here: never an absolute path that could be written).
OUT_JUNK = st.one_of(
    st.sampled_from(["o", "o/deep/er", ".", "..", "../..", "../../in", "./", "o/..", "o/../o2", "ø ü 日本",
                     "-x", " ", "\t", "o\nq", "a" * 300, "a" * 5000, "x/" * 300, "/dev/null", "/dev/null/x",
                     "/proc/self/nope/x", ".o", "o.parquet", "\x1b[2J", os.fsdecode(b"o\xff")]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/~"), min_size=1,
            max_size=12).filter(lambda s: not s.startswith("-") and not TEMPORARY.search(s)),
    st.builds(Make, st.just("out"), OUT_STATES),
)


# run-finetune's --out: the same junk, and run folders of its own (no gen-samples template there).
FT_OUT_JUNK = st.one_of(OUT_JUNK.filter(lambda v: not isinstance(v, Make)),
                        st.builds(Make, st.just("out"),
                                  st.sampled_from(["new", "file", "empty", "junk", "ft_checkpoint"])))


def _costly(flag: str, text: str) -> bool:
    """Whether this value is valid and would make the example slow (many rows, big images, workers)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        return False
    limit = {"--rows": 64, "--image-size": 64, "--num-proc": 1, "--rows-per-shard": 10**12}.get(flag)
    return limit is not None and limit < value <= 10**10


# --------------------------------------------------------------------------------------------------
# Files: TOML and YAML writers, hostile values


def toml_text(data: dict) -> str:
    """``data`` as TOML, every value inline (``None`` has no TOML form: left out)."""
    def s(text: str) -> str:
        return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")

    def v(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
        if isinstance(value, str):
            return s(value)
        if isinstance(value, list):
            return "[" + ", ".join(v(x) for x in value if x is not None) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{s(str(k))} = {v(x)}" for k, x in value.items() if x is not None) + "}"
        raise TypeError(type(value))

    return "".join(f"{s(str(k))} = {v(x)}\n" for k, x in data.items() if x is not None)


def yaml_text(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


FILE_CHARS = st.characters(blacklist_categories=("Cs",))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 100), st.integers(), st.integers(-2**70, 2**70),
    st.floats(), st.sampled_from([0.0, -0.0, 1e-320, 1e308, -1e308, 0.5, 1.0, 2.5, 1e-4]),
    st.text(FILE_CHARS, max_size=16),
    st.sampled_from(["false", "no", "off", "true", "yes", "1e-4", "16", "six", "tiny", "phi3v-shape", "lora", "full",
                     "cuda", "cuda:99", "meta", "fast", "", "../../etc/passwd", "/etc/shadow", "hf_x", "\x00",
                     "x" * 70_000, "é" * 300, "a\nb", "\x1b[31m"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(FILE_CHARS, max_size=6), inner, max_size=3), max_leaves=6)


def _deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


def _laughs(levels: int = 8) -> str:
    items = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


# --------------------------------------------------------------------------------------------------
# gen-samples: hostile argv


def _gen_option(flag: str, hostile: bool):
    """The value strategy of one gen-samples option: values it takes (so examples get past parsing and into
    the run), and when ``hostile`` a third of junk. None: a flag without a value."""
    valid = {
        "--rows": st.integers(1, 20).map(str) | st.sampled_from(["٣", "１２", "1_0"]),
        "--seed": st.integers(0, 2**64).map(str) | st.sampled_from([str(2**63 - 1), str(2**63)]),
        "--out": OUT_JUNK,
        "--image-size": st.sampled_from(["32", "31", "33", "2049", "48"]),
        "--test-fraction": st.sampled_from(["0", "0.5", "0.99", "0.999999", "1", "-0.0", "1e-300", ".1", "0.9"]),
        "--taxonomy": st.sampled_from(["burberry_us", "valmora_it", "burberry_us.toml", "BURBERRY_US",
                                       str(BUILTIN_DIR / "valmora_it.toml"), "../taxonomies/burberry_us",
                                       "/etc/passwd", "x.toml", "/dev/null"]),
        "--rows-per-shard": st.integers(1, 5).map(str),
        "--jpeg-quality": st.sampled_from(["1", "50", "95", "96", "100"]),
        "--source": st.sampled_from([str(SOURCE_FIXTURE), str(SOURCE_FIXTURE / "catalog.csv"), "owner/name", "a/b/c",
                                     "./owner/name", "/dev/null", "/proc/self/status"])
        | st.builds(Make, st.just("source"), st.deferred(lambda: source_plan())),
        "--privacy": st.sampled_from(["strict", "standard", "off", "off", "OFF", "strict "]),
        "--num-proc": st.just("1"),
        "--shard": st.sampled_from(["0/1", "0/2", "1/2", "2/2", "0/0", "1/1", "0/3", " 0/2", "0 / 2", "٠/٢"]),
        "--push": st.sampled_from(["user/name", "name", "a/b/c", "user/", "/name", "user/na me", "user/" + "n" * 200]),
    }.get(flag)
    if valid is None:
        return None
    return valid if not hostile else st.one_of(valid, valid, junk.filter(lambda v: not _costly(flag, v)))


GEN_FLAGS = ["--rows", "--seed", "--out", "--image-size", "--test-fraction", "--taxonomy", "--rows-per-shard",
             "--jpeg-quality", "--source", "--privacy", "--num-proc", "--shard", "--overwrite", "--resume", "--quiet",
             "--push", "--private"]
NO_VALUE = {"--overwrite", "--resume", "--quiet", "--private"}


@st.composite
def gen_argv(draw) -> list:
    argv: list = list(BASE_GEN)
    # Half the examples hold only values the options take: one junk value anywhere stops a run at parsing.
    hostile = draw(st.booleans())
    kinds = ["option"] * 8 + ["abbrev", "equals", "unknown", "junk"] if hostile else ["option"] * 4 + ["equals"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(kinds))
        flag = draw(st.sampled_from(GEN_FLAGS))
        if kind == "unknown":
            argv.append(draw(st.sampled_from(["--bogus", "-x", "--rows-", "--ro", "--no-quiet", "--help", "-h",
                                              "push", "--", "---rows", "—rows", "--ROWS"])))
            continue
        if kind == "junk":
            argv.append(draw(junk))
            continue
        name = flag[: draw(st.integers(4, len(flag)))] if kind == "abbrev" else flag
        if flag in NO_VALUE:
            argv.append(name)
            continue
        if flag == "--push" and draw(st.booleans()):
            argv.append(name)                      # nargs="?": the default repo
            continue
        value = draw(_gen_option(flag, hostile))
        if kind == "equals" and isinstance(value, str):
            argv.append(f"{name}={value}")
        else:
            argv += [name, value]
    if draw(st.booleans()):
        argv += ["--quiet"]
    return argv


def run_gen_samples(root: Path, argv_plan: list, template: Path | None) -> None:
    argv = [make(a, root, template) for a in argv_plan]
    before = snapshot(root)
    code, out, err = call(gen_cli.main, argv)
    line = check_output("gen-samples", argv, code, out, err)
    check_no_token(argv, out, err)
    check_gen_samples_disk(root, before, argv, code, line, out, err)


@_settings(50)
@given(argv=gen_argv())
@example(argv=[*BASE_GEN, "--quiet", "--out", "a" * 5000])                     # file name too long
@example(argv=[*BASE_GEN, "--quiet", "--out", "x/" * 300 + "a" * 300])    # the 300 parents made before it failed
@example(argv=[*BASE_GEN, "--quiet", "--taxonomy", "a" * 5000 + ".toml"])
@example(argv=[*BASE_GEN, "--quiet", "--source", "a" * 5000])
@example(argv=[*BASE_GEN, "--quiet", "--out", Make("out", "interrupted"), "--resume"])
@example(argv=[*BASE_GEN, "--quiet", "--out", Make("out", ("manifest", b"[" * 5000 + b"]" * 5000)), "--resume"])
@example(argv=[*BASE_GEN, "--quiet", "--out", Make("out", "run"), "--overwrite", "--shard", "0/2"])
@example(argv=[*BASE_GEN, "--quiet", "--shard", "0/2", "--out", "o", "--push"])
@example(argv=[*BASE_GEN, "--out", "o", "--push", "user/name"])
@example(argv=[*BASE_GEN, "--quiet", "--out", os.fsdecode(b"o\xff")])              # not UTF-8: pyarrow's path
@example(argv=[*BASE_GEN, "--quiet", "--source", os.fsdecode(b"s\xff.parquet")])
def test_gen_samples_hostile_argv(tmp_path, template_run, argv):
    with sandbox(tmp_path) as root:
        run_gen_samples(root, argv, template_run)


# --------------------------------------------------------------------------------------------------
# gen-samples: hostile taxonomy files


BASE_TAXONOMY = tomllib.loads((BUILTIN_DIR / "burberry_us.toml").read_text())


@st.composite
def mutated_taxonomy(draw) -> dict:
    """The built-in taxonomy with one value replaced, one key removed or one unknown key added, somewhere
    down to four levels deep."""
    data = json.loads(json.dumps(BASE_TAXONOMY))
    node: Any = data
    for depth in range(draw(st.integers(1, 4))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if depth < 3 and isinstance(node[key], (dict, list)) and node[key] and draw(st.booleans()):
            node = node[key]
            continue
        action = draw(st.sampled_from(["replace"] * 4 + ["delete", "add"]))
        if action == "replace":
            node[key] = draw(VALUES)
        elif action == "delete" or not isinstance(node, dict):
            del node[key]
        else:
            node[draw(st.text(FILE_CHARS, min_size=1, max_size=8))] = draw(VALUES)
        break
    return data


TAXONOMY_FILES = st.one_of(
    mutated_taxonomy().map(lambda d: ("t.toml", toml_text(d))),
    st.sampled_from([
        ("t.toml", None), ("t.toml", ""), ("t.toml", b"\xff\xfe\x00x"), ("t.toml", "name = [" + "[" * 200_000),
        ("t.toml", "x = " + _deep(3000) + "\n"), ("t.toml", "x = " + _deep(3000, "{a=", "}") + "\n"),
        ("t.toml", "[brand]\n[brand]\n"), ("t.toml", "name = 'a'\nname = 'b'\n"), ("t", "name = 'x'\n"),
        ("t.toml", "\ufeff" + (BUILTIN_DIR / "burberry_us.toml").read_text()),
        ("t.toml", (BUILTIN_DIR / "burberry_us.toml").read_text().replace("0.9174", "1e308")),
        ("t.toml", (BUILTIN_DIR / "burberry_us.toml").read_text().replace("points = [", "points = [1e300, ")),
        ("t.toml", (BUILTIN_DIR / "burberry_us.toml").read_text().replace('"#1b1b1d"', '"#1b1b1d|\\u001b[31m"')),
        ("t.toml", (BUILTIN_DIR / "burberry_us.toml").read_text().replace('brand = "BURBERRY"', 'brand = "B|U\\nR"')),
    ]),
)


@_settings(25)
@given(taxonomy=TAXONOMY_FILES, extra=st.sampled_from([[], ["--privacy", "off"], ["--seed", "3"]]))
def test_gen_samples_hostile_taxonomy(tmp_path, template_run, taxonomy, extra):
    with sandbox(tmp_path) as root:
        run_gen_samples(root, [*BASE_GEN, "--quiet", "--out", "o", "--taxonomy", Make("text", taxonomy), *extra],
                        template_run)


# --------------------------------------------------------------------------------------------------
# gen-samples --source: hostile tables


HOSTILE_CELLS = {
    "price": ["1.990,00 €", "2 500,50", "$1,290.00", "0x10", "1e308", "1e309", "-5", "0", "nan", "inf", "-inf",
              "1e-320", "", "１２３", "٣٠٠", "1,2,3", "12 USD 50", "1.990.00", "US$ 90", "9" * 400, "€", "N/A"],
    "competence_date": ["99999", "2023-13-45", "not a date", "2023-02-29", "2024-02-29", "0001-01-01",
                        "9999-12-31", "2023-11-17T25:99", "17.11.2023", "11/12/2023", "", "2023-11-17\x00"],
    "local_image_path": ["../../etc/passwd", "/etc/shadow", "../outside.jpg", "{outside}", "images/", "",
                         "images/missing.jpg", "C:\\images\\0.jpg", "images/../images/0.jpg", "/content/images/0.jpg",
                         "images/link.jpg", "images/dir.jpg", "images/empty.jpg", "images/" + "a" * 300 + ".jpg",
                         "images/" + "a" * 5000 + ".jpg", "\x00", "images/\n0.jpg"],
    "text": ['a "quoted" title', 'unbalanced "quote', "comma, inside", "line\nbreak", "cr\rlf", "tab\there",
             "\x1b[31mred", "pipe | table", "\u202eevil", "😀 emoji", "", "   ", "N.A.", "null", "<script>",
             "x" * 3000,
             "\x00nul", "\x85next", "ß" * 50],
    "product_code": ["80000001", "80000001.0", " 80000001 ", "", "0", "-1", "1e20", "ABC-123", "9" * 40],
    "flg_discount": ["0", "1", "2", "-1", "1e300", "1e309", "nan", "inf", "yes", "", "0.5"],
}


def _cell_kind(column: str) -> str:
    if column in ("full_price", "price", "full_price_eur", "price_eur"):
        return "price"
    if column in ("competence_date", "local_image_path", "product_code", "flg_discount"):
        return column
    return "text"


@st.composite
def source_plan(draw) -> dict:
    n = draw(st.integers(0, 8))
    rows = []
    for k in range(n):
        row = source_row(k)
        for column in draw(st.lists(st.sampled_from(COLUMNS), max_size=2)):
            row[column] = draw(st.sampled_from(HOSTILE_CELLS[_cell_kind(column)]) | st.text(FILE_CHARS, max_size=8))
        rows.append(row)
    columns = list(COLUMNS)
    header = draw(st.sampled_from(["plain"] * 10 + ["drop", "extra", "upper", "shuffle", "dupe", "none"]))
    if header == "drop":
        columns.remove(draw(st.sampled_from(COLUMNS)))
    elif header == "extra":
        columns.append(draw(st.sampled_from(["", "junk", "Title", "image", "image_path"])))
    elif header == "shuffle":
        columns = draw(st.permutations(columns))
    return {
        "rows": rows, "columns": columns, "header": header,
        "format": draw(st.sampled_from(["csv"] * 4 + ["raw_csv", "parquet", "latin1", "bom"])),
        # per row: what images/<k>.jpg is
        "images": draw(st.lists(st.sampled_from(["jpeg"] * 12 + ["png_rgba", "grey16", "corrupt", "truncated",
                                                                  "empty", "none", "dir", "link_out", "huge_dims"]),
                                min_size=n, max_size=n)),
        "point_at": draw(st.sampled_from(["file", "folder", "folder_data"])),
        "extra_rows": draw(st.sampled_from([0, 0, 0, 2])),   # rows as text appended to the CSV: short, long
    }


def _image_bytes(kind: str, k: int) -> bytes:
    from PIL import Image

    if kind == "grey16":
        img = Image.new("I;16", (20, 24), 300 * (k + 1))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    mode = "RGBA" if kind == "png_rgba" else "RGB"
    img = Image.new(mode, (24 + k % 3 * 4, 28), (30 + 25 * k % 200, 90, 160) + ((128,) if mode == "RGBA" else ()))
    img.paste((200, 40 + 20 * k % 200, 40), (4 + k % 4, 6, 16, 20 + k % 5))
    buf = io.BytesIO()
    img.save(buf, format="PNG" if kind == "png_rgba" else "JPEG", quality=90)
    data = buf.getvalue()
    if kind == "truncated":
        return data[: len(data) // 2]
    return data


def _huge_dims_png() -> bytes:
    """A valid PNG header claiming 100,000 x 100,000 pixels (a decompression bomb), no real data."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _source(base: Path, plan: dict) -> str:
    folder = base / "shop"
    images = folder / "images"
    images.mkdir(parents=True)
    outside = base / "outside.jpg"
    outside.write_bytes(_image_bytes("jpeg", 99))
    for k, kind in enumerate(plan["images"]):
        path = images / f"{k}.jpg"
        if kind == "jpeg" or kind in ("png_rgba", "grey16", "truncated"):
            path.write_bytes(_image_bytes(kind, k))
        elif kind == "corrupt":
            path.write_bytes(b"this is not an image" * (k + 1))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "dir":
            path.mkdir()
        elif kind == "link_out":
            path.symlink_to(outside)
        elif kind == "huge_dims":
            path.write_bytes(_huge_dims_png())
    (images / "link.jpg").symlink_to(outside)
    (images / "dir.jpg").mkdir()
    (images / "empty.jpg").write_bytes(b"")
    columns = plan["columns"]
    rows = [{c: str(r.get(c, "")).replace("{outside}", str(outside)) for c in columns} for r in plan["rows"]]
    table_dir = folder / "data" if plan["point_at"] == "folder_data" else folder
    table_dir.mkdir(exist_ok=True)
    if plan["format"] == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = list(dict.fromkeys(columns))
        table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in names}) if names else pa.table({})
        if "full_price" in names and rows and plan["header"] == "plain":   # typed: floats, NaN and inf included
            prices = [v if (v := _float(r["full_price"])) is not None else None for r in rows]
            table = table.set_column(names.index("full_price"), "full_price", pa.array(prices, pa.float64()))
        path = table_dir / "catalog.parquet"
        pq.write_table(table, path)
    else:
        buf = io.StringIO(newline="")
        header = [c.upper() for c in columns] if plan["header"] == "upper" else list(columns)
        if plan["header"] == "dupe" and header:
            header[-1] = header[0]
        if plan["format"] == "raw_csv":                         # no quoting at all: commas and quotes break it
            lines = ([] if plan["header"] == "none" else [",".join(header)]) + [
                ",".join(r[c] for c in columns) for r in rows]
            buf.write("\n".join(lines) + "\n")
        else:
            writer = csv.writer(buf)
            if plan["header"] != "none":
                writer.writerow(header)
            writer.writerows([[r[c] for c in columns] for r in rows])
        text = buf.getvalue()
        if plan["extra_rows"]:
            text += "only,three,cells\n" + ",".join(["x"] * (len(columns) + 5)) + "\n"
        path = table_dir / "catalog.csv"
        if plan["format"] == "latin1":
            path.write_bytes(text.encode("latin-1", "replace"))
        elif plan["format"] == "bom":
            path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass"))
        else:
            path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return str(path if plan["point_at"] == "file" else folder)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _plan(fmt: str = "csv", **cells) -> dict:
    """Two rows with these cells, as source_plan() draws them (for fixed examples)."""
    rows = [{"title": "Coat", "category3_code": "C", "full_price": "390", "product_code": "1",
             "local_image_path": "images/0.jpg", **cells},
            {"title": "Bag", "category3_code": "B", "full_price": "490", "product_code": "2",
             "local_image_path": "images/1.jpg"}]
    return {"rows": rows, "columns": list(COLUMNS), "header": "plain", "format": fmt, "images": ["jpeg", "jpeg"],
            "point_at": "file", "extra_rows": 0}


@_settings(40)
@given(plan=source_plan(), rows=st.sampled_from(["4", "8", "20"]),
       privacy=st.sampled_from(["off", "off", "standard", "strict"]))
@example(plan=_plan(), rows="20", privacy="strict")           # the guard gives up mid-run: nothing may stay
@example(plan=_plan(full_price="1e300", flg_discount="1e300"), rows="4", privacy="off")
@example(plan=_plan(local_image_path="images/" + "a" * 300 + ".jpg"), rows="4", privacy="off")   # name too long
@example(plan=_plan("parquet", local_image_path="images/\x000.jpg"), rows="4", privacy="off")     # NUL in a path
def test_gen_samples_hostile_source_tables(tmp_path, template_run, plan, rows, privacy):
    with sandbox(tmp_path) as root:
        run_gen_samples(root, ["--source", Make("source", plan), "--rows", rows, "--image-size", "32", "--num-proc",
                               "1", "--quiet", "--out", "o", "--privacy", privacy], template_run)


# --------------------------------------------------------------------------------------------------
# gen-samples push: hostile folders and repo ids; never reaches a Hub, writes nothing local


PUSH_DIRS = st.one_of(
    st.builds(Make, st.just("out"), OUT_STATES),
    st.sampled_from(["", ".", "..", "/", "/dev/null", "/proc/self", "nope", "a" * 5000, "x/" * 300, "-", "\n"]),
)


@st.composite
def push_argv(draw) -> list:
    argv: list = ["push", draw(PUSH_DIRS)]
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.sampled_from(["--repo", "--repo", "--private", "--force", "--force", "--bogus", "--re",
                                       "junk", "--repo="]))
        if choice in ("--repo", "--re"):
            argv += [choice, draw(junk | st.sampled_from(["user/name", "name", "user/hf_abc", "hf_x/name",
                                                            "a/b/c", "user/" + "n" * 200, "USER/NAME"]))]
        elif choice == "junk":
            argv.append(draw(junk))
        elif choice == "--repo=":
            argv.append("--repo=" + draw(junk))
        else:
            argv.append(choice)
    return argv


@_settings(30)
@given(argv=push_argv())
@example(argv=["push", Make("out", "run"), "--repo", TOKEN_LIKE])
@example(argv=["push", Make("out", "card_with_token"), "--force"])
@example(argv=["push", Make("out", "failed_privacy"), "--force", "--repo", "user/x"])
@example(argv=["push", Make("out", ("report", b"[" * 5000 + b"]" * 5000))])
def test_gen_samples_push_hostile(tmp_path, template_run, argv):
    with sandbox(tmp_path) as root:
        argv = [make(a, root, template_run) for a in argv]
        before = snapshot(root)
        code, out, err = call(gen_cli.main, argv)
        line = check_output("gen-samples", argv, code, out, err)
        info = shown("gen-samples", argv, code, out, err)
        check_no_token(argv, out, err)
        helped = any(a.startswith(("-h", "--h")) for a in argv)
        assert code != 0 or helped, info                   # nothing can be pushed from here
        assert snapshot(root) == before, info              # a push writes nothing local
        assert list((tmp_path / "systmp").iterdir()) == [], info   # its scratch copy went too
        if code == 1:                                      # a network failure: the Hub was never reached
            assert "local copy kept at" in line, info


# --------------------------------------------------------------------------------------------------
# run-finetune


def _ft_main():
    from finetune import cli

    return cli.main


def _ft_options():
    from finetune.cli import build_parser

    return [(a.option_strings, a) for a in build_parser()._actions if a.option_strings and a.dest != "help"]


# Dataset values that are never a usable dataset: run-finetune must refuse each as bad input (2).
BAD_DATASET_NAMES = st.sampled_from(["", " ", ".", "..", "../..", "nope", "owner/name", "owner/name/x", "./owner/name",
                                     "/dev/null", "/proc/self/status", "a" * 5000, "x/" * 300, "\n", "ø/日本",
                                     "hf_x/" + "y" * 200, "~nobody/x"])
BAD_DATASETS = st.one_of(
    BAD_DATASET_NAMES,
    st.builds(Make, st.just("dataset"), st.sampled_from(
        ["file", "empty_dir", "junk_parquet", "wrong_columns", "dataset_dict_junk", "state_junk", "no_rows",
         "images_junk", "csv_only", "symlink_loop"])),
)
MODELS = st.one_of(
    st.sampled_from(["tiny", "phi3v-shape", "TINY", "gpt2", "owner/model", "a/b/c", "../x", "/", "", "a" * 5000,
                     "x/" * 300]),
    st.builds(Make, st.just("model"), st.sampled_from(
        [None, "", "[]", "1", "null", "{", '"x"', "{}", '{"model_type": 1}', '{"model_type": "llava"}',
         '{"auto_map": {"AutoConfig": "evil.EvilConfig"}, "model_type": "evil"}', _deep(5000), "\xff"])),
)
DEVICES = st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:99", "meta", "mps", "xla", "junk", "", "cpu:0", "cpu:-1",
                           "CPU", "cuda:x", "cpu:99999999999999999999", "privateuseone"])


def _ft_value(flag: str, action, hostile: bool) -> st.SearchStrategy:
    """Values run-finetune takes (so examples reach train()'s checks), and when ``hostile`` a third of junk."""
    if action.choices:
        valid = st.sampled_from(list(action.choices))
    else:
        valid = {
            "--config": st.builds(Make, st.just("text"), st.deferred(lambda: config_file())),
            "--dataset": BAD_DATASETS, "--model": MODELS, "--device": DEVICES, "--out": FT_OUT_JUNK,
            "--seed": st.sampled_from(["0", "7", "4294967295", "4294967296", str(2**63), str(2**64), "9" * 30]),
            "--epochs": st.sampled_from(["1", "0.5", "1e-300", "1e308", "0"]),
            "--lr": st.sampled_from(["1e-4", "1", "1e308", "5e-324", "0"]),
            "--lora-dropout": st.sampled_from(["0", "0.1", "0.999", "1"]),
            "--wandb-project": st.sampled_from(["x", "", "a/b", "ø"]),
        }.get(flag, st.integers(0, 9).map(str))
    return st.one_of(valid, valid, junk) if hostile else valid


@st.composite
def ft_argv(draw) -> list:
    options = _ft_options()
    argv: list = []
    hostile = draw(st.booleans())
    kinds = ["option"] * 8 + ["equals", "unknown", "junk"] if hostile else ["option"] * 4 + ["equals"]
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(kinds))
        strings, action = draw(st.sampled_from(options))
        flag = draw(st.sampled_from(strings))
        if kind == "unknown":
            argv.append(draw(st.sampled_from(["--bogus", "--max-step", "--no-lr", "--lr=", "-h", "--help", "--",
                                              "--trust-remote-code=yes", "--no-no-wandb", "—lr"])))
        elif kind == "junk":
            argv.append(draw(junk))
        elif action.nargs == 0:
            argv.append(flag)
        else:
            value = draw(_ft_value(flag, action, hostile))
            argv += [f"{flag}={value}"] if kind == "equals" and isinstance(value, str) else [flag, value]
    # Always last, so it wins: a dataset that is never usable (no training, no default catalogue).
    return argv + ["--dataset", draw(BAD_DATASETS)]


def _dataset(base: Path, kind: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from generator.schema import arrow_schema

    base.mkdir()
    data = base / "data"
    if kind == "file":
        (base / "x.parquet").write_bytes(b"PAR1")
        return str(base / "x.parquet")
    if kind == "symlink_loop":
        (base / "loop").symlink_to(base / "loop")
        return str(base / "loop")
    if kind == "empty_dir":
        return str(base)
    data.mkdir()
    if kind == "junk_parquet":
        (data / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not really PAR1")
    elif kind == "wrong_columns":
        pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), data / "train-00000-of-00001.parquet")
    elif kind == "dataset_dict_junk":
        (base / "dataset_dict.json").write_text('{"splits": 3')
    elif kind == "state_junk":
        (base / "state.json").write_text("[]")
    elif kind == "csv_only":
        (data / "train.csv").write_text("title,full_price\nx,1\n")
    elif kind in ("no_rows", "images_junk"):
        schema = arrow_schema()
        rows = 0 if kind == "no_rows" else 3
        columns = {}
        for field in schema:
            if field.name == "image":
                columns[field.name] = pa.array([{"bytes": b"not a jpeg", "path": None}] * rows, field.type)
            elif pa.types.is_string(field.type):
                columns[field.name] = pa.array(["CAT"] * rows, field.type)
            else:
                columns[field.name] = pa.array([1] * rows, field.type)
        for split in ("train", "test"):
            pq.write_table(pa.table(columns, schema=schema), data / f"{split}-00000-of-00001.parquet")
    return str(base)


def check_ft_refused(root: Path, before: dict, argv: list[str], code, out: str, err: str) -> None:
    """Bad input to run-finetune: exit 2 (0 for --help), one line, nothing written."""
    line = check_output("run-finetune", argv, code, out, err)
    info = shown("run-finetune", argv, code, out, err)
    assert code in (0, 2), info                             # 1 is for failures at run time: none ran
    if code == 2:
        assert CATCH_ALL not in line, info                  # an exception nobody turned into a message
        others = [x for x in err.splitlines() if x.strip() and x != line and not PROGRESS.search(x)]
        assert others == [], info
    else:
        assert "-h" in argv or "--help" in argv, info
    assert snapshot(root) == before, info                   # no run folder, nothing else either


@_settings(50)
@given(argv=ft_argv())
@example(argv=["--device", "junk", "--dataset", "nope"])
@example(argv=["--device", "cpu:99999999999999999999", "--dataset", "nope"])
@example(argv=["--seed", "4294967296", "--dataset", "nope"])
@example(argv=["--out", "a" * 5000, "--dataset", "nope"])
@example(argv=["--out", os.fsdecode(b"r\xff"), "--dataset", "nope"])
@example(argv=["--dataset", "a" * 5000])
@example(argv=["--model", "a" * 5000, "--dataset", "nope"])
@example(argv=["--model", Make("model", "[]"), "--dataset", "nope"])
@example(argv=["--model", Make("model", "{"), "--dataset", "nope"])
@example(argv=["--model", Make("model", _deep(5000)), "--dataset", "nope"])
@example(argv=["--dataset", Make("dataset", "dataset_dict_junk")])
@example(argv=["--dataset", Make("dataset", "state_junk")])
@example(argv=["--dataset", Make("dataset", "images_junk")])
@example(argv=["--dataset", Make("dataset", "symlink_loop")])
def test_run_finetune_hostile_argv(tmp_path, argv):
    with sandbox(tmp_path) as root:
        argv = [make(a, root) for a in argv]
        before = snapshot(root)
        code, out, err = call(_ft_main(), argv)
        check_ft_refused(root, before, argv, code, out, err)


# --- config files


def _config_field_types() -> dict[str, Any]:
    import typing

    from finetune.config import FinetuneConfig

    return typing.get_type_hints(FinetuneConfig)


def _typed(annotation) -> st.SearchStrategy:
    """A value of the setting's own type (often out of range): configs get past the type checks too."""
    import types
    import typing

    parts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    options = []
    for part in parts:
        if typing.get_origin(part) is dict:  # the [speed] table: lever names (and junk) to values of any type
            from finetune.speed.config import SpeedConfig

            levers = st.sampled_from([f.name for f in dataclasses.fields(SpeedConfig)] + ["junk", ""])
            values = st.booleans() | st.integers(-2, 20) | st.floats(-1, 2) | st.text(FILE_CHARS, max_size=5)
            options.append(st.dictionaries(levers, values, max_size=3))
            continue
        options.append({bool: st.booleans(), int: st.integers(-3, 40) | st.sampled_from([2**31, 2**32, 2**63, -2**63]),
                        float: st.floats(-1e3, 1e3) | st.sampled_from([0.0, -1.0, 1e308, 0.999, 1.0]),
                        str: st.sampled_from(["tiny", "lora", "full", "fast", "none", "low-memory", "answer", "plain",
                                              "cpu", "cuda", "junk", "", "x" * 5000, "a/b/c", "/dev/null"])
                        | st.text(FILE_CHARS, max_size=8),
                        type(None): st.none()}[part])
    return st.one_of(options)


@st.composite
def config_file(draw) -> tuple[str, Any]:
    fields = _config_field_types()
    names = sorted(fields)
    data: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["typed"] * 5 + ["hostile"] * 3 + ["unknown", "dashed"]))
        name = draw(st.sampled_from(names))
        if kind == "typed":
            data[name] = draw(_typed(fields[name]))
        elif kind == "hostile":
            data[name] = draw(VALUES)
        elif kind == "dashed":
            data[name.replace("_", "-")] = draw(_typed(fields[name]))
        else:
            data[draw(st.sampled_from(["", "finetune", "Lr", "lr ", "ñ", "a.b", "dataset_dir"]))] = draw(VALUES)
    data.pop("dataset", None)        # the flag wins anyway; keeps the file's value out of the error
    if draw(st.integers(0, 5)) == 0:
        data = {"finetune": data, **({"other": draw(VALUES)} if draw(st.booleans()) else {})}
    form = draw(st.sampled_from(["toml", "toml", "yaml", "yml", "raw"]))
    if form == "raw":
        return draw(st.sampled_from([
            ("c.toml", "lr = " + _deep(50_000) + "\n"), ("c.yaml", "lr: " + _deep(50_000) + "\n"),
            ("c.yaml", f"question: {_laughs()}\n"), ("c.yaml", "question: &a [*a]\n"), ("c.yaml", "- 1\n- 2\n"),
            ("c.yaml", "just a string\n"), ("c.yaml", "1: 2\n"), ("c.yaml", "? [a]\n: 1\n"),
            ("c.yaml", "lr: !!python/object:os.system x\n"),
            ("c.yaml", "lr: 0.1\nlr: 0.2\n"), ("c.yaml", "---\nlr: 1\n---\nlr: 2\n"), ("c.yaml", "lr: *nope\n"),
            ("c.toml", "lr = 0.1\nlr = 0.2\n"), ("c.toml", "[finetune]\nlr = 1\n[finetune]\n"), ("c.toml", "lr = \n"),
            ("c.toml", b"\xff\xfelr = 1\n"), ("c.toml", b"\xef\xbb\xbflr = 0.1\n"), ("c.toml", ""), ("c.yaml", ""),
            ("c.toml", "# " + "x" * (1 << 20) + "\n"), ("c.toml", "question = '" + "q" * 900_000 + "'\n"),
            ("c.json", '{"lr": 0.1}'), ("c", "lr = 0.1\n"), ("c.TOML", "lr = 0.1\n"), ("c.toml", None),
            ("c.yaml", "\t lr: 1\n"), ("c.yaml", "lr: 1e400\n"), ("c.yaml", "lr: .nan\n"), ("c.yaml", "epochs: .inf\n"),
            ("c.yaml", "seed: 0x10\n"), ("c.yaml", "batch_size: 1_0\n"), ("c.yaml", "max_steps: 2023-01-01\n"),
            ("c.yaml", "question: !!binary aGVsbG8=\n"), ("c.yaml", "lr: !!float 1\n"),
        ]))
    if form == "toml":
        return "c.toml", toml_text(data)
    return f"c.{form}", yaml_text(data)


@_settings(50)
@given(config=config_file(), dataset=BAD_DATASET_NAMES, out=FT_OUT_JUNK)
@example(config=("c.toml", 'device = "junk"\n'), dataset="nope", out="o")
@example(config=("c.toml", "seed = -1\n"), dataset="nope", out="o")
@example(config=("c.toml", f"seed = {2**40}\n"), dataset="nope", out="o")
@example(config=("c.toml", f'out = "{"a" * 5000}"\n'), dataset="nope", out="o")
@example(config=("c.toml", "keep_checkpoints = -1\nlog_every = 0\nlora_alpha = -3\nmax_grad_norm = -1.0\n"),
         dataset="nope", out="o")
@example(config=("c.toml", "tokenizer_vocab_size = -5\nweight_decay = -1e308\n"), dataset="nope", out="o")
def test_run_finetune_hostile_config_files(tmp_path, config, dataset, out):
    with sandbox(tmp_path) as root:
        argv = ["--config", make(Make("text", config), root), "--dataset", dataset]
        if out is not None:
            argv += ["--out", make(out, root)]
        before = snapshot(root)
        code, stdout, err = call(_ft_main(), argv)
        check_ft_refused(root, before, argv, code, stdout, err)


# --- a usable tiny dataset: train one step, or refuse cleanly


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from _ft_fixtures import dataset_dir

    return dataset_dir(tmp_path_factory.mktemp("tiny") / "data", n_train=8, n_test=2)


# What keeps a training example to a second or two, always last so that it wins.
QUICK_RUN = ["--model", "tiny", "--max-steps", "1", "--num-workers", "0", "--no-wandb", "--max-eval-samples", "2",
             "--grad-accum", "1", "--eval-every", "0", "--device", "cpu", "--no-resume"]
QUICK_CONFIG = {"max_new_tokens": 4, "tokenizer_vocab_size": 512, "log_every": 1, "batch_size": 4}
# Settings a config may hold for a real (one-step) run, with values that stay cheap: lora_r, max_new_tokens
# and a huge vocabulary would only make the example slow.
RUN_SETTINGS = {
    "log_every": st.integers(-2, 3), "keep_checkpoints": st.integers(-2, 3),
    "weight_decay": st.sampled_from([-1e308, -0.1, 0.0, 0.5, 1e308]),
    "warmup_ratio": st.sampled_from([-0.1, 0.0, 0.5, 0.99, 1.0]),
    "max_grad_norm": st.sampled_from([-1.0, 0.0, 1e-30, 1e308]), "lora_alpha": st.integers(-3, 64),
    "tokenizer_vocab_size": st.sampled_from([-5, 0, 1, 10, 300]), "eval_batch_size": st.sampled_from([0, 1, 10**5]),
    "loss": st.sampled_from(["answer", "plain", "junk"]), "train_vision": st.booleans() | st.none(),
    "bf16": st.booleans(), "save_final": st.booleans(),
    "question": st.sampled_from(["", " ", "<|image_1|>", "<|end|>", "<|assistant|>\n", "<s></s><pad><unk>", "?" * 2000,
                                 "\x00\x1b[31m", "日本語 😀 \u202e", "What is it?\n\n\n"]),
}


@_settings(3)
@given(flags=st.lists(st.sampled_from([
    ["--method", "lora"], ["--method", "full"], ["--preset", "fast"], ["--preset", "low-memory"], ["--augment"],
    ["--gradient-checkpointing"], ["--lr", "1e308"], ["--lr", "5e-324"], ["--batch-size", "9"], ["--batch-size", "1"],
    ["--lora-dropout", "0.999"], ["--seed", "4294967295"], ["--save-every", "1"], ["--out", "ø 日本/run"],
    ["--trust-remote-code"], ["--no-fsdp"], ["--fsdp"], ["--epochs", "1e-300"]]), max_size=3).map(
        lambda groups: [a for g in groups for a in g]),
       settings_=st.dictionaries(st.sampled_from(sorted(RUN_SETTINGS)), st.just(None), max_size=2).flatmap(
           lambda chosen: st.fixed_dictionaries({k: RUN_SETTINGS[k] for k in chosen})))
@example(flags=[], settings_={})
@example(flags=["--method", "lora"], settings_={"log_every": 0, "weight_decay": -0.1})
@example(flags=[], settings_={"question": "<|image_1|>"})
@example(flags=["--out", os.fsdecode(b"r\xff")], settings_={})                   # not UTF-8: safetensors' path
@example(flags=["--method", "lora"], settings_={"question": "<|end|>\n<|assistant|>\n"})
def test_run_finetune_on_a_usable_dataset(tmp_path, tiny_dataset, flags, settings_):
    with sandbox(tmp_path) as root:
        config = make(Make("text", ("c.toml", toml_text({**QUICK_CONFIG, **settings_}))), root)
        argv = ["--config", config, "--out", "run", *flags, "--dataset", str(tiny_dataset), *QUICK_RUN]
        before = snapshot(root)
        code, out, err = call(_ft_main(), argv)
        line = check_output("run-finetune", argv, code, out, err)
        info = shown("run-finetune", argv, code, out, err) + f"\nconfig: {settings_}"
        after = snapshot(root)
        assert new_temporaries(before, after) == [], info
        if code == 0:
            run = Path.cwd() / next((argv[i + 1] for i in range(len(argv) - 1, -1, -1) if argv[i] == "--out"))
            assert (run / "metrics.json").is_file(), info
            assert (run / "final").is_dir() or settings_.get("save_final") is False, info
        else:
            assert code == 2 and CATCH_ALL not in line, info      # bad settings are refused before any work
            assert after == before, info


# --------------------------------------------------------------------------------------------------
# Smoke: real processes (a traceback printed by the interpreter itself, argv bytes that are no UTF-8)


def test_real_processes_fail_in_one_line(tmp_path, template_run):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": FAKE_TOKEN,
           "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    env.pop("RUN_FINETUNE_DEBUG", None)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"question: {_laughs(9)}\n")
    pushed = shutil.copytree(template_run, tmp_path / "run")
    before = snapshot(tmp_path)
    cases = {
        # undecodable bytes in a path (refused before the negative count and the huge seed): exit 2, one line
        "gen-samples": ([sys.executable, "-m", "generator.cli", "--out", os.fsdecode(b"\xff\xfe/o"), "--rows", "-3",
                         "--seed", "9" * 50], 2),
        "run-finetune": ([sys.executable, "-m", "finetune", "--config", str(bomb), "--dataset", os.fsdecode(b"d\xff"),
                          "--out", str(tmp_path / "never")], 2),
        # a complete run and a fake token against an endpoint that refuses connections: exit 1, fast
        "gen-samples push": ([sys.executable, "-m", "generator.cli", "push", str(pushed), "--repo", "user/name"], 1),
    }
    env_online = {**env}
    env_online.pop("HF_HUB_OFFLINE")
    procs = {name: subprocess.Popen(cmd, cwd=tmp_path, env=env_online if "push" in name else env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (cmd, _) in cases.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        prog = name.split()[0]
        line = check_output(prog, cases[name][0][3:], proc.returncode, out, err)
        assert proc.returncode == cases[name][1], shown(prog, cases[name][0], proc.returncode, out, err)
        assert err.strip().splitlines() == [line]
        assert FAKE_TOKEN not in out + err
    assert "local copy kept at" in line
    assert snapshot(tmp_path) == before

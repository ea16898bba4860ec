"""A run's trained model as one plain folder that loads anywhere: ``run-finetune export RUN`` and ``--merge``.

The folder holds merged weights in 16 bits (bf16 by default) beside the processor, the way a model
is published: ``AutoModelForImageTextToText.from_pretrained(DIR)`` (or the family's own class) loads
it with no peft, no adapter folder and no path back to the run or its base model.

Where the weights come from, by what the run left (finetune/recipe.py ``save_final``):

* ``final/adapter/`` (LoRA on a real model): the base model the run named is loaded in float32, the
  adapter put on it (``PeftModel.from_pretrained``, which also restores the modules that trained in
  full: a vision tower, a projector) and merged (``merge_and_unload``);
* ``final/`` holding a whole model (full fine-tuning, or a built-in model, whose LoRA ``save_final``
  already merged over the random base it built from the run's tokenizer and seed): loaded as it is.

A run without ``final/`` (stopped early, or ``save_final = false``) is refused in one line: its
checkpoint holds the trainable weights only, and ``--resume`` finishes it.

Every merge is checked: no LoRA or ``modules_to_save`` wrapper survives, every LoRA layer whose
update is not zero changed its weight, and every module that trained in full is the trained copy.
Merging is done in float32 and only then cast. The folder is written under a temporary name and
renamed into place: a failure leaves no half-written export (and an earlier one as it was).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import FinetuneError

# torch, transformers and peft are imported in the functions that use them: the CLI imports this module
# only to run an export, but the constants below are read by its parser.

DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_DTYPE = "bfloat16"
MERGED = "merged"           # the export's folder inside the run, by default
EXPORT_INFO = "export.json"
# Names that only a peft-wrapped model's parameters carry.
PEFT_MARKS = ("lora_", "base_layer", "modules_to_save", "original_module", "lora_magnitude")


@dataclass
class MergeReport:
    """What a merge did: the LoRA layers folded into their weights, the modules taken as trained."""

    source: str                                  # final, final/adapter, or a checkpoint's folder
    lora_layers: int = 0
    lora_layers_changed: int = 0                 # those whose weights moved (a zero update moves none)
    trained_in_full: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    out: Path
    dtype: str
    report: MergeReport
    bytes: int


def export_run(run: str | Path, out: str | Path | None = None, *, dtype: str = DEFAULT_DTYPE) -> ExportResult:
    """Write ``run``'s model, merged and cast to ``dtype``, with its processor, to ``out`` (default RUN/merged)."""
    import torch

    from .checkpoints import atomic_dir

    if dtype not in DTYPES:
        raise FinetuneError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    run = Path(run)
    settings = run_settings(run)
    target = Path(out) if out is not None else run / MERGED
    _check_target(target, run)
    model, processor, report = merged_model(run, settings)
    model.to(getattr(torch, dtype))
    model.config.use_cache = True
    info = {"run": str(run.resolve()), "base_model": settings.get("model"), "method": settings.get("method"),
            "dtype": dtype, "class": type(model).__name__, **asdict(report)}

    def write(tmp: str) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        Path(tmp, EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")

    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_dir(target, write)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return ExportResult(target, dtype, report, size)


def after_run(run: Path) -> str:
    """``--merge``: the export of a run that just finished, said in one line."""
    result = export_run(run)
    merged = f", {result.report.lora_layers} LoRA layers merged" if result.report.lora_layers else ""
    return f"merged model ({result.dtype}{merged}): {result.out}"


def run_settings(run: Path) -> dict:
    """The run's config.json, once ``run`` is known to be a run folder with a model to export."""
    if not run.is_dir():
        raise FinetuneError(f"run folder {str(run)!r} does not exist" if not run.exists()
                            else f"{str(run)!r} is a file, not a run folder (run-finetune's --out)")
    file = run / "config.json"
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FinetuneError(f"{str(run)!r} is not a run folder: it has no config.json (run-finetune's --out)") from None
    except (OSError, ValueError, RecursionError) as e:
        raise FinetuneError(f"cannot read {file}: {(str(e).strip() or type(e).__name__).splitlines()[0]}") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("model"), str) \
            or settings.get("method") not in ("lora", "full"):
        raise FinetuneError(f"{file} is not a run's settings (no model or method)")
    if not _final_ready(run):
        checkpoint = _checkpoint(run)
        hint = (f": finish it with run-finetune --out {run} --resume (last checkpoint {checkpoint.name})"
                if checkpoint is not None else "")
        raise FinetuneError(f"run {str(run)!r} has no final model (final/) to export{hint}")
    return settings


def _check_target(target: Path, run: Path) -> None:
    """The export goes to its own folder: never over the run, its final model or one of their parents."""
    resolved = target.resolve()
    for kept in (run, run / "final", run / "processor", run / "checkpoints"):
        kept = kept.resolve()
        if resolved == kept or kept.is_relative_to(resolved):
            raise FinetuneError(f"--out {str(target)!r} would replace {kept}: choose a folder of its own")
    if target.exists() and not target.is_dir():
        raise FinetuneError(f"--out {str(target)!r} is a file")


def _final_ready(run: Path) -> bool:
    final = run / "final"
    return (final / "config.json").is_file() or (final / "adapter" / "adapter_config.json").is_file()


def _checkpoint(run: Path) -> Path | None:
    from .checkpoints import latest_checkpoint

    return latest_checkpoint(run)


# --------------------------------------------------------------------------------------------
# The merged model (float32) and its processor


def merged_model(run: Path, settings: dict):
    """``(model, processor, MergeReport)``: the run's trained model as a plain transformers model."""
    from . import models as models_mod

    final, remote = run / "final", bool(settings.get("trust_remote_code"))
    if (final / "adapter" / "adapter_config.json").is_file():
        base = _load(models_mod.load_pretrained, settings["model"], "the run's base model", remote)
        _same_image_budget(base, settings)
        model, report = merge_adapter(base.model, final / "adapter")
        return model, base.processor, report
    loaded = _load(models_mod.load_pretrained, str(final), "the run's final model", remote)
    check_plain(loaded.model)
    return loaded.model, loaded.processor, MergeReport(source="final")


def _same_image_budget(loaded, settings: dict) -> None:
    """The run's --max-image-tokens on the base model again, as the run set it before training: the
    adapter's base is the model's own folder, whose processor (and LLaVA-NeXT's anyres grids in its
    config) would otherwise give the merged model images at sizes the run never trained on."""
    from . import data as data_mod
    from . import image_budget

    if settings.get("max_image_tokens"):
        prompt = data_mod.build_prompt(loaded, settings.get("question") or "")
        image_budget.apply_max_image_tokens(loaded, prompt, settings["max_image_tokens"])


def _load(load, name: str, what: str, remote: bool):
    """``load(name)`` in float32 (merging in 16 bits would round the small LoRA update away)."""
    import torch

    try:
        return load(name, trust_remote_code=remote, dtype=torch.float32)
    except FinetuneError as e:
        raise FinetuneError(f"cannot load {what}: {e}") from None


def merge_adapter(base_model, adapter_dir: Path):
    """``(merged model, MergeReport)``: a saved peft adapter put on ``base_model`` and merged into it."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise FinetuneError(f"cannot put the adapter {adapter_dir} on its base model: "
                            f"{(str(e).strip() or type(e).__name__).splitlines()[0][:200]}") from None
    return merge_peft(model, source=str(Path(adapter_dir.parent.name, adapter_dir.name)))


def merge_peft(peft_model, *, source: str):
    """``merge_and_unload`` of a peft model, checked: ``(plain model, MergeReport)``.

    Before merging, each LoRA layer's base weight and whether its update is non-zero, and each
    full-trained module's trained copy (``modules_to_save``) are fingerprinted; after it, every
    non-zero update must have moved its weight and every trained copy must be the module in place.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    lora, full = {}, {}
    for name, module in peft_model.named_modules():
        plain = _plain_name(name)
        if isinstance(module, LoraLayer):
            lora[plain + ".weight"] = (_fingerprint(module.get_base_layer().weight), _updates(module))
        elif isinstance(module, ModulesToSaveWrapper):
            trained = module.modules_to_save[_active(module)]
            full[plain] = {f"{plain}.{n}": _fingerprint(p) for n, p in trained.named_parameters()}
    if not lora:
        raise FinetuneError(f"the adapter in {source} has no LoRA layers: nothing to merge", exit_code=1)
    merged = peft_model.merge_and_unload()
    check_plain(merged)
    params = dict(merged.named_parameters(remove_duplicate=False))
    lost = [n for n, (before, moves) in lora.items() if moves and _fingerprint(params[n]) == before]
    stale = [m for m, trained in full.items() if any(_fingerprint(params[n]) != fp for n, fp in trained.items())]
    if lost or stale:
        what = (f"{len(lost)} LoRA layer(s) kept their base weight (first {lost[0]})" if lost else
                f"{len(stale)} trained module(s) are not the trained copy (first {stale[0]})")
        raise FinetuneError(f"merging {source} lost part of the adapter: {what}", exit_code=1)
    report = MergeReport(source=source, lora_layers=len(lora), trained_in_full=sorted(full),
                         lora_layers_changed=sum(moves for _, moves in lora.values()))
    return merged, report


def check_plain(model) -> None:
    """A model with nothing of peft left in it (wrappers or their parameter names)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    left = [n for n, m in model.named_modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]
    left += [n for n, _ in model.named_parameters() if any(mark in n for mark in PEFT_MARKS)]
    if left or hasattr(model, "peft_config"):
        raise FinetuneError(f"the merged model still holds peft modules ({len(left)}, first {left[:1]})",
                            exit_code=1)


def _plain_name(peft_name: str) -> str:
    """A module's name inside the model peft wraps (``base_model.model.`` dropped)."""
    for prefix in ("base_model.model.", "base_model."):
        if peft_name.startswith(prefix):
            return peft_name[len(prefix):]
    return peft_name


def _active(wrapper) -> str:
    names = getattr(wrapper, "active_adapters", None) or [wrapper.active_adapter]
    return names[0] if isinstance(names, (list, tuple)) else names


def _updates(layer) -> bool:
    """Whether a LoRA layer's active update (``scale * B @ A``) is not zero."""
    import torch

    with torch.no_grad():
        return any(bool(layer.get_delta_weight(a).abs().max() > 0) for a in layer.active_adapters
                   if a in layer.lora_A)


def _fingerprint(t) -> tuple[float, float]:
    """Two float64 sums of a tensor: any real change of its values changes one of them."""
    import torch

    with torch.no_grad():
        t = t.detach().to(torch.float64)
        return float(t.sum()), float((t * t).sum())

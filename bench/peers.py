"""The peer a user would pick instead: TRL's ``SFTTrainer`` with a peft ``LoraConfig``.

Same model (the built-in, built by ``finetune.models.build_builtin``), same rows, same batch size,
same LoRA (rank, alpha, dropout, the decoder's linear layers; the vision side trains in full only
where ours does, i.e. for the random ``tiny``), same number of DataLoader workers. Everything else
is TRL's default, as a user would run it - notably ``gradient_checkpointing=True``, and for the
prompt-completion format its default loss over the completion tokens only (logits still computed at
every position).

TRL is an optional extra (``pip install -e .[peers]``); :func:`trl_available` says whether it is
there, and the benchmarks skip with that reason when it is not.

Timing TRL's own loop one step at a time: ``trainer.train()`` runs in a thread, and a callback
parks it at the end of every step (after a CUDA synchronize) until the benchmark releases the next
one. A round is then exactly one iteration of TRL's loop - batch fetch, forward, backward,
clipping, optimizer and scheduler step, logging - with no change to what TRL does.
"""
from __future__ import annotations

import tempfile
import threading
from typing import Any

from bench import measure

TRL_MISSING = "TRL is not installed: the peer benchmarks need the optional `peers` extra (pip install -e .[peers])"
_TIMEOUT_S = 900.0


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def lora_config(loaded, config):
    """The LoraConfig a user would write to match our recipe's adapters."""
    from peft import LoraConfig

    from finetune.models import language_linear_names, vision_module_names

    train_vision = loaded.train_vision if config.train_vision is None else config.train_vision
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=language_linear_names(loaded.model),
                      modules_to_save=vision_module_names(loaded.model) if train_vision else None,
                      task_type="CAUSAL_LM")


def sft_dataset(train_split, loaded, question: str):
    """TRL's vision prompt-completion format: a decoded ``image``, the ``prompt`` and the ``completion``.

    TRL 1.x keeps only messages / prompt / completion / image(s) columns of a vision dataset (a plain
    ``text`` column is dropped before collation), so this is the format its docs point VLM users to.
    """
    import datasets

    from finetune.data import answer_text, build_prompt

    prompt = build_prompt(loaded, question)
    end = loaded.end_token
    ds = train_split.cast_column("image", datasets.Image(decode=True))
    return ds.map(lambda row: {"prompt": prompt, "completion": answer_text(row) + end},
                  remove_columns=[c for c in ds.column_names if c != "image"])


def mean_sequence_length(train_split, loaded, question: str) -> float:
    """Decoder positions of a row in TRL's format: its text tokens, the image placeholder expanded."""
    from finetune.data import answer_text, build_prompt

    prompt = build_prompt(loaded, question)
    rows = train_split.select_columns(["title", "category3_code", "full_price"]).to_list()
    texts = [prompt + answer_text(r) + loaded.end_token for r in rows]
    lengths = [len(ids) for ids in loaded.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(lengths) / len(lengths) + loaded.model.config.image_seq_length - 1


class _Gate:
    """A TrainerCallback that parks the training thread at each step end until released."""

    def __init__(self, device: str):
        from transformers import TrainerCallback

        gate = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                measure.synchronize(device)
                gate.arrived.release()
                if not gate.go.acquire(timeout=_TIMEOUT_S) or gate.stopping:
                    control.should_training_stop = True
                return control

        self.callback = Callback()
        self.arrived = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.stopping = False


class TrlSteps:
    """``SFTTrainer`` on our model and rows, advanced one optimizer step per call."""

    def __init__(self, loaded, train_split, config, *, device: str, max_steps: int, workdir: str | None = None):
        import torch
        from trl import SFTConfig, SFTTrainer

        self.device = device
        cuda = device.startswith("cuda")
        train_vision = loaded.train_vision if config.train_vision is None else config.train_vision
        params = measure.param_split(loaded.model)
        self.flops = measure.lora_flops(params, loaded.model.config.image_seq_length, train_vision)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-trl-")
        self.args = SFTConfig(
            output_dir=workdir or self._tmp.name,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=1,
            max_steps=max_steps,
            learning_rate=config.lr or loaded.default_lr,
            max_grad_norm=config.max_grad_norm,
            dataloader_num_workers=config.loader_workers(cuda),
            bf16=cuda and torch.cuda.is_bf16_supported(),
            use_cpu=not cuda,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=config.seed,
        )
        self.gate = _Gate(device)
        self.trainer = SFTTrainer(model=loaded.model, args=self.args, processing_class=loaded.processor,
                                  train_dataset=sft_dataset(train_split, loaded, config.question),
                                  peft_config=lora_config(loaded, config), callbacks=[self.gate.callback])
        self.batch_size = config.batch_size
        self.tokens_per_sample = mean_sequence_length(train_split, loaded, config.question)
        self.error: BaseException | None = None
        self.steps_done = 0
        self._thread = threading.Thread(target=self._train, name="trl-train", daemon=True)
        self._started = False

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as err:  # noqa: BLE001 - handed to the benchmark thread
            self.error = err
        finally:
            self.gate.arrived.release()  # whoever waits for a step end must wake up

    def _wait_step(self) -> None:
        if not self.gate.arrived.acquire(timeout=_TIMEOUT_S):
            raise TimeoutError(f"TRL did not finish a step within {_TIMEOUT_S:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"TRL training failed: {self.error}") from self.error
        if not self._thread.is_alive():
            raise RuntimeError("TRL stopped before the benchmark's last step (max_steps too small)")
        self.steps_done += 1

    def start(self) -> None:
        """Set up TRL's loop and run its first step (untimed: it includes TRL's own set-up)."""
        self._started = True
        self._thread.start()
        self._wait_step()

    def __call__(self) -> dict[str, Any]:
        if not self._started:
            self.start()
        self.gate.go.release()
        self._wait_step()
        # TRL's collator runs in its loader's workers, out of sight: the positions of a step are taken
        # as the dataset's mean sequence length (its padding to the longest row is not counted).
        tokens = self.batch_size * self.tokens_per_sample
        return {"samples": self.batch_size, "tokens": tokens, "real_tokens": tokens, "step": self.steps_done}

    def close(self) -> None:
        if self._started and self._thread.is_alive():
            self.gate.stopping = True
            self.gate.go.release()
            self._thread.join(timeout=_TIMEOUT_S)
        self.trainer = None
        self._tmp.cleanup()


SETTINGS = {"peer": "trl.SFTTrainer + peft.LoraConfig", "gradient_checkpointing": "TRL default (True)",
            "loss": "TRL default for prompt-completion datasets: completion tokens (logits at every position)"}

#!/usr/bin/env bash
# Issue 18 on the lent GPU: plain `run-finetune` as a user types it (no flags: the default catalogue, the
# built-in tiny, its defaults), beside it the same with one setting changed (RUN2, default: `--answer-noise 0`;
# run 0008 compared `bf16 = false` through a config file), and the tests that compare the training and
# generation paths on CUDA. One call:
#   bash bench/gpu/accuracy.sh     (needs .whl/ from `../shared/tools/device-wheels trl liger-kernel`, and $OUT)
# RUN3 and RUN4, if set, are a third and fourth run beside them (variant2, variant3).
# Writes $OUT/gpu.txt, $OUT/{default,variant,variant2,variant3}_metrics.json, their logs and train logs, and $OUT/tests.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --find-links .whl datasets faker wandb || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"; } | tee "$OUT/gpu.txt"
# The default catalogue once (both runs would otherwise race to make it).
python3 -m generator --quiet >/dev/null 2>&1 || python3 -m generator
run() {  # name, extra flags
  /usr/bin/time -v python3 -m finetune --out "/tmp/run-$1" "${@:2}" > "$OUT/$1.log" 2>&1
  cp "/tmp/run-$1/metrics.json" "$OUT/$1_metrics.json"; cp "/tmp/run-$1/train_log.jsonl" "$OUT/$1_train_log.jsonl"
}
runs=(default variant) flags=("" "${RUN2:---answer-noise 0}")
if [ -n "${RUN3:-}" ]; then runs+=(variant2) flags+=("$RUN3"); fi
if [ -n "${RUN4:-}" ]; then runs+=(variant3) flags+=("$RUN4"); fi
# The runs share the host's cores: each takes its share of torch's threads, not all of them (in run 0011 four
# runs at 16 threads each spent 0.12 s a warm-up step; bench/results/gpu/h100_0011_README.md).
share=$(( $(nproc) / ${#runs[@]} ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( share > 0 ? share : 1 ))}
for i in "${!runs[@]}"; do run "${runs[$i]}" ${flags[$i]} & done
wait
for m in "${runs[@]}"; do echo "$m: $(grep -hE "Command being timed" "$OUT/$m.log")"; grep -hE "Elapsed|Maximum resident" "$OUT/$m.log"; done
timeout ${T_TESTS:-240} python3 -m pytest tests/test_finetune_paths_agree.py tests/test_finetune_loss.py tests/test_feature_cache.py \
  -q -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/tests.txt"
for m in "${runs[@]}"; do python3 -c "
import json, sys; m = json.load(open('$OUT/${m}_metrics.json'))['model']
print('$m', {k: round(m[k], 4) for k in ('parse_rate', 'category3_accuracy', 'category2_accuracy', 'price_mape',
                                         'price_mape_greedy') if k in m})"; done

#!/usr/bin/env bash
# The GPU measurements committed under bench/results/, as run on the lent machine in one call:
#   bash bench/gpu/run.sh     (needs .whl/ from `../shared/tools/device-wheels trl`, and $OUT)
# 0. with LEVERS="name ...", those configurations of bench/gpu/levers.py first (levers.jsonl);
# 1. in one pytest session (so every ratio comes from figures of the same run): the public recipe,
#    TRL SFTTrainer and our LoRA loop at batch 8 and 16, our speed presets (fast, low-memory) and full
#    fine-tuning under the fast preset (pytest-benchmark JSON);
# 2. with FT_STEPS=N, a short `run-finetune --model phi3v-shape --method lora $FT_ARGS` job (metrics and log),
#    on a catalogue of FT_ROWS rows when that is set.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --find-links .whl datasets faker wandb trl || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)"; } | tee "$OUT/gpu.txt"
bench() {  # name, -k expression, time limit (SIGINT: pytest still writes the JSON of what ran)
  timeout -s INT "$3" python3 -m pytest bench/bench_train.py --benchmark-only -k "$2" -p no:cacheprovider -q -rs \
    --benchmark-json="$OUT/$1.json" 2>&1 | tee "$OUT/$1.log" | grep -E "passed|failed|SKIP|Error|error" | tail -8
}
# T_LEVERS: the sweep's time budget in seconds (it starts no configuration it cannot finish).
[ -n "${LEVERS:-}" ] && timeout "$(( ${T_LEVERS:-200} + 30 ))" python3 bench/gpu/levers.py --out "$OUT/levers.jsonl" \
  --budget-s "${T_LEVERS:-200}" --steps 15 --warmup 2 --only $LEVERS 2>&1 | grep -E '^\{|^skip' | cut -c1-240
# BENCH_K=none: no benchmark session (a call that only sweeps levers or runs the CLI job).
[ "${BENCH_K:-cuda}" != none ] && bench h200_train "${BENCH_K:-cuda}" "${T_BENCH:-520}"
# FT_ROWS=N: the job trains on a catalogue of N rows, so that FT_STEPS can reach the epochs whose image
# features come from the cache (the default catalogue's first epoch is 249 steps at batch 11).
FT_DATA=()
[ -n "${FT_ROWS:-}" ] && python3 -m generator --rows "$FT_ROWS" --out /tmp/ft-catalogue --overwrite --quiet \
  && FT_DATA=(--dataset /tmp/ft-catalogue)
[ -n "${FT_STEPS:-}" ] && timeout "${T_FT:-120}" python3 -m finetune --model phi3v-shape --method lora --max-steps "${FT_STEPS:-40}" \
  "${FT_DATA[@]}" ${FT_ARGS:---batch-size 16} --max-eval-samples 64 --eval-every 0 --save-every 0 --out "$OUT/ft" --no-wandb 2>&1 \
  | tee "$OUT/finetune.log" | tail -25
cp "$OUT/ft/metrics.json" "$OUT/finetune_metrics.json" 2>/dev/null
cp "$OUT/ft/train_log.jsonl" "$OUT/finetune_train_log.jsonl" 2>/dev/null; rm -rf "$OUT/ft"
ls -la "$OUT"

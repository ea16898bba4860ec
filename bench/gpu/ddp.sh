#!/usr/bin/env bash
# Data-parallel scaling of run-finetune (phi3v-shape, LoRA) on a 2-GPU machine, as committed under
# bench/results/gpu/: the same global batch per GPU on 1 and on 2 GPUs (torchrun = what
# `accelerate launch --num_processes 2` starts), samples/s from each run's metrics.json.
set -uo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} RUN_FINETUNE_DEBUG=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --find-links .whl datasets faker wandb || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/ddp_gpu.txt"
python3 -m generator --rows 3040 --num-proc 8 --out /tmp/ds --quiet || exit 1
printf 'save_final = false\nmax_eval_samples = 16\nmax_new_tokens = 8\nsave_every = 0\nlog_every = 5\n' > /tmp/ddp.toml
STEPS=${STEPS:-40}
ARGS="--config /tmp/ddp.toml --dataset /tmp/ds --model phi3v-shape --method lora --max-steps $STEPS --num-workers ${NW:-6} --no-wandb"
timeout 200 python3 -m finetune $ARGS --batch-size 16 --out /tmp/one 2>&1 | tail -4 | tee "$OUT/ddp_1gpu.log"
timeout 200 python3 -m torch.distributed.run --nproc-per-node 2 -m finetune $ARGS --batch-size 32 --out /tmp/two 2>&1 \
  | grep -v Warning | tail -6 | tee "$OUT/ddp_2gpu.log"
python3 - "$OUT" "${NW:-6}" <<'PY'
import json, sys
one = json.load(open("/tmp/one/metrics.json"))["train"]; two = json.load(open("/tmp/two/metrics.json"))["train"]
res = {"model": "phi3v-shape", "method": "lora", "batch_per_gpu": 16, "steps": one["steps"], "num_workers_per_process": int(sys.argv[2]),
       "samples_per_s_1gpu": one["samples_per_s"], "samples_per_s_2gpu": two["samples_per_s"],
       "steady_samples_per_s_1gpu": one["steady_samples_per_s"], "steady_samples_per_s_2gpu": two["steady_samples_per_s"],
       "scaling_efficiency": two["steady_samples_per_s"] / (2 * one["steady_samples_per_s"]),
       "final_loss_1gpu": one["final_loss"], "final_loss_2gpu": two["final_loss"]}
print(res); json.dump(res, open(sys.argv[1] + "/ddp_scaling.json", "w"), indent=2)
PY

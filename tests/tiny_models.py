"""Tiny randomly initialised checkpoints of every supported family, saved like Hub checkpoints.

Built in seconds: a byte-level BPE tokenizer trained on a paragraph, and configs small enough
for exhaustive shape checks. Biases (where a family has them) are drawn non-zero so that a
bias-slicing bug changes the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = (
    "Structured pruning removes whole attention heads and MLP channels from a language model. "
    "The hidden size stays, so every residual connection keeps its width. Calibration text in the "
    "model's own language decides which parts matter. 结构化剪枝会移除整个注意力头和前馈通道。"
    "校准文本决定了哪些部分重要。The quick brown fox jumps over the lazy dog, again and again. "
) * 4

FAMILY_CONFIGS = {
    "llama": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16),
    "mistral": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16),
    "qwen2": dict(num_attention_heads=8, num_key_value_heads=2),
    "qwen3": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16),
}


def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT], vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_config(family: str, *, layers: int = 4):
    from transformers import AutoConfig

    tokenizer_size = 320
    return AutoConfig.for_model(
        family,
        vocab_size=tokenizer_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        **FAMILY_CONFIGS[family],
    )


def make_tiny_checkpoint(family: str, directory: Path, *, seed: int = 0, layers: int = 4) -> Path:
    """Save a tiny random model of `family` with non-zero biases and a tokenizer into `directory`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, layers=layers))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.5)
    model.eval()
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory

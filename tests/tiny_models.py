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


def make_tiny_gguf(checkpoint: Path, target: Path, *, dtype: str = "float32") -> Path:
    """Write a llama checkpoint from `make_tiny_checkpoint` as a GGUF file, as llama.cpp lays it out.

    Tensor names come from gguf's own HF-to-GGUF name map; the tokenizer goes in as a GPT-2 style
    BPE (tokens, merges). Rows of q/k are not permuted for llama.cpp's rope: the weights are random,
    and transformers loads the file either way.
    """
    import json

    import gguf
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "llama", "only the llama family is written as GGUF here"
    bpe = json.loads((checkpoint / "tokenizer.json").read_text())["model"]
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_name("tiny")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_rope_dimension_count(config["head_dim"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "float32" else gguf.LlamaFileType.MOSTLY_F16)
    tokens = [token for token, _ in sorted(bpe["vocab"].items(), key=lambda item: item[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]])
    writer.add_bos_token_id(bpe["vocab"]["<|endoftext|>"])
    writer.add_eos_token_id(bpe["vocab"]["<|endoftext|>"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    for name, tensor in load_file(checkpoint / "model.safetensors").items():
        module, suffix = name.rsplit(".", 1)
        array = tensor.float().numpy()
        # llama.cpp keeps norms (1-D) in float32 whatever the file type
        writer.add_tensor(
            f"{names.get_name(module)}.{suffix}",
            array if array.ndim == 1 or dtype == "float32" else array.astype("float16"),
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target

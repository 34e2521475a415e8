"""Load Llama-, Mistral- and Qwen2-architecture checkpoints (a Hugging Face folder: config.json + *.safetensors) into
the project's TransformerLM, so a real open model can be aligned with sift.

    model, cfg = load_hf_checkpoint("path/to/Qwen2.5-0.5B-Instruct")

The architectures are the project's own (pre-norm RMSNorm, SwiGLU, RoPE) plus grouped-query attention, the q/k/v
biases of Qwen2 and tied input/output embeddings. One difference is a layout: Hugging Face rotates the two halves of
each head ("rotate_half"), this model rotates interleaved pairs, so the rows of every q and k projection (and
bias) are permuted on load; attention scores, and so the logits, are unchanged. Not supported (a clear error):
`rope_scaling` (Llama 3.1's long-context rescaling), sliding windows, and other architectures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.config import ModelConfig
from model.layers import TransformerLM

ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}


def config_from_hf(hf: dict, context_length: int | None = None) -> ModelConfig:
    arch = (hf.get("architectures") or ["?"])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})")
    # transformers < 5 writes rope_theta / rope_scaling at the top level, 5.x a rope_parameters mapping
    rope = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"}
                                         if rope.get("rope_type", "default") != "default" else None)
    if scaling:
        raise ValueError(f"rope_scaling {scaling} is not supported")
    theta = hf.get("rope_theta") or rope.get("rope_theta") or 10000.0
    if hf.get("use_sliding_window") or (arch == "MistralForCausalLM" and hf.get("sliding_window")):
        raise ValueError("sliding-window attention is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"activation {hf['hidden_act']!r} is not supported (SwiGLU needs silu)")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d // heads):
        raise ValueError(f"head_dim {hf['head_dim']} != hidden_size / heads: not supported")
    return ModelConfig(
        vocab_size=hf["vocab_size"], context_length=context_length or hf.get("max_position_embeddings", 2048),
        d_model=d, num_layers=hf["num_hidden_layers"], num_heads=heads, d_ff=hf["intermediate_size"],
        rope_theta=float(theta), num_kv_heads=hf.get("num_key_value_heads") or heads,
        qkv_bias=bool(hf.get("attention_bias", arch == "Qwen2ForCausalLM")),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        attention="reference")


def _halves_to_pairs(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q/k projection from Hugging Face's half-split RoPE layout to interleaved pairs, per head:
    row order [0, d/2, 1, d/2 + 1, ...] within each head."""
    rows = w.shape[0]
    dh = rows // heads
    return w.reshape(heads, 2, dh // 2, *w.shape[1:]).transpose(1, 2).reshape(rows, *w.shape[1:])


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not (folder / f).exists():
            raise ValueError(f"{folder / f}: missing (only safetensors checkpoints are read)")
        state.update(load_file(folder / f))
    return state


def convert_state_dict(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face parameter names and layouts -> this model's."""
    kv = cfg.num_kv_heads or cfg.num_heads
    out: dict[str, torch.Tensor] = {"token_embeddings.weight": hf_state["model.embed_tokens.weight"],
                                    "ln_final.weight": hf_state["model.norm.weight"]}
    out["lm_head.weight"] = hf_state["model.embed_tokens.weight"] if cfg.tie_embeddings else hf_state["lm_head.weight"]
    for i in range(cfg.num_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "ln1.weight"] = hf_state[src + "input_layernorm.weight"]
        out[dst + "ln2.weight"] = hf_state[src + "post_attention_layernorm.weight"]
        for name, heads in (("q_proj", cfg.num_heads), ("k_proj", kv)):
            out[dst + f"attn.{name}.weight"] = _halves_to_pairs(hf_state[src + f"self_attn.{name}.weight"], heads)
            if cfg.qkv_bias:
                out[dst + f"attn.{name}.bias"] = _halves_to_pairs(hf_state[src + f"self_attn.{name}.bias"], heads)
        out[dst + "attn.v_proj.weight"] = hf_state[src + "self_attn.v_proj.weight"]
        if cfg.qkv_bias:
            out[dst + "attn.v_proj.bias"] = hf_state[src + "self_attn.v_proj.bias"]
        out[dst + "attn.output_proj.weight"] = hf_state[src + "self_attn.o_proj.weight"]
        out[dst + "ffn.w1.weight"] = hf_state[src + "mlp.gate_proj.weight"]
        out[dst + "ffn.w3.weight"] = hf_state[src + "mlp.up_proj.weight"]
        out[dst + "ffn.w2.weight"] = hf_state[src + "mlp.down_proj.weight"]
    return out


def load_hf_checkpoint(folder: str | Path, context_length: int | None = None, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[TransformerLM, ModelConfig]:
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise ValueError(f"{folder}: no config.json (a Hugging Face model folder is expected)")
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()), context_length)
    state = convert_state_dict(_read_safetensors(folder), cfg)
    model = TransformerLM.from_config(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]:
        raise ValueError(f"checkpoint does not match: missing {missing}, unexpected {unexpected}")
    return model.to(device=device, dtype=dtype), cfg

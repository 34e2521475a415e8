"""Llama / Qwen2 checkpoints load into the project's model with equal logits (tiny random models built here with
`transformers`, saved as safetensors, loaded back by model/hf.py)."""

from __future__ import annotations

import json

import pytest
import torch

from model.generate import generate
from model.hf import load_hf_checkpoint

transformers = pytest.importorskip("transformers")


def _save(tmp_path, kind: str, **kw):
    torch.manual_seed(0)
    common = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=500.0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**common, "num_key_value_heads": 2, "tie_word_embeddings": False, **kw})
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen2Config(**{**common, "num_key_value_heads": 1, "tie_word_embeddings": True, **kw})
        model = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # random, non-trivial norm gains and biases, so a mis-mapped tensor would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.normal_(1.0 if name.endswith("norm.weight") else 0.0, 0.5)
    model.eval()
    model.save_pretrained(tmp_path / kind, safe_serialization=True)
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_logits_equal_transformers(tmp_path, kind):
    ref = _save(tmp_path, kind)
    ours, cfg = load_hf_checkpoint(tmp_path / kind)
    expect_kv, expect_tied, expect_bias = (2, False, False) if kind == "llama" else (1, True, True)
    assert (cfg.num_kv_heads, cfg.tie_embeddings, cfg.qkv_bias) == (expect_kv, expect_tied, expect_bias)
    ids = torch.randint(0, 211, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # greedy decoding with the KV cache (grouped-query heads cached) gives transformers' greedy tokens
    with torch.no_grad():
        hf_out = ref.generate(ids[:1, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)[0, 5:].tolist()
    assert generate(ours, ids[:1, :5], max_new_tokens=8, temperature=0.0)[0] == hf_out
    if kind == "qwen2":
        assert ours.lm_head.weight is ours.token_embeddings.weight


def test_unsupported_checkpoints_are_clear_errors(tmp_path):
    _save(tmp_path, "llama")
    cfg = json.loads((tmp_path / "llama" / "config.json").read_text())
    for change, message in (({"architectures": ["GPTNeoXForCausalLM"]}, "not supported"),
                            ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
                            ({"hidden_act": "gelu"}, "activation")):
        (tmp_path / "llama" / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=message):
            load_hf_checkpoint(tmp_path / "llama")
    with pytest.raises(ValueError, match="config.json"):
        load_hf_checkpoint(tmp_path / "nothing")

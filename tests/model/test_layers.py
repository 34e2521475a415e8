"""Model modules against plain PyTorch references (fp32, tight tolerances), any leading batch dims."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.config import PRESETS, ModelConfig, forward_flops_per_token, parameter_count, preset
from model.layers import (
    Embedding,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    TransformerLM,
    default_d_ff,
    scaled_dot_product_attention,
    softmax,
)

ATOL = 1e-6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_linear_and_init():
    lin = Linear(300, 500)
    assert lin.weight.shape == (500, 300)
    x = torch.randn(2, 3, 300)
    torch.testing.assert_close(lin(x), x @ lin.weight.T, atol=ATOL, rtol=1e-6)
    sigma = math.sqrt(2 / 800)
    assert abs(lin.weight.std().item() - sigma) / sigma < 0.05  # truncation at 3 sigma shrinks it ~1.3 %
    assert lin.weight.abs().max().item() <= 3 * sigma + 1e-6


def test_embedding():
    emb = Embedding(100, 16)
    ids = torch.randint(0, 100, (2, 3, 7))
    assert torch.equal(emb(ids), emb.weight[ids]) and emb(ids).shape == (2, 3, 7, 16)
    assert emb.weight.abs().max().item() <= 3.0


def test_rmsnorm_fp32_inside_input_dtype_out():
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 5, 32)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), ref, atol=ATOL, rtol=1e-6)
    xb = x.to(torch.bfloat16)
    out = norm(xb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)


def test_swiglu():
    assert default_d_ff(768) == 2048 and default_d_ff(64) % 64 == 0
    ff = SwiGLU(64, 128)
    x = torch.randn(3, 64)
    ref = (F.silu(x @ ff.w1.weight.T) * (x @ ff.w3.weight.T)) @ ff.w2.weight.T
    torch.testing.assert_close(ff(x), ref, atol=ATOL, rtol=1e-6)


def test_rope_matches_complex_rotation():
    d, theta = 16, 10000.0
    rope = RotaryEmbedding(theta, d, max_seq_len=64)
    x = torch.randn(2, 3, 10, d)
    pos = torch.arange(5, 15)
    out = rope(x, pos)
    # reference: interleaved pairs as complex numbers times exp(i * pos * theta^(-2j/d))
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(10, d // 2, dtype=torch.float64), pos[:, None].double() * freqs[None, :])
    xc = torch.view_as_complex(x.double().reshape(2, 3, 10, d // 2, 2).contiguous())
    ref = torch.view_as_real(xc * rot).reshape(2, 3, 10, d).float()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # norms are preserved and position 0 is the identity
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope(x, torch.zeros(10, dtype=torch.long)), x)
    with pytest.raises(ValueError):
        RotaryEmbedding(theta, 15, 8)


def test_softmax_stable():
    x = torch.randn(4, 7) * 10
    torch.testing.assert_close(softmax(x, -1), torch.softmax(x, -1), atol=ATOL, rtol=1e-6)
    big = softmax(x + 1e4, dim=0)
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, torch.softmax(x + 1e4, 0), atol=ATOL, rtol=1e-6)  # no overflow to inf/nan


def test_sdpa_with_mask():
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 5)
    mask = torch.rand(6, 9) > 0.3
    mask[:, 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attention", ["reference", "flash_torch"])
def test_causal_mhsa_matches_torch(attention):
    d_model, heads, seq = 64, 4, 12
    mha = MultiHeadSelfAttention(d_model, heads, max_seq_len=32, attention=attention)
    x = torch.randn(2, 3, seq, d_model)
    out = mha(x)

    def ref(x):
        def split(t):
            return t.reshape(*t.shape[:-1], heads, d_model // heads).transpose(-2, -3)

        pos = torch.arange(seq)
        q = mha.rope(split(x @ mha.q_proj.weight.T), pos)
        k = mha.rope(split(x @ mha.k_proj.weight.T), pos)
        v = split(x @ mha.v_proj.weight.T)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o.transpose(-2, -3).reshape(*x.shape) @ mha.output_proj.weight.T

    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=1e-5)
    # causal: changing a later token leaves earlier outputs unchanged
    x2 = x.clone()
    x2[..., -1, :] += 1.0
    torch.testing.assert_close(mha(x2)[..., :-1, :], out[..., :-1, :], atol=1e-6, rtol=1e-6)


def test_transformer_lm_shapes_and_parameter_count():
    cfg = PRESETS["tiny"]
    model = TransformerLM.from_config(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 3, 16))
    assert model(ids).shape == (2, 3, 16, cfg.vocab_size)
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, cfg.context_length + 1, dtype=torch.long))
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    assert not any(isinstance(m, (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)) for m in model.modules()), names


def test_configs_and_flops():
    small = preset("gpt2-small")
    n = parameter_count(small, include_embeddings=False)
    assert 120e6 < n < 130e6  # 12 x (4 d^2 + 3 d f) + LM head
    f = forward_flops_per_token(small, seq_len=1024)
    assert f == pytest.approx(12 * (8 * 768**2 + 6 * 768 * 2048 + 2 * 1024 * 768) + 2 * 768 * 50257)
    # PaLM / nanoGPT: 3x this is 6 N + 12 L d s, N the matmul parameters (no input embedding, no norm gains)
    n_matmul = 12 * (4 * 768**2 + 3 * 768 * 2048) + 768 * 50257
    assert 3 * forward_flops_per_token(small, 1024, causal=False) == 6 * n_matmul + 12 * 12 * 768 * 1024
    with pytest.raises(ValueError):
        ModelConfig(d_model=100, num_heads=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("gpt5")


def test_vocab_padding_is_invisible():
    """Embedding and LM head are padded to a multiple of 64 rows; logits keep vocab_size columns, an unpadded
    state dict (older checkpoints, Hugging Face weights) loads, and the outputs equal an unpadded model's."""
    from model.layers import TransformerLM

    torch.manual_seed(0)
    plain = TransformerLM(vocab_size=257, context_length=16, d_model=32, num_layers=1, num_heads=2,
                          attention="reference", vocab_multiple=1)
    padded = TransformerLM(vocab_size=257, context_length=16, d_model=32, num_layers=1, num_heads=2,
                           attention="reference")
    assert padded.padded_vocab == 320 and padded.lm_head.weight.shape == (320, 32)
    padded.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 257, (2, 16))
    torch.testing.assert_close(padded(ids), plain(ids))
    assert padded(ids).shape == (2, 16, 257)
    assert torch.count_nonzero(padded.lm_head.weight[257:]) == 0


def test_autocast_residual_stream():
    """autocast_residual: under autocast the blocks receive (and add into) a bf16 residual stream, the parameters and
    their gradients stay fp32, and the loss stays close to the fp32-stream model's; without autocast it changes
    nothing."""
    from model.layers import TransformerLM
    from training.optim import cross_entropy

    cfg = preset("tiny", attention="reference")
    assert cfg.autocast_residual  # the default
    torch.manual_seed(0)
    base = TransformerLM.from_config(cfg.with_(autocast_residual=False))
    low = TransformerLM.from_config(cfg)
    low.load_state_dict(base.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (4, 65))
    x, y = ids[:, :-1], ids[:, 1:]
    torch.testing.assert_close(low(x), base(x), atol=0, rtol=0)  # no autocast: the same model

    seen: dict[str, list[torch.dtype]] = {"base": [], "low": []}
    for key, m in (("base", base), ("low", low)):
        for layer in m.layers:
            layer.register_forward_pre_hook(lambda mod, args, key=key: seen[key].append(args[0].dtype))
    losses = {}
    for key, m in (("base", base), ("low", low)):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = cross_entropy(m(x).float(), y)
        loss.backward()
        losses[key] = loss.item()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())
    assert seen["base"] == [torch.float32] * cfg.num_layers
    assert seen["low"] == [torch.bfloat16] * cfg.num_layers
    seen["low"].clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):  # fp16 autocast: the stream stays fp32
        low(x)
    assert seen["low"] == [torch.float32] * cfg.num_layers
    assert abs(losses["low"] - losses["base"]) < 0.02 * losses["base"]
    cos = F.cosine_similarity(low.token_embeddings.weight.grad.flatten(), base.token_embeddings.weight.grad.flatten(), 0)
    assert cos > 0.95


def test_saved_configs_keep_the_behaviour_they_were_trained_with(tmp_path):
    """A model config saved before a field existed loads with the value the older code behaved as; on resume a run
    keeps it unless the command overrides it."""
    from dataclasses import asdict

    from training.pretrain import _as_started

    old = {k: v for k, v in asdict(preset("tiny")).items() if k != "autocast_residual"}
    assert ModelConfig.from_dict(old).autocast_residual is False
    assert ModelConfig.from_dict(asdict(preset("tiny"))).autocast_residual is True
    (tmp_path / "config.json").write_text(__import__("json").dumps({"model": old}))
    assert _as_started(preset("tiny"), tmp_path, {}).autocast_residual is False
    assert _as_started(preset("tiny"), tmp_path, {"autocast_residual": True}).autocast_residual is True
    (tmp_path / "config.json").write_text(__import__("json").dumps({"model": asdict(preset("tiny"))}))
    assert _as_started(preset("tiny"), tmp_path, {}).autocast_residual is True
    # a second resume: the first one rewrote config.json with the kept False, which must hold again
    (tmp_path / "config.json").write_text(__import__("json").dumps({"model": {**old, "autocast_residual": False}}))
    assert _as_started(preset("tiny"), tmp_path, {}).autocast_residual is False

"""The SFT / policy-gradient arithmetic on hand-computed cases (exact values), and its gradients."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import PRESETS
from model.layers import TransformerLM
from operators.tokenizer import gpt2_tokenizer
from training.align.core import (
    compute_entropy, compute_group_normalized_rewards, compute_grpo_clip_loss, compute_naive_policy_gradient_loss,
    compute_policy_gradient_loss, get_response_log_probs, grpo_microbatch_train_step, masked_mean, masked_normalize,
    sft_microbatch_train_step, tokenize_prompt_and_output,
)
from training.align.rewards import math_reward
from tests.conftest import REPO


def test_tokenize_prompt_and_output_with_gpt2():
    tok = gpt2_tokenizer(REPO / "operators" / "resources" / "gpt2")
    out = tokenize_prompt_and_output(["Hello", "The cat"], [" world", " sat down"], tok, pad_id=50256)
    # "Hello"=15496 " world"=995; "The"=464 " cat"=3797 " sat"=3332 " down"=866
    assert out["input_ids"].tolist() == [[15496, 995, 50256], [464, 3797, 3332]]
    assert out["labels"].tolist() == [[995, 50256, 50256], [3797, 3332, 866]]
    assert out["response_mask"].tolist() == [[True, False, False], [False, True, True]]
    with pytest.raises(ValueError, match="prompts"):
        tokenize_prompt_and_output(["a"], [], tok)


def test_entropy_and_log_probs():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [math.log(3), 0.0, -1e4, -1e4]])
    h = compute_entropy(logits)
    p = torch.tensor([0.75, 0.25])
    assert h[0] == pytest.approx(math.log(4)) and h[1] == pytest.approx(0.0, abs=1e-30)
    assert h[2] == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)

    class Fixed(torch.nn.Module):  # returns given logits, like a model would: (B, S, V)
        def forward(self, ids):
            return logits.unsqueeze(0).expand(ids.shape[0], -1, -1)

    ids = torch.zeros(2, 3, dtype=torch.long)
    labels = torch.tensor([[0, 0, 0], [3, 1, 1]])
    out = get_response_log_probs(Fixed(), ids, labels, return_token_entropy=True)
    assert out["log_probs"][0].tolist() == pytest.approx([math.log(0.25), 0.0, math.log(0.75)], abs=1e-6)
    assert out["log_probs"][1, 2] == pytest.approx(math.log(0.25), abs=1e-6)
    assert out["token_entropy"].shape == (2, 3)


def test_log_probs_of_the_project_model_match_a_manual_softmax():
    torch.manual_seed(0)
    model = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    ids = torch.randint(0, 512, (2, 9))
    out = get_response_log_probs(model, ids[:, :-1], ids[:, 1:])
    manual = torch.log_softmax(model(ids[:, :-1]), -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(out["log_probs"], manual)


def test_masked_mean_and_normalize():
    t = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 0, 1], [0, 0, 0]])
    assert masked_mean(t, m) == 2.0
    assert masked_mean(t, m, dim=1)[0] == 2.0 and math.isnan(masked_mean(t, m, dim=1)[1])  # empty row: NaN, documented
    assert masked_mean(t, m, dim=0).tolist()[0] == 1.0 and math.isnan(masked_mean(t, m, dim=0)[1])
    assert masked_normalize(t, m, 2.0) == 2.0
    assert masked_normalize(t, m, 4.0, dim=1).tolist() == [1.0, 0.0]
    assert masked_normalize(t, m, 1.0, dim=0).tolist() == [1.0, 0.0, 3.0]
    with pytest.raises(ValueError):
        masked_normalize(t, m, 0.0)


def test_group_normalized_rewards():
    def reward_fn(response, gold):
        return math_reward(f"</think> <answer>{response}</answer>", gold)

    responses = ["4", "5", "4", "4", "1", "2", "3", "9"]
    golds = ["4"] * 4 + ["9"] * 4
    adv, raw, meta = compute_group_normalized_rewards(reward_fn, responses, golds, 4, 1e-6, normalize_by_std=False)
    assert raw.tolist() == [1, 0, 1, 1, 0, 0, 0, 1]
    assert adv.tolist() == [0.25, -0.75, 0.25, 0.25, -0.25, -0.25, -0.25, 0.75]
    adv_std, _, _ = compute_group_normalized_rewards(reward_fn, responses, golds, 4, 1e-6, normalize_by_std=True)
    std = torch.tensor([1.0, 0, 1, 1]).std()  # unbiased: sqrt(0.25) = 0.5
    assert std == 0.5
    torch.testing.assert_close(adv_std, torch.tensor([0.25, -0.75, 0.25, 0.25, -0.25, -0.25, -0.25, 0.75]) / (0.5 + 1e-6))
    assert meta["reward_mean"] == 0.5 and meta["answer_rate"] == 0.5 and meta["format_rate"] == 1.0
    # a group where every answer is the same has zero advantage, not NaN
    adv0, _, meta0 = compute_group_normalized_rewards(reward_fn, ["4"] * 4, ["4"] * 4, 4, 1e-6, True)
    assert adv0.tolist() == [0.0] * 4 and meta0["groups_all_same"] == 1.0
    with pytest.raises(ValueError, match="groups"):
        compute_group_normalized_rewards(reward_fn, ["4"] * 3, ["4"] * 3, 2, 1e-6, True)


def test_policy_gradient_losses_exact():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 0.1]]))
    a = torch.tensor([[2.0], [-1.0]])
    torch.testing.assert_close(compute_naive_policy_gradient_loss(a, logp), -a * logp)
    # GRPO-Clip, eps = 0.2: ratios exp(new - old)
    old = torch.log(torch.tensor([[0.25, 0.25], [0.8, 0.2]]))  # ratios [[2, 1], [1, 0.5]]
    loss, meta = compute_grpo_clip_loss(a, logp, old, 0.2)
    # A = 2, r = 2: min(4, 1.2 * 2 = 2.4) = 2.4 (clipped); r = 1: 2. A = -1, r = 1: -1; r = 0.5: min(-0.5, -0.8) = -0.8 (clipped)
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -2.0], [1.0, 0.8]]))
    assert meta["clipped"].tolist() == [[True, False], [False, True]] and meta["clip_fraction"] == 0.5
    # the dispatcher
    for kind, kw in (("no_baseline", {"raw_rewards": a}), ("reinforce_with_baseline", {"advantages": a})):
        torch.testing.assert_close(compute_policy_gradient_loss(logp, kind, **kw)[0], -a * logp)
    with pytest.raises(ValueError, match="needs"):
        compute_policy_gradient_loss(logp, "grpo_clip", advantages=a)
    with pytest.raises(ValueError, match="unknown"):
        compute_policy_gradient_loss(logp, "ppo", advantages=a)


def test_sft_microbatch_step_loss_and_gradient():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.8, 0.1, 0.3]])).requires_grad_()
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    loss, meta = sft_microbatch_train_step(logp, mask, gradient_accumulation_steps=2, normalize_constant=2.0)
    expected = (-(math.log(0.25) + math.log(0.9)) / 2 - (math.log(0.8) + math.log(0.1)) / 2) / 2 / 2
    assert float(loss) == pytest.approx(expected)
    # d loss / d logp = -mask / (normalize_constant * batch * accumulation)
    torch.testing.assert_close(logp.grad, -mask.float() / 8)
    assert meta["response_tokens"] == 4


def test_grpo_microbatch_step_reductions_and_gradient():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.8, 0.1, 0.3]])).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([[1.0], [-2.0]])
    loss, _ = grpo_microbatch_train_step(logp, mask, 1, "reinforce_with_baseline", advantages=adv)
    expected = (-(math.log(0.5) + math.log(0.25)) / 2 + 2 * math.log(0.8)) / 2
    assert float(loss) == pytest.approx(expected)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25, 0.0], [1.0, 0.0, 0.0]]))
    # Dr. GRPO style: a constant instead of each response's length
    logp.grad = None
    loss_c, _ = grpo_microbatch_train_step(logp, mask, 2, "reinforce_with_baseline", advantages=adv,
                                           length_normalization="constant", normalize_constant=4.0)
    assert float(loss_c) == pytest.approx((-(math.log(0.5) + math.log(0.25)) / 4 + 2 * math.log(0.8) / 4) / 2 / 2)
    # GRPO-Clip: clip fraction over response tokens only
    logp.grad = None
    old = logp.detach() - torch.tensor([[math.log(2.0), 0.0, 5.0], [0.0, 0.0, 5.0]])  # ratios 2, 1, (e^5 masked)
    _, meta = grpo_microbatch_train_step(logp, mask, 1, "grpo_clip", advantages=adv, old_log_probs=old, cliprange=0.2)
    assert meta["clip_fraction"] == pytest.approx(1 / 3)  # only the ratio-2 token of the 3 response tokens


def test_dpo_loss_exact_and_per_instance():
    from training.align.core import compute_dpo_loss, per_instance_dpo_loss, sequence_log_probs

    t = torch.tensor
    loss, meta = compute_dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.5)
    # margin = 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5; loss = log(1 + e^-0.5)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5))) and meta["preference_accuracy"] == 1.0
    assert float(compute_dpo_loss(t([-2.0]), t([-1.0]), t([-2.0]), t([-1.0]), 0.1)[0]) == pytest.approx(math.log(2))
    # per instance: equal to the batched arithmetic on the same model (policy = reference gives log 2)
    torch.manual_seed(0)
    model = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference", vocab_size=50257, context_length=32))
    tok = gpt2_tokenizer(REPO / "operators" / "resources" / "gpt2")
    same = per_instance_dpo_loss(model, model, tok, 0.1, "2 + 2 =", " 4", " 5")
    assert float(same) == pytest.approx(math.log(2), abs=1e-6)
    b = tokenize_prompt_and_output(["2 + 2 ="], [" 4"], tok)
    lp = sequence_log_probs(model, b["input_ids"], b["labels"], b["response_mask"])
    manual = get_response_log_probs(model, b["input_ids"], b["labels"])["log_probs"][0, -1]
    assert float(lp[0]) == pytest.approx(float(manual))

"""Verifiable rewards on real GSM8K / MATH-500 / Countdown problems: answer extraction, equivalence of the formats
graders meet, a safe expression evaluator (property-tested), the Countdown verifier and the problem generator."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.align.rewards import (
    answers_equal, arithmetic_problems, countdown_check, countdown_question, countdown_reward, countdown_solve,
    evaluate, extract_answer, format_prompt, gsm8k_answer, math_reward, normalize_answer, worked_steps,
)
from tests.conftest import FIXTURES

ALIGN = FIXTURES / "alignment"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (ALIGN / name).read_text().split("\n") if line.strip()]


def _boxed(solution: str) -> str:
    return extract_answer(f"</think> <answer>{solution[solution.rfind(chr(92) + 'boxed'):]}</answer>")


def _respond(answer: str) -> str:
    return f" let me work it out step by step. </think> <answer>{answer}</answer>"


def test_prompt_and_format():
    p = format_prompt("  What is 2 + 2?\n")
    assert p.endswith("User: What is 2 + 2?\nAssistant: <think>") and "<answer> answer here </answer>" in p
    assert math_reward(_respond("4"), "4") == {"format_reward": 1.0, "answer_reward": 1.0, "reward": 1.0}
    assert math_reward(_respond("5"), "4") == {"format_reward": 1.0, "answer_reward": 0.0, "reward": 0.0}
    # the right answer without the format earns nothing; an unclosed answer tag is not an answer
    assert math_reward("the answer is 4", "4")["reward"] == 0.0
    assert math_reward("</think> <answer>4", "4")["format_reward"] == 0.0
    # the last answer counts, and a \boxed{} inside it is unwrapped
    assert extract_answer("</think> <answer>3</answer> </think> <answer>\\boxed{\\frac{1}{2}}</answer>") == "\\frac{1}{2}"


def test_gsm8k_real_answers_and_their_formats():
    rows = _rows("gsm8k-test-head50.jsonl")
    golds = [gsm8k_answer(r["answer"]) for r in rows]
    assert golds[:3] == ["18", "3", "70000"]  # Janet's ducks, the robe, the house flip ("#### 70000")
    for r, g in zip(rows, golds):
        n = int(g)
        assert math_reward(_respond(g), g)["reward"] == 1.0
        assert math_reward(_respond(f"{n:,}"), g)["reward"] == 1.0  # thousands separators
        assert math_reward(_respond(f"${n}"), g)["reward"] == 1.0  # a currency sign
        assert math_reward(_respond(f"{n} dollars"), g)["reward"] == 1.0  # trailing units
        assert math_reward(_respond(f"{n}.00"), g)["reward"] == 1.0
        assert math_reward(_respond(str(n + 1)), g)["reward"] == 0.0
    with pytest.raises(ValueError, match="####"):
        gsm8k_answer("no final answer")


def test_math500_reference_solutions_match_their_answers():
    """The \\boxed{} answer of every reference solution equals the dataset's answer field (different LaTeX
    spellings included), and answers of different problems are not confused."""
    rows = _rows("math500-head100.jsonl")
    for r in rows:
        assert answers_equal(_boxed(r["solution"]), r["answer"]), (r["answer"], _boxed(r["solution"]))
    distinct = [(a["answer"], b["answer"]) for a, b in zip(rows, rows[1:]) if normalize_answer(a["answer"]) != normalize_answer(b["answer"])]
    assert len(distinct) > 90 and not any(answers_equal(a, b) for a, b in distinct)


def test_math500_full_set(shared_data):
    rows = [json.loads(line) for line in (shared_data / "alignment" / "math500" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 500 and all(answers_equal(_boxed(r["solution"]), r["answer"]) for r in rows)


@pytest.mark.parametrize("pred, gold, equal", [
    ("\\frac{14}{3}", "14/3", True), ("\\dfrac{3}{56}", "\\frac{3}{56}", True), ("0.5", "\\frac12", True),
    ("3\\sqrt{13}", "\\sqrt{117}", True), ("11\\sqrt2", "11\\sqrt{2}", True), ("90^\\circ", "90", True),
    ("x = 5", "5", True), ("\\text{Evelyn}", "Evelyn", True), ("2^{10}", "1024", True), ("\\pi", "3.14159265358979", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True), ("1,-2", "1, -2", True), ("6 - 5i", "6-5i", True),
    ("1,000", "1000", True), ("-\\frac{\\pi}{6}", "-0.5235987755982988", True),
    ("7", "8", False), ("\\frac{1}{3}", "0.33", False), ("1,2", "12", False), ("(1,2)", "(2,1)", False),
    ("\\sqrt{-4}", "2", False), ("p - q", "q - p", False), ("", "0", False), (None, "0", False),
])
def test_answer_equivalence(pred, gold, equal):
    assert answers_equal(pred, gold) is equal


def test_evaluator_is_safe_and_bounded():
    for hostile in ("__import__('os').system('true')", "1 if 1 else 2", "[x for x in ()]", "9^9^9^9", "2^{100000}",
                    "1" * 500, "lambda: 1", "a.b"):
        with pytest.raises((ValueError, OverflowError)):
            evaluate(hostile)
    assert evaluate("2(3 + 4)") == 14 and evaluate("-\\frac{1}{2}") == -0.5 and evaluate("2^{-1}") == 0.5


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.integers(0, 50).map(str),
                    lambda inner: st.tuples(inner, st.sampled_from("+-*"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
                    max_leaves=8))
def test_evaluator_equals_python_on_integer_arithmetic(expr):
    """Property: on + - * of integers with parentheses the evaluator agrees with Python's own arithmetic."""
    assert evaluate(expr, exact=True) == eval(expr)  # noqa: S307 - the generated test input, not model output


def test_countdown_real_problems():
    for r in _rows("countdown-head30.jsonl"):
        nums, target = [int(x) for x in r["input"].split(",")], int(r["output"])
        expr = countdown_solve(nums, target)
        assert expr is not None and countdown_check(expr, nums, target) == (True, "ok")
        assert countdown_reward(_respond(f"{expr} = {target}"), nums, target)["reward"] == 1.0
        assert str(target) in countdown_question(nums, target)
    nums, target = [30, 100, 93], 23
    assert countdown_check("93 + 30 - 100", nums, target)[0]
    assert "exactly once" in countdown_check("93 + 30 - 100 + 30 - 30", nums, target)[1]  # a number used twice
    assert "exactly once" in countdown_check("123 - 100", nums, target)[1]  # digits glued together
    assert "not 23" in countdown_check("93 - 30 + 100", nums, target)[1]
    assert "division by zero" in countdown_check("93 / (30 - 30) + 100", [93, 30, 30, 100], 1)[1]
    assert "not allowed" in countdown_check("93 ^ 1 + 30 - 100", nums, target)[1] or \
        "powers" in countdown_check("93 ^ 1 + 30 - 100", nums, target)[1]
    assert not countdown_check("__import__('os')", nums, target)[0]
    assert countdown_reward("no tags: 93 + 30 - 100", nums, target)["format_reward"] == 0.0


def test_arithmetic_generator():
    a = arithmetic_problems(50, difficulty=2, seed=7)
    assert a == arithmetic_problems(50, difficulty=2, seed=7) != arithmetic_problems(50, difficulty=2, seed=8)
    for d in (1, 2, 3, 4):
        for p in arithmetic_problems(40, difficulty=d, seed=d):
            assert p.question == f"What is {p.expression}?"
            assert int(p.answer) == eval(p.expression)  # noqa: S307 - the generator's own expression
            assert p.expression.count(" ") == 2 * d  # d + 1 operands
            assert ("(" in p.expression) == (d >= 3)
            if d == 1:
                assert "*" not in p.expression
            assert math_reward(_respond(p.answer), p.answer)["reward"] == 1.0
    assert any("*" in p.expression for p in arithmetic_problems(40, 2, 0))
    # worked solutions: one operation per step, in evaluation order, each step correct, ending at the answer
    assert worked_steps("5658 + 86 * (87 + 4593) + 5844") == \
        "87 + 4593 = 4680, 86 * 4680 = 402480, 5658 + 402480 = 408138, 408138 + 5844 = 413982"
    assert worked_steps("15 - 81 - 3") == "15 - 81 = -66, -66 - 3 = -69"
    for d in (1, 2, 3, 4):
        for p in arithmetic_problems(30, difficulty=d, seed=11):
            steps = p.steps.split(", ")
            assert len(steps) == d and steps[-1].endswith(f"= {p.answer}")
            for step in steps:
                lhs, rhs = step.split(" = ")
                assert eval(lhs.replace("--", "+")) == int(rhs)  # noqa: S307 - generated arithmetic
    with pytest.raises(ValueError):
        arithmetic_problems(1, difficulty=0)
    random.seed(0)  # the generator does not touch the global RNG state
    before = random.random()
    random.seed(0)
    arithmetic_problems(5, 2)
    assert random.random() == before

"""Verifiable rewards: the prompt template, answer extraction, numeric / LaTeX answer equivalence, a Countdown verifier
and a generator of arithmetic problems. Pure functions, no model, no `eval` of model output.

    prompt = format_prompt(question)                   # "... Assistant: <think>"
    math_reward(response, "18")  -> {"format_reward": 1.0, "answer_reward": 1.0, "reward": 1.0}
    countdown_reward(response, [30, 100, 93], 23)
    gsm8k_answer(row["answer"])  -> "18"               # the text after '####'

A response is well formed when it closes the reasoning and gives one answer: `... </think> <answer>X</answer>`.
reward = answer_reward if well formed, else 0 (format is required, as in DeepSeek-R1-Zero's rule-based reward).
Answers compare equal when their normalised strings are equal (LaTeX spacing, \\left/\\right, \\dfrac, degrees,
\\text{...}, a short `x =` prefix, thousands separators removed) or when both evaluate to the same number with the
safe evaluator below (fractions, decimals, percentages, \\frac, \\sqrt, \\pi, powers, implicit products), within
a relative 1e-6. A numeric gold answer also accepts a prediction with trailing units or a currency sign.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction

PROMPT = ("A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
          "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
          "answer. The reasoning process is enclosed within <think> </think> and the answer is enclosed within "
          "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
          "<answer> answer here </answer>.\nUser: {question}\nAssistant: <think>")
ANSWER_RE = re.compile(r"</think>\s*<answer>(.*?)</answer>", re.S)
STOP = "</answer>"
MAX_EXPR = 400  # characters: longer "answers" are not evaluated


def format_prompt(question: str) -> str:
    return PROMPT.format(question=question.strip())


def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution (after '####'), thousands separators removed."""
    if "####" not in solution:
        raise ValueError("not a GSM8K solution: no '####'")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def extract_answer(response: str) -> str | None:
    """The text of the last <answer>...</answer> after </think>, with a \\boxed{...} inside unwrapped."""
    found = ANSWER_RE.findall(response)
    if not found:
        return None
    ans = found[-1].strip()
    boxed = _boxed(ans)
    return boxed if boxed is not None else ans


def _boxed(s: str) -> str | None:
    i = s.rfind("\\boxed")
    if i < 0:
        return None
    j = s.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return s[j + 1 : k].strip()
    return None


# ------------------------------------------------------------------------------------------ normalisation

_REMOVE = ["\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "$", "^\\circ", "^{\\circ}", "°",
           "\\%", "%", "\\$"]
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def normalize_answer(s: str) -> str:
    s = s.strip()
    for a, b in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cdot", "*"), ("\\times", "*"), ("\\ ", " ")):
        s = s.replace(a, b)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    for r in _REMOVE:
        s = s.replace(r, "")
    s = s.strip().rstrip(".").strip()
    m = re.fullmatch(r"\s*[A-Za-z]{1,2}\s*=\s*(.+)", s)  # "x = 5", "k=3"
    if m:
        s = m.group(1)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)  # \sqrt2
    s = s.replace(" ", "")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s.lower() if re.fullmatch(r"[A-Za-z ]+", s) else s


_LEADING_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(?=\s*[A-Za-z ]*$)")


def answers_equal(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p == g:
        return True
    gv = _value(g)
    if gv is None:
        return False
    pv = _value(p)
    if pv is None:  # "18 dollars", "18eggs": a number followed by words, when the gold answer is a number
        text = re.sub(r"^([-+]?\d{1,3}(?:,\d{3})+)", lambda k: k.group(1).replace(",", ""), pred.strip().lstrip("$"))
        m = _LEADING_NUMBER.match(text)
        pv = _value(m.group(0)) if m else None
    return pv is not None and _close(pv, gv)


def _close(a: complex | float | Fraction, b: complex | float | Fraction) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return abs(complex(a) - complex(b)) <= 1e-6 * max(1.0, abs(complex(b)))


def _value(s: str):
    if not s or len(s) > MAX_EXPR:
        return None
    try:
        return evaluate(s, exact=False)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


# ------------------------------------------------------------------------------------------ a safe evaluator

_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\frac|\\sqrt|\\pi|\\cdot|\\times|[-+*/^(){}\[\]])")


def _tokens(s: str) -> list[str]:
    out, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise ValueError(f"unexpected {s[pos:pos + 10]!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return out


class _Parser:
    """Recursive descent over + - * / ^, parentheses, braces, \\frac{a}{b}, \\sqrt{x}, \\pi and implicit products.
    exact: integers only, Fraction arithmetic, no powers/roots/pi (the Countdown rules); numbers used are recorded."""

    def __init__(self, tokens: list[str], exact: bool):
        self.t, self.i, self.exact, self.numbers = tokens, 0, exact, []

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'a token'}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self):
        v = self.expr()
        if self.peek() is not None:
            raise ValueError(f"trailing {self.peek()!r}")
        return v

    def expr(self):
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            r = self.term()
            v = v + r if op == "+" else v - r
        return v

    def _starts_atom(self, tok: str | None) -> bool:
        return tok is not None and (tok[0].isdigit() or tok[0] == "." or tok in ("(", "{", "\\frac", "\\sqrt", "\\pi"))

    def term(self):
        v = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/", "\\cdot", "\\times"):
                self.take()
                r = self.unary()
                if tok == "/":
                    if r == 0:
                        raise ZeroDivisionError
                    v = v / r
                else:
                    v = v * r
            elif not self.exact and self._starts_atom(tok):  # 3\sqrt{13}, 2\pi
                v = v * self.power()
            else:
                return v

    def unary(self):
        if self.peek() in ("-", "+"):
            op = self.take()
            v = self.unary()
            return -v if op == "-" else v
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() == "^":
            if self.exact:
                raise ValueError("powers are not allowed")
            self.take()
            e = self.atom() if self.peek() != "-" else -self._neg_atom()
            if isinstance(base, complex) or isinstance(e, complex):
                raise ValueError("complex powers")
            b, x = float(base), float(e)
            if abs(x) > 64 or abs(b) > 1e12:
                raise OverflowError("power too large")
            if b < 0 and not x.is_integer():
                raise ValueError("a fractional power of a negative number")
            if isinstance(base, Fraction) and x.is_integer() and not (base == 0 and x < 0):
                return base ** int(x)
            return b ** x
        return base

    def _neg_atom(self):
        self.take("-")
        return self.atom()

    def atom(self):
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            if self.exact:
                if not tok.isdigit():
                    raise ValueError("only whole numbers")
                self.numbers.append(int(tok))
                return Fraction(int(tok))
            return Fraction(tok)
        if tok in ("(", "{", "["):
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if self.exact:
            raise ValueError(f"{tok!r} is not allowed")
        if tok == "\\frac":
            self.take("{")
            a = self.expr()
            self.take("}")
            self.take("{")
            b = self.expr()
            self.take("}")
            if b == 0:
                raise ZeroDivisionError
            return a / b
        if tok == "\\sqrt":
            v = self.atom()
            if isinstance(v, complex) or v < 0:
                raise ValueError("square root of a negative number")
            return math.sqrt(v)
        if tok == "\\pi":
            return math.pi
        raise ValueError(f"unexpected {tok!r}")


def evaluate(expr: str, exact: bool = False):
    """The value of an arithmetic / simple LaTeX expression (Fraction where exact, float otherwise)."""
    if len(expr) > MAX_EXPR:
        raise ValueError("expression too long")
    return _Parser(_tokens(expr), exact).parse()


# ------------------------------------------------------------------------------------------ rewards

def math_reward(response: str, ground_truth: str) -> dict[str, float]:
    """Format, answer and total reward of one response against a GSM8K / MATH ground truth."""
    ans = extract_answer(response)
    if ans is None:
        return {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}
    ok = float(answers_equal(ans, ground_truth))
    return {"format_reward": 1.0, "answer_reward": ok, "reward": ok}


def countdown_check(expression: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """(valid, why): the expression uses only + - * / and parentheses, each given number exactly once, and equals
    the target exactly (Fraction arithmetic)."""
    try:
        p = _Parser(_tokens(expression), exact=True)
        value = p.parse()
    except ZeroDivisionError:
        return False, "division by zero"
    except (ValueError, OverflowError) as exc:
        return False, f"not an arithmetic expression: {exc}"
    if sorted(p.numbers) != sorted(numbers):
        return False, f"uses {sorted(p.numbers)}, must use each of {sorted(numbers)} exactly once"
    if value != target:
        return False, f"equals {value}, not {target}"
    return True, "ok"


def countdown_solve(numbers: list[int], target: int) -> str | None:
    """An expression using each number exactly once that equals `target`, or None (exhaustive over pairings:
    fine for the 3-5 numbers of Countdown). Used to build SFT data and to test the verifier on real problems."""
    if len(numbers) > 6:
        raise ValueError("at most 6 numbers")
    goal = Fraction(target)

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == goal else None
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                (a, ea), (b, eb) = items[i], items[j]
                rest = [items[k] for k in range(len(items)) if k not in (i, j)]
                cands = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
                if b != 0:
                    cands.append((a / b, f"({ea} / {eb})"))
                for value, expr in cands:
                    found = search(rest + [(value, expr)])
                    if found:
                        return found
        return None

    found = search([(Fraction(n), str(n)) for n in numbers])
    return found[1:-1] if found and found.startswith("(") and found.endswith(")") else found


def countdown_reward(response: str, numbers: list[int], target: int) -> dict[str, float]:
    found = ANSWER_RE.findall(response)
    if not found:
        return {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}
    expr = found[-1].strip()
    expr = expr.split("=")[0] if expr.count("=") == 1 else expr  # "(30+93)-100 = 23"
    ok = float(countdown_check(expr, numbers, target)[0])
    return {"format_reward": 1.0, "answer_reward": ok, "reward": ok}


def countdown_question(numbers: list[int], target: int) -> str:
    return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
            "operations (+, -, *, /) and each number must be used exactly once. Give the expression in the "
            "<answer> </answer> tags, for example <answer>(1 + 2) / 3</answer>.")


# ------------------------------------------------------------------------------------------ a problem generator

@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    expression: str
    steps: str = ""
    """The worked solution, one operation at a time in evaluation order: "4 * 7 = 28, 12 + 28 = 40"."""


def worked_steps(expression: str) -> str:
    """Evaluate + - * and parentheses one operation at a time (innermost parentheses first, then products, then
    sums left to right), writing each operation as "a op b = c"."""
    toks: list = [int(t) if t.isdigit() else t for t in re.findall(r"\d+|[-+*()]", expression)]
    steps: list[str] = []

    def flat(seq: list) -> int:
        seq = list(seq)
        if seq and seq[0] == "-":  # a leading minus
            seq = [-seq[1]] + seq[2:]
        for ops in (("*",), ("+", "-")):
            i = 1
            while i < len(seq):
                if seq[i] in ops:
                    a, op, b = seq[i - 1], seq[i], seq[i + 1]
                    c = a * b if op == "*" else a + b if op == "+" else a - b
                    steps.append(f"{a} {op} {b} = {c}")
                    seq[i - 1 : i + 2] = [c]
                else:
                    i += 2
        if len(seq) != 1:
            raise ValueError(f"cannot reduce {expression!r}")
        return seq[0]

    while "(" in toks:
        close = toks.index(")")
        open_ = max(i for i in range(close) if toks[i] == "(")
        toks[open_ : close + 1] = [flat(toks[open_ + 1 : close])]
    flat(toks)
    return ", ".join(steps)


def arithmetic_problems(n: int, difficulty: int = 1, seed: int = 0) -> list[Problem]:
    """n problems "What is 17 + 4 * 9?" with integer answers. difficulty d: d + 1 operands of up to d + 1 digits
    (at most 2 for products, which keep answers small), operators from + - at d = 1, + - * from d = 2, and
    parentheses from d = 3. Seeded: the same (n, difficulty, seed) gives the same problems."""
    if n < 0 or difficulty < 1:
        raise ValueError("n must be >= 0 and difficulty >= 1")
    rng = random.Random(f"{seed}:{difficulty}")
    ops = ["+", "-"] + (["*"] if difficulty >= 2 else [])
    out = []
    for _ in range(n):
        k = difficulty + 1
        nums = [rng.randint(1, 10 ** min(difficulty + 1, 4) - 1) for _ in range(k)]
        chosen = [rng.choice(ops) for _ in range(k - 1)]
        nums = [x % 100 if (i > 0 and chosen[i - 1] == "*") or (i < k - 1 and chosen[i] == "*") else x
                for i, x in enumerate(nums)]
        parts = [str(nums[0])]
        for op, x in zip(chosen, nums[1:]):
            parts += [op, str(x)]
        expr = " ".join(parts)
        if difficulty >= 3 and k >= 3:  # bracket a random adjacent pair
            i = rng.randrange(0, k - 1) * 2
            parts[i] = "(" + parts[i]
            parts[i + 2] = parts[i + 2] + ")"
            expr = " ".join(parts)
        value = evaluate(expr, exact=True)
        out.append(Problem(f"What is {expr}?", str(int(value)), expr, worked_steps(expr)))
    return out

"""The arithmetic reranker: written calculations checked exactly, answers that follow,
question numbers used, its config, and bounded work for hostile text."""

from __future__ import annotations

from fractions import Fraction

import pytest

from nbest.errors import ConfigError
from nbest.rerankers import ArithmeticCheck, ArithmeticConfig, MeanLogProb, Ranker, build_ranker, reranker_config
from nbest.rerankers.arithmetic import (
    MAX_CHARS,
    MAX_DIGITS,
    MAX_EXPONENT,
    MAX_OPERANDS,
    MAX_STATEMENTS,
    check_text,
    last_paragraph,
    statements,
)
from nbest.types import Candidate, CandidateSpec, ChatMessage, Request, SamplingParams


def cand(index: int, text: str, mean: float | None = None) -> Candidate:
    spec = CandidateSpec(index=index, params=SamplingParams())
    return Candidate(index=index, spec=spec, text=text, num_tokens=10, mean_logprob=mean)


POWERS = [
    ("2^3 = 8", [True]),
    ("2 ^ 10 = 1024", [True]),
    ("2^3 = 6", [False]),
    ("3**2 = 9", [True]),
    ("3 ** 2 = 9", [True]),
    ("3**2 = 6", [False]),
    ("5² = 25", [True]),
    ("5² = 10", [False]),
    ("2³ = 8", [True]),
    ("10¹² = 1,000,000,000,000", [True]),  # several superscript digits are one exponent
    ("(1 + 2)² = 9", [True]),
    ("2 × 3² = 18", [True]),  # tighter than ×: not 36
    ("2 × 3^2 = 36", [False]),
    ("12 / 2^2 = 3", [True]),
    ("2^3^2 = 512", [True]),  # right to left: 2^9
    ("2^3^2 = 64", [False]),
    ("-3^2 = -9", [True]),  # tighter than the sign
    ("(-3)^2 = 9", [True]),
    ("0.5^3 = 0.125", [True]),
    ("1.5^2 = 2.25", [True]),
    ("7^0 = 1", [True]),
    ("10^14 = 100,000,000,000,000", [True]),
    ("4 × 16 = 2^6 = 64", [True]),  # "= 2^6" is not the written result 2: only 2^6 = 64 is read
    ("2^-1 = 0.5", []),  # negative exponent: not checked
    ("2^0.5 = 1.41", []),  # fractional exponent: not checked
    ("2^(1 / 2) = 1.41", []),
    (f"1^{MAX_EXPONENT + 1} = 1", []),  # exponent past the bound, however small the base
    (f"1^{MAX_EXPONENT} = 1", [True]),
    (f"10^{MAX_DIGITS - 1} = 1{'0' * (MAX_DIGITS - 1)}", [True]),
    (f"10^{MAX_DIGITS} = 1{'0' * MAX_DIGITS}", []),  # a result of more than MAX_DIGITS digits
    ("0.1^16 = 0", []),  # ... in its denominator too
    ("2^64 = 1", []),
    ("2^100 = 1, 2 + 2 = 5", [False]),  # the unchecked power does not stop the next calculation
    ("**4 + 4 = 8**", [True]),  # Markdown bold around a calculation is still not a power
    ("**5** **3 + 3 = 6**", [True]),
    ("x² + 1 = 10", []),  # algebra
    ("5 m² = 5", []),  # a unit
    ("Note² = 4", []),  # a footnote mark after a word
]
"""Powers: ``^``, ``**`` and superscript digits, within bounds (past them: not checked)."""

LEADING_MINUS = [
    ("-3 + 5 = 2", [True]),
    ("-3 + 5 = 8", [False]),
    ("−3 + 5 = 2", [True]),  # Unicode minus
    ("-$3 + $5 = $2", [True]),
    ("-(2 + 1) × 2 = -6", [True]),
    ("(-4) × 2 = -8", [True]),
    ("(-4) × 2 = 8", [False]),
    ("10 - -2 = 12", [True]),
    ("10 - -2 = 8", [False]),
    ("5 - 8 = -3", [True]),  # a negative result
    ("5 - 8 = 3", [False]),
    ("So -3 + 5 = 2", [True]),  # after a word and a space
    ("Then:\n-3 × -3 = 9", [True]),
    ("x - 3 = 2", []),  # algebra: an operator after a word
    ("3x - 2 = 7", []),
    ("n - 1 = 4", []),
    ("a-3=5", []),  # a minus right after a word
    ("x -3 + 5 = 2", []),  # after a lone letter: a variable
    ("3x -2 + 5 = 10", []),
    ("- 3 + 5 = 8", [True]),  # a bullet, not a sign: 3 + 5 = 8
    ("so - 3 + 5 = 8", []),  # a lone minus inside a line is neither
    ("--3 + 5 = 8", []),
]
"""A minus that starts an expression, and the algebra that must stay unread."""

LISTS_AND_PARENTHESES = [
    ("- 12 × 4 = 48", [True]),  # a bullet at the start of a line is not part of the calculation
    ("- 12 × 4 = 46", [False]),
    ("* 12 × 4 = 48", [True]),
    ("* 12 × 4 = 46", [False]),
    ("+ 12 × 4 = 48", [True]),
    ("• 12 × 4 = 46", [False]),
    ("1) 12 × 4 = 48", [True]),  # a numbered list
    ("1) 12 × 4 = 47", [False]),
    ("1. 12 × 4 = 48", [True]),
    ("2. 12 × 4 = 47", [False]),
    ("So:\n  - 3 × 4 = 12\n  - 12 + 5 = 18", [True, False]),  # indented, after a newline
    ("1) 2 + 2 = 4\n2) 4 × 3 = 12", [True, True]),
    ("-3 + 5 = 2\n- 3 + 5 = 8", [True, True]),  # a minus written onto its number is a sign
    ("5 - 1 = 4 - 2 = 2", [True, True]),  # a minus inside a line is not a bullet
    ("- x - 3 = 2", []),  # algebra after a bullet stays unread
    ("- 3x - 2 = 7", []),
    ("(3 + 5 = 8)", [True]),  # a calculation inside parentheses
    ("(3 + 5 = 9)", [False]),
    ("so (that is 3 × 4 = 12).", [True]),
    ("so (that is 3 × 4 = 13).", [False]),
    ("(-3 + 5 = 2)", [True]),
    ("((2 + 3) × 4 = 20)", [True]),  # the unmatched ( goes, the matched pair stays
    ("((2 + 3) × 4 = 25)", [False]),
    ("12 × 4 = 48 (correct)", [True]),  # a remark after the result
    ("12 × 4 = 46 (correct)", [False]),
    ("5 + 4 = 9 - 2 = 7 (check)", [True, True]),
    ("The cost is 3 × 17 = 51 dollars (3 × 17 = 51).", [True, True]),
    ("The cost is 3 × 17 = 51 dollars (3 × 17 = 41).", [True, False]),
    ("(3 + 5) = 8", [True]),  # balanced parentheses keep their meaning
    ("(3 + 5) = 9", [False]),
    ("3 × (4 + 1) = 15", [True]),
    ("3 × (4 + 1) = 13", [False]),
    ("(x - 3 = 2)", []),  # algebra in parentheses stays unread
    ("f(2) = 4", []),
]
"""List markers and parentheses around or after a calculation, which are not part of it."""


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("5 + 4 = 9", [True]),
        ("5 + 4 = 10", [False]),
        ("5 + 4 - 2 = 7", [True]),
        ("2 + 3 × 4 = 14", [True]),  # precedence: not 20
        ("2 + 3 × 4 = 20", [False]),
        ("3 × (4 + 1) = 15", [True]),
        ("(2 + 3) * (4 - 1) = 15", [True]),
        ("10 / 3 = 3.33", [True]),  # rounds to the written decimals
        ("10 / 3 = 3.3", [True]),
        ("10 / 3 = 3.34", [False]),
        ("10 / 3 = 3", [False]),  # a whole number must be exact
        ("7 / 2 = 3.5", [True]),
        ("1,200 + 800 = 2,000", [True]),
        ("$1,250.50 - $250.50 = $1,000", [True]),
        ("12 ÷ 4 = 3", [True]),
        ("6 × 7 = 42", [True]),
        ("6 x 7 = 42", [True]),
        ("6x7 = 42", [True]),
        ("10 − 3 = 7", [True]),  # Unicode minus
        ("3 - 5 = -2", [True]),
        ("3 - 5 = −2", [True]),
        ("7 / 0 = 7", [False]),  # division by zero is a false statement
        ("7 / (2 - 2) = 0", [False]),
        ("50% × 20 = 10", [True]),
        ("15 / 60 × 100 = 25%", [True]),
        ("1 / 4 = 25%", [True]),
        ("2 \\times 3 = 6", [True]),
        ("**4 + 4 = 8**", [True]),  # Markdown bold is not an operator
        ("5 + 4 = 9 - 2 = 7", [True, True]),  # a chain: each step from the written result
        ("5 + 4 = 9 - 2 = 8", [True, False]),
        ("1+1=2 2+2=5", [True, False]),  # two numbers in a row end a calculation
        ("He has 3 apples and 4 pears.", []),
        ("3x + 2 = 11", []),  # algebra: x is not times next to a word
        ("x = 5", []),
        ("Step 1 = 5", []),  # no operator: not a calculation
        ("= (3 + 4", []),
        *POWERS,
        *LEADING_MINUS,
        *LISTS_AND_PARENTHESES,
    ],
)
def test_statements(text: str, holds: list[bool]) -> None:
    assert [s.holds for s in statements(text)] == holds


def test_powers_and_negatives_are_counted_in_the_details() -> None:
    score = check_text("5² = 25, -3 + 25 = 22, 2^3 = 6, 9^99999999 = 1. The answer is 22.", "")
    assert score.details == {"statements": 3, "false": 1, "follows": False, "grounding": None}
    algebra = check_text("3x - 2 = 7, so 3x = 9 and x = 3.", "")
    assert algebra.details == {"statements": 0, "false": 0, "follows": None, "grounding": None}
    assert check_text("-3 + 5 = 2. The answer is 2.", "").details["statements"] == 1


def test_power_values_are_exact() -> None:
    assert [(s.value, s.result) for s in statements("(2 / 3)^2 = 0.44, -2^3 = -8")] == [
        (Fraction(4, 9), Fraction(44, 100)),
        (Fraction(-8), Fraction(-8)),
    ]


def test_statement_values_are_exact() -> None:
    found = statements("1 / 3 + 1 / 6 = 0.5 and 0.1 + 0.2 = 0.3")
    assert [(s.value, s.result, s.holds) for s in found] == [
        (Fraction(1, 2), Fraction(1, 2), True),
        (Fraction(3, 10), Fraction(3, 10), True),
    ]


def test_too_many_digits_is_not_a_number() -> None:
    assert statements("1234567890123456 + 1 = 1234567890123457") == []
    assert [s.holds for s in statements("123456789012345 + 1 = 123456789012346")] == [True]


def test_follows_is_the_final_answer_against_the_last_result() -> None:
    right = check_text("4 × 3 = 12, 12 + 2 = 14. The answer is 14.", "")
    wrong = check_text("4 × 3 = 12, 12 + 2 = 14. The answer is 12.", "")
    assert (right.details["follows"], right.value) == (True, 1.0)
    assert (wrong.details["follows"], wrong.value) == (False, 0.5)
    assert check_text("The answer is 14.", "").details["follows"] is None  # no calculation


def test_grounding_counts_the_question_numbers_used() -> None:
    score = check_text("3 + 4 = 7", "Ann has 3 cats, 4 dogs and 2 birds.")
    assert score.details == {"statements": 1, "false": 0, "follows": True, "grounding": pytest.approx(2 / 3, abs=1e-4)}
    assert score.value == pytest.approx((1 + 1 + 2 / 3) / 3, abs=1e-4)


def test_grounding_reads_only_the_last_paragraph_of_a_few_shot_prompt() -> None:
    prompt = "Q: Bo has 10 pens and buys 20 more.\nA: 10 + 20 = 30. The answer is 30.\n\nQ: Cy has 6 cups and breaks 2."
    assert last_paragraph(prompt) == "Q: Cy has 6 cups and breaks 2."
    request = Request(prompt=prompt)
    uses = check_text("6 - 2 = 4. The answer is 4.", last_paragraph(request.prompt))
    copies = check_text("10 + 20 = 30. The answer is 30.", last_paragraph(request.prompt))
    assert uses.details["grounding"] == 1.0
    assert copies.details["grounding"] == 0.0


def test_chat_prompts_read_the_last_user_message() -> None:
    prompt = [
        ChatMessage(role="system", content="Solve it. 99 is not asked."),
        ChatMessage(role="user", content="What is 8 plus 9?"),
        ChatMessage(role="assistant", content="Thinking about 100..."),
    ]
    assert last_paragraph(prompt) == "What is 8 plus 9?"


@pytest.mark.asyncio
async def test_no_check_applies_scores_none() -> None:
    scores = await ArithmeticCheck().score(Request(prompt="Write a haiku."), [cand(0, "Autumn moon, quiet.")])
    assert scores[0].value is None
    assert scores[0].details == {"statements": 0, "false": 0, "follows": None, "grounding": None}


@pytest.mark.asyncio
async def test_prepare_caches_and_release_forgets() -> None:
    reranker = ArithmeticCheck()
    request = Request(prompt="What is 17 * 3?")
    c = cand(0, "17 × 3 = 51. The answer is 51.")
    await reranker.prepare(request, c)
    assert len(reranker._checked) == 1
    assert [s.value for s in await reranker.score(request, [c])] == [1.0]
    long = cand(1, "17 × 3 = 51. " * 200)  # past INLINE_CHARS: checked in a worker thread
    await reranker.prepare(request, long)
    assert len(reranker._checked) == 2
    reranker.release(request)
    assert len(reranker._checked) == 0


def test_config_round_trips_through_the_registry() -> None:
    config = reranker_config("arithmetic=0.5")
    assert config == ArithmeticConfig(weight=0.5)
    assert config.model_dump() == {"kind": "arithmetic", "weight": 0.5}
    assert reranker_config(config.model_dump()) == config
    assert ArithmeticCheck().to_config() == ArithmeticConfig()
    assert config.reranker_name() == "arithmetic"
    with pytest.raises(ConfigError, match="takes no argument"):
        reranker_config("arithmetic:strict")


def test_clients_may_ask_for_it() -> None:
    ranker = build_ranker(["logprob", "arithmetic=0.5"], for_client=True)
    assert [r.name for r in ranker.rerankers] == ["mean_logprob", "arithmetic"]


@pytest.mark.asyncio
async def test_logprob_plus_arithmetic_puts_the_sound_candidate_first() -> None:
    request = Request(prompt="A box holds 6 eggs. How many eggs are in 4 boxes?")
    slip = cand(0, "6 × 4 = 26. The answer is 26.", mean=-0.20)  # more fluent, wrong
    sound = cand(1, "6 × 4 = 24. The answer is 24.", mean=-0.25)
    lost = cand(2, "There are 12 eggs.", mean=-0.60)
    alone = await Ranker([MeanLogProb()]).rank(request, [slip, sound, lost])
    both = await Ranker([MeanLogProb(), ArithmeticCheck()]).rank(request, [slip, sound, lost])
    assert alone.candidates[0].index == 0
    assert both.candidates[0].index == 1
    assert both.candidates[0].scores["arithmetic"] == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "1+1=2 " * 20_000,
        "7" * 100_000,
        "(" * 100_000,
        "1+" * 50_000 + "=2",
        "9" * 99 + "*9" * 10_000,
        "(" * 1_900 + "1+1" + ")" * 1_900 + "=2",
        "-" * 3_900 + "1+1=2",
        "\n- (1+1=2) " * 10_000,
        "(" * 3_990 + "1+1=2" + ")" * 100_000,
    ],
)
def test_hostile_text_is_read_only_up_to_the_bound(text: str) -> None:
    question = "What is 1 + 1? " + "9" * 100_000
    score = check_text(text, question)
    assert score == check_text(text[:MAX_CHARS], question[:MAX_CHARS])  # the rest is never read
    assert score.details["statements"] <= MAX_STATEMENTS


def test_long_expressions_are_not_checked() -> None:
    assert statements("+".join(["1"] * MAX_OPERANDS) + f" = {MAX_OPERANDS}")[0].holds
    assert statements("+".join(["1"] * (MAX_OPERANDS + 1)) + f" = {MAX_OPERANDS + 1}") == []
    assert statements("(" * 100 + "1 + 1" + ")" * 100 + " = 2") == []  # nesting is bounded too


def test_hostile_statements_stop_at_the_cap() -> None:
    found = statements("1+1=2 " * 20_000)
    assert len(found) == MAX_STATEMENTS
    assert all(s.holds for s in found)

"""Answer extractors and the normaliser, as a hand-checked table."""

from __future__ import annotations

import pytest

from nbest.errors import ConfigError
from nbest.rerankers.extract import get_extractor, normalize_answer, normalize_number

EXTRACT_CASES = [
    # last number
    ("number", "17 * 3 = 51", "51"),
    ("number", "The total is 1,000 apples.", "1000"),
    ("number", "It went down by -3.5 degrees", "-3.5"),
    ("number", "About 3/4 of them", "0.75"),
    ("number", "One third: 1/3", "1/3"),
    ("number", "It costs $12.", "12"),
    ("number", "It costs -$12", "-12"),
    ("number", "Revenue was $1,234,567.50", "1234567.5"),
    ("number", "Growth of 50%", "50"),
    ("number", "12.0", "12"),
    ("number", "first 3, then 4, finally 5.", "5"),
    ("number", "−7 (unicode minus)", "-7"),
    ("number", "no digits here", None),
    ("number", "Step 2: 2023-01-05", "5"),
    ("number", ".5 of a cup", "0.5"),
    ("number", "x/0 and 1/0", None),
    # boxed
    ("boxed", r"Hence $\boxed{42}$.", "42"),
    ("boxed", r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    ("boxed", r"\fbox{yes}", "yes"),
    ("boxed", r"\boxed{unclosed", None),
    ("boxed", "no box", None),
    # multiple choice
    ("choice", "The answer is (B).", "B"),
    ("choice", "Answer: c", "C"),
    ("choice", "Between (A) and (D), I pick (D)", "D"),
    ("choice", "B) Paris\nbecause ...", "B"),
    ("choice", "E", "E"),
    ("choice", "I'd go with option A", "A"),
    ("choice", "nothing to pick", None),
    # first line, whole text, auto
    ("first_line", "\n\n  Paris  \nbecause it is the capital", "Paris"),
    ("first_line", "   \n  ", None),
    ("text", "  Paris is it. ", "Paris is it."),
    ("auto", r"\boxed{7} though 8", "7"),
    ("auto", "so the result is 8.", "8"),
    ("auto", "Paris", "Paris"),
    # regex and json
    ("regex:Final answer: (\\w+)", "Final answer: yes. Final answer: no.", "no"),
    ("regex:#### ?(\\S+)", "work...\n#### 72", "72"),
    ("regex:\\d+", "a 1 b 22", "22"),
    ("regex:(x)?y", "y", None),
    ("json:answer", 'Sure! {"answer": "B", "reason": "..."}', "B"),
    ("json:answer", '```json\n{"answer": 12.5}\n```', "12.5"),
    ("json:result.value", '{"result": {"value": [1, 2]}}', "[1, 2]"),
    ("json:answer", '{"other": 1} {broken', None),
    ("json:answer", '{"answer": 1} later {"answer": 2}', "2"),
]


@pytest.mark.parametrize(("extractor", "text", "expected"), EXTRACT_CASES)
def test_extractor(extractor: str, text: str, expected: str | None) -> None:
    assert get_extractor(extractor)(text) == expected


NORMALIZE_CASES = [
    ("12.0", "12"),
    ("12", "12"),
    ("$12", "12"),
    ("1,000", "1000"),
    ("-3.50", "-3.5"),
    ("3/4", "0.75"),
    ("6/8", "0.75"),
    (r"\frac{3}{4}", "0.75"),
    (r"\dfrac{1}{3}", "1/3"),
    ("$\\frac{2}{1}$", "2"),
    ("1e3", "1000"),
    ("50%", "50"),
    ("  Paris. ", "paris"),
    ("PARIS", "paris"),
    ("New   York", "new york"),
    ("U.S.A.", "usa"),
    ("“quoted”", "quoted"),
    (r"\text{blue}", "blue"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZE_CASES)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(("a", "b"), [("12.0", "12"), ("$12", "12.00"), ("0.75", "3/4"), ("Paris!", "paris"), ("1,000", "1000")])
def test_equal_answers_normalise_equal(a: str, b: str) -> None:
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize(("a", "b"), [("12", "13"), ("1.5", "15"), ("-3", "3"), ("paris", "rome")])
def test_different_answers_stay_different(a: str, b: str) -> None:
    assert normalize_answer(a) != normalize_answer(b)


def test_normalize_number_rejects_words() -> None:
    assert normalize_number("twelve") is None
    assert normalize_number("12 apples") is None


@pytest.mark.parametrize("spec", ["nope", "number:3", "regex:(", "json:", "json:a..b", 42])
def test_bad_extractor_is_a_config_error(spec: object) -> None:
    with pytest.raises(ConfigError, match="extract"):
        get_extractor(spec)  # type: ignore[arg-type]


def test_callable_extractor_passes_through() -> None:
    def upper(text: str) -> str:
        return text.upper()

    assert get_extractor(upper) is upper

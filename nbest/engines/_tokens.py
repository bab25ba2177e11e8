"""Per-token log-probabilities as both engines report them, built the same way.

A generated token comes with its own log-probability and, when
``SamplingParams.top_logprobs`` > 0, the most likely alternatives. nbest keys
the alternatives by decoded text (what a person and a reranker can read), so
two different tokens with the same text (byte-fallback pieces that both decode
to "\ufffd", a token and its twin in another normalisation) would land on one
key. :func:`alternatives` settles such a collision the same way in
``VLLMEngine`` and ``OpenAIEngine``: the sampled token's entry always keeps its
own log-probability, and among the others the more likely one is kept (one
entry fewer than the engine sent, never a wrong sampled value).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["alternatives"]


def alternatives(sampled: str, logprob: float, others: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The alternatives of one token, the sampled one first.

    ``others`` are (decoded text, log-probability) pairs, in any order; the
    sampled token may be among them.

    >>> alternatives("\ufffd", -0.5, [("\ufffd", -0.5), ("\ufffd", -0.2), ("a", -3.0), ("a", -2.0)])
    {'\ufffd': -0.5, 'a': -2.0}
    """
    out = {sampled: logprob}
    for text, value in others:
        if text == sampled:
            continue
        known = out.get(text)
        if known is None or value > known:
            out[text] = value
    return out

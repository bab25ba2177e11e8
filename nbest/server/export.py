"""Rows for ``nbest prefs export``: DPO pairs or one JSON line per choice."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from nbest.server.prefs import Choice
from nbest.types import Prompt

__all__ = ["dpo_pairs", "jsonl_rows"]


def _prompt(prompt: Prompt) -> Any:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


def dpo_pairs(choices: Iterable[Choice]) -> Iterator[dict[str, Any]]:
    """One ``{"prompt", "chosen", "rejected"}`` per candidate the person did not
    choose (failed candidates, texts identical to the chosen one, and the members of
    the chosen card's group, which the person counted as the same answer, are left
    out, as are pruned candidates: their text was cut off mid-answer, so it says nothing
    about which answer the person preferred). The chosen side is the person's edit when
    there is one."""
    for choice in choices:
        chosen = choice.chosen_text
        seen = {chosen}
        same = set(choice.group or ())
        for cand in choice.result.candidates:
            if cand.index == choice.chosen or cand.index in same or not cand.ok or cand.pruned or cand.text in seen:
                continue
            seen.add(cand.text)
            yield {"prompt": _prompt(choice.prompt), "chosen": chosen, "rejected": cand.text,
                   "choice_id": choice.id, "request_id": choice.request_id}  # fmt: skip


def jsonl_rows(choices: Iterable[Choice]) -> Iterator[dict[str, Any]]:
    """Everything logged about each choice."""
    for choice in choices:
        yield choice.model_dump(mode="json")

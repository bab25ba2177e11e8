"""Reading an evaluation set: JSONL, one item per line, with a gold field.

Which fields hold what is configurable (:class:`Fields`): the prompt (text, or
a list of chat messages), the gold answer (a string, a number, or a list of
acceptable answers) for accuracy tasks, the reference translation for
translation tasks, an optional source text (``Request.source``), and an
optional id (default: ``line-N``). Other fields are ignored.

A set may be cut into named *splits* (a ``split`` field on every line, e.g.
``tuning`` and ``heldout``): ``read_dataset(..., split="heldout")`` keeps only
that split's items, so temperatures and policies are tuned on one split and
reported on another that was never looked at while tuning.

Unlike ``nbest batch``, an evaluation set must be clean: a bad line raises
:class:`~nbest.errors.ConfigError` naming its line number, because a metric
over a silently shortened set would mislead. A line is bad when it is not
UTF-8 (a byte-order mark at the start of the file is skipped), not JSON, holds
a number that is not finite (``NaN``, ``1e999``) or an integer too long to
read, nests too deeply, or lacks a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbest._json import MAX_LINE_BYTES, load_line, numbered_lines
from nbest.errors import ConfigError
from nbest.types import ChatMessage, NbestModel, Prompt

__all__ = ["EvalItem", "Fields", "read_dataset"]


class EvalItem(NbestModel):
    """One prompt of an evaluation set and what a right answer is."""

    id: str
    prompt: Prompt
    gold: list[str] | None = None
    """Acceptable answers (accuracy tasks); any one of them counts as right."""
    reference: str | None = None
    """The reference translation (translation tasks)."""
    source: str | None = None
    """Task context carried into ``Request.source`` (e.g. the sentence to translate)."""


@dataclass(frozen=True)
class Fields:
    """Names of the dataset's fields."""

    prompt: str = "prompt"
    answer: str | None = "answer"
    reference: str | None = None
    source: str | None = None
    id: str = "id"
    split: str = "split"
    """Field naming the split an item belongs to (read only when a split is asked for)."""


def _text(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"field {field!r} must be text or a number, got {type(value).__name__}")
    return str(value)


def _item(data: Any, lineno: int, fields: Fields) -> EvalItem:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got {type(data).__name__}")
    if fields.prompt not in data:
        raise ConfigError(f"no prompt field {fields.prompt!r} (use --prompt-field)")
    raw_prompt = data[fields.prompt]
    prompt: Prompt = (
        [ChatMessage.parse(m) for m in raw_prompt] if isinstance(raw_prompt, list) else _text(raw_prompt, fields.prompt)
    )
    gold = reference = source = None
    if fields.answer is not None:
        if fields.answer not in data:
            raise ConfigError(f"no answer field {fields.answer!r} (use --answer-field)")
        raw = data[fields.answer]
        gold = [_text(v, fields.answer) for v in raw] if isinstance(raw, list) else [_text(raw, fields.answer)]
        if not gold:
            raise ConfigError(f"field {fields.answer!r} holds no answer")
    if fields.reference is not None:
        if fields.reference not in data:
            raise ConfigError(f"no reference field {fields.reference!r} (use --reference-field)")
        reference = _text(data[fields.reference], fields.reference)
    if fields.source is not None:
        if fields.source not in data:
            raise ConfigError(f"no source field {fields.source!r} (use --source-field)")
        source = _text(data[fields.source], fields.source)
    ident = _text(data[fields.id], fields.id) if fields.id in data else f"line-{lineno}"
    return EvalItem(id=ident, prompt=prompt, gold=gold, reference=reference, source=source)


MAX_SPLIT_NAME = 64


def _split_of(data: Any, field: str) -> str:
    if not isinstance(data, dict) or field not in data:
        raise ConfigError(f"no split field {field!r} (--split reads it on every line)")
    value = data[field]
    if not isinstance(value, str):
        raise ConfigError(f"field {field!r} must be the split's name as text, got {type(value).__name__}")
    return value


def read_dataset(path: Path, fields: Fields, *, limit: int | None = None, split: str | None = None) -> list[EvalItem]:
    """The items of ``path`` (the first ``limit`` when given); with ``split``, only the
    items whose ``fields.split`` field holds that name (``limit`` counts those).

    Raises:
        ConfigError: a missing file, a bad line (with its number), duplicate ids,
            neither an answer nor a reference field, no items, a line without
            the split field, or a split no item is in (naming the splits found).
    """
    if split is not None and (not isinstance(split, str) or not split.strip() or len(split) > MAX_SPLIT_NAME):
        raise ConfigError(
            f"--split: a split's name, 1 to {MAX_SPLIT_NAME} characters (got {split!r})", parameter="split", value=split
        )
    splits_seen: set[str] = set()
    if fields.answer is None and fields.reference is None:
        raise ConfigError("eval: give --answer-field (accuracy) or --reference-field (translation)", parameter="answer_field")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit: must be at least 1 (got {limit})", parameter="limit", value=limit)
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    try:
        with path.open("rb") as f:
            for lineno, data in numbered_lines(f, MAX_LINE_BYTES):
                if isinstance(data, int):
                    why = f"a line of {data} bytes; at most {MAX_LINE_BYTES}"
                    raise ConfigError(f"{path}: line {lineno}: {why}", parameter="dataset", value=lineno)
                try:
                    raw = (data.removeprefix(b"\xef\xbb\xbf") if lineno == 1 else data).decode("utf-8")
                    if not raw.strip():
                        continue
                    data = load_line(raw)
                    if split is not None:
                        name = _split_of(data, fields.split)
                        if len(splits_seen) < 32:
                            splits_seen.add(name[:MAX_SPLIT_NAME])
                        if name != split:
                            continue
                    item = _item(data, lineno, fields)
                except UnicodeDecodeError as exc:
                    why = f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})"
                    raise ConfigError(f"{path}: line {lineno}: {why}", parameter="dataset", value=lineno) from None
                except ConfigError as exc:
                    raise ConfigError(f"{path}: line {lineno}: {exc}", parameter="dataset", value=lineno) from None
                if item.id in seen:
                    raise ConfigError(f"{path}: duplicate id {item.id!r} on lines {seen[item.id]} and {lineno}", parameter="id")
                seen[item.id] = lineno
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
    except FileNotFoundError:
        raise ConfigError(f"dataset: no such file: {path}", parameter="dataset", value=str(path)) from None
    except IsADirectoryError:
        raise ConfigError(f"dataset: {path} is a folder, not a file", parameter="dataset", value=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"dataset: cannot read {path} ({exc.strerror or exc})", parameter="dataset", value=str(path)) from None
    if not items and split is not None and splits_seen:
        found = ", ".join(sorted(splits_seen))
        raise ConfigError(
            f"--split: no item of {path} is in split {split!r}; its splits: {found}", parameter="split", value=split
        )
    if not items:
        raise ConfigError(f"dataset: {path} holds no items", parameter="dataset", value=str(path))
    return items

"""Translation with reranked candidates.

:func:`translate` asks for ``n`` translations of one text (each candidate
sampled by the strategy), then ranks them by default with

* MBR with chrF (:class:`~nbest.rerankers.mbr.MBR`): the translation the
  others agree with most, character by character, and
* :class:`~nbest.rerankers.embedding.SourceSimilarity`: how close its meaning
  stays to the source (name a multilingual sentence-transformers model, e.g.
  ``similarity_model="sentence-transformers/LaBSE"``; the embedded default
  all-MiniLM-L6-v2 is English-only and only roughly cross-lingual).

The two scores are z-normalised and summed. The source text travels in
``Request.source``; the languages in ``Result.metadata``.

>>> result = await translate(orch, "Der Hund schläft.", "German", "English", n=8)  # doctest: +SKIP
>>> result.best.text  # doctest: +SKIP
'The dog is sleeping.'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbest.errors import ConfigError
from nbest.orchestrator.stopping import check_stop_strings
from nbest.rerankers.embedding import Embedder, SourceSimilarity
from nbest.rerankers.mbr import MBR, Method
from nbest.rerankers.ranker import Ranker
from nbest.types import Result

if TYPE_CHECKING:
    from nbest.orchestrator.core import Orchestrator, Rerankers
    from nbest.orchestrator.stopping import StoppingRule
    from nbest.strategies.base import Strategy

__all__ = ["DEFAULT_SYSTEM", "DEFAULT_TEMPLATE", "render_prompt", "translate", "translation_ranker"]

DEFAULT_TEMPLATE = "Translate this {source_lang} text into {target_lang}:\n\n{text}"
"""The user message; ``{text}``, ``{source_lang}`` and ``{target_lang}`` are filled in."""

DEFAULT_SYSTEM = "You are a professional translator. Reply with the translation only, without notes or quotes."
"""The system prompt that goes with :data:`DEFAULT_TEMPLATE`."""


def render_prompt(template: str, text: str, source_lang: str, target_lang: str) -> str:
    """Fill the template.

    >>> render_prompt(DEFAULT_TEMPLATE, "Hallo", "German", "English")
    'Translate this German text into English:\\n\\nHallo'

    Raises:
        ConfigError: empty text or language, a template without ``{text}`` or
            with other placeholders.
    """
    for name, value in (("text", text), ("source_lang", source_lang), ("target_lang", target_lang)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name}: must be a non-empty string", parameter=name, value=value)
    if "{text}" not in template:
        raise ConfigError("template: must contain {text}", parameter="template", value=template)
    try:
        return template.format(text=text, source_lang=source_lang, target_lang=target_lang)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template: only {{text}}, {{source_lang}} and {{target_lang}} can be filled in ({type(exc).__name__}: {exc})",
            parameter="template",
            value=template,
        ) from None


def translation_ranker(
    similarity_model: str | Embedder | None = None, *, method: Method = "exact", weights: tuple[float, float] = (1.0, 1.0)
) -> Ranker:
    """The default translation ranker: MBR-chrF + source similarity.

    Build it once and pass it as ``rerankers=`` to reuse its embedding model
    across calls.

    Raises:
        ConfigError: a model that cannot be found, bad weights.
    """
    return Ranker([MBR("chrf", method=method), SourceSimilarity(similarity_model)], weights=list(weights))


async def translate(
    orch: Orchestrator,
    text: str,
    source_lang: str,
    target_lang: str,
    n: int = 8,
    *,
    template: str = DEFAULT_TEMPLATE,
    system: str | None = DEFAULT_SYSTEM,
    rerankers: Rerankers | None = None,
    similarity_model: str | Embedder | None = None,
    strategy: Strategy | None = None,
    timeout: float | None = None,
    until: StoppingRule | None = None,
    wave: int | None = None,
    stop: str | Sequence[str] | None = None,
    **sampling: Any,
) -> Result:
    """``n`` translations of ``text`` from ``source_lang`` into ``target_lang``, ranked.

    Args:
        orch: an open :class:`~nbest.orchestrator.core.Orchestrator`.
        template: the prompt, with ``{text}``, ``{source_lang}``, ``{target_lang}``.
        system: the system prompt (None: none).
        rerankers: rerankers or a Ranker; default :func:`translation_ranker`
            with ``similarity_model``.
        similarity_model: the embedding model of the default source similarity.
        strategy, timeout, until, wave: as in :meth:`Orchestrator.run`
            (``until`` is an early-stopping rule).
        stop: the stop strings that end a translation; by default a blank
            line when ``text`` has none (small models tend to add notes after
            one), else none.
        sampling: base sampling settings (``temperature``, ``max_tokens``, ``seed`` ...).

    Returns:
        The Result: every translation ranked, ``best`` first; ``metadata``
        holds ``task``, ``source_lang`` and ``target_lang``.

    Raises:
        ConfigError: empty text or language, a bad template, bad settings
            (a stopping rule given as ``stop`` included: it goes in ``until``).
    """
    prompt = render_prompt(template, text, source_lang, target_lang)
    check_stop_strings(stop)
    ranker = rerankers if rerankers is not None else translation_ranker(similarity_model)
    if stop is None:
        stop = [] if "\n\n" in text else ["\n\n"]
    request = orch.request(
        prompt,
        n,
        system=system,
        source=text,
        metadata={"task": "translate", "source_lang": source_lang, "target_lang": target_lang},
        stop=[stop] if isinstance(stop, str) else list(stop),
        **sampling,
    )
    return await orch.run(request, strategy=strategy, rerankers=ranker, timeout=timeout, until=until, wave=wave)

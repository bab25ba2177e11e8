"""nbest.tasks.translate on the scripted engine: prompt, defaults, ranking, errors."""

from __future__ import annotations

import pytest
import sacrebleu

from nbest import ChatMessage, ConfigError, Orchestrator, rerankers, stopping
from nbest.tasks import translate, translation_ranker
from nbest.tasks.translate import DEFAULT_SYSTEM, DEFAULT_TEMPLATE, render_prompt
from tests.scripted import ScriptedEngine, Step

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRANSLATIONS = ["The dog sleeps in the garden.", "The dog is sleeping in the garden.", "A dog sleeps in a garden.", "Cat."]


def mbr_chrf_best(texts: list[str]) -> str:
    """The MBR-chrF choice computed directly with sacrebleu."""
    expected = [
        sum(sacrebleu.sentence_chrf(h, [r]).score for j, r in enumerate(texts) if j != i) / (len(texts) - 1)
        for i, h in enumerate(texts)
    ]
    return texts[max(range(len(texts)), key=lambda i: (expected[i], -i))]


async def test_prompt_source_and_metadata(scripted: ScriptedEngine) -> None:
    for text in TRANSLATIONS:
        scripted.enqueue(text)
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await translate(
            orch, "Der Hund schläft im Garten.", "German", "English", n=4, seed=7, rerankers=[rerankers.MBR("chrf")]
        )
    call = scripted.history[0]
    assert call.prompt == [
        ChatMessage(role="system", content=DEFAULT_SYSTEM),
        ChatMessage(role="user", content="Translate this German text into English:\n\nDer Hund schläft im Garten."),
    ]
    assert call.params.stop == ["\n\n"]  # a one-paragraph source: a blank line ends the translation
    assert result.metadata == {"task": "translate", "source_lang": "German", "target_lang": "English"}
    assert result.best is not None and result.best.text == mbr_chrf_best(TRANSLATIONS)
    assert [c.rank for c in result.candidates] == [1, 2, 3, 4]
    assert result.candidates[-1].text == "Cat."


async def test_default_rerankers_are_mbr_chrf_and_source_similarity(scripted: ScriptedEngine) -> None:
    # an English "translation" task lets the English default embedder judge similarity meaningfully
    for text in ["The dog is asleep in the garden.", "The dog sleeps in the garden.", "Stock prices fell sharply today."]:
        scripted.enqueue(text)
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await translate(orch, "The dog sleeps in the yard.", "English", "simple English", n=3, seed=0)
    assert result.warnings == []
    assert all(set(c.scores) == {"mbr_chrf", "source_sim"} for c in result.candidates)
    assert result.candidates[-1].text == "Stock prices fell sharply today."  # far from the others and from the source
    sims = {c.text: c.scores["source_sim"] for c in result.candidates}
    assert sims["The dog sleeps in the garden."] > sims["Stock prices fell sharply today."]


async def test_multi_paragraph_sources_keep_blank_lines_and_custom_settings_pass_through(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        await translate(
            orch,
            "Eins.\n\nZwei.",
            "German",
            "English",
            n=2,
            template="{source_lang} -> {target_lang}: {text}",
            system=None,
            temperature=0.3,
            max_tokens=20,
            rerankers=[rerankers.MBR("chrf")],
        )
        await translate(orch, "Eins.", "German", "English", n=1, stop=["END"], rerankers=[rerankers.MBR("chrf")])
    first, _, third = scripted.history
    assert first.prompt == [ChatMessage(role="user", content="German -> English: Eins.\n\nZwei.")]
    assert first.params.stop == [] and first.params.temperature == 0.3 and first.params.max_tokens == 20
    assert third.params.stop == ["END"]


async def test_translate_can_stop_early(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, request_id: Step(text="Bonjour.")
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await translate(
            orch, "Hello.", "English", "French", n=16, until=stopping.Confidence(0.9), wave=4, rerankers=[rerankers.MBR("chrf")]
        )
    assert result.samples_used == 4 and result.answers[0].answer == "bonjour"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", "German", "English"), {}, "text: must be a non-empty string"),
        (("Hallo", " ", "English"), {}, "source_lang: must be a non-empty string"),
        (("Hallo", "German", ""), {}, "target_lang: must be a non-empty string"),
        (("Hallo", "German", "English"), {"template": "Translate please"}, "template: must contain {text}"),
        (("Hallo", "German", "English"), {"template": "{text} {style}"}, "only {text}, {source_lang} and {target_lang}"),
        (("Hallo", "German", "English"), {"n": 0}, "n: Input should be greater than or equal to 1"),
        (("Hallo", "German", "English"), {"stop": stopping.Beta(0.9)}, "is a stopping rule: pass it as until="),
    ],
)
async def test_bad_input_is_a_config_error_before_generating(
    scripted: ScriptedEngine, args: tuple[str, str, str], kwargs: dict[str, object], message: str
) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        with pytest.raises(ConfigError) as info:
            await translate(orch, *args, rerankers=[rerankers.MBR("chrf")], **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert scripted.history == []


def test_render_prompt_and_ranker() -> None:
    assert render_prompt(DEFAULT_TEMPLATE, "Hallo", "German", "English").endswith("\n\nHallo")
    ranker = translation_ranker(method="aggregate", weights=(2.0, 1.0))
    assert [r.name for r in ranker.rerankers] == ["mbr_chrf", "source_sim"] and ranker.weights == [2.0, 1.0]
    with pytest.raises(ConfigError, match="weights"):
        translation_ranker(weights=(-1.0, 1.0))

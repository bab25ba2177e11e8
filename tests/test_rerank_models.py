"""Cross-encoder and reward-model wiring on tiny, randomly initialised models built here.

These check loading, batching, order and errors, not quality: the weights are random.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nbest.errors import ConfigError
from nbest.rerankers import CrossEncoder, Ranker, RewardModel, default_embedding_model
from nbest.types import Candidate, CandidateSpec, ChatMessage, Request, SamplingParams

CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def build_tiny(folder: Path, *, num_labels: int, chat_template: str | None = None) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_embedding_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_one(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny(tmp_path_factory.mktemp("tiny1"), num_labels=1)


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny(tmp_path_factory.mktemp("tinychat"), num_labels=2, chat_template=CHAT_TEMPLATE)


def cands(texts: list[str]) -> list[Candidate]:
    return [Candidate(index=i, spec=CandidateSpec(index=i, params=SamplingParams()), text=t) for i, t in enumerate(texts)]


TEXTS = ["Paris is the capital.", "I like turtles.", "Paris.", "The answer is Lyon, surely.", "Paris is the capital."]


@pytest.mark.asyncio
async def test_cross_encoder_one_score_per_candidate_in_order(tiny_one: str) -> None:
    reranker = CrossEncoder(tiny_one, batch_size=2)
    request = Request(prompt="What is the capital of France?")
    scores = [s.value for s in await reranker.score(request, cands(TEXTS))]
    assert len(scores) == 5 and all(isinstance(v, float) for v in scores)
    assert scores[0] == pytest.approx(scores[4], abs=1e-5)  # same pair, same score, whatever the batch
    alone = [s.value for s in await reranker.score(request, cands([TEXTS[3]]))]
    assert alone[0] == pytest.approx(scores[3], abs=1e-5)
    reversed_scores = [s.value for s in await reranker.score(request, cands(TEXTS[::-1]))]
    assert reversed_scores == pytest.approx(scores[::-1], abs=1e-5)


@pytest.mark.asyncio
async def test_cross_encoder_reads_source_or_prompt(tiny_chat: str) -> None:
    reranker = CrossEncoder(tiny_chat)  # two labels: the last one is read
    with_source = Request(prompt="Translate to English", source="Le chat dort.")
    by_source = [s.value for s in await reranker.score(with_source, cands(["The cat sleeps."]))]
    forced = [s.value for s in await CrossEncoder(tiny_chat, query="prompt").score(with_source, cands(["The cat sleeps."]))]
    direct = reranker.predict_sync([("Le chat dort.", "The cat sleeps.")])
    assert by_source == pytest.approx(direct, abs=1e-6)
    assert forced == pytest.approx(reranker.predict_sync([("Translate to English", "The cat sleeps.")]), abs=1e-6)


@pytest.mark.asyncio
@pytest.mark.parametrize("fixture", ["tiny_one", "tiny_chat"])
async def test_reward_model_batches_keep_order(fixture: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(fixture)
    req = Request(prompt=[ChatMessage(role="user", content="Capital of France?")], system="Be brief.")
    batched = [s.value for s in await RewardModel(folder, batch_size=2).score(req, cands(TEXTS))]
    single = [s.value for s in await RewardModel(folder, batch_size=1).score(req, cands(TEXTS))]
    assert len(batched) == 5
    assert batched == pytest.approx(single, abs=1e-4)
    assert batched[0] == pytest.approx(batched[4], abs=1e-5)


def test_reward_conversation_shape() -> None:
    req = Request(prompt="Capital of France?", system="Be brief.")
    assert RewardModel.conversation(req, "Paris") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ]


def test_bad_models(tmp_path: Path) -> None:
    for cls in (CrossEncoder, RewardModel):
        with pytest.raises(ConfigError, match="no model folder"):
            cls(str(tmp_path / "missing"))
        with pytest.raises(ConfigError, match="not a model folder"):
            cls(str(tmp_path))
    with pytest.raises(ConfigError, match="query"):
        CrossEncoder(default_embedding_model(), query="title")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        RewardModel(default_embedding_model(), batch_size=0)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="cannot load reward model"):
        RewardModel(str(tmp_path)).load()


@pytest.mark.asyncio
async def test_unloadable_model_fails_one_request_not_the_ranking(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    ranked = await Ranker([RewardModel(str(tmp_path))]).rank(Request(prompt="q"), cands(["a", "b"]))
    assert any("reward failed" in w for w in ranked.warnings)
    assert [c.index for c in ranked.candidates] == [0, 1]


@pytest.mark.parametrize(("spec", "cls"), [("cross:{m}", CrossEncoder), ("reward:{m}=2", RewardModel)])
def test_cli_short_forms(spec: str, cls: type, tiny_one: str) -> None:
    from nbest.rerankers import parse_spec

    reranker, _ = parse_spec(spec.format(m=tiny_one))
    assert isinstance(reranker, cls)


@pytest.mark.parametrize("spec", ["cross", "reward", "cross:/no/such/model"])
def test_cli_model_required(spec: str) -> None:
    from nbest.rerankers import parse_spec

    with pytest.raises(ConfigError):
        parse_spec(spec)

"""Reward models: a Hugging Face sequence classifier scores the (prompt, candidate) chat.

Each candidate becomes the conversation ``[user: prompt, assistant: candidate]``
(with the request's system prompt first, when it has one), rendered with the
reward model's chat template; a tokenizer without a template gets the prompt
and the candidate as a text pair. The score is the model's logit: the only one
for a single-output reward head, the last one (the "preferred" class)
otherwise. Examples: ``Skywork/Skywork-Reward-V2-Qwen3-0.6B``,
``OpenAssistant/reward-model-deberta-v3-large-v2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import anyio.to_thread
from pydantic import Field

from nbest._models import LazyModel
from nbest.errors import ConfigError
from nbest.rerankers.base import CandidateCache, cache_key
from nbest.rerankers.crossencoder import _name_the_model
from nbest.rerankers.embedding import _require, check_model
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, ChatMessage, Request, Score

__all__ = ["RewardModel", "RewardModelConfig"]


class RewardModel:
    """Score = a sequence-classification reward model's logit for (prompt, candidate).

    Args:
        model: a Hugging Face model id or folder (AutoModelForSequenceClassification).
        batch_size: conversations per forward pass.
        max_length: truncate each conversation to this many tokens.
        device: torch device (``"cpu"``, ``"cuda"``).
        name: the reranker's name (``"reward"``).

    Raises:
        ConfigError: transformers/torch missing, a folder that is not a model,
            a bad option; (from :meth:`load`) a model that cannot load.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        max_length: int = 2048,
        device: str = "cpu",
        name: str = "reward",
    ) -> None:
        _require("transformers", "transformers")
        _require("torch", "torch")
        if batch_size < 1:
            raise ConfigError("batch_size: must be at least 1", parameter="batch_size", value=batch_size)
        if max_length < 8:
            raise ConfigError("max_length: must be at least 8", parameter="max_length", value=max_length)
        self.model = check_model(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.name = name
        self._loaded = LazyModel("reward model", self.model, self._build)
        self._values: CandidateCache[float] = CandidateCache()

    def to_config(self) -> RewardModelConfig:
        """The config that rebuilds this reranker."""
        if self.name != "reward":
            raise ConfigError("reward: built with a custom name; it has no config", parameter="name")
        return RewardModelConfig(model=self.model, batch_size=self.batch_size, max_length=self.max_length, device=self.device)

    def load(self) -> tuple[Any, Any]:
        """The (tokenizer, model) pair, loaded once.

        Raises:
            ConfigError: the model cannot be loaded.
        """
        return self._loaded.get()

    def _build(self) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model)
        net = AutoModelForSequenceClassification.from_pretrained(self.model).to(self.device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if net.config.pad_token_id is None:
            net.config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, net

    @staticmethod
    def conversation(request: Request, text: str) -> list[dict[str, str]]:
        """The chat a candidate is judged as: (system,) user prompt, assistant candidate."""
        prompt = request.rendered() if request.chat else [ChatMessage(role="user", content=str(request.prompt))]
        messages = (
            [{"role": m.role, "content": m.content} for m in prompt]
            if isinstance(prompt, list)
            else [{"role": "user", "content": prompt}]
        )
        return [*messages, {"role": "assistant", "content": text}]

    def score_sync(self, request: Request, texts: Sequence[str]) -> list[float]:
        """One reward per candidate text (blocking)."""
        import torch

        tokenizer, net = self.load()
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            if getattr(tokenizer, "chat_template", None):
                chats = [tokenizer.apply_chat_template(self.conversation(request, t), tokenize=False) for t in batch]
                enc = tokenizer(
                    chats,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                    add_special_tokens=False,
                )
            else:
                prompt = "\n".join(m["content"] for m in self.conversation(request, "")[:-1])
                enc = tokenizer(
                    [prompt] * len(batch),
                    list(batch),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
            with torch.inference_mode():
                logits = net(**{k: v.to(self.device) for k, v in enc.items()}).logits
            column = logits[:, -1] if logits.ndim == 2 else logits.reshape(-1)
            scores.extend(float(v) for v in column.float().cpu())
        return scores

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        if not candidates:
            return []
        values = [self._values.get(cache_key(request, c)) for c in candidates]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            computed = await anyio.to_thread.run_sync(self.score_sync, request, [candidates[i].text for i in missing])
            for i, v in zip(missing, computed, strict=True):
                values[i] = v
        return [Score(value=v) for v in values]

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Score ``candidate`` alone ahead of :meth:`score` (in a worker thread)."""
        key = cache_key(request, candidate)
        if key not in self._values:
            (value,) = await anyio.to_thread.run_sync(self.score_sync, request, [candidate.text])
            self._values.put(key, value)

    def release(self, request: Request) -> None:
        """Drop the scores computed ahead for ``request``."""
        self._values.forget(request.id)


@RERANKERS.register("reward")
class RewardModelConfig(RerankerConfig):
    """``reward:MODEL``: a reward model's logit for (prompt, candidate) (:class:`RewardModel`)."""

    kind: Literal["reward"] = "reward"
    model: str
    """A Hugging Face sequence-classification model id or folder."""
    batch_size: int = Field(default=8, ge=1)
    """Conversations per forward pass."""
    max_length: int = Field(default=2048, ge=8)
    """Truncate each conversation to this many tokens."""
    device: str = "cpu"
    """Torch device."""

    short_help: ClassVar[str] = "reward:MODEL"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        if not arg:
            raise _name_the_model("reward")
        return cls(model=arg)

    def reranker_name(self) -> str:
        return "reward"

    def build(self, *, engine: Generator | None = None) -> RewardModel:
        return RewardModel(self.model, batch_size=self.batch_size, max_length=self.max_length, device=self.device)

"""A reranker plugin in one file: the reranker, its config and short form (``shout[:MARK]``).

The README's "Writing a plugin" shows this file; tests/test_plugins.py installs
it as a distribution publishing the ``nbest.rerankers`` entry point.
"""

from typing import ClassVar, Literal

from nbest.rerankers import RERANKERS, RerankerConfig
from nbest.types import Score


class Shout:
    """Score = how many times the candidate uses the mark (default "!")."""

    name = "shout"

    def __init__(self, mark: str = "!") -> None:
        self.mark = mark

    async def score(self, request, candidates):  # type: ignore[no-untyped-def]
        return [Score(value=c.text.count(self.mark)) for c in candidates]


@RERANKERS.register("shout")
class ShoutConfig(RerankerConfig):
    kind: Literal["shout"] = "shout"
    mark: str = "!"
    short_help: ClassVar[str] = "shout[:MARK]"
    client_safe: ClassVar[bool] = True  # cheap, names no file: clients may ask for it

    @classmethod
    def from_short(cls, arg: str) -> "ShoutConfig":
        return cls(mark=arg or "!")

    def build(self, *, engine=None) -> Shout:  # type: ignore[no-untyped-def]
        return Shout(self.mark)

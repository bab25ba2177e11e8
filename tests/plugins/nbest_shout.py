from typing import ClassVar, Literal

from nbest.rerankers import RERANKERS, RerankerConfig
from nbest.types import Score


class Shout:
    name = "shout"

    def __init__(self, mark: str = "!") -> None:
        self.mark = mark

    async def score(self, request, candidates):
        return [Score(value=c.text.count(self.mark)) for c in candidates]


@RERANKERS.register("shout")
class ShoutConfig(RerankerConfig):
    kind: Literal["shout"] = "shout"
    mark: str = "!"
    short_help: ClassVar[str] = "shout[:MARK]"
    client_safe: ClassVar[bool] = True  # cheap, names no file: HTTP clients may ask for it

    @classmethod
    def from_short(cls, arg: str) -> "ShoutConfig":
        return cls(mark=arg or "!")

    def build(self, *, engine=None) -> Shout:
        return Shout(self.mark)

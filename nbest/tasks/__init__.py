"""Ready-made tasks on top of the orchestrator: translation."""

from __future__ import annotations

from nbest.tasks.translate import translate, translation_ranker

__all__ = ["translate", "translation_ranker"]

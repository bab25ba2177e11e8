"""The ranking learns from choices: refits of the ranker on the preference log, versioned and guarded.

A :class:`Learner` sits on a :class:`~nbest.server.prefs.PreferenceStore` and a
base :class:`~nbest.rerankers.RankerConfig` (the server's ranker). It refits
(:func:`~nbest.server.fit.fit_choices`: Plackett–Luce on the choices, the
rerankers' scores plus cheap candidate features, regularised toward the current
weights, a lasso keeping each feature at 0 until the choices clearly lean on
it) when a scope has gathered ``every`` new choices and at least
``min_choices`` in all, and saves each refit as a numbered version:

- **guardrail**: the refit and the current ranker are scored on the same
  held-out choices (a split fixed by the seed); a refit that agrees with fewer
  of them is saved as ``kept-out`` and never ranks anything;
- **scopes**: ``global``, ``task:NAME`` (a request's metadata ``task``) or
  ``user:NAME``; with ``scope="task"`` (or ``"user"``) a request is ranked by
  the narrowest scope that has a learned version, else by the wider one (user →
  task → global), else by the base ranker (version 0). A scope gets its own
  version only once it has ``min_choices`` choices;
- **bounded work**: a refit reads at most the latest ``max_choices`` (5,000)
  standing choices of its scope and fits at most 8 ``model=ID`` features (the
  most frequent engines); withdrawn choices never enter a fit.

Everything here is synchronous and thread-safe: the server runs it in a worker thread.

>>> from nbest.rerankers import RankerConfig
>>> from nbest.server.prefs import PreferenceStore
>>> learner = Learner(PreferenceStore(":memory:"), RankerConfig(rerankers=["vote", "logprob"]), min_choices=4, every=2)
>>> learner.current()[0]
0
>>> learner.due("global"), learner.describe()["next_refit_in"]
(False, 4)
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nbest.errors import ConfigError
from nbest.rerankers.features import FeatureConfig, feature_meaning
from nbest.rerankers.registry import RankerConfig, RerankerConfig
from nbest.server.fit import (
    DEFAULT_FEATURE_L1,
    OBJECTIVES,
    FitReport,
    Objective,
    default_features,
    effective_weights,
    fit_choices,
)
from nbest.server.prefs import PreferenceStore, RankerVersion, scope_filter

__all__ = ["LearnScope", "Learner", "RefitOutcome", "meaning"]

LearnScope = Literal["global", "task", "user"]


@dataclass
class RefitOutcome:
    """What one :meth:`Learner.refit` did."""

    version: int
    """The version saved by this refit (kept out or not); the current one when nothing was saved."""
    accepted: bool
    """The refit now ranks its scope's requests."""
    agreement: float | None
    """The refit's held-out agreement."""
    baseline: float | None
    """The current ranker's held-out agreement on the same choices."""
    choices: int
    """The standing choices the refit read."""
    changes: list[tuple[str, float, float]] = field(default_factory=list)
    """``(name, old weight, new weight)`` per reranker or feature, largest change first (accepted refits)."""
    message: str = ""
    """One sentence for people: what changed, or why nothing did."""
    scope: str = "global"
    """The scope refitted."""


def meaning(config: RerankerConfig, weight: float | None = None) -> str:
    """What a reranker (or feature) measures, in words, from its config.

    >>> from nbest.rerankers import reranker_config
    >>> meaning(reranker_config("vote"))
    'self-consistency majority vote'
    >>> meaning(reranker_config("mbr"))
    'minimum Bayes risk'
    >>> meaning(reranker_config("feature:tokens"), -0.5)
    'length of the answer in tokens; this weight prefers shorter answers'
    """
    if isinstance(config, FeatureConfig):
        return feature_meaning(config.feature, weight)
    doc = (type(config).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    doc = re.sub(r"^``[^`]*``:\s*", "", doc)
    doc = re.sub(r"\s*\(:\w+:`[^`]*`\)", "", doc)
    doc = re.sub(r",?\s*e\.g\.\s.*$", "", doc)  # a usage example is not a meaning
    doc = re.sub(r":\w+:`~?([^`]*)`", r"\1", doc).replace("``", "").strip().rstrip(".")
    return doc or config.registry_kind


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{round(100 * value)} %"


class Learner:
    """Refits the ranker from the preference log, per scope; see the module docstring.

    Args:
        store: the preference log (choices and ranker versions).
        base: the ranker before anything is learned (version 0), and the prior of the first refit.
        min_choices: choices a scope needs before its first refit takes effect.
        every: new choices (since the scope's last refit) that make a refit due.
        holdout: fraction of the choices held out to compare the refit with the current ranker.
        l2: pull toward the current weights (``l2 · ||w - w_current||²``).
        scope: ``global``, ``task`` or ``user``: how finely requests are ranked by their own versions.
        features: the candidate features to fit (default: tokens, share, temperature,
            length_stop, and model=ID for up to 8 engines when there are several).
        max_choices: the latest choices a refit reads.
        seed: the held-out split's seed.
        objective: ``choice`` (Plackett–Luce) or ``pairs`` (Bradley–Terry), see :mod:`nbest.server.fit`.
        feature_l1: the lasso on feature weights (:data:`~nbest.server.fit.DEFAULT_FEATURE_L1`).

    Raises:
        ConfigError: a bad setting (named).
    """

    def __init__(
        self,
        store: PreferenceStore,
        base: RankerConfig,
        *,
        min_choices: int = 20,
        every: int = 10,
        holdout: float = 0.25,
        l2: float = 1.0,
        scope: LearnScope = "global",
        features: Sequence[str] | None = None,
        max_choices: int = 5_000,
        seed: int = 0,
        objective: Objective = "choice",
        feature_l1: float = DEFAULT_FEATURE_L1,
    ) -> None:
        if scope not in ("global", "task", "user"):
            raise ConfigError(f"learn_scope: {scope!r}; use global, task or user", parameter="learn_scope", value=scope)
        for name, value, low in (("learn_min", min_choices, 2), ("learn_every", every, 1), ("max_choices", max_choices, 2)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: must be a whole number >= {low} (got {value!r})", parameter=name, value=value)
        if not 0 < holdout < 1:
            raise ConfigError("holdout: must be in (0, 1)", parameter="holdout", value=holdout)
        if not l2 >= 0:
            raise ConfigError("l2: must be a non-negative number", parameter="l2", value=l2)
        self.store = store
        self.base = base
        self.min_choices = min_choices
        self.every = every
        self.holdout = holdout
        self.l2 = l2
        self.scope: LearnScope = scope
        self.features = list(features) if features is not None else None
        self.max_choices = max_choices
        self.seed = seed
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective: {objective!r}; use {' or '.join(OBJECTIVES)}", parameter="objective", value=objective)
        self.objective: Objective = objective
        if not (isinstance(feature_l1, (int, float)) and math.isfinite(feature_l1) and feature_l1 >= 0):
            raise ConfigError("feature_l1: must be a non-negative number", parameter="feature_l1", value=feature_l1)
        self.feature_l1 = float(feature_l1)
        self._lock = threading.Lock()  # the cache below
        self._refit_lock = threading.Lock()  # one refit at a time
        self._cache: dict[str, RankerVersion | None] = {}
        self._data_version: int | None = None

    # -- which ranker ranks a request -------------------------------------------------

    def scope_keys(self, task: str | None = None, user: str | None = None) -> list[str]:
        """The scopes a request of ``task`` by ``user`` may be ranked by, narrowest first (``global`` last).

        >>> learner = Learner(PreferenceStore(":memory:"), RankerConfig(rerankers=["vote"]), scope="user")
        >>> learner.scope_keys(task="math", user="ana")
        ['user:ana', 'task:math', 'global']
        """
        keys = []
        if self.scope == "user" and user:
            keys.append(f"user:{user}")
        if self.scope in ("user", "task") and task:
            keys.append(f"task:{task}")
        return [k for k in keys if _valid(k)] + ["global"]

    def _current_version(self, key: str) -> RankerVersion | None:
        with self._lock:
            seen = self.store.data_version()
            if seen != self._data_version:  # another connection wrote (a rollback from the CLI)
                self._cache.clear()
                self._data_version = seen
            if key not in self._cache:
                self._cache[key] = self.store.current_version(key)
            return self._cache[key]

    def _forget(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    def resolve(self, key: str) -> tuple[str, RankerVersion | None]:
        """The scope whose version ranks scope ``key``'s requests (``key`` itself when it has
        one, else ``global``'s) and that version (None: the base ranker)."""
        scope_filter(key)
        for candidate in dict.fromkeys([key, "global"]):
            saved = self._current_version(candidate)
            if saved is not None:
                return candidate, saved
        return "global", None

    def current(self, task: str | None = None, user: str | None = None) -> tuple[int, RankerConfig]:
        """The version and config that rank a request of ``task`` by ``user``: the narrowest
        scope with a learned version, else the wider ones, else the base ranker (version 0)."""
        for key in self.scope_keys(task, user):
            saved = self._current_version(key)
            if saved is not None:
                return saved.version, RankerConfig.parse(saved.config)
        return 0, self.base

    # -- when to refit -----------------------------------------------------------------

    def _progress(self, key: str) -> tuple[int, int, int]:
        """(standing choices of the scope, new since its last refit, choices until the next refit)."""
        count = self.store.count(key)
        new = max(0, count - self.store.last_seen(key))
        return count, new, max(0, self.min_choices - count, self.every - new)

    def due(self, scope_key: str = "global") -> bool:
        """A refit of ``scope_key`` is due: ``every`` new choices since its last refit and ``min_choices`` in all."""
        scope_filter(scope_key)
        return self._progress(scope_key)[2] == 0

    def next_refit_in(self, scope_key: str = "global") -> int:
        """Choices until a refit of ``scope_key`` is due (0: due now)."""
        scope_filter(scope_key)
        return self._progress(scope_key)[2]

    # -- refitting -----------------------------------------------------------------

    def refit(self, scope_key: str = "global") -> RefitOutcome:
        """Refit ``scope_key`` on its standing choices (prior: the config that ranks it now)
        and save the version: ``current`` when its held-out agreement is at least the
        current ranker's on the same choices, else ``kept-out``. With fewer than
        ``min_choices`` choices nothing is fitted or saved.

        Raises:
            ConfigError: a bad scope key.
            StorageError: the log could not be read or written.
        """
        scope_filter(scope_key)
        with self._refit_lock:
            count = self.store.count(scope_key)
            ranked_by, saved = self.resolve(scope_key)
            old_version = saved.version if saved is not None else 0
            prior = RankerConfig.parse(saved.config) if saved is not None else self.base
            if count < self.min_choices:
                more = self.min_choices - count
                return RefitOutcome(
                    old_version, False, None, None, count, [],
                    f"choice saved; {more} more before the ranking learns", scope_key,
                )  # fmt: skip
            choices = self.store.latest(scope_key, self.max_choices)
            names = [rc.reranker_name() for rc in prior.rerankers if not isinstance(rc, FeatureConfig)]
            features = self.features if self.features is not None else default_features(choices)
            try:
                report = fit_choices(
                    choices, holdout=self.holdout, seed=self.seed, l2=self.l2, prior=prior, features=features,
                    rerankers=names, objective=self.objective, feature_l1=self.feature_l1,
                )  # fmt: skip
                config = self._config(report, prior)
            except ConfigError as exc:
                note = f"no refit: {exc}"
                kept = self.store.save_version(
                    scope_key, prior.model_dump(mode="json"), choices=len(choices), status="kept-out", note=note, seen=count
                )
                self._forget(scope_key)
                return RefitOutcome(
                    kept.version, False, None, None, len(choices), [], f"kept the current ranking: {exc}", scope_key
                )
            agreement, baseline = report.agreement_fitted, report.agreement_prior
            accepted = agreement is None or baseline is None or agreement >= baseline
            old, new = effective_weights(prior), effective_weights(config)
            changes = sorted(
                ((n, old.get(n, 0.0), new.get(n, 0.0)) for n in dict.fromkeys([*old, *new])),
                key=lambda c: -abs(c[2] - c[1]),
            )
            if accepted:
                shown = [c for c in changes if round(c[1], 2) != round(c[2], 2)][:2]
                what = ", ".join(f"{_short(n)} weight {a:.2f} → {b:.2f}" for n, a, b in shown) or "weights unchanged"
                message = f"ranking updated: {what}, from {len(choices)} choices"
                note = f"refit on {report.train} choices, {report.test} held out"
            else:
                message = (
                    f"kept the current ranking: the refit agreed with {_pct(agreement)} of held-out choices, "
                    f"the current one with {_pct(baseline)}"
                )
                note = f"kept out: agreed with {_pct(agreement)} of held-out choices, the current ranker with {_pct(baseline)}"
                changes = []
            if ranked_by != scope_key and saved is not None:
                note += f" (started from version {saved.version} of {ranked_by})"
            version = self.store.save_version(
                scope_key,
                config.model_dump(mode="json"),
                choices=len(choices),
                agreement=agreement,
                baseline=baseline,
                status="current" if accepted else "kept-out",
                note=note,
                seen=count,
            )
            self._forget(scope_key)
            return RefitOutcome(
                version.version, accepted, agreement, baseline, len(choices), changes,
                message, scope_key,
            )  # fmt: skip

    def _config(self, report: FitReport, prior: RankerConfig) -> RankerConfig:
        """The fitted config, with the prior's reranker configs where the log has none."""
        for rc in prior.rerankers:
            report.configs.setdefault(rc.reranker_name(), rc)
        return report.config()

    def rollback(self, version: int) -> RankerVersion:
        """Make ``version``'s config current again in its scope (see :meth:`PreferenceStore.rollback`).

        Raises:
            ConfigError: no such version.
        """
        restored = self.store.rollback(version)
        self._forget(restored.scope)
        return restored

    # -- what it learned --------------------------------------------------------------

    def describe(self, scope_key: str = "global") -> dict[str, Any]:
        """The ``/v1/ranker`` account of scope ``scope_key``: the version that ranks its
        requests (``ranked_by``: its own scope, ``global``, or ``base``), each weight
        (on the z-normalised score: the config's weight over its temperature, a feature's
        signed) with its meaning, the held-out agreement, and learning's progress."""
        ranked_by, saved = self.resolve(scope_key)
        config = RankerConfig.parse(saved.config) if saved is not None else self.base
        weights = effective_weights(config)
        count, new, until = self._progress(scope_key)
        kept_out = [v for v in self.store.versions(scope_key) if v.status == "kept-out"][-3:]
        return {
            "scope": scope_key,
            "ranked_by": ranked_by if saved is not None else "base",
            "version": saved.version if saved is not None else 0,
            "choices": saved.choices if saved is not None else 0,
            "choices_logged": count,
            "new_choices": new,
            "agreement": saved.agreement if saved is not None else None,
            "baseline": saved.baseline if saved is not None else None,
            "weights": [
                {
                    "name": rc.reranker_name(),
                    "weight": round(weights[rc.reranker_name()], 4),
                    "meaning": meaning(rc, weights[rc.reranker_name()]),
                }
                for rc in config.rerankers
            ],
            "temperature": config.temperature,
            "config": json.loads(config.model_dump_json()),
            "learning": True,
            "learn_scope": self.scope,
            "min_choices": self.min_choices,
            "every": self.every,
            "next_refit_in": until,
            "kept_out": [v.model_dump(mode="json") for v in kept_out],
        }


def _short(name: str) -> str:
    return name.removeprefix("feature:")


def _valid(key: str) -> bool:
    try:
        scope_filter(key)
    except ConfigError:
        return False
    return True

"""Learning while serving: refits, versions, the guardrail, rollback, scopes, withdrawn choices."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from nbest.cli import cli, main
from nbest.errors import ConfigError
from nbest.rerankers import RankerConfig
from nbest.server.fit import DEFAULT_FEATURE_L1, _choice_loss, _Example, _stages, effective_weights, fit_choices
from nbest.server.learn import Learner
from nbest.server.prefs import PreferenceStore
from nbest.types import Candidate, CandidateSpec, Request, Result, SamplingParams

BASE = RankerConfig(rerankers=["logprob"])


def make_result(
    rng: random.Random, k: int, *, n: int = 4, task: str | None = None, engines: tuple[str, ...] = ("default",)
) -> Result:
    """A Result ranked by mean_logprob (random), with random lengths, temperatures and engines."""
    cands = []
    for i in range(n):
        tokens, logprob = rng.randint(2, 60), rng.uniform(-3, 0)
        cands.append(
            Candidate(
                index=i, text=f"answer {k}-{i} " + "w" * tokens, num_tokens=tokens, finish_reason="stop",
                scores={"mean_logprob": logprob}, mean_logprob=logprob,
                spec=CandidateSpec(
                    index=i, engine=rng.choice(engines), params=SamplingParams(temperature=rng.choice([0.3, 0.7, 1.0]))
                ),
            )
        )  # fmt: skip
    order = sorted(cands, key=lambda c: (-(c.scores["mean_logprob"] or 0), c.index))
    ranked = [c.model_copy(update={"rank": r, "score": c.scores["mean_logprob"]}) for r, c in enumerate(order, start=1)]
    metadata = {"task": task} if task else {}
    return Result(id=f"r{k}", prompt="Q?", n=n, candidates=ranked, best=ranked[0], metadata=metadata)


def shortest(result: Result) -> int:
    return min(result.candidates, key=lambda c: (c.num_tokens, c.index)).index


def longest(result: Result) -> int:
    return max(result.candidates, key=lambda c: (c.num_tokens, -c.index)).index


def log_choices(store: PreferenceStore, count: int, pick=shortest, *, seed: int = 0, **kwargs: object) -> list[int]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    ids = []
    for k in range(count):
        result = make_result(rng, k, task=kwargs.get("task"))  # type: ignore[arg-type]
        ids.append(store.record(result, chosen=pick(result), user=kwargs.get("user")))  # type: ignore[arg-type]
    return ids


def test_people_who_pick_the_shortest_teach_a_negative_length_weight() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 60)
        learner = Learner(store, BASE, min_choices=20, every=10)
        assert learner.current() == (0, BASE)
        assert learner.due("global")
        outcome = learner.refit("global")
        version, config = learner.current()
    assert outcome.accepted and outcome.version == 1 and outcome.choices == 60
    assert outcome.agreement is not None and outcome.baseline is not None
    assert outcome.agreement >= outcome.baseline + 0.4  # logprob alone is a coin toss here; length explains every choice
    name, old, new = outcome.changes[0]
    assert (name, old) == ("feature:tokens", 0.0) and new < -1.0
    assert outcome.message.startswith("ranking updated: tokens weight 0.00 → -")
    assert outcome.message.endswith("from 60 choices")
    assert version == 1
    tokens = next(rc for rc in config.rerankers if rc.reranker_name() == "feature:tokens")
    assert tokens.model_dump()["coef"] == -1.0


def test_a_refit_is_due_after_min_choices_then_every_k_new_ones() -> None:
    with PreferenceStore(":memory:") as store:
        learner = Learner(store, BASE, min_choices=20, every=10)
        ids = log_choices(store, 19)
        assert (learner.due(), learner.next_refit_in()) == (False, 1)
        log_choices(store, 1, seed=1)
        assert (learner.due(), learner.next_refit_in()) == (True, 0)
        assert learner.refit().accepted
        log_choices(store, 9, seed=2)
        assert (learner.due(), learner.next_refit_in()) == (False, 1)
        store.withdraw(ids[0])  # an undone choice is not a new one
        log_choices(store, 1, seed=3)
        assert (learner.due(), learner.next_refit_in()) == (False, 1)
        log_choices(store, 1, seed=4)
        assert learner.due()
        assert not learner.due("task:math")  # a scope without choices is never due
        with pytest.raises(ConfigError, match="scope"):
            learner.due("team:x")


E, E1 = math.e, 1 / math.e


@pytest.mark.parametrize(
    ("tiers", "likelihood"),
    [
        ([[0]], E / (E + 1 + E1)),  # the first of three picked
        ([[2]], E1 / (E + 1 + E1)),  # the last picked
        ([[0, 1]], (E + 1) / (E + 1 + E1)),  # a card of two: one event, its members' mass summed
        ([[1], [0]], 1 / (E + 1 + E1) * E / (E + E1)),  # a ranking: the second, then the first of those left
        ([[0, 1, 2]], 1.0),  # every candidate on the picked card: nothing learned
    ],
)
def test_a_choice_is_one_pick_among_the_candidates_shown(tiers: list[list[int]], likelihood: float) -> None:
    """Plackett–Luce on hand-checked stages: scores 1, 0, -1 (one column, weight 1)."""
    example = _Example(z=[[1.0], [0.0], [-1.0]], indices=[0, 1, 2], tiers=tiers, logged_top=False)
    loss, grad = _choice_loss(_stages([example], 1), [1.0])  # type: ignore[arg-type]
    assert math.exp(-loss) == pytest.approx(likelihood)
    step = 1e-6  # the gradient is the loss's
    ahead, _ = _choice_loss(_stages([example], 1), [1.0 + step])  # type: ignore[arg-type]
    assert grad[0] == pytest.approx((ahead - loss) / step, abs=1e-4)


def random_pick(result: Result) -> int:
    """A person whose choices say nothing about the candidates (seeded by the Result's id)."""
    return random.Random(result.id).randrange(len(result.candidates))


def test_the_lasso_keeps_noise_out_of_the_features_and_lets_a_clear_taste_in() -> None:
    """Random choices: without the lasso every feature takes some weight from noise; with the
    learner's lasso none does. Choices of the shortest answer still teach the length weight."""
    features = ["tokens", "temperature"]  # (every text differs here: no answer share to weigh)
    with PreferenceStore(":memory:") as store:
        log_choices(store, 100, pick=random_pick)
        noise = list(store)
    loose = fit_choices(noise, holdout=0.25, l2=1.0, prior=BASE, features=features)
    tight = fit_choices(noise, holdout=0.25, l2=1.0, prior=BASE, features=features, feature_l1=DEFAULT_FEATURE_L1)
    assert all(abs(loose.weights[f"feature:{f}"]) > 0.01 for f in features), loose.weights
    assert all(tight.weights[f"feature:{f}"] == 0.0 for f in features), tight.weights
    with PreferenceStore(":memory:") as store:
        log_choices(store, 60)
        taste = fit_choices(list(store), holdout=0.25, l2=1.0, prior=BASE, features=features, feature_l1=DEFAULT_FEATURE_L1)
    assert taste.weights["feature:tokens"] < -0.5
    assert taste.agreement_fitted is not None and taste.agreement_prior is not None
    assert taste.agreement_fitted >= taste.agreement_prior + 0.5  # the log-probability alone is a coin toss here


@pytest.mark.parametrize("objective", ["choice", "pairs"])
def test_both_objectives_learn_the_persons_taste(objective: str) -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 40)
        report = fit_choices(list(store), holdout=0.25, l2=1.0, prior=BASE, features=["tokens"], objective=objective)  # type: ignore[arg-type]
    assert report.weights["feature:tokens"] < -0.5 and report.agreement_fitted == 1.0


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"objective": "logit"}, "objective: 'logit'; use choice or pairs"),
        ({"feature_l1": -1.0}, "feature_l1: must be a non-negative number"),
        ({"feature_l1": float("nan")}, "feature_l1: must be a non-negative number"),
    ],
)
def test_bad_fit_settings_are_named(given: dict[str, object], words: str) -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 4)
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as fit_error:
            fit_choices(list(store), **given)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as learner_error:
            Learner(store, BASE, **given)  # type: ignore[arg-type]
    assert fit_error.value.parameter == learner_error.value.parameter == next(iter(given))


def test_the_fitted_config_ranks_exactly_as_the_fitted_model() -> None:
    """The Ranker built from the fitted config puts first, on each held-out choice, the
    candidate the fit counted as its top: its agreement is the report's."""
    with PreferenceStore(":memory:") as store:
        log_choices(store, 40, seed=3)
        choices = list(store)
    report = fit_choices(choices, holdout=0.5, seed=0, l2=1.0, prior=BASE, features=["tokens", "share", "temperature"])
    ranker = report.config().to_ranker()
    hits = 0
    order = list(range(len(choices)))
    random.Random(0).shuffle(order)
    for i in order[: report.test]:
        result = choices[i].result
        ranked = anyio.run(ranker.rank, Request(prompt="Q?"), result.candidates)
        hits += ranked.candidates[0].index == choices[i].chosen
    assert hits / report.test == report.agreement_fitted  # the held-out split is the report's: seed 0, same order


def test_a_prior_keeps_three_choices_from_swinging_the_weights() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 3, pick=longest)
        choices = list(store)
    prior = RankerConfig(rerankers=["logprob", {"kind": "feature", "feature": "tokens", "coef": -1}])
    free = fit_choices(choices, holdout=0, l2=0.01, features=["tokens"], rerankers=["mean_logprob"])
    held = fit_choices(choices, holdout=0, l2=1.0, prior=prior, features=["tokens"], rerankers=["mean_logprob"])
    w_prior, w_free, w_held = effective_weights(prior), effective_weights(free.config()), effective_weights(held.config())
    assert w_free["feature:tokens"] > 2.0  # without a prior, three choices flip the length weight hard
    for name in w_prior:  # the prior (the Learner's l2=1.0) keeps them at less than half that distance
        assert abs(w_held[name] - w_prior[name]) < 0.5 * abs(w_free[name] - w_prior[name]) + 0.3


def test_a_worse_refit_is_kept_out_and_the_current_ranker_stays() -> None:
    """The held-out choices (the seed's split) pick the shortest answer, the others the
    longest: the refit learns "long" from its training choices, agrees with none of the
    held-out ones, and the current ranker (which prefers short) agrees with all of them."""
    short = RankerConfig(rerankers=["logprob=0", {"kind": "feature", "feature": "tokens", "coef": -1}])
    order = list(range(40))
    random.Random(0).shuffle(order)
    held_out = set(order[:10])
    rng = random.Random(1)
    with PreferenceStore(":memory:") as store:
        saved = store.save_version("global", short.model_dump(mode="json"), choices=0)
        for k in range(40):
            result = make_result(rng, k)
            store.record(result, chosen=shortest(result) if k in held_out else longest(result))
        learner = Learner(store, BASE, min_choices=20, every=10)
        assert learner.current() == (saved.version, short)
        outcome = learner.refit()
        assert not outcome.accepted and (outcome.agreement, outcome.baseline) == (0.0, 1.0)
        assert (
            outcome.message
            == "kept the current ranking: the refit agreed with 0 % of held-out choices, the current one with 100 %"
        )
        assert outcome.changes == []
        assert learner.current() == (saved.version, short)
        [kept] = learner.describe()["kept_out"]
        assert (kept["version"], kept["status"], kept["agreement"], kept["baseline"]) == (outcome.version, "kept-out", 0.0, 1.0)
        assert not learner.due()  # the kept-out refit counts: the next one waits for 10 new choices
        assert learner.describe()["version"] == saved.version


def test_a_choice_on_a_group_prefers_the_group_over_the_rest() -> None:
    """Two equivalent candidates picked as one card: neither is preferred to the other."""
    rng = random.Random(2)
    with PreferenceStore(":memory:") as store:
        for k in range(30):
            result = make_result(rng, k)
            by_length = sorted(result.candidates, key=lambda c: (c.num_tokens, c.index))
            store.record(result, chosen=by_length[1].index, group=[by_length[0].index])  # the two shortest, shown as one
        [first] = store.page(0, 1)
        assert first.group is not None and len(first.group) == 2 and first.chosen in first.group
        report = fit_choices(list(store), holdout=0.2, l2=0.01, features=["tokens"], rerankers=["mean_logprob"])
    assert report.weights["feature:tokens"] < -0.5
    assert report.agreement_fitted == 1.0  # the shortest is ranked first: it is in the group, so it agrees


def test_withdrawn_choices_never_enter_a_fit() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 20)
        wrong = log_choices(store, 15, pick=longest, seed=8)
        for choice_id in wrong:
            store.withdraw(choice_id)
        learner = Learner(store, BASE, min_choices=20, every=10)
        outcome = learner.refit()
        everything = list(store.iter(include_withdrawn=True))
    assert outcome.choices == 20 and outcome.accepted
    assert len(everything) == 35 and sum(c.withdrawn is not None for c in everything) == 15
    report = fit_choices(everything, holdout=0.25, features=["tokens"])  # withdrawn rows passed in are dropped too
    assert report.train + report.test == 20


def test_rollback_restores_the_exact_config(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "p.db") as store:
        log_choices(store, 30)
        learner = Learner(store, BASE, min_choices=20, every=10)
        first = learner.refit()
        v1 = store.version(first.version)
        assert v1 is not None
        log_choices(store, 30, seed=5)
        second = learner.refit()
        assert second.version == 2 and second.accepted
        restored = learner.rollback(first.version)
        assert restored.version == 3 and restored.status == "current" and restored.note == "rollback to version 1"
        assert restored.config == v1.config
        version, config = learner.current()
        assert version == 3 and config.model_dump(mode="json") == v1.config
        assert [v.status for v in store.versions("global")][1:] == ["rolled-back", "current"]
        assert store.rollback(3).version == 3 and len(store.versions()) == 3  # the current one: nothing to do
        with pytest.raises(ConfigError, match="no ranker version 99"):
            store.rollback(99)


def test_withdraw_is_idempotent_and_leaves_the_choice_out() -> None:
    with PreferenceStore(":memory:") as store:
        ids = log_choices(store, 3)
        assert store.withdraw(ids[1]) is True
        first = store.page(0, 10, include_withdrawn=True)[1].withdrawn
        assert store.withdraw(ids[1]) is True
        assert store.page(0, 10, include_withdrawn=True)[1].withdrawn == first  # the first time is kept
        assert store.withdraw(999) is False
        assert store.count() == 2 and store.count(include_withdrawn=True) == 3
        assert [c.id for c in store] == [ids[0], ids[2]]
        assert [c.id for c in store.latest()] == [ids[0], ids[2]]


def test_scope_keys_and_fallback_to_the_wider_scope() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 30, task="math")
        log_choices(store, 2, user="ana", task="poems", seed=4)
        learner = Learner(store, BASE, min_choices=20, every=10, scope="user")
        assert learner.scope_keys("math", "ana") == ["user:ana", "task:math", "global"]
        assert learner.current(task="math", user="ana") == (0, BASE)
        assert not learner.due("user:ana")
        too_few = learner.refit("user:ana")
        assert not too_few.accepted and too_few.message == "choice saved; 18 more before the ranking learns"
        assert store.versions() == []
        task = learner.refit("task:math")
        assert task.accepted
        assert learner.current(task="math", user="ana")[0] == task.version  # ana has 2 choices: her task's ranker
        assert learner.current(task="poems", user="ana") == (0, BASE)  # poems has none: global, i.e. the base
        info = learner.describe("user:ana")
        assert (info["ranked_by"], info["version"], info["choices_logged"], info["next_refit_in"]) == ("base", 0, 2, 18)


def test_describe_lists_each_weight_with_its_meaning() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 30)
        learner = Learner(store, BASE, min_choices=20, every=10)
        learner.refit()
        info = learner.describe()
    by_name = {w["name"]: w for w in info["weights"]}
    assert by_name["feature:tokens"]["weight"] < 0
    assert by_name["feature:tokens"]["meaning"] == "length of the answer in tokens; this weight prefers shorter answers"
    assert by_name["mean_logprob"]["meaning"].startswith("per-token")
    assert (info["version"], info["learning"], info["next_refit_in"], info["kept_out"]) == (1, True, 10, [])


def test_old_database_files_gain_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    result = make_result(random.Random(0), 0)
    conn.execute(
        "INSERT INTO choices (created, request_id, prompt, n, chosen, chosen_rank, top_index, ranking, edited_text, user, result)"
        " VALUES (1.0, 'r0', '\"Q?\"', 4, 2, 3, 0, NULL, NULL, 'ana', ?)",
        (result.model_dump_json(),),
    )
    conn.commit()
    conn.close()
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            PreferenceStore(path).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    openers = [threading.Thread(target=open_it) for _ in range(4)]  # several processes may open it first at once
    for t in openers:
        t.start()
    for t in openers:
        t.join()
    assert errors == []
    with PreferenceStore(path) as store:
        [old] = list(store)
        assert (old.chosen, old.user, old.task, old.group, old.withdrawn) == (2, "ana", None, None, None)
        new = store.record(result, chosen=1, group=[3], task="math")
        assert store.page(1, 1)[0].model_dump(include={"id", "group", "task"}) == {"id": new, "group": [1, 3], "task": "math"}
        assert store.count("task:math") == 1 and store.count() == 2


def test_hot_reads_see_a_whole_version_while_refits_run() -> None:
    with PreferenceStore(":memory:") as store:
        log_choices(store, 40)
        learner = Learner(store, BASE, min_choices=20, every=10)
        seen: list[tuple[int, RankerConfig]] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                seen.append(learner.current())

        reader = threading.Thread(target=read)
        reader.start()
        for k in range(3):
            log_choices(store, 10, seed=10 + k)
            learner.refit()
        stop.set()
        reader.join()
        configs = {v.version: v.config for v in store.versions()}
    assert seen
    for version, config in seen:
        assert (version == 0 and config == BASE) or config.model_dump(mode="json") == configs[version]


OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS choices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created     REAL    NOT NULL,
    request_id  TEXT    NOT NULL,
    prompt      TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    chosen      INTEGER NOT NULL,
    chosen_rank INTEGER,
    top_index   INTEGER,
    ranking     TEXT,
    edited_text TEXT,
    user        TEXT,
    result      TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    choice_id   INTEGER NOT NULL REFERENCES choices(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    rank        INTEGER,
    text        TEXT    NOT NULL,
    score       REAL,
    confidence  REAL,
    scores      TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (choice_id, idx)
);
CREATE INDEX IF NOT EXISTS choices_created ON choices(created);
"""


# -- nbest prefs history / rollback ------------------------------------------------------


@pytest.fixture
def learned_db(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.db"
    with PreferenceStore(path) as store:
        log_choices(store, 30)
        learner = Learner(store, BASE, min_choices=20, every=10)
        assert learner.refit().accepted
        log_choices(store, 10, seed=6)
        assert learner.refit().accepted
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_history_lists_versions_with_weights_and_meanings(learned_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["prefs", "history", "--db", str(learned_db), "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [(r["version"], r["scope"], r["status"], r["choices"]) for r in rows] == [
        (1, "global", "superseded", 30), (2, "global", "current", 40),
    ]  # fmt: skip
    tokens = next(w for w in rows[1]["weights"] if w["name"] == "feature:tokens")
    assert tokens["weight"] < 0 and tokens["meaning"].endswith("prefers shorter answers")
    code, out, _ = run_cli(["prefs", "history", "--db", str(learned_db)], capsys)
    assert code == 0 and "version 2 ranks global:" in out and "superseded" in out
    code, out, _ = run_cli(["prefs", "history", "--db", str(learned_db), "--scope", "task:poems"], capsys)
    assert (code, out.strip()) == (0, "no ranker learned yet for task:poems")


def test_rollback_from_the_command_line(learned_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["prefs", "rollback", "1", "--db", str(learned_db)], capsys)
    assert code == 0 and out.startswith("version 1 ranks global again (saved as version 3)")
    with PreferenceStore(learned_db) as store:
        current = store.current_version("global")
        first = store.version(1)
        assert current is not None and first is not None
        assert current.version == 3 and current.config == first.config
        assert store.version(2).status == "rolled-back"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["prefs", "rollback", "7"], "no ranker version 7"),
        (["prefs", "rollback", "seven"], "'seven' is not a valid integer"),
        (["prefs", "history", "--scope", "team:x"], "--scope: scope: 'team:x' is not global"),
    ],
)
def test_history_and_rollback_refuse_bad_input_in_one_line(
    learned_db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, out, err = run_cli([*argv, "--db", str(learned_db)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err


def test_history_on_a_file_that_is_not_a_preference_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("not a database at all" * 100)
    for argv in (["prefs", "history"], ["prefs", "rollback", "1"]):
        code, _, err = run_cli([*argv, "--db", str(bad)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "is not a SQLite database" in err
    code, _, err = run_cli(["prefs", "history", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "no preference database" in err


def test_fit_command_fits_features_and_shows_their_meaning(
    learned_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ranker.json"
    r = CliRunner().invoke(cli, ["prefs", "fit", "--db", str(learned_db), "-o", str(out), "--feature", "auto"])
    assert r.exit_code == 0, r.output
    assert "feature:tokens" in r.output and "prefers shorter answers" in r.output
    config = RankerConfig.load(out)
    assert effective_weights(config)["feature:tokens"] < 0
    code, _, err = run_cli(["prefs", "fit", "--db", str(learned_db), "-o", str(out), "--feature", "colour"], capsys)
    assert code == 2 and "--feature: feature: unknown feature 'colour'" in err

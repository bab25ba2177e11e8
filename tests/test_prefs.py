"""The preference log: records, pages, concurrency, crash safety, export, stats, fit."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from nbest import Orchestrator
from nbest.cli import cli, main
from nbest.errors import ConfigError
from nbest.rerankers import MBRConfig, MeanLogProbConfig, PerplexityConfig, SourceSimilarityConfig, VoteConfig, build_ranker
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.server.fit import RankerConfig, fit_choices, logged_configs
from nbest.server.prefs import StorageError
from nbest.types import Candidate, CandidateSpec, Result, SamplingParams
from tests.batch_engines import seed_answers
from tests.scripted import ScriptedEngine

ROOT = Path(__file__).resolve().parent.parent


def make_result(texts: list[str], scores: list[dict[str, float]] | None = None, rid: str = "r1", prompt: str = "Q?") -> Result:
    """A ranked Result: candidates ranked by the sum of their scores (or in order)."""
    scores = scores or [{"mean_logprob": -float(i)} for i in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda i: (-sum(scores[i].values()), i))
    cands = [
        Candidate(
            index=i, rank=order.index(i) + 1, text=texts[i], score=sum(scores[i].values()), confidence=1 / len(texts),
            scores=dict(scores[i]), spec=CandidateSpec(index=i, params=SamplingParams(seed=i), strategy=f"ladder[{i}]"),
            finish_reason="stop", num_tokens=3,
        )
        for i in range(len(texts))
    ]  # fmt: skip
    ranked = sorted(cands, key=lambda c: c.rank or 0)
    return Result(id=rid, prompt=prompt, n=len(texts), candidates=ranked, best=ranked[0])


def test_record_and_read_back(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "sub" / "p.db") as store:
        result = make_result(["a", "b", "c"])
        first = store.record(result, chosen=1, ranking=[1, 0, 2], edited_text="B!", user="ana")
        second = store.record(result, chosen=0)
        assert (first, second) == (1, 2)
        assert store.count() == 2
        got = store.page(0, 10)
        assert [c.chosen for c in got] == [1, 0]
        assert got[0].chosen_rank == 2 and got[1].chosen_rank == 1
        assert got[0].ranking == [1, 0, 2] and got[0].user == "ana"
        assert got[0].chosen_text == "B!" and got[1].chosen_text == "a"
        assert got[0].result == result
        assert [c.id for c in store.page(1, 1)] == [2]
        mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        rows = (
            sqlite3.connect(store.path)
            .execute("SELECT idx, text, scores FROM candidates WHERE choice_id=1 ORDER BY idx")
            .fetchall()
        )
        assert rows == [
            (0, "a", '{"mean_logprob": -0.0}'),
            (1, "b", '{"mean_logprob": -1.0}'),
            (2, "c", '{"mean_logprob": -2.0}'),
        ]


def test_group_and_task_are_logged_with_the_choice() -> None:
    with PreferenceStore(":memory:") as store:
        tagged = make_result(["a", "b", "c"]).model_copy(update={"metadata": {"task": "math"}})
        store.record(tagged, chosen=2, group=[0])  # the chosen candidate joins its group
        store.record(tagged, chosen=1, task="poems")  # an explicit task wins over the metadata
        store.record(make_result(["a", "b"]).model_copy(update={"metadata": {"task": 7}}), chosen=0, group=[])
        got = store.page(0, 10)
        assert [(c.group, c.task) for c in got] == [([2, 0], "math"), (None, "poems"), (None, None)]
        assert (store.count("task:math"), store.count("task:poems"), store.count("global")) == (1, 1, 3)
        assert [c.id for c in store.iter("task:poems")] == [2]
        with pytest.raises(ConfigError, match="scope: 'team:x'"):
            store.count("team:x")


def test_default_path_under_nbest_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBEST_HOME", str(tmp_path / "home"))
    with PreferenceStore() as store:
        assert store.path == str(tmp_path / "home" / "preferences.db")
    with PreferenceStore(f"sqlite:///{tmp_path / 'url.db'}") as store:
        assert store.path == str(tmp_path / "url.db")
    with pytest.raises(ConfigError, match="sqlite"):
        PreferenceStore("postgres://db/prefs")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"chosen": 5}, "chosen"), ({"chosen": 0, "ranking": [0, 9]}, "ranking"), ({"chosen": 0, "ranking": [0, 0]}, "ranking"),
     ({"chosen": 1, "ranking": [0, 1]}, "ranking"), ({"chosen": 0, "group": [0, 7]}, "group"),
     ({"chosen": 0, "group": [1, 1]}, "group"), ({"chosen": 0, "task": "t" * 201}, "task"),
     ({"chosen": 0, "user": "u" * 201}, "user")],
)  # fmt: skip
def test_record_rejects_bad_choices(kwargs: dict, param: str) -> None:  # type: ignore[type-arg]
    with PreferenceStore(":memory:") as store:
        with pytest.raises(ConfigError) as err:
            store.record(make_result(["a", "b"]), **kwargs)
        assert err.value.parameter == param
        assert store.count() == 0


def test_fifty_writers_on_separate_connections(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    PreferenceStore(path).close()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with PreferenceStore(path) as store:
                store.record(make_result(["x", "y"], rid=f"r{i}"), chosen=i % 2, user=f"u{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PreferenceStore(path) as store:
        assert store.count() == 50
        assert sorted(c.request_id for c in store) == sorted(f"r{i}" for i in range(50))


WRITER = textwrap.dedent(
    """
    import sys
    from nbest.server import PreferenceStore
    from tests.test_prefs import make_result

    store = PreferenceStore(sys.argv[1])
    result = make_result([f"candidate {i} " * 50 for i in range(300)])
    i = 0
    while True:
        store.record(result, chosen=i % 300, user=f"w{i}")
        i += 1
        if i == 3:
            print("writing", flush=True)
    """
)


def test_killed_writer_leaves_a_readable_consistent_log(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)  # let it get into further transactions
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every choice that is there is whole: no choice without all its candidates, no orphan candidates
    per_choice = conn.execute(
        "SELECT c.id, COUNT(k.idx) FROM choices c LEFT JOIN candidates k ON k.choice_id = c.id GROUP BY c.id"
    ).fetchall()
    assert len(per_choice) >= 3
    assert {count for _, count in per_choice} == {300}
    orphans = conn.execute("SELECT COUNT(*) FROM candidates WHERE choice_id NOT IN (SELECT id FROM choices)").fetchone()[0]
    assert orphans == 0
    conn.close()
    with PreferenceStore(path) as store:  # and it keeps working
        n = store.count()
        store.record(make_result(["a", "b"]), chosen=1)
        assert store.count() == n + 1
        assert [c.chosen for c in store][-1] == 1


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.db"
    with PreferenceStore(path) as store:
        store.record(make_result(["4", "four", "5"], prompt="2+2?"), chosen=0, user="ana")
        store.record(make_result(["Paris", "Lyon", "Paris"], rid="r2"), chosen=1, edited_text="Lyon, surely")
    return path


def test_export_dpo_pairs(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    r = CliRunner().invoke(cli, ["prefs", "export", "--format", "dpo", "--db", str(db), str(out)])
    assert r.exit_code == 0, r.output
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("2+2?", "4", "four"), ("2+2?", "4", "5"), ("Q?", "Lyon, surely", "Paris"),  # duplicate "Paris" once
    ]  # fmt: skip


def test_export_dpo_pairs_leave_the_chosen_group_out() -> None:
    from nbest.server.export import dpo_pairs

    with PreferenceStore(":memory:") as store:
        result = make_result(["4", "four", "5", "It is 4."], prompt="2+2?")
        by_text = {c.text: c.index for c in result.candidates}
        group = [by_text["4"], by_text["four"], by_text["It is 4."]]
        store.record(result, chosen=by_text["4"], group=group)
        pairs = list(dpo_pairs(store))
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("4", "5")]  # the same answer is not "rejected"


def test_export_jsonl(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert CliRunner().invoke(cli, ["prefs", "export", "--format", "jsonl", "--db", str(db), str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["chosen"] for r in rows] == [0, 1]
    assert rows[1]["result"]["candidates"][0]["spec"]["params"]["seed"] == 0


def test_stats(db: Path) -> None:
    r = CliRunner().invoke(cli, ["prefs", "stats", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    numbers = json.loads(r.output)
    assert numbers["choices"] == 2 and numbers["agreement"] == 0.5 and numbers["mean_chosen_rank"] == 1.5
    assert numbers["edited"] == 1 and numbers["users"] == 1
    assert numbers["chosen_by_strategy"] == {"ladder[0]": 1, "ladder[1]": 1}
    r = CliRunner().invoke(cli, ["prefs", "stats", "--db", str(db)])
    assert "ranker agreement   50.0%" in r.output


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nbest.cli", "prefs", "stats", "--db", str(tmp_path / "no.db")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no preference database" in proc.stderr and "Traceback" not in proc.stderr


def people_prefer_votes(n_choices: int, seed: int = 0) -> list[Result]:
    """Results ranked by log-prob, where people choose the candidate with the highest vote share."""
    rng = random.Random(seed)
    results = []
    for k in range(n_choices):
        scores = [{"mean_logprob": rng.uniform(-3, 0), "vote": rng.uniform(0, 1)} for _ in range(4)]
        by_logprob = [{"mean_logprob": s["mean_logprob"]} for s in scores]
        result = make_result([f"t{k}-{i}" for i in range(4)], by_logprob, rid=f"r{k}")
        for c in result.candidates:
            c.scores["vote"] = scores[c.index]["vote"]
        results.append(result)
    return results


def test_fit_learns_what_people_prefer(tmp_path: Path) -> None:
    path = tmp_path / "prefs.db"
    with PreferenceStore(path) as store:
        for result in people_prefer_votes(80):
            chosen = max(result.candidates, key=lambda c: c.scores["vote"] or 0).index
            store.record(result, chosen=chosen)
        report = fit_choices(list(store), holdout=0.25, seed=1)
    assert (report.train, report.test) == (60, 20)
    assert report.weights["vote"] > 0.9 > report.weights["mean_logprob"]
    assert report.agreement_fitted == 1.0
    assert report.agreement_logged is not None and report.agreement_logged < 0.6
    assert report.agreement_equal is not None and report.agreement_equal < report.agreement_fitted
    config = report.config()
    assert [(r.kind, r.weight) for r in config.rerankers] == [
        ("logprob", round(report.weights["mean_logprob"], 6)), ("vote", round(report.weights["vote"], 6)),
    ]  # fmt: skip
    ranker = config.to_ranker()
    assert [r.name for r in ranker.rerankers] == ["mean_logprob", "vote"]
    assert ranker.temperature == pytest.approx(report.temperature)

    out = tmp_path / "ranker.json"
    r = CliRunner().invoke(cli, ["prefs", "fit", "--db", str(path), "-o", str(out), "--holdout", "0.25", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "fitted 100.0%" in r.output
    assert RankerConfig.load(out) == config


def test_fit_needs_data() -> None:
    with PreferenceStore(":memory:") as store:
        store.record(make_result(["a", "b"]), chosen=0)
        with pytest.raises(ConfigError, match="at least 2 choices"):
            fit_choices(list(store))
        with pytest.raises(ConfigError, match="holdout"):
            fit_choices(list(store), holdout=1.5)


def test_logged_configs_without_a_recorded_ranker_are_the_kinds_defaults() -> None:
    names = ["mean_logprob", "vote", "perplexity", "mbr_chrf", "source_sim", "cross_encoder"]
    with PreferenceStore(":memory:") as store:
        store.record(make_result(["a", "b"]), chosen=0)
        found = logged_configs(list(store), names)
    assert found == {
        "mean_logprob": MeanLogProbConfig(), "vote": VoteConfig(), "perplexity": PerplexityConfig(),
        "mbr_chrf": MBRConfig(), "source_sim": SourceSimilarityConfig(),
    }  # fmt: skip  # a cross-encoder needs its model: no default


def test_fit_writes_the_logged_configs_back_exactly(tmp_path: Path) -> None:
    """vote:number keeps its extractor and mbr:bleu:aggregate its utility and method."""
    ranker = build_ranker(["vote:number", "mbr:bleu:aggregate=0.5"])
    recorded = RankerConfig.of(ranker)
    assert recorded is not None
    with PreferenceStore(tmp_path / "prefs.db") as store:
        for k, result in enumerate(people_prefer_votes(20)):
            for c in result.candidates:
                c.scores = {"vote": c.scores["vote"], "mbr_bleu": c.scores["mean_logprob"]}
            result = result.model_copy(update={"ranker": recorded.model_dump(mode="json")})
            store.record(result, chosen=max(result.candidates, key=lambda c: c.scores["vote"] or 0).index, user=f"u{k}")
        report = fit_choices(list(store), holdout=0.25, seed=1)
    config = report.config()
    assert [r.model_dump(exclude={"weight"}) for r in config.rerankers] == [
        {"kind": "mbr", "utility": "bleu", "method": "aggregate", "model": None},
        {"kind": "vote", "extract": "number", "votes": "uniform"},
    ]
    out = tmp_path / "ranker.json"
    out.write_text(config.model_dump_json(indent=2), encoding="utf-8")
    loaded = RankerConfig.load(out)
    assert loaded == config
    rebuilt = loaded.to_ranker()
    assert rebuilt.rerankers[1].answer("so it is 51.0") == "51"  # the number extractor, not auto's whole text


# -- durability and storage faults ---------------------------------------------


def test_a_logged_choice_is_flushed_at_commit(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "p.db") as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is synced at each commit


def _fill_disk(store: PreferenceStore) -> None:
    """The database may not grow any more: what a full disk looks like to SQLite."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_full_disk_is_a_clear_error_and_keeps_earlier_choices(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "p.db") as store:
        for _ in range(3):
            store.record(make_result(["a", "b"]), chosen=0)
        _fill_disk(store)
        with pytest.raises(StorageError, match="cannot log the choice: database or disk is full") as info:
            store.record(make_result(["x" * 100_000, "b"]), chosen=0)
        assert info.value.full and info.value.code == "SQLITE_FULL"
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert store.count() == 3  # nothing of the failed choice, nothing lost
        store._conn.execute("PRAGMA max_page_count = 1000000")  # space again: the store works on
        assert store.record(make_result(["x" * 100_000, "b"]), chosen=1) == 4
    assert sqlite3.connect(tmp_path / "p.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_read_only_and_broken_files_are_clear_errors(tmp_path: Path) -> None:
    with PreferenceStore(tmp_path / "p.db") as store:
        store.record(make_result(["a", "b"]), chosen=0)
        store._conn.execute("PRAGMA query_only = 1")  # as a database file the server may not write
        with pytest.raises(StorageError, match="readonly database") as info:
            store.record(make_result(["a", "b"]), chosen=1)
        assert not info.value.full and info.value.code == "SQLITE_READONLY"
        assert store.count() == 1
    (tmp_path / "junk.db").write_bytes(b"not a database at all " * 100)
    with pytest.raises(StorageError, match=r"junk\.db: cannot open it: file is not a database"):
        PreferenceStore(tmp_path / "junk.db")
    with pytest.raises(sqlite3.Error):  # callers that catch SQLite's errors still catch it
        PreferenceStore(tmp_path / "junk.db")


@pytest.mark.asyncio(loop_scope="session")
async def test_http_choice_on_a_full_disk_is_507_with_the_cause(tmp_path: Path, scripted: ScriptedEngine) -> None:
    store = PreferenceStore(tmp_path / "p.db")
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(), prefs=store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            result = make_result(["a", "b"]).model_dump(mode="json")
            for _ in range(2):
                assert (await client.post("/v1/choices", json={"result": result, "chosen": 0})).status_code == 201
            _fill_disk(store)
            big = make_result(["x" * 100_000, "b"]).model_dump(mode="json")
            r = await client.post("/v1/choices", json={"result": big, "chosen": 0})
            assert r.status_code == 507, r.text
            message = r.json()["error"]["message"]
            assert "the choice was not saved" in message and "database or disk is full" in message
            assert "rollback" not in message
            assert r.headers["retry-after"]
            listed = (await client.get("/v1/choices")).json()
            assert listed["total"] == 2 and [c["id"] for c in listed["data"]] == [1, 2]
            assert (await client.get("/healthz")).status_code == 200
            store._conn.execute("PRAGMA query_only = 1")
            r = await client.post("/v1/choices", json={"result": result, "chosen": 1})
            assert r.status_code == 503 and "readonly database" in r.json()["error"]["message"], r.text
            store._conn.execute("PRAGMA query_only = 0")
            store._conn.execute("PRAGMA max_page_count = 1000000")
            assert (await client.post("/v1/choices", json={"result": big, "chosen": 0})).json()["id"] == 3
    store.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_page_of_choices_is_bounded_in_bytes(
    tmp_path: Path, scripted: ScriptedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PreferenceStore(tmp_path / "p.db")
    for i in range(5):
        store.record(make_result([f"{i}" * 100_000, "b"]), chosen=0)
    assert [c.id for c in store.page(0, 10, max_bytes=450_000)] == [1, 2]  # ~200 KB each (best repeats a candidate)
    assert [c.id for c in store.page(4, 10, max_bytes=10)] == [5]  # always at least one
    assert len(store.page(0, 10)) == 5
    monkeypatch.setattr("nbest.server.choices.PAGE_BYTES", 650_000)
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(), prefs=store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            seen: list[int] = []
            while len(seen) < 5:
                page = (await client.get("/v1/choices", params={"offset": len(seen), "limit": 500})).json()
                assert page["total"] == 5 and 1 <= len(page["data"]) <= 3
                seen += [c["id"] for c in page["data"]]
            assert seen == [1, 2, 3, 4, 5]
    store.close()


@pytest.mark.parametrize(
    ("db", "words"),
    [("junk.db", "cannot open it: file is not a database"), ("file/inside/a/file.db", "cannot create its folder")],
)
def test_serve_on_a_database_it_cannot_open_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str, words: str
) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database at all " * 100)
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "0", "--db", str(tmp_path / db)], engine_factory=seed_answers)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("nbest: error: --db: preference log "), err
    assert words in err

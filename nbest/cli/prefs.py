"""``nbest prefs``: the preference log (export, stats, fit) and the learned rankers (history, rollback).

``NBEST_HOME`` (where the default database lives) is read here. ``--db`` must
name a preference database (checked read-only first: another SQLite file, or a
file that is not a database, is a one-line error); the files a command writes
must have an existing folder, checked before the database is read.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import click

from nbest.cli.paths import check_writable
from nbest.errors import ConfigError

__all__ = ["prefs_group"]


_DB = click.option("--db", "db", default=None, help="Preference database [default: $NBEST_HOME/preferences.db].")


def _check_database(path: Path) -> None:
    """``path`` is a SQLite file holding a preference log (or no table yet),
    read without writing to it.

    Raises:
        ConfigError: it is missing, not a SQLite database, or another database.
    """
    if not path.is_file():
        raise ConfigError(f"--db: no preference database at {path}", parameter="db", value=str(path))
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"--db: {path} is not a SQLite database ({exc})", parameter="db", value=str(path)) from None
    if tables and "choices" not in tables:
        raise ConfigError(
            f"--db: {path} is a SQLite database but not a preference log (no 'choices' table)", parameter="db", value=str(path)
        )


def _store(db: str | None) -> Any:
    from nbest.server.prefs import PreferenceStore, default_path

    if db and db.startswith("sqlite:///"):
        path = Path(db.removeprefix("sqlite:///")).expanduser()
    else:
        path = Path(db).expanduser() if db else default_path()
    if db != ":memory:":
        _check_database(path)
    try:
        return PreferenceStore(db or path)
    except sqlite3.Error as exc:
        raise ConfigError(f"--db: cannot open {path} ({exc})", parameter="db", value=str(path)) from None


@click.group("prefs")
def prefs_group() -> None:
    """The preference log: export, statistics, learning the ranker's weights, its versions."""


@prefs_group.command("export")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["dpo", "jsonl"]), default="dpo", show_default=True,
              help="dpo: one {prompt, chosen, rejected} pair per rejected candidate; jsonl: one line per choice.")  # fmt: skip
@_DB
def export(out: str, fmt: str, db: str | None) -> None:
    """Write the logged choices to OUT (- for stdout)."""
    if out != "-":
        check_writable(Path(out), "OUT")
    from nbest.server.export import dpo_pairs, jsonl_rows

    rows = 0
    with _store(db) as store, click.open_file(out, "w", encoding="utf-8") as fh:
        for row in dpo_pairs(store) if fmt == "dpo" else jsonl_rows(store):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1
    click.echo(f"nbest: wrote {rows} {'pairs' if fmt == 'dpo' else 'choices'} to {out}", err=True)


@prefs_group.command("stats")
@_DB
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(db: str | None, as_json: bool) -> None:
    """How often the top-ranked candidate was the one people chose."""
    with _store(db) as store:
        choices = list(store)
    total = len(choices)
    ranked = [c.chosen_rank for c in choices if c.chosen_rank is not None]
    by_strategy = Counter(next(x.spec.strategy for x in c.result.candidates if x.index == c.chosen) for c in choices)
    numbers = {
        "choices": total,
        "agreement": sum(r == 1 for r in ranked) / len(ranked) if ranked else None,
        "mean_chosen_rank": sum(ranked) / len(ranked) if ranked else None,
        "mean_candidates": sum(len(c.result.candidates) for c in choices) / total if total else None,
        "edited": sum(c.edited_text is not None for c in choices),
        "users": len({c.user for c in choices if c.user}),
        "chosen_by_strategy": dict(by_strategy.most_common()),
    }
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    if not total:
        click.echo("no choices logged yet")
        return
    click.echo(f"choices            {total}")
    click.echo(f"ranker agreement   {numbers['agreement']:.1%}  (the top-ranked candidate was the one chosen)")
    click.echo(f"mean chosen rank   {numbers['mean_chosen_rank']:.2f}  of {numbers['mean_candidates']:.1f} candidates")
    click.echo(f"edited             {numbers['edited']}")
    click.echo(f"users              {numbers['users']}")
    for strategy, count in by_strategy.most_common():
        click.echo(f"chosen from        {strategy}: {count}")


@prefs_group.command("fit")
@_DB
@click.option(
    "--out", "-o", default="ranker.json", show_default=True, type=click.Path(dir_okay=False), help="Where to write the config."
)
@click.option("--holdout", default=0.2, show_default=True, type=float, help="Fraction of choices held out to measure agreement.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/held-out split.")
@click.option("--feature", "features", multiple=True, metavar="NAME",
              help="Also fit a candidate feature: tokens, share, temperature, length_stop, model=ID; "
                   "'auto' for the learner's set. Repeatable.")  # fmt: skip
def fit(db: str | None, out: str, holdout: float, seed: int, features: tuple[str, ...]) -> None:
    """Fit the Ranker's weights on logged choices (Bradley–Terry); write a ranker config."""
    check_writable(Path(out), "--out")  # before the fitting code loads
    from nbest.rerankers.features import feature_values
    from nbest.server.fit import default_features, fit_choices
    from nbest.server.learn import meaning

    for name in features:
        if name != "auto":
            try:
                feature_values(name, [])
            except ConfigError as exc:
                raise ConfigError(f"--feature: {exc}", parameter="feature", value=name) from None
    with _store(db) as store:
        choices = list(store)
    chosen = [f for f in features if f != "auto"]
    if "auto" in features:
        chosen = list(dict.fromkeys([*default_features(choices), *chosen]))
    report = fit_choices(choices, holdout=holdout, seed=seed, features=chosen or None)
    config = report.config()
    Path(out).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    click.echo(f"fitted on {report.train} choices, {report.test} held out ({report.skipped} skipped)")
    for rc in config.rerankers:
        name = rc.reranker_name()
        click.echo(f"  weight {name:<22} {report.weights[name]:+.3f}  {meaning(rc, report.weights[name])}")
    click.echo(f"  {'temperature':<29} {report.temperature:.3f}")
    click.echo(f"held-out agreement: logged ranking {pct(report.agreement_logged)}, equal weights "
               f"{pct(report.agreement_equal)}, fitted {pct(report.agreement_fitted)}")  # fmt: skip
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {out}  (use it with: nbest serve --ranker {out})")


@prefs_group.command("history")
@_DB
@click.option("--scope", default=None, metavar="KEY", help="Only this scope: global, task:NAME or user:NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def history(db: str | None, scope: str | None, as_json: bool) -> None:
    """The learned ranker versions (oldest first): status, choices, held-out agreement, weights."""
    from nbest.rerankers.registry import RankerConfig
    from nbest.server.fit import effective_weights
    from nbest.server.learn import meaning
    from nbest.server.prefs import scope_filter

    if scope is not None:
        try:
            scope_filter(scope)
        except ConfigError as exc:
            raise ConfigError(f"--scope: {exc}", parameter="scope", value=scope) from None
    with _store(db) as store:
        versions = store.versions(scope)
    rows = []
    for v in versions:
        config = RankerConfig.parse(v.config)
        weights = effective_weights(config)
        described = [
            {"name": rc.reranker_name(), "weight": round(weights[rc.reranker_name()], 4),
             "meaning": meaning(rc, weights[rc.reranker_name()])}
            for rc in config.rerankers
        ]  # fmt: skip
        rows.append({**v.model_dump(mode="json"), "weights": described})
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no ranker learned yet" + (f" for {scope}" if scope else ""))
        return

    def pct(value: float | None) -> str:
        return "  n/a" if value is None else f"{value:5.1%}"

    import datetime

    click.echo("version  scope            status       created           choices  agreement  baseline  note")
    for row in rows:
        when = datetime.datetime.fromtimestamp(row["created"]).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{row['version']:>7}  {row['scope'][:16]:<16} {row['status']:<12} {when}  {row['choices']:>7}  "
                   f"{pct(row['agreement']):>9}  {pct(row['baseline']):>8}  {row['note']}")  # fmt: skip
    for row in rows:
        if row["status"] == "current":
            click.echo(f"\nversion {row['version']} ranks {row['scope']}:")
            for w in row["weights"]:
                click.echo(f"  {w['name']:<22} {w['weight']:+.3f}  {w['meaning']}")


@prefs_group.command("rollback")
@click.argument("version", type=int)
@_DB
def rollback(version: int, db: str | None) -> None:
    """Make ranker VERSION current again in its scope (its exact config, as a new version)."""
    with _store(db) as store:
        restored = store.rollback(version)
    if restored.version == version:
        click.echo(f"version {version} ranks {restored.scope} already; nothing to roll back")
        return
    click.echo(f"version {version} ranks {restored.scope} again (saved as version {restored.version}); "
               "a running `nbest serve --learn` picks it up within seconds")  # fmt: skip

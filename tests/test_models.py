"""Model resolution and the atomic conversion of the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbest import ConfigError, EngineError
from nbest.engines import models


def test_resolve_model_accepts_folders_and_hub_ids(tmp_path: Path) -> None:
    assert models.resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert models.resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


@pytest.mark.parametrize("name", ["./missing", "/no/such/dir", "~/nope/nope", "not a model", "a/b/c"])
def test_resolve_model_rejects_what_cannot_be_a_model(name: str) -> None:
    with pytest.raises(ConfigError, match="neither an existing folder nor a Hugging Face id"):
        models.resolve_model(name)


def test_a_plain_file_is_not_a_model(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        models.resolve_model(str(f))


def test_interrupted_conversion_leaves_no_half_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_crash(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(models, "_convert", half_then_crash)
    with pytest.raises(EngineError, match="disk full"):
        models.prepare_default_model(tmp_path)
    target = models.default_model_path(tmp_path)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary folder is gone too


def test_prepared_model_is_not_converted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert", fake_convert)
    first = models.prepare_default_model(tmp_path)
    second = models.prepare_default_model(tmp_path)
    assert first == second == models.default_model_path(tmp_path)
    assert len(calls) == 1 and (first / "config.json").is_file()


def test_home_comes_from_nbest_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NBEST_HOME", str(tmp_path))
    assert models.default_home() == tmp_path
    monkeypatch.delenv("NBEST_HOME")
    assert models.default_home() == Path.home() / ".cache" / "nbest"

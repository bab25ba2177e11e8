"""The public surface is what ``__all__`` says."""

from __future__ import annotations

import types

import nbest


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    exported = set(nbest.__all__)
    for name in exported:
        assert hasattr(nbest, name), name
    public = {name for name in dir(nbest) if not name.startswith("_") and name != "annotations"}
    # submodules appear as attributes once anything imports them (the CLI does)
    submodules = {name for name in public if isinstance(getattr(nbest, name), types.ModuleType)}
    assert public - submodules <= exported
    assert all(getattr(nbest, name).__name__.startswith("nbest.") for name in submodules)

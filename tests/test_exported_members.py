"""The public surface is what ``__all__`` says."""

from __future__ import annotations

import nbest


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    exported = set(nbest.__all__)
    for name in exported:
        assert hasattr(nbest, name), name
    public = {name for name in dir(nbest) if not name.startswith("_")}
    # submodules imported as a side effect of the package's own imports
    modules = {"engines", "errors", "orchestrator", "types", "render", "cli"}
    assert public - modules <= exported | {"annotations"}

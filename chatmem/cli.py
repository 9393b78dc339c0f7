"""``python -m chatmem``: the terminal chat, on the same engine as the app."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from chatmem.config import SettingsError, load_settings
from chatmem.memory import ContextOverflow
from chatmem.models import ModelError
from chatmem.session import ChatMemory

QUIT_WORDS = {"quit", "exit"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatmem",
        description="Chat in the terminal with a bot that remembers within a token budget.",
    )
    parser.add_argument("--system", help="system prompt (default: CHATMEM_SYSTEM_PROMPT)")
    parser.add_argument("--model", help="model name (default: gpt-4o-mini with a key, else local)")
    parser.add_argument("--max-tokens", type=int, help="prompt budget in tokens (default 3000)")
    parser.add_argument("--keep-recent", type=int, help="messages kept verbatim (default 6)")
    parser.add_argument(
        "--show-memory", action="store_true", help="print the token budget after each reply"
    )
    return parser


def chat_loop(
    bot: ChatMemory,
    read: Callable[[str], str] = input,
    write: Callable[[str], object] = sys.stdout.write,
    show_memory: bool = False,
) -> None:
    """The seed's loop: read a line, stream the reply; ``quit``/``exit`` leave."""
    write(f"chatmem: answering with {bot.model_label}. Type 'quit' or 'exit' to leave.\n")
    while True:
        try:
            text = read("You: ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if text.strip().lower() in QUIT_WORDS:
            return
        if not text.strip():
            continue
        write("Bot: ")
        try:
            for chunk in bot.ask_stream(text):
                write(chunk)
                flush = getattr(sys.stdout, "flush", None)
                if flush:
                    flush()
        except ContextOverflow as exc:
            write(f"\n[not sent] {exc}\n")
            continue
        except ModelError as exc:
            write(f"\n[error] {exc.user_message} Your message is kept; send it again to retry.\n")
            continue
        write("\n")
        if show_memory:
            b = bot.budget()
            write(
                f"[memory] {b.total:,}/{b.limit:,} tokens: system {b.system}, summary "
                f"{b.summary}, recent {b.recent}\n"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        bot = ChatMemory(
            system=args.system,
            max_tokens=args.max_tokens or settings.max_tokens,
            keep_recent=args.keep_recent or settings.keep_recent,
            model=args.model,
            settings=settings,
        )
    except (SettingsError, ValueError, ModelError) as exc:
        print(f"chatmem: {exc}", file=sys.stderr)
        return 2
    with bot:
        chat_loop(bot, show_memory=args.show_memory)
    return 0

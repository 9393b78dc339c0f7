"""``python -m chatmem``: the terminal chat, on the same engine as the app; ``--list`` and
``--reindex`` (rebuild the store's full-text search index) for the stored conversations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from chatmem.config import Settings, load_settings
from chatmem.errors import ChatmemError, ContextOverflow, EmbeddingError, ModelError, StoreError
from chatmem.session import ChatMemory
from chatmem.store import IndexRebuild, Store

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
    parser.add_argument("--resume", metavar="ID", help="continue a stored conversation")
    parser.add_argument("--list", action="store_true", help="list stored conversations and exit")
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="rebuild the full-text search index (used by recall) of every stored "
        "conversation, then exit",
    )
    parser.add_argument(
        "--embed",
        action="store_true",
        help="embed every stored message that has no embedding yet (for recall), then exit",
    )
    parser.add_argument(
        "--no-store", action="store_true", help="keep nothing on disk (no CHATMEM_DATABASE_URL)"
    )
    return parser


def reindex(store: Store, write: Callable[[str], object] | None = None) -> IndexRebuild:
    """Rebuild the store's full-text index, printing progress (about every tenth of the
    conversations) and a one-line result. Raises StoreError."""
    write = write or sys.stdout.write
    write("chatmem: rebuilding the search index of every stored conversation...\n")
    shown: set[int] = set()

    def progress(done: int, total: int) -> None:
        step = done * 10 // total if total else 10
        if step not in shown:
            shown.add(step)
            write(f"  {done:,}/{total:,} conversations\n")

    result = store.rebuild_search_index(progress)
    write(
        f"chatmem: search index rebuilt: {result.messages:,} messages in "
        f"{result.conversations:,} conversations.\n"
    )
    return result


def list_conversations(store: Store, write: Callable[[str], object] = sys.stdout.write) -> None:
    conversations = store.list_conversations()
    if not conversations:
        write("No stored conversations yet.\n")
    for c in conversations:
        when = c.updated_at.strftime("%Y-%m-%d %H:%M")
        write(f"{c.id}  {when}  {store.count_messages(c.id):>5} messages  {c.title}\n")


def chat_loop(
    bot: ChatMemory,
    read: Callable[[str], str] = input,
    write: Callable[[str], object] = sys.stdout.write,
    show_memory: bool = False,
) -> None:
    """The seed's loop: read a line, stream the reply; ``quit``/``exit`` leave."""
    write(f"chatmem: answering with {bot.model_label}. Type 'quit' or 'exit' to leave.\n")
    notice = getattr(bot.model, "notice", None)
    if notice:
        write(f"chatmem: note: {notice}\n")
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


def open_bot(args: argparse.Namespace, settings: Settings, store: Store | None) -> ChatMemory:
    """The session the command line asks for: a new conversation, or ``--resume ID``.

    Flags left out take their value from the settings (or, resuming, from the conversation).
    """
    overrides = {
        "system": args.system,
        "max_tokens": args.max_tokens,
        "keep_recent": args.keep_recent,
        "model": args.model,
    }
    if args.resume:
        if store is None:
            raise ValueError("--resume needs the store; drop --no-store.")
        return ChatMemory.resume(store, args.resume, settings=settings, **overrides)
    return ChatMemory(settings=settings, store=store, **overrides)


def embed_stored(
    store: Store, settings: Settings, write: Callable[[str], object] | None = None
) -> int:
    """Backfill the embeddings recall uses, printing progress; returns messages embedded."""
    from chatmem.embeddings import LOCAL_MODEL, Embedder, LocalEmbedder, backfill_embeddings

    write = write or sys.stdout.write
    name = settings.active_embedding_model
    if name is None:
        raise ValueError("embeddings are off (CHATMEM_EMBEDDING_MODEL=off): nothing to embed.")
    embedder: Embedder | LocalEmbedder
    if name == LOCAL_MODEL or settings.uses_local_model:
        embedder = LocalEmbedder()
    else:
        embedder = Embedder(
            name,
            api_key=settings.api_key,
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )
    write(f"chatmem: embedding stored messages with {embedder.label}...\n")
    last = [-1]

    def progress(done: int, total: int, messages: int) -> None:
        if done != last[0]:
            last[0] = done
            write(f"  {done:,}/{total:,} conversations, {messages:,} messages embedded\n")

    count = backfill_embeddings(store, embedder, progress)
    write(f"chatmem: {count:,} messages embedded; every stored message has its embedding.\n")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store: Store | None = None
    try:
        settings = load_settings()
        if args.no_store and (args.list or args.reindex or args.embed):
            raise ValueError("--list, --reindex and --embed need the store; drop --no-store.")
        if not args.no_store:
            store = Store(settings.database_url)
        if args.list:
            assert store is not None
            list_conversations(store)
            return 0
        if args.reindex:
            assert store is not None
            try:
                reindex(store)
            except StoreError as exc:
                raise StoreError(f"could not rebuild the search index: {exc}") from exc
            store.close()
            return 0
        if args.embed:
            assert store is not None
            try:
                embed_stored(store, settings)
            except EmbeddingError as exc:
                raise EmbeddingError(
                    f"embedding stopped: {exc} What was embedded is kept; run --embed again.",
                    kind=exc.kind,
                    retryable=exc.retryable,
                ) from exc
            store.close()
            return 0
        bot = open_bot(args, settings, store)
    except (ChatmemError, ValueError, LookupError) as exc:
        print(f"chatmem: {exc}", file=sys.stderr)
        if store is not None:
            store.close()
        return 2
    if bot.conversation_id:
        print(f"chatmem: conversation {bot.conversation_id} (resume with --resume ID)")
    with bot:
        chat_loop(bot, show_memory=args.show_memory)
    if store is not None:
        store.close()
    return 0

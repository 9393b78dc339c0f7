"""The fold worker of a session: folding old messages into the rolling summary.

:class:`Folding` is mixed into :class:`~chatmem.session.ChatMemory`. A fold runs on the
session's worker thread (or inline with ``background=False``): the messages it covers are read
from the store (:meth:`chatmem.sync.StoreSync.fold_input`), summarised on top of the previous
version, and committed by compare-and-set; a fold that lost the race to another session's is
rebuilt on the newer version. The memory advances only once the store took the version: a
save that fails is a failed fold (a ``fold_failed`` event, shown as a toast), and the next
turn tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from chatmem.errors import StoreError, SummaryConflict, SummaryError
from chatmem.events import Event, EventKind
from chatmem.inspection import SummaryVersion, TurnStat
from chatmem.journal import Journal
from chatmem.memory import FoldPlan, Memory, Message, Summary
from chatmem.models import ChatModel
from chatmem.summarize import Summarizer, SummaryResult
from chatmem.sync import StoreSync

log = logging.getLogger("chatmem.session")

RULES_AUTHOR = "rules (no model call)"  # the author of a summary written by chatmem.facts
FOLD_ATTEMPTS = 3  # a fold that loses the race to another session's is rebuilt this often


class Folding:
    """Folding for a session (see the module docstring)."""

    memory: Memory
    model: ChatModel
    summarizer: Summarizer
    background: bool
    fold_failures: int
    _lock: threading.RLock
    _executor: ThreadPoolExecutor | None
    _fold: Future[None] | None
    _fold_listeners: list[Callable[[Event], object]]
    _journal: Journal
    _sync: StoreSync
    _stats: list[TurnStat]
    _versions: list[SummaryVersion]

    def _record(self, kind: EventKind, message: str, **data: Any) -> Event:
        raise NotImplementedError

    # -- folding -------------------------------------------------------------------------
    @property
    def folding(self) -> bool:
        """True while a fold is running in the background."""
        return self._fold is not None and not self._fold.done()

    def schedule_fold(self) -> bool:
        """Fold old messages into the summary if the history has outgrown the budget.

        Runs on the background worker (or inline with ``background=False``). Returns True
        if a fold was started.
        """
        with self._lock:
            if self.folding or not self.memory.needs_fold():
                return False
            plan = self.memory.plan_fold()
            if plan is None:
                return False
            if not self.background:
                self._run_fold(plan)
                return True
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="chatmem-fold"
                )
            self._fold = self._executor.submit(self._run_fold, plan)
            return True

    def _spare_fold(self) -> None:
        """On a server where any new request ends the one in progress, wait for the fold."""
        if getattr(self.model, "interrupts", False):
            self.wait_for_fold()

    def wait_for_fold(self, timeout: float | None = None) -> None:
        """Block until a running fold (if any) has finished."""
        fold = self._fold
        if fold is not None:
            fold.result(timeout=timeout)

    def on_fold(self, listener: Callable[[Event], object]) -> None:
        """Call ``listener(event)`` when a fold lands or fails (from the worker thread)."""
        self._fold_listeners.append(listener)

    def _run_fold(self, plan: FoldPlan) -> None:
        try:
            event = self._fold_now(plan)
        except Exception as exc:  # never let a fold kill the chat
            if isinstance(exc, StoreError):  # the summary was made but could not be saved
                reason = f"The summary could not be saved ({exc})."
            elif isinstance(exc, SummaryError):
                reason = str(exc)
            else:
                log.exception("fold crashed")
                reason = f"The fold crashed: {exc}"
            with self._lock:
                self.fold_failures += 1
                event = self._record(
                    EventKind.FOLD_FAILED,
                    f"{reason} The summary was left as it was; older messages are trimmed "
                    "until a later fold succeeds.",
                    failures_in_a_row=self.fold_failures,
                )
        for listener in list(self._fold_listeners):
            try:
                listener(event)
            except Exception:  # a UI callback must not break the worker
                log.exception("fold listener failed")

    def _fold_now(self, plan: FoldPlan) -> Event:
        """Summarise what ``plan`` covers, read from the store, and commit it by
        compare-and-set: if another session's fold landed first, catch up and fold again on
        top of it (up to ``FOLD_ATTEMPTS`` times). Memory changes only once the store took
        the version, so a save that fails is a failed fold (raised to :meth:`_run_fold`)."""
        for attempt in range(FOLD_ATTEMPTS):
            messages, covers = self._sync.fold_input(plan)
            result = self.summarizer.summarize(
                plan.previous.text if plan.previous else None, messages, self.memory.summary_cap
            )
            with self._lock:
                try:
                    return self._commit_fold(plan, messages, covers, result, attempt)
                except SummaryConflict:
                    self._sync.catch_up()  # the newer version, and what came with it
                    replanned = self.memory.plan_fold() if self.memory.needs_fold() else None
                    if replanned is None:
                        return self._record(
                            EventKind.FOLD,
                            "Another session folded these messages first; its summary is used.",
                            superseded=True,  # no covers_seq: the version is the other's
                            newest_covers_seq=self.memory.covers_seq,
                        )
                    plan = replanned
        raise SummaryError(
            f"Other sessions kept folding first ({FOLD_ATTEMPTS} times); trying again later."
        )

    def _commit_fold(
        self,
        plan: FoldPlan,
        messages: Sequence[Message],
        covers: int,
        result: SummaryResult,
        rebuilt: int,
    ) -> Event:
        before = sum(m.tokens for m in messages) + (plan.previous.tokens if plan.previous else 0)
        author = RULES_AUTHOR if result.by_rules else self.summarizer.model.name
        summary = self._summary(result.text, covers, author, time.time())
        stored = self._journal.add_summary(
            summary.text,
            summary.tokens,
            covers,
            model=summary.model,
            usage=result.usage.as_dict(),
            extends=plan.previous.id if plan.previous else None,
            input_seqs=[m.seq for m in messages],
        )
        if stored is not None:
            summary = replace(summary, id=stored.id)
            self._sync.summary_id = stored.id
        self.memory.set_summary(summary)
        self.fold_failures = 0
        usage = result.usage
        if result.calls:  # a summary written by rules made no call to count
            self._stats.append(
                TurnStat(
                    "summary",
                    None,
                    usage.prompt_tokens or 0,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                )
            )
        self._versions.append(
            SummaryVersion(
                number=len(self._versions) + 1,
                text=summary.text,
                tokens=summary.tokens,
                covers_seq=covers,
                created_at=summary.created_at,
                messages=len(messages),
                before_tokens=before,
            )
        )
        return self._record(
            EventKind.FOLD,
            f"Folded {len(messages)} messages: {before:,} → {summary.tokens:,} tokens",
            messages=len(messages),
            before_tokens=before,
            after_tokens=summary.tokens,
            covers_seq=covers,
            calls=result.calls,
            rebuilt=rebuilt,  # races lost to other sessions' folds before this one landed
        )

    def _summary(self, text: str, covers_seq: int, model: str | None, created_at: float) -> Summary:
        return Summary(
            text=text,
            covers_seq=covers_seq,
            tokens=self.memory.summary_tokens(text),
            model=model,
            created_at=created_at,
        )

"""One turn on a thread of its own, so that a script run ending never cuts a reply off.

Streamlit stops a script run whenever a widget changes, the page switches or the tab goes
away. A reply streamed inside the run would stop with it. Instead, submitting a message
starts a :class:`Turn`: a thread that stores the message, reads ``reply_stream()`` to the
end (the session stores the reply in its finish step) and keeps the text so far in a
buffer behind a lock. Pages draw that buffer while the turn runs and take its
:class:`Outcome` on the first run after it ends (``ChatSession.settle``).

The thread holds the session's ``ChatMemory``, not the browser session: a closed tab drops
the page state, the thread still finishes and stores the reply. While a turn runs it is also
listed by conversation id, so a reload (a new browser session on ``?c=<id>``) can show it
too. A turn is a short-lived thread (one per reply, at most one per browser session since
the chat input is disabled while it runs); it ends when the reply ends, on **Stop**, or when
the model client gives up (``CHATMEM_TIMEOUT``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from chatmem.errors import ContextOverflow, ModelError, StoreError
from chatmem.session import ChatMemory

log = logging.getLogger(__name__)

_running: dict[str, Turn] = {}  # conversation id -> its turn in flight (this process)
_running_lock = threading.Lock()


@dataclass
class Outcome:
    """How a turn ended, for the transcript: the user's message, the reply, the problem."""

    user_status: str | None = None  # "ok", "too_long", "unsaved"; None: nothing to show
    user_seq: int | None = None
    reply: str | None = None  # the reply (or the part that arrived); None: no reply
    reply_status: str = "ok"  # "ok", "incomplete" (cut off) or "stopped" (Stop pressed)
    reply_seq: int | None = None
    error: str | None = None  # why the reply failed
    notice: str | None = None  # a problem with the message itself
    can_retry: bool = False
    unsaved: str | None = None  # the text the store refused: Retry sends it again


class Turn:
    """Send ``text`` (or, with None, re-ask the newest message's reply) on a thread."""

    def __init__(self, bot: ChatMemory, text: str | None) -> None:
        self.bot = bot
        self.text = text
        self.outcome = Outcome()
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._sent = threading.Event()  # the user's message is stored (or there was none)
        self._thread = threading.Thread(target=self._run, name="chatmem-turn")

    # -- read by pages (the script thread) -------------------------------------------------
    def start(self) -> Turn:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def sent(self) -> bool:
        """The user's message has been stored: the conversation has an id."""
        return self._sent.is_set()

    def text_so_far(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def stop(self) -> None:
        """End the reply on purpose (at its next chunk): what arrived is stored as stopped."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the turn to end; True if it has."""
        return self._done.wait(timeout)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        cid: str | None = None
        try:
            if self.text is not None and not self._send(self.text):
                return
            self._sent.set()
            cid = self.bot.conversation_id
            if cid is not None:
                with _running_lock:
                    _running[cid] = self
            self._reply()
        except Exception as exc:  # the thread never dies silently
            log.exception("the reply failed")
            self.outcome.error = f"The reply failed: {exc}"
            self.outcome.can_retry = True
        finally:
            if cid is not None:
                with _running_lock:
                    if _running.get(cid) is self:
                        del _running[cid]
            self._sent.set()
            self._done.set()

    def _send(self, text: str) -> bool:
        out = self.outcome
        try:
            msg = self.bot.add_user_message(text)
        except ContextOverflow as exc:
            out.user_status, out.notice = "too_long", str(exc)  # stored, never sent
            return False
        except StoreError as exc:
            out.user_status, out.unsaved, out.can_retry = "unsaved", text, True
            out.notice = f"The message could not be saved, so it was not sent: {exc}"
            return False
        except ValueError as exc:  # empty or blank
            out.notice = str(exc)
            return False
        out.user_status, out.user_seq = "ok", msg.seq
        return True

    def _reply(self) -> None:
        out = self.outcome
        stopped = False
        try:
            reply = self.bot.reply_stream()
            try:
                for chunk in reply:
                    with self._lock:
                        self._chunks.append(chunk)
                    if self._stop.is_set():
                        stopped = True
                        break
            finally:
                reply.close()  # the session's finish step stores what arrived
        except ModelError as exc:
            self._partial("incomplete")
            out.error, out.can_retry = exc.user_message, True
            return
        except ContextOverflow as exc:  # the budget was lowered below the newest message
            out.error, out.can_retry = str(exc), True
            return
        except StoreError as exc:
            self._partial("incomplete")
            out.error = f"The conversation could not be saved: {exc}"
            out.can_retry = True
            return
        if stopped and self._partial("stopped"):
            out.can_retry = True  # Retry asks again for a whole reply
            return
        self._partial("ok")

    def _partial(self, status: str) -> bool:
        """Put what arrived in the outcome with ``status`` and the seq it was stored with."""
        text = self.text_so_far()
        if not text:
            return False
        newest = self.bot.newest_message()
        out = self.outcome
        out.reply, out.reply_status = text, status
        out.reply_seq = newest.seq if newest is not None and newest.role == "assistant" else None
        return True


def running(cid: str | None) -> Turn | None:
    """The turn in flight for the conversation ``cid`` in this process, if any."""
    if cid is None:
        return None
    with _running_lock:
        return _running.get(cid)

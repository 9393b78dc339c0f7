"""chatmem: conversation memory for LLM chatbots.

Keeps a conversation inside a token budget with exact token counts, a rolling summary of
older turns, the latest turns verbatim, and trimming as a fallback.
"""

from chatmem.config import Settings, load_settings
from chatmem.errors import (
    ChatmemError,
    ContextOverflow,
    EmbeddingError,
    ModelError,
    SettingsError,
    StoreError,
    SummaryError,
)
from chatmem.events import Event, EventKind
from chatmem.inspection import SummaryVersion, TurnStat
from chatmem.memory import Budget, Context, Memory, Message, Recalled, Summary
from chatmem.models import ChatModel, LocalChat, OpenAIChat, ReplyStream, Usage, make_model
from chatmem.session import ChatMemory
from chatmem.store import Store
from chatmem.tokens import TokenCounter, count_tokens, trim_to_budget

__all__ = [
    "Budget",
    "ChatMemory",
    "ChatModel",
    "ChatmemError",
    "Context",
    "ContextOverflow",
    "EmbeddingError",
    "Event",
    "EventKind",
    "LocalChat",
    "Memory",
    "Message",
    "ModelError",
    "OpenAIChat",
    "Recalled",
    "ReplyStream",
    "Settings",
    "SettingsError",
    "Store",
    "StoreError",
    "Summary",
    "SummaryError",
    "SummaryVersion",
    "TokenCounter",
    "TurnStat",
    "Usage",
    "count_tokens",
    "load_settings",
    "make_model",
    "trim_to_budget",
]

__version__ = "0.1.0"

"""chatmem: conversation memory for LLM chatbots.

Keeps a conversation inside a token budget with exact token counts, a rolling summary of
older turns, the latest turns verbatim, and trimming as a fallback.
"""

from chatmem.config import Settings, SettingsError, load_settings
from chatmem.memory import Budget, Context, ContextOverflow, Memory, Message, Recalled, Summary
from chatmem.models import (
    ChatModel,
    LocalChat,
    ModelError,
    OpenAIChat,
    ReplyStream,
    Usage,
    make_model,
)
from chatmem.session import ChatMemory, Event, TurnStat
from chatmem.store import Store, StoreError
from chatmem.tokens import TokenCounter, count_tokens, trim_to_budget

__all__ = [
    "Budget",
    "ChatMemory",
    "ChatModel",
    "Context",
    "ContextOverflow",
    "Event",
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
    "TokenCounter",
    "TurnStat",
    "Usage",
    "count_tokens",
    "load_settings",
    "make_model",
    "trim_to_budget",
]

__version__ = "0.1.0"

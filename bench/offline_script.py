"""The scripted 30-turn chat of ``bench_offline``: six facts early, then chit-chat.

Each fact is stated once, in the first eleven turns, and never again, so after a few folds
only the summary (or recall) can carry it. ``FACTS`` gives, per fact, the question asked from
the end state and the word a correct answer (and a summary that kept the fact) contains.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM = "You are a friendly assistant. Be concise."


@dataclass(frozen=True)
class ScriptFact:
    label: str
    question: str
    expected: str  # case-insensitive substring of a correct answer, and of a summary keeping it


FACTS: tuple[ScriptFact, ...] = (
    ScriptFact("name", "What is my name?", "Sam"),
    ScriptFact("city", "Which city do I live in?", "Lyon"),
    ScriptFact("budget", "What is my budget for the trip?", "2000"),
    ScriptFact("month", "In which month is the trip?", "March"),
    ScriptFact("pet", "What is my dog called?", "Rex"),
    ScriptFact("decision", "How did we decide to travel?", "train"),
)


TURNS: tuple[str, ...] = (
    "Hi! My name is Sam.",
    "Can you help me plan a short holiday?",
    "I live in Lyon, in the old town.",
    "I would like somewhere with mountains and good food.",
    "My budget for the trip is 2000 euros.",
    "Hotels or apartments, which is better for a week?",
    "The trip is in March, for one week.",
    "What clothes should I pack for the cold?",
    "I have a dog called Rex, and he comes with us.",
    "Are dogs welcome on trains in Europe?",
    "We decided to take the train, not the car.",
    "Good. Tell me something fun about trains.",
    "What is a nice breakfast before a long journey?",
    "Do you like snow?",
    "Tell me a short joke about mountains.",
    "What games can we play on a long trip?",
    "How do I keep a phone charged while travelling?",
    "Which books are good for a journey?",
    "What is a good way to learn a few words of a language?",
    "Tell me one fact about cheese.",
    "How do I stay calm when a train is late?",
    "What is a simple picnic to bring along?",
    "How many photos is too many on a holiday?",
    "What is your favourite season, and why?",
    "Give me a tip for sleeping well in a new place.",
    "What should I do on a rainy afternoon?",
    "How do I say thank you in Italian?",
    "What is a good souvenir that is not a fridge magnet?",
    "Tell me a tiny poem about travel.",
    "Thanks, that is all for now.",
)

assert len(TURNS) == 30
assert all(any(f.expected.lower() in t.lower() for t in TURNS[:11]) for f in FACTS), (
    "every fact is stated in the first eleven turns"
)

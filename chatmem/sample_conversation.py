"""The shipped demo conversation: a week in Lisbon, planned over 64 user turns.

Names, numbers, dates and decisions are stated early (turns 1-10) and never repeated, so a
memory that only keeps the latest turns forgets them and a rolling summary keeps them. The
compare page replays ``USER_TURNS`` and then asks ``FACT_QUESTIONS``.

Facts are phrased ``my <thing> is <value>`` so they read naturally and so the test server in
``tests/fakes`` (which answers ``What is my <thing>?`` from such statements) can check them.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = "You are a friendly travel assistant. Be concise."


@dataclass(frozen=True)
class FactQuestion:
    """A question about an early fact, and the text a correct answer contains."""

    question: str
    expected: str
    said_at_turn: int  # 1-based index into USER_TURNS


USER_TURNS: tuple[str, ...] = (
    # -- the facts, early on ------------------------------------------------------------
    "Hi, my name is Sam. I'm planning a week in Lisbon and I'd like your help.",
    "My travel partner is Priya. She's my younger sister and new to Portugal.",
    "My budget is 2400 euros for the two of us, flights excluded.",
    "We land on 14 March and my return date is 21 March.",
    "My flight number is TP 1357 from London Heathrow, arriving at 10:40.",
    "My allergy is shellfish, so seafood places need care.",
    "We decided on a hotel: my hotel is Casa do Rio in Alfama. It costs 145 euros a night.",
    "Priya does not like early mornings, so nothing before 9 in the morning please.",
    "Actually, we looked again: my budget is 2600 euros now, because of the hotel.",
    "My first day plan is a slow walk from the hotel to the Sé cathedral and lunch nearby.",
    # -- the long middle: planning that never repeats the facts ---------------------------
    "What is the best way to get from the airport into the city centre?",
    "Is the metro easy to use with two suitcases?",
    "How much does a Viva Viagem card cost and how do we top it up?",
    "Which neighbourhoods are nice for an evening walk?",
    "Tell me about tram 28. Is it worth the queue?",
    "What time does the sun set in the middle of March?",
    "Can you suggest a good viewpoint for the first evening?",
    "We would like to hear fado once. Any tips for a quiet, not touristy place?",
    "How early should we book a table for dinner on a Friday?",
    "What is a typical price for a main course in a mid-range restaurant?",
    "Is tipping expected in Portugal?",
    "Which day trip would you recommend: Sintra or Cascais?",
    "How do we get to Sintra by train, and how long does it take?",
    "Which palace in Sintra should we pick if we only have time for one?",
    "Do we need to buy palace tickets in advance?",
    "What should we wear in March? Will it rain a lot?",
    "Are there good bakeries near Alfama for pastel de nata?",
    "What is the difference between a bica and a galão?",
    "Can you suggest a museum for a rainy afternoon?",
    "Tell me about the tile museum. How long do people usually spend there?",
    "Is the LX Factory worth a visit on a Sunday?",
    "How do we get from Alfama to Belém without a car?",
    "Which is better for sunset: the Belém tower or the Padrão dos Descobrimentos?",
    "We want one nice dinner. What should a special evening cost roughly?",
    "Are there markets worth visiting on a Saturday morning?",
    "What is the Time Out Market like? Is it too crowded?",
    "Could we do a half-day cooking class? What would it include?",
    "How safe is Lisbon at night for two people walking back to the hotel?",
    "Are the hills very steep? Priya has a sore knee some days.",
    "Which funiculars are worth taking?",
    "Do shops close for lunch in Lisbon?",
    "Is it easy to pay by card everywhere, or should we carry cash?",
    "What are a few useful Portuguese phrases for restaurants?",
    "Is there a good bookshop we should see?",
    "We might like a boat trip on the Tagus. Are there sunset cruises in March?",
    "What is the best day for the Feira da Ladra flea market?",
    "Could you suggest a relaxed plan for a rainy day in Alfama?",
    "Is there a beach we could reach easily even if it is too cold to swim?",
    "What is ginjinha and where do people drink it?",
    "Any recommendations for vegetarian food?",
    "How long should we plan for the Gulbenkian museum and its garden?",
    "Is it worth going up the Santa Justa lift, or is there a better view for free?",
    "We like live music that is not fado too. Where could we go?",
    "Are there any festivals or events in Lisbon in mid-March?",
    "Can you help me think about a souvenir for our parents?",
    "How do taxis and ride-hailing apps compare in price there?",
    "What is a good area to have coffee and read for an hour?",
    "Is the Oceanarium good for adults, or mostly for children?",
    "Should we visit Cascais by train along the coast, and what is there to see?",
    "Could you put the Sintra day and the Belém day in a sensible order?",
    "What should we do on the last evening before flying home?",
    "How early should we leave for the airport on the last day?",
    "Any last advice for two sisters on their first trip together to Lisbon?",
    "Thanks! Could you summarise the plan for the week in a few lines?",
)

FACT_QUESTIONS: tuple[FactQuestion, ...] = (
    FactQuestion("What is my name?", "Sam", 1),
    FactQuestion("What is my travel partner?", "Priya", 2),
    FactQuestion("What is my budget?", "2600", 9),
    FactQuestion("What is my return date?", "21 March", 4),
    FactQuestion("What is my flight number?", "TP 1357", 5),
    FactQuestion("What is my allergy?", "shellfish", 6),
    FactQuestion("What is my hotel?", "Casa do Rio", 7),
)


def user_turns(count: int | None = None) -> list[str]:
    """The first ``count`` user turns (all of them by default)."""
    if count is None:
        return list(USER_TURNS)
    if count < 1:
        raise ValueError("count must be at least 1.")
    return list(USER_TURNS[:count])


def knows(answer: str, fact: FactQuestion) -> bool:
    """True if ``answer`` states the fact (a case-insensitive substring check)."""
    return fact.expected.lower() in answer.lower()

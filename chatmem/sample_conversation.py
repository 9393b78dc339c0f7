"""The shipped demo conversation: a week in Lisbon, planned over 64 user turns.

Names, numbers, dates and decisions are stated early (turns 1-10) and never repeated, so a
memory that only keeps the latest turns forgets them and a rolling summary keeps them. The
compare page replays ``USER_TURNS`` (with ``ASSISTANT_REPLIES`` as the assistant's side when
the replies are scripted) and then asks ``FACT_QUESTIONS``.

Facts are phrased ``my <thing> is <value>`` so they read naturally and so the test server in
``tests/fakes`` (which answers ``What is my <thing>?`` from such statements) can check them.
"""

from __future__ import annotations

import re
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

ASSISTANT_REPLIES: tuple[str, ...] = (
    # The assistant's side of the script, one reply per user turn. Replayed with "scripted"
    # replies, so a small model only answers the final questions. No reply repeats an early
    # fact: whatever a strategy still knows of them comes from the user's own words.
    "Nice to meet you! A week in Lisbon is a great choice. Tell me what you have so far.",
    "Lovely, a trip together. I will keep the plan easy for a first visit to Portugal.",
    "Noted. Lisbon is good value, so that leaves room for a few nice meals.",
    "Good, that is a full week. Mid-March is mild and less crowded than summer.",
    "Thanks, I have your arrival. A late morning landing leaves the afternoon free.",
    "Understood. I will flag restaurants where that needs a word with the staff.",
    "Alfama is a charming choice: old lanes, viewpoints and fado nearby.",
    "No early starts, then. I will plan every day from mid-morning.",
    "Noted, the new figure replaces the old one.",
    "A gentle first day. The walk is short and mostly downhill.",
    "The metro red line runs from the airport to the centre in about 25 minutes.",
    "Yes, with lifts at most stations. Avoid the morning rush if you can.",
    "The card itself costs a small fee; top it up at any metro machine with cash or card.",
    "Try Príncipe Real, Chiado and the riverside from Cais do Sodré to the Ribeira market.",
    "Tram 28 is charming but crowded. Ride it early in the day or from the end of the line.",
    "Around a quarter past seven in the evening, so plan viewpoints for about 6:45.",
    "Miradouro da Senhora do Monte has a wide view and fewer people than the others.",
    "Look for a small casa de fado in Mouraria and book ahead; the tiny ones are quietest.",
    "Two or three days ahead is usually enough; a week for the popular places.",
    "Expect roughly 12 to 18 euros for a main course in a mid-range place.",
    "Not expected. Rounding up or leaving 5 to 10 percent for good service is kind.",
    "Sintra for palaces and forest, Cascais for the sea. Sintra is the classic first visit.",
    "Trains leave Rossio station every 20 minutes and take about 40 minutes.",
    "Pena Palace if you like colour and views; Quinta da Regaleira for gardens and wells.",
    "Yes, timed tickets online save a long wait, especially at Pena.",
    "Layers and a light rain jacket. March has showers but many bright days.",
    "There are several small bakeries in the lanes around the cathedral. Go early for warm ones.",
    "A bica is a short espresso; a galão is a tall milky coffee served in a glass.",
    "The National Tile Museum is a good pick for a rainy afternoon.",
    "Most people spend about two hours there, including the church and the café.",
    "Yes, Sunday is lively there, with a market and the shops open.",
    "Take tram 15 from Praça da Figueira or a train from Cais do Sodré to Belém.",
    "The Padrão has the open riverside view; the tower is lovelier from the lawn at dusk.",
    "Plan on about 60 to 90 euros a person for a special dinner with wine.",
    "The Campo de Ourique market is pleasant on a Saturday morning.",
    "It is busy at lunch and dinner; mid-afternoon is calmer and you still get a seat.",
    "Yes: a market visit, three or four dishes cooked together, then lunch with wine.",
    "Lisbon is generally safe at night. Keep to lit streets and watch for pickpockets.",
    "Some are steep. Trams, funiculars and the odd lift spare the knees.",
    "The Bica and Glória funiculars are short, scenic and save a steep climb.",
    "Small shops sometimes do; larger shops and malls stay open all day.",
    "Cards work almost everywhere. Carry a little cash for small cafés and markets.",
    "Bom dia, obrigada, a conta por favor, and sem glúten or sem carne when needed.",
    "Livraria Bertrand in Chiado claims to be the oldest bookshop still open.",
    "Yes, several operators run sunset cruises in March; about two hours on the river.",
    "Tuesday and Saturday mornings, near the Pantheon.",
    "Tile museum in the morning, lunch in a tasca, then a slow café afternoon.",
    "Carcavelos is easy by train from Cais do Sodré, with a long sandy beach.",
    "A sour cherry liqueur, drunk in tiny bars near Rossio, often in a chocolate cup.",
    "There are good vegetarian places in Príncipe Real and near Intendente.",
    "Plan about three hours for the museum and the garden together.",
    "The lift is fun but queues are long; the view from Largo do Carmo is similar and free.",
    "Small bars in Bairro Alto and Cais do Sodré have jazz and indie nights.",
    "Mid-March is quiet for festivals, but there are concerts and exhibitions most weeks.",
    "Tinned fish in pretty boxes, a tile, or a bottle of port are easy to carry home.",
    "Ride-hailing is usually cheaper than taxis and easy to use.",
    "A café in Príncipe Real garden or a quiet one in Chiado suits an hour of reading.",
    "It is very good for adults too, with a large central tank and calm lighting.",
    "Yes, the coastal line is scenic: see the old town, the bay and the cliffs at Boca do Inferno.",
    "Do Sintra on a weekday to avoid crowds and keep Belém for a lighter day.",
    "A sunset viewpoint, then a relaxed dinner near the hotel.",
    "Leave about two and a half hours before your flight; the metro is quick.",
    "Take it slowly, sit down often, and leave room for surprises. Enjoy it together!",
    "Arrival and a slow walk; Belém; Sintra; a rainy-day museum; Cascais; fado; a last sunset.",
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


def knows(text: str, fact: FactQuestion) -> bool:
    """True if ``text`` states the fact: its expected words, whole, in any case ("Sam" is
    not found in "same")."""
    return re.search(rf"(?<!\w){re.escape(fact.expected)}(?!\w)", text, re.IGNORECASE) is not None

"""The adaptive budget: the newest messages first, then older ones compete by one score
(recency prior, BM25 and embedding evidence), recall_share a ceiling, no hit cap."""

from __future__ import annotations

from chatmem.memory import Memory
from chatmem.recall import FtsIndex, candidates
from chatmem.tokens import counter_for_model
from tests.unit.test_memory import check_request

SYSTEM = "You are a friendly assistant."


def conversation(turns: list[tuple[str, str]], **kw) -> tuple[Memory, FtsIndex]:
    mem = Memory(system=SYSTEM, counter=counter_for_model("gpt-4o-mini"), **kw)
    index = FtsIndex()
    for role, text in turns:
        msg = mem.add(role, text)
        index.add(msg.seq, role, text)
    return mem, index


def ask(mem: Memory, index: FtsIndex, text: str):
    question = mem.add("user", text)
    hits = candidates(index, text, before_seq=question.seq)
    ctx = mem.context(hits)
    check_request(mem, ctx)
    verbatim = {p.seq for p in ctx.parts if p.kind == "verbatim"}
    return ctx, verbatim, {r.seq for r in ctx.recalled}


OLD_OVEN = [
    ("user", f"Old note {i}: the oven temperature for the {dish} was {t} degrees, I think.")
    for i, (dish, t) in enumerate(
        [("bread", 220), ("pizza", 250), ("cake", 180), ("lasagne", 190), ("pie", 200)] * 6
    )
]


def test_a_follow_up_about_the_last_few_turns_keeps_them() -> None:
    """Old messages match the follow-up's words better than the recent turns do, yet the
    recent exchange it asks about stays in the request, verbatim, past keep_recent."""
    turns: list[tuple[str, str]] = []
    for role, text in OLD_OVEN:
        turns += [(role, text), ("assistant", "Noted, thanks for telling me about that oven.")]
    recent = [
        ("user", "Let's plan the roast chicken for Sunday."),
        ("assistant", "Roast it at 200 degrees for about 90 minutes, basting halfway."),
        ("user", "And the potatoes?"),
        ("assistant", "Put them in with the bird for the last 50 minutes."),
        ("user", "Great, and gravy from the pan juices."),
        ("assistant", "Yes: deglaze the tray and thicken with a little flour."),
    ]
    mem, index = conversation(turns + recent, max_tokens=700, keep_recent=2, recall_share=0.8)
    first_recent = mem.messages[-len(recent)].seq
    _, verbatim, recalled = ask(mem, index, "What oven temperature did you say, again?")
    # the roast exchange (four and more messages back, beyond keep_recent=2) is all there
    assert set(range(first_recent, first_recent + len(recent))) <= verbatim
    # and recall still brought back old oven notes in the room left
    assert recalled and all(seq < first_recent for seq in recalled)
    # a plain search filling the budget would rank the recent turns below the old notes
    plain = [h.seq for h in index.search("oven temperature", before_seq=10_000, limit=200)]
    assert plain.index(first_recent + 1) > 20


def test_no_hit_cap_when_the_budget_has_room() -> None:
    turns = [(r, t) for r, t in OLD_OVEN] + [("assistant", "ok")] + [("user", "hi")] * 0
    filler = [("user", f"Unrelated chat number {i} about the weather.") for i in range(60)]
    mem, index = conversation(turns + filler, max_tokens=4000, keep_recent=2, recall_share=0.8)
    ctx, _, recalled = ask(mem, index, "Which oven temperature for the pie, bread and cake?")
    assert len(recalled) == 30 > 20  # every matching note, no cap of 20
    assert ctx.budget.recalled <= int(4000 * 0.8)


def test_recall_share_is_a_ceiling() -> None:
    mem, index = conversation(list(OLD_OVEN) * 2, max_tokens=2000, keep_recent=2)
    for share in (0.1, 0.3, 0.6):
        mem.recall_share = share
        mem.truncate(len(OLD_OVEN) * 2)
        ctx, _, recalled = ask(mem, index, "oven temperature for the bread?")
        assert recalled
        assert 0 < ctx.budget.recalled <= int(2000 * share)


def test_candidates_under_the_threshold_give_their_room_to_recent_messages() -> None:
    turns = list(OLD_OVEN) + [("assistant", f"Small talk {i}.") for i in range(40)]
    mem, index = conversation(turns, max_tokens=600, keep_recent=2, recall_share=0.8)
    _, verbatim_low, recalled_low = ask(mem, index, "oven temperature for the bread?")
    assert recalled_low
    mem.truncate(len(turns))
    mem.recall_threshold = 1.0  # nothing is that relevant
    ctx, verbatim_high, recalled_high = ask(mem, index, "oven temperature for the bread?")
    assert not recalled_high and ctx.dropped_recalled > 0
    assert len(verbatim_high) > len(verbatim_low)  # the room went to recent messages

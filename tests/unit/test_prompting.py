"""The local model's prompt formats and the guard that cuts a looping reply (no model loaded)."""

from __future__ import annotations

import pytest

from chatmem.facts import FACTS_HEADING, OUTLINE_HEADING, about_the_user
from chatmem.framing import memory_message, recall_block, summary_block
from chatmem.prompting import (
    FACTS_NOTE_HEADING,
    GEMMA_TEMPLATE,
    PLAIN_NAME,
    PLAIN_STOPS,
    LoopGuard,
    NoRepeatNgrams,
    arrange,
    choose_format,
    facts_last,
)
from chatmem.servers import CHATML_TEMPLATE

SMOLLM2_TEMPLATE = (  # as the bundled GGUF carries it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that keeps only the first system message (as llama-2-style formats do): the
# memory must still reach the model, so here it has to be merged into that message.
FIRST_SYSTEM_ONLY = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{% if loop.first %}"
    "<<SYS>>{{ message['content'] }}<</SYS>>\n{% endif %}{% else %}[{{ message['role'] }}] "
    "{{ message['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "[assistant] {% endif %}"
)


def request() -> list[dict[str, str]]:
    """A request as chatmem sends it: system, recap, recalled, recent turns."""
    return [
        {"role": "system", "content": "You are a friendly assistant. Be concise."},
        memory_message(summary_block("The user is Sam; budget 2000 euros.")),
        memory_message(recall_block(["I fly to Lisbon on 14 March."])),
        {"role": "user", "content": "Hello again."},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "What is my name?"},
    ]


def no_special(text: str) -> bool:
    return False


def assert_memory_in(prompt: str) -> None:
    for fact in ("Sam", "2000 euros", "Lisbon on 14 March", "What is my name?"):
        assert fact in prompt


def test_the_gguf_template_comes_first_and_receives_the_memory() -> None:
    fmt = choose_format(
        {"tokenizer.chat_template": SMOLLM2_TEMPLATE}, lambda t: True, eos="<|im_end|>"
    )
    assert fmt.name == "its chat template"
    assert fmt.stops == ("<|im_end|>", "<|im_start|>")
    prompt = fmt.render(request())
    assert_memory_in(prompt)
    assert prompt.count("<|im_start|>user\n") == 4  # recap and recalled as user turns
    assert prompt.endswith("What is my name?<|im_end|>\n<|im_start|>assistant\n")
    assert "named SmolLM" not in prompt  # the system prompt was given, so no default one


def test_a_template_that_drops_later_system_messages_still_gets_the_memory_when_merged() -> None:
    meta = {"tokenizer.chat_template": FIRST_SYSTEM_ONLY}
    messages = [request()[0], {"role": "system", "content": "Sam likes tea."}, request()[-1]]
    assert "Sam likes tea" not in choose_format(meta, no_special).render(messages)
    merged = choose_format(meta, no_special, memory_in_system=True).render(messages)
    assert merged.startswith("<<SYS>>You are a friendly assistant. Be concise.\n\nSam likes tea.")
    assert_memory_in(choose_format(meta, no_special, memory_in_system=True).render(request()))


@pytest.mark.parametrize(
    ("marker", "family", "opening", "reply_opening"),
    [
        ("<|im_start|>", "ChatML", "<|im_start|>system\n", "<|im_start|>assistant\n"),
        (
            "<|start_header_id|>",
            "Llama 3",
            "<s><|start_header_id|>system<|end_header_id|>\n\n",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        ("<start_of_turn>", "Gemma", "<s><start_of_turn>user\n", "<start_of_turn>model\n"),
    ],
)
def test_without_a_template_the_family_format_is_known_by_its_marker_token(
    marker: str, family: str, opening: str, reply_opening: str
) -> None:
    fmt = choose_format({}, lambda text: text == marker, bos="<s>")
    assert fmt.name == family
    prompt = fmt.render(request())
    assert prompt.startswith(opening)
    assert prompt.endswith(reply_opening)
    assert_memory_in(prompt)
    assert prompt.count(fmt.stops[0]) == len(request())  # the end of turn it writes stops a reply


def test_without_template_or_family_one_system_message_holds_the_memory() -> None:
    fmt = choose_format({"tokenizer.chat_template": "  "}, no_special)
    assert fmt.name == PLAIN_NAME and fmt.merge_memory and fmt.stops == PLAIN_STOPS
    prompt = fmt.render(request())
    system, _, conversation = prompt.partition("\n\nUser: ")
    assert system.startswith("System: You are a friendly assistant. Be concise.")
    assert "Sam" in system and "2000 euros" in system and "Lisbon on 14 March" in system
    assert prompt.count("System:") == 1
    assert conversation.startswith("Hello again.")
    assert prompt.endswith("User: What is my name?\n\nAssistant:")


def test_arrange_merges_system_and_memory_in_order_and_keeps_the_turns() -> None:
    out = arrange(request())
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    system = out[0]["content"]
    assert system.index("Be concise.") < system.index("<recap>") < system.index("<recalled>")
    assert arrange([{"role": "user", "content": "hi"}]) == [
        {"role": "system", "content": ""},
        {"role": "user", "content": "hi"},
    ]


RULE_RECAP = "\n".join(  # as chatmem.facts.recap_by_rules writes one
    [
        FACTS_HEADING,
        "- #1 user, name: My name is Sam.",
        "- #3 user, place: I live in Bergen.",
        "",
        OUTLINE_HEADING,
        "- #5 user: What should I pack for rain?",
    ]
)


def noted_request() -> list[dict[str, str]]:
    plain = request()
    return [plain[0], memory_message(summary_block(RULE_RECAP)), *plain[2:]]


def test_the_recaps_fact_notes_are_sent_last_told_about_the_user() -> None:
    fmt = choose_format({"tokenizer.chat_template": SMOLLM2_TEMPLATE}, lambda t: True)
    prompt = fmt.render(noted_request())
    note = (
        f"<|im_start|>user\n{FACTS_NOTE_HEADING}\n"
        "- The user's name is Sam.\n- The user lives in Bergen.<|im_end|>"
    )
    assert note in prompt and "My name is Sam" not in prompt
    assert prompt.index("Hi! How can I help?") < prompt.index(note)
    assert prompt.index(note) < prompt.index("What is my name?")
    recap = prompt[prompt.index("<recap>") : prompt.index("</recap>")]
    assert "What should I pack for rain?" in recap and FACTS_HEADING not in recap
    assert "Lisbon on 14 March" in prompt  # the recalled block stays where it was


def test_facts_last_changes_nothing_without_notes_or_a_question_after_them() -> None:
    assert facts_last(request()) == request()  # a model-written recap with no notes
    recap_only = noted_request()[:2]
    assert facts_last(recap_only) == recap_only  # nothing to send them before
    moved = facts_last(noted_request())
    assert [m["role"] for m in moved][-2:] == ["user", "user"]
    assert moved[-2]["content"].startswith(FACTS_NOTE_HEADING)


def test_a_template_that_refuses_the_note_keeps_the_notes_in_the_recap() -> None:
    fmt = choose_format({"tokenizer.chat_template": ALTERNATING_ONLY}, no_special)
    assert fmt.merge_memory  # two user turns in a row are refused
    prompt = fmt.render(noted_request())
    assert FACTS_NOTE_HEADING not in prompt
    assert "- #1 user, name: My name is Sam." in prompt


def test_with_the_memory_merged_the_note_is_a_user_turn_before_the_question() -> None:
    fmt = choose_format({"tokenizer.chat_template": "  "}, no_special)
    prompt = fmt.render(noted_request())
    assert prompt.count("System:") == 1
    assert f"User: {FACTS_NOTE_HEADING}\n- The user's name is Sam." in prompt
    assert prompt.endswith("lives in Bergen.\n\nUser: What is my name?\n\nAssistant:")


def test_a_first_person_fact_is_told_about_the_user() -> None:
    told = {
        "My name is Sam.": "The user's name is Sam.",
        "I live in Lyon, in the old town.": "The user lives in Lyon, in the old town.",
        "I have a dog called Rex, and he comes with us.": (
            "The user has a dog called Rex, and he comes with them."
        ),
        "We decided to take the train.": "They decided to take the train.",
        "I'm vegan and I don't eat eggs.": "The user is vegan and the user doesn't eat eggs.",
        "I also study physics.": "The user also studies physics.",
        "I was born in 1990; I can swim.": "The user was born in 1990; the user can swim.",
        "Hi! My budget is 2000 euros.": "Hi! The user's budget is 2000 euros.",
        "Sam Berg, +47 555 12 345": "Sam Berg, +47 555 12 345",
    }
    assert {said: about_the_user(said) for said in told} == told


def test_gemma_has_no_system_role() -> None:
    prompt = choose_format({"tokenizer.chat_template": GEMMA_TEMPLATE}, no_special).render(
        request()[:1]
    )
    assert "system" not in prompt and prompt.startswith("<start_of_turn>user\n")


def test_chatml_template_is_shared_with_the_server_probe() -> None:
    assert choose_format({}, lambda t: t == "<|im_start|>").template == CHATML_TEMPLATE


# --------------------------------------------------------------------------------------
# The loop guard
# --------------------------------------------------------------------------------------
def stream_through(guard: LoopGuard, text: str, size: int = 3) -> str:
    shown = ""
    for i in range(0, len(text), size):
        shown += guard.feed(text[i : i + size])
        if guard.looped:
            return shown
    return shown + guard.finish()


def test_a_looping_eh_eh_eh_is_cut() -> None:
    guard = LoopGuard()
    shown = stream_through(guard, "Eh, eh, eh, eh, eh, eh, eh, eh, eh, eh, eh, eh, eh")
    assert guard.looped
    assert shown == "Eh," == guard.text


def test_a_looping_sua_sua_sua_is_cut_after_the_text_before_it() -> None:
    guard = LoopGuard()
    shown = stream_through(guard, "Nossa sua sua sua sua sua sua sua sua sua sua sua", size=2)
    assert guard.looped and shown == "Nossa sua"


def test_a_sentence_said_twice_over_is_cut() -> None:
    guard = LoopGuard()
    text = "Your name is Sam. I can help you plan a trip to Lisbon. " * 5
    shown = stream_through(guard, text)
    assert guard.looped
    assert shown == "Your name is Sam. I can help you plan a trip to Lisbon."


@pytest.mark.parametrize(
    "reply",
    [
        "Your name is Sam, and you told me your budget is 2000 euros for the trip in March.",
        "Sure! Here are three ideas:\n- a walk by the river\n- a museum\n- a boat trip\nEnjoy!",
        "It is very, very cold in Oslo in January. Pack a warm coat, a hat and gloves.",
        "1, 2, 3, 4, 5. That is five numbers.",
    ],
)
def test_an_ordinary_reply_passes_whole(reply: str) -> None:
    for size in (1, 4, 50):
        guard = LoopGuard()
        assert stream_through(guard, reply, size) == reply
        assert not guard.looped


def test_text_that_may_start_a_loop_is_held_back_until_it_does_not() -> None:
    guard = LoopGuard()
    assert guard.feed("I said no no ") == "I said no"
    assert guard.feed("way. ") == " no way."
    assert guard.finish() == " "
    assert not guard.looped


def test_a_reply_may_not_copy_n_tokens_from_an_earlier_reply_or_itself() -> None:
    import numpy as np

    prompt = [7, 7, 7]
    block = NoRepeatNgrams(len(prompt), earlier=[[1, 2, 3, 4]], n=3)

    def banned(ids: list[int]) -> list[int]:
        scores = block([*prompt, *ids], np.zeros(10, dtype=np.single))
        return [i for i, s in enumerate(scores) if s == -np.inf]

    assert banned([5, 1]) == []  # nothing to copy after "5 1"
    assert banned([5, 1, 2]) == [3]  # not "1 2 3" again
    assert banned([5, 1, 2, 9, 5]) == []
    assert banned([5, 1, 2, 9, 5, 1]) == [2]  # nor its own "5 1 2"


def test_a_reply_may_not_open_as_an_earlier_reply_did() -> None:
    import numpy as np

    prompt = [7, 7]
    block = NoRepeatNgrams(len(prompt), earlier=[[1, 2, 3], [1, 4], [5]], n=8, opening=1)

    def banned(ids: list[int]) -> list[int]:
        scores = block([*prompt, *ids], np.zeros(10, dtype=np.single))
        return [i for i, s in enumerate(scores) if s == -np.inf]

    assert banned([]) == [1, 5]  # the first tokens of the earlier replies
    assert banned([2]) == []  # past the opening: free
    assert NoRepeatNgrams(0, earlier=[[1, 2]], n=8)([], np.zeros(3, dtype=np.single)).min() == 0


ALTERNATING_ONLY = (  # refuses two user messages in a row, as some templates do
    "{% for message in messages %}{% if loop.index0 > 0 and message['role'] == "
    "messages[loop.index0 - 1]['role'] %}{{ raise_exception('Roles must alternate') }}{% endif %}"
    "<{{ message['role'] }}>{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
NO_SYSTEM = (  # refuses a system message
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<{{ message['role'] }}>{{ message['content'] }}{% endfor %}"
)


def test_a_template_refusing_two_user_turns_gets_the_memory_in_the_system_message() -> None:
    fmt = choose_format({"tokenizer.chat_template": ALTERNATING_ONLY}, no_special)
    assert fmt.name == "its chat template" and fmt.merge_memory
    prompt = fmt.render(request())
    assert_memory_in(prompt)
    assert prompt.startswith("<system>You are a friendly assistant. Be concise.\n\nRecap")


def test_a_template_that_cannot_render_the_requests_gives_way_to_the_family_format() -> None:
    meta = {"tokenizer.chat_template": NO_SYSTEM}
    assert choose_format(meta, lambda t: t == "<|im_start|>").name == "ChatML"
    assert choose_format(meta, no_special).name == PLAIN_NAME
    assert choose_format({"tokenizer.chat_template": "{% for %}"}, no_special).name == PLAIN_NAME

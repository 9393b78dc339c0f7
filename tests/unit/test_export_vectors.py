"""A JSON export carries the stored embeddings (model + vector); an import restores them."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import struct
from array import array

import pytest

from chatmem.store import ImportValidationError, Store


def _unit(rng: random.Random, dims: int) -> list[float]:
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _conversation_with_vectors(store: Store) -> tuple[str, dict[str, list[tuple[int, array]]]]:
    cid = store.create_conversation(title="Boats").id
    for i in range(6):
        store.append_message(cid, "user" if i % 2 == 0 else "assistant", f"message {i} boat")
    rng = random.Random(5)
    store.add_embeddings(cid, [(seq, _unit(rng, 8)) for seq in range(1, 7)], "e5-small")
    store.add_embeddings(cid, [(2, _unit(rng, 4))], "other-model")
    return cid, {m: store.embeddings(cid, m) for m in ("e5-small", "other-model")}


@pytest.mark.parametrize("as_file", [False, True])
def test_embeddings_round_trip_through_an_export(store: Store, as_file: bool) -> None:
    cid, stored = _conversation_with_vectors(store)
    doc = store.export_json(cid)
    assert [(e["seq"], e["model"]) for e in doc["embeddings"]] == [
        *((seq, "e5-small") for seq in range(1, 7)),
        (2, "other-model"),
    ]
    first = base64.b64decode(doc["embeddings"][0]["vector"])
    assert struct.unpack("<8f", first) == tuple(stored["e5-small"][0][1])
    data = io.BytesIO(json.dumps(doc).encode()) if as_file else doc
    copy = store.import_json(data)
    assert copy.id != cid
    for model, vectors in stored.items():
        assert store.embeddings(copy.id, model) == vectors
    assert store.export_json(copy.id)["embeddings"] == doc["embeddings"]


def test_an_export_without_embeddings_still_imports(store: Store) -> None:
    cid, _ = _conversation_with_vectors(store)
    doc = store.export_json(cid)
    del doc["embeddings"]  # as files written before vectors were exported
    for data in (doc, io.BytesIO(json.dumps(doc).encode())):
        copy = store.import_json(data)
        assert len(store.messages(copy.id)) == 6
        assert store.embeddings(copy.id, "e5-small") == []


def test_embeddings_before_the_messages_in_a_file(store: Store) -> None:
    """A file may list its embeddings first: they are written once their messages are."""
    cid, stored = _conversation_with_vectors(store)
    doc = store.export_json(cid)
    reordered = {"embeddings": doc.pop("embeddings"), **doc}
    copy = store.import_json(io.BytesIO(json.dumps(reordered).encode()))
    assert store.embeddings(copy.id, "e5-small") == stored["e5-small"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"seq": 99, "model": "m", "vector": "AACAPw=="}, "embeddings[0].seq: 99 is not the seq"),
        ({"seq": 1, "model": "", "vector": "AACAPw=="}, "embeddings[0].model: empty"),
        ({"seq": 1, "model": "m", "vector": "not base64!"}, "embeddings[0].vector: expected"),
        ({"seq": 1, "model": "m", "vector": "AACA"}, "embeddings[0].vector: expected"),
        (
            {"seq": 1, "model": "m", "vector": base64.b64encode(struct.pack("<f", math.nan))},
            "embeddings[0].vector",
        ),
        ({"seq": 1, "model": "m", "vector": "AACAPw==", "x": 1}, "embeddings[0].x: unknown"),
    ],
)
def test_a_bad_embedding_is_refused_with_where(store: Store, entry: dict, problem: str) -> None:
    cid, _ = _conversation_with_vectors(store)
    doc = store.export_json(cid)
    if isinstance(entry["vector"], bytes):
        entry = {**entry, "vector": entry["vector"].decode()}
    doc["embeddings"] = [entry]
    before = len(store.list_conversations())
    for data in (doc, io.BytesIO(json.dumps(doc).encode())):
        with pytest.raises(ImportValidationError) as caught:
            store.import_json(data)
        assert str(caught.value).startswith(problem), str(caught.value)
    assert len(store.list_conversations()) == before

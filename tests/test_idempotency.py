from __future__ import annotations

import re

from airflow_provider_mindvideo.client.idempotency import idempotency_key, request_fingerprint

TI = ("content_dag", "generate", "scheduled__2026-11-24T00:00:00+00:00", 3)


def test_keys_are_fixed_length_and_header_safe() -> None:
    key = idempotency_key(*TI, "gpt-image-2", {"prompt": "一只橘猫 🐱"}, 0)
    assert re.fullmatch(r"af-[0-9a-f]{40}-0000", key)
    assert len(idempotency_key(*TI, "gpt-image-2", {"prompt": "x" * 100_000}, 12)) == len(key)


def test_keys_are_deterministic_and_ignore_input_key_order() -> None:
    a = idempotency_key(*TI, "gpt-image-2", {"prompt": "x", "size": "1:1"}, 0)
    b = idempotency_key(*TI, "gpt-image-2", {"size": "1:1", "prompt": "x"}, 0)
    assert a == b


def test_every_part_of_the_identity_changes_the_key() -> None:
    base = idempotency_key(*TI, "gpt-image-2", {"prompt": "x"}, 0)
    variants = [
        idempotency_key("other_dag", *TI[1:], "gpt-image-2", {"prompt": "x"}, 0),
        idempotency_key(TI[0], "other_task", *TI[2:], "gpt-image-2", {"prompt": "x"}, 0),
        idempotency_key(*TI[:2], "manual__other", TI[3], "gpt-image-2", {"prompt": "x"}, 0),
        idempotency_key(*TI[:3], 4, "gpt-image-2", {"prompt": "x"}, 0),
        idempotency_key(*TI, "gpt-image-1", {"prompt": "x"}, 0),
        idempotency_key(*TI, "gpt-image-2", {"prompt": "y"}, 0),
        idempotency_key(*TI, "gpt-image-2", {"prompt": "x"}, 1),
    ]
    assert len({base, *variants}) == 8


def test_generations_count_up_from_zero() -> None:
    keys = [idempotency_key(*TI, "gpt-image-2", {"prompt": "x"}, generation) for generation in range(3)]
    assert [k[-4:] for k in keys] == ["0000", "0001", "0002"]
    assert len({k[:-5] for k in keys}) == 1


def test_fingerprint_is_unicode_stable() -> None:
    assert request_fingerprint("m", {"prompt": "é"}) == request_fingerprint("m", {"prompt": "é"})
    assert request_fingerprint("m", {"prompt": "é"}) != request_fingerprint("m", {"prompt": "e\u0301"})

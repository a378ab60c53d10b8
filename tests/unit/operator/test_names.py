"""Deterministic, length-safe names."""

from __future__ import annotations

from recon_operator.names import identity_name, job_name, label_value, shorten


def test_short_names_are_kept() -> None:
    assert job_name("bunny", 1) == "bunny-1"
    assert identity_name("bunny") == "bunny-worker"


def test_long_names_fit_63_characters_and_keep_their_suffix() -> None:
    long = "a" * 62 + "-b"
    for name in (job_name(long, 12), identity_name(long), label_value(long + "x" * 200)):
        assert len(name) <= 63
    assert job_name(long, 12).endswith("-12")
    assert identity_name(long).endswith("-worker")


def test_shortening_is_deterministic_and_distinguishes_names() -> None:
    assert shorten("x" * 100) == shorten("x" * 100)
    assert shorten("x" * 100 + "1") != shorten("x" * 100 + "2")


def test_no_dash_before_the_hash_is_doubled() -> None:
    name = shorten("a" * 50 + "-" * 30)
    assert "--" not in name

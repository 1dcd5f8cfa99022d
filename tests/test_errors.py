"""The error hierarchy, and what the messages say."""

from __future__ import annotations

import builtins

import pytest

import synk
from synk import errors
from synk.errors import Failure


@pytest.mark.parametrize(
    "cls",
    [synk.ConfigError, synk.ValidationError, synk.FrozenValueError, synk.ConnectionError, synk.WriteError, synk.ProtocolError],
)
def test_every_error_is_a_synk_error(cls: type[Exception]) -> None:
    assert issubclass(cls, synk.SynkError)
    assert issubclass(cls, Exception)


def test_every_exported_exception_is_covered() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}
    exceptions = {c for c in exported if isinstance(c, type) and issubclass(c, BaseException)}
    assert all(issubclass(c, synk.SynkError) for c in exceptions)
    assert len(exceptions) == 7


def test_the_package_exports_the_same_classes() -> None:
    for name in errors.__all__:
        assert getattr(synk, name) is getattr(errors, name)


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(synk.ValidationError, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise synk.ValidationError("bad")


def test_frozen_value_error_is_validation_and_type_error() -> None:
    assert issubclass(synk.FrozenValueError, synk.ValidationError)
    assert issubclass(synk.FrozenValueError, TypeError)
    assert issubclass(synk.FrozenValueError, ValueError)


def test_connection_error_is_the_builtin_one_too() -> None:
    assert issubclass(synk.ConnectionError, builtins.ConnectionError)
    assert issubclass(synk.ConnectionError, OSError)
    assert synk.ConnectionError is not builtins.ConnectionError


def test_config_error_is_not_a_value_error() -> None:
    assert not issubclass(synk.ConfigError, ValueError)
    assert not issubclass(synk.WriteError, synk.ValidationError)


def test_failure_text() -> None:
    assert str(Failure("a1", "agent", "create", "exists", "another object has this id")) == (
        "create of agent 'a1': exists (another object has this id)"
    )
    assert str(Failure("a1", "agent", "update", "missing")) == "update of agent 'a1': missing"


def test_failure_is_frozen_and_comparable() -> None:
    f = Failure("a1", "agent", "update", "conflict", "x")
    assert f == Failure("a1", "agent", "update", "conflict", "x")
    with pytest.raises(AttributeError):
        f.reason = "other"  # type: ignore[misc]


def test_write_error_lists_failures_with_count() -> None:
    failures = [
        Failure("a1", "agent", "create", "exists", "another object has this id"),
        Failure("a2", "agent", "update", "conflict"),
    ]
    err = synk.WriteError(failures)
    assert str(err) == "2 object write(s) failed: create of agent 'a1': exists (another object has this id); update of agent 'a2': conflict"
    assert err.failures == failures
    assert err.failures is not failures  # a copy


def test_write_error_shows_five_and_counts_the_rest() -> None:
    failures = [Failure(f"id{i}", "agent", "update", "missing") for i in range(8)]
    text = str(synk.WriteError(failures))
    assert text.startswith("8 object write(s) failed: update of agent 'id0': missing; ")
    assert "'id4'" in text and "'id5'" not in text
    assert text.endswith("; and 3 more")
    assert len(synk.WriteError(failures).failures) == 8


def test_write_error_of_exactly_five_has_no_more() -> None:
    text = str(synk.WriteError([Failure(f"id{i}", "note", "delete", "missing") for i in range(5)]))
    assert text.startswith("5 object write(s) failed")
    assert "more" not in text


def test_protocol_error_carries_code() -> None:
    err = synk.ProtocolError("bad_key", "subscription key is empty")
    assert err.code == "bad_key"
    assert err.reason == "subscription key is empty"
    assert str(err) == "bad_key: subscription key is empty"
    with pytest.raises(synk.SynkError, match="bad_key"):
        raise err

"""What crosses from the caller to a worker: JSON arguments and
return values, a task context, and nothing of the caller's context."""

from __future__ import annotations

import pytest
from django.utils import timezone, translation
from django.utils.safestring import mark_safe

from tests.tasks import tasks as tm
from tests.tasks.helpers import finished

# Workers use the database outside any test-wide transaction, so every test
# needs a transactional one (the alias fixture narrows it, see tests/conftest.py).
pytestmark = pytest.mark.django_db(transaction=True)


def test_arguments_and_return_values_go_through_json(backend):
    arguments = [(1, 2), {1: "one", "nested": (3, 4)}]
    result = tm.echo.enqueue(*arguments, b"bytes", flag=True)
    arguments[1]["late"] = "mutation after enqueue"
    value = finished(result).return_value
    assert value == {
        "args": [[1, 2], {"1": "one", "nested": [3, 4]}, "bytes"],
        "kwargs": {"flag": True},
        "types": ["list", "dict", "str"],
    }
    assert result.args == [[1, 2], {"1": "one", "nested": [3, 4]}, "bytes"]
    assert finished(tm.return_tuple_and_int_keys.enqueue()).return_value == [
        [1, 2],
        {"1": "one"},
    ]


def test_scalar_arguments_and_return_values_arrive_as_json_delivers_them(backend):
    # Exact str/int/float/bool/None skip the round trip (nothing it could
    # change); subclasses of them still take it, and come out as the base type.
    result = tm.echo.enqueue(
        "text", 7, 2.5, True, None, mark_safe("<b>"), tm.Weekday.MONDAY, flag=False
    )
    value = finished(result).return_value
    assert value["args"] == ["text", 7, 2.5, True, None, "<b>", 1]
    assert value["types"] == [
        *["str", "int", "float", "bool", "NoneType"],
        *["str", "int"],
    ]
    assert value["kwargs"] == {"flag": False}
    assert result.args == ["text", 7, 2.5, True, None, "<b>", 1]
    assert [type(arg).__name__ for arg in result.args][-2:] == ["str", "int"]
    returned = {
        kind: finished(tm.return_scalar.enqueue(kind)).return_value
        for kind in ["int", "float", "safe string", "int enum"]
    }
    assert returned == {"int": 7, "float": 2.5, "safe string": "<b>", "int enum": 1}
    assert [type(value).__name__ for value in returned.values()] == [
        *["int", "float", "str", "int"]
    ]


def test_a_nan_return_value_fails_the_task(backend):
    result = finished(tm.return_scalar.enqueue("nan"))
    assert result.status == tm.TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.ValueError"


def test_unserializable_arguments_fail_in_the_caller(backend):
    with pytest.raises(TypeError, match="Unsupported type"):
        tm.echo.enqueue(timezone.now())
    with pytest.raises(ValueError):
        tm.echo.enqueue(float("nan"))


def test_unserializable_return_value_fails_the_task(backend):
    result = finished(tm.return_unserializable.enqueue())
    assert result.status == tm.TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


def test_takes_context_gets_a_task_context(backend):
    result = finished(tm.context_info.enqueue("hello"))
    value = result.return_value
    assert value["label"] == "hello"
    assert value["attempt"] == 1
    assert value["id"] == result.id
    assert value["worker_ids"] == result.worker_ids and len(result.worker_ids) == 1


def test_tasks_run_in_a_fresh_context(configure):
    configure(WORKERS=1)
    token = tm.REQUEST_ID.set("caller")
    try:
        with translation.override("de"):
            assert finished(tm.set_context.enqueue("task")).return_value == "task"
            seen = finished(tm.read_context.enqueue()).return_value
    finally:
        tm.REQUEST_ID.reset(token)
    assert seen == {"request_id": "unset", "language": "en"}

"""Context: each unit sees the submitter's context and leaks nothing forward."""

from __future__ import annotations

import contextvars

import pytest
from django.test import override_settings
from django.utils import timezone, translation

from django_thread import Thread, ThreadPoolExecutor

request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_id", default="none"
)


def test_units_see_the_submitters_context_variables_and_language():
    token = request_id.set("req-42")
    try:
        with translation.override("de"), timezone.override("Europe/Berlin"):
            with ThreadPoolExecutor(max_workers=1) as executor:
                seen = executor.submit(
                    lambda: (
                        request_id.get(),
                        translation.get_language(),
                        timezone.get_current_timezone_name(),
                    )
                ).result()
    finally:
        request_id.reset(token)
    assert seen == ("req-42", "de", "Europe/Berlin")


def test_thread_sees_the_language_and_variables_active_at_start():
    seen = []
    thread = Thread(
        target=lambda: seen.append((request_id.get(), translation.get_language()))
    )
    token = request_id.set("at-start")
    try:
        with translation.override("fr"):
            thread.start()
        thread.join()
    finally:
        request_id.reset(token)
    assert seen == [("at-start", "fr")]


def test_context_is_taken_at_start_not_at_construction():
    seen = []
    thread = Thread(target=lambda: seen.append(request_id.get()))
    token = request_id.set("set-before-start")
    try:
        thread.start()
        thread.join()
    finally:
        request_id.reset(token)
    assert seen == ["set-before-start"]


def test_nothing_a_unit_sets_leaks_into_the_next_unit_or_the_caller():
    def dirty():
        request_id.set("dirty")
        translation.activate("nl")
        return request_id.get(), translation.get_language()

    def clean():
        return request_id.get(), translation.get_language()

    with translation.override("en"):
        with ThreadPoolExecutor(max_workers=1) as executor:
            assert executor.submit(dirty).result() == ("dirty", "nl")
            assert executor.submit(clean).result() == ("none", "en")
        assert translation.get_language() == "en"
    assert request_id.get() == "none"


@override_settings(DJANGO_THREAD_COPY_CONTEXT=False)
def test_copy_context_off_runs_units_in_the_workers_own_context():
    """The stdlib's behaviour: the submitter's context is not visible, and a
    unit's context changes persist on its worker."""
    token = request_id.set("submitter")
    try:
        with ThreadPoolExecutor(max_workers=1) as executor:
            assert executor.submit(request_id.get).result() == "none"
            executor.submit(request_id.set, "sticky").result()
            assert executor.submit(request_id.get).result() == "sticky"
    finally:
        request_id.reset(token)


@override_settings(DJANGO_THREAD_COPY_CONTEXT=False)
def test_copy_context_off_for_threads():
    seen = []
    token = request_id.set("submitter")
    try:
        thread = Thread(target=lambda: seen.append(request_id.get()))
        thread.start()
        thread.join()
    finally:
        request_id.reset(token)
    assert seen == ["none"]


@pytest.mark.parametrize("copy", [True, False])
def test_each_copy_context_value_takes_its_own_path(copy):
    """Guard against a switch that is read but ignored."""
    token = request_id.set("submitter")
    try:
        with override_settings(DJANGO_THREAD_COPY_CONTEXT=copy):
            with ThreadPoolExecutor(max_workers=1) as executor:
                seen = executor.submit(request_id.get).result()
    finally:
        request_id.reset(token)
    assert seen == ("submitter" if copy else "none")


def test_language_and_time_zone_changed_between_submits_reach_each_unit():
    # Submits from one thread reuse the previous reading of the language and
    # time zone while the context is unchanged; every change must still show.
    def seen():
        return translation.get_language(), timezone.get_current_timezone_name()

    default = (translation.get_language(), timezone.get_current_timezone_name())
    with ThreadPoolExecutor(max_workers=1) as executor:
        results = [executor.submit(seen).result(), executor.submit(seen).result()]
        with translation.override("fr"):
            results.append(executor.submit(seen).result())
            with timezone.override("Asia/Tokyo"):
                results.append(executor.submit(seen).result())
            results.append(executor.submit(seen).result())
            translation.deactivate_all()
            results.append(executor.submit(seen).result())
        results.append(executor.submit(seen).result())
    assert results == [
        default,
        default,
        ("fr", default[1]),
        ("fr", "Asia/Tokyo"),
        ("fr", default[1]),
        (None, default[1]),
        default,
    ]


def test_asgiref_locals_replace_their_value_on_write():
    # The reuse above is only switched on where this holds (asgiref 3.13).
    from django_thread.context import locals_replace_their_value_on_write

    assert locals_replace_their_value_on_write() is True

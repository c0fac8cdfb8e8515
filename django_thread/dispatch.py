"""Sending Django signals from worker threads without queueing on the signal's lock.

Every unit of work sends ``request_started`` and ``request_finished``, and
every task ``task_enqueued``, ``task_started`` and ``task_finished``. None
of them caches its receivers, so each ``send()`` takes the signal's lock to
list them: with several workers on few cores, a worker that finds the lock
held gives up the interpreter, and waits for it again. These helpers call
the same receivers, with the same arguments, in the same order, through
:func:`django_thread.internals.live_receivers`, which reads them without
the lock; whenever it cannot, the signal's own ``send()`` or
``send_robust()`` runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from django_thread.internals import live_receivers

#: The logger Django's ``send_robust()`` reports a failing receiver to.
django_logger = logging.getLogger("django.dispatch")


def send(signal: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    """``signal.send(sender=sender, **named)``: a receiver's error propagates."""
    receivers = live_receivers(signal, sender)
    if receivers is None:
        return signal.send(sender=sender, **named)
    return [
        (receiver, receiver(signal=signal, sender=sender, **named))
        for receiver in receivers
    ]


def send_robust(signal: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    """``signal.send_robust(sender=sender, **named)``, logging failures as it does."""
    receivers = live_receivers(signal, sender)
    if receivers is None:
        return signal.send_robust(sender=sender, **named)
    responses: list[tuple[Any, Any]] = []
    for receiver in receivers:
        try:
            response = receiver(signal=signal, sender=sender, **named)
        except Exception as err:
            django_logger.error(
                "Error calling %s in Signal.send_robust() (%s)",
                receiver.__qualname__,
                err,
                exc_info=err,
            )
            responses.append((receiver, err))
        else:
            responses.append((receiver, response))
    return responses

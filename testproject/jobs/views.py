"""One view that hands work to a thread pool or the Tasks backend, and waits."""

from __future__ import annotations

import os
import time

from django.http import HttpRequest, JsonResponse

from testproject.jobs import background

#: How long a request waits for its background work before failing.
WAIT = 5.0


def record(request: HttpRequest) -> JsonResponse:
    """``?via=executor`` or ``?via=task``: write a row there, report who did."""
    name = request.GET.get("name", "view")
    if request.GET.get("via") == "task":
        from testproject.jobs.tasks import record as record_task

        result = record_task.enqueue(name)
        deadline = time.monotonic() + WAIT
        while not result.is_finished and time.monotonic() < deadline:
            time.sleep(0.005)
            result.refresh()
        session = result.return_value  # raises unless it succeeded
    else:
        session = background.executor.submit(background.record, name).result(WAIT)
    return JsonResponse({"process": os.getpid(), "session": session})

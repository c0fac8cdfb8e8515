"""testproject's URLs, plus a view that enqueues a DURABLE task (gunicorn test)."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from testproject.urls import urlpatterns as project_urls
from tests import durable_tasks


def enqueue(request: HttpRequest) -> JsonResponse:
    result = durable_tasks.chaos.enqueue(float(request.GET["seconds"]))
    return JsonResponse({"task": result.id})


urlpatterns = [*project_urls, path("enqueue/", enqueue)]

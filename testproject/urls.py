from django.urls import path

from testproject.jobs import async_views, views

urlpatterns = [
    path("record/", views.record),
    path("asgi/sync/", async_views.sync_view),
    path("asgi/thread-sensitive/", async_views.thread_sensitive_view),
    path("asgi/thread-pool/", async_views.thread_pool_view),
    path("asgi/to-thread/", async_views.to_thread_view),
    path("asgi/threads/", async_views.threads_view),
]

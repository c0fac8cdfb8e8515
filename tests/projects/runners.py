"""A project's own test runner: django_thread's mixin after Django's runner."""

from django.test.runner import DiscoverRunner

from django_thread.testing import ReleaseConnectionsMixin


class MixinSecondRunner(DiscoverRunner, ReleaseConnectionsMixin):
    pass

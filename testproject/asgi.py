"""testproject's ASGI applications: Django's own, and the same wrapped by django_thread.

``application`` is what a project serves; ``django_application`` is there so
that tests can show what Django alone does with the same views.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

import django_thread.asgi  # noqa: E402

django_application = get_asgi_application()

# The one line (README.rst, "Async and ASGI"): each request's sync code runs
# on a thread of django_thread's, which closes its connections when it ends.
application = django_thread.asgi.wrap(django_application)

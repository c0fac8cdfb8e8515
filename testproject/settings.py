"""testproject: a real Django project for django_thread's demo and tests.

The database comes from ``TESTPROJECT_DATABASE_URL`` and defaults to a
SQLite file next to this module.
"""

import os
from pathlib import Path

from testproject.databases import database_from_url

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "testproject-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_thread",
    "testproject.jobs",
]

ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": database_from_url(
        os.environ.get(
            "TESTPROJECT_DATABASE_URL", f"sqlite:///{BASE_DIR / 'demo.sqlite3'}"
        )
    ),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_thread": {"handlers": ["console"], "level": "WARNING"}},
}

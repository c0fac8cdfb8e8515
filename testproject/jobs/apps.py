from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "testproject.jobs"
    label = "jobs"

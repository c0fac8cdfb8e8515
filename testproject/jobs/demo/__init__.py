"""The code behind ``manage.py demo`` (testproject/jobs/management/commands/demo.py)."""

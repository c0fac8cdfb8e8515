from django.db import models


class Record(models.Model):
    """A row a background job writes, so tests can count what was committed."""

    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"

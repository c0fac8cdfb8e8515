"""django-thread's benchmarks: ``python -m benchmarks [--quick] [--postgres URL]``.

Everything runs in one process and prints one report: see ``__main__``.
"""

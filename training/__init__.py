"""Pairloop's ML backend: reward-model training, scoring and rejection sampling.

This package never imports Django (a test enforces it) so that researchers can use
it alone (``python -m training ...``) and Celery tasks can call it.
"""

__version__ = "0.1.0"

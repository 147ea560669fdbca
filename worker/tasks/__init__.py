"""Task modules; celeryconfig.imports loads this package, which loads them all."""

from worker.tasks import maintenance, scheduler  # noqa: F401

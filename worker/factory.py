"""Build the Celery app from the Flask app (pallets' pattern), once per process."""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

from shared.db import db


def make_celery(flask_app: Flask) -> Celery:
    """A Celery app configured from celeryconfig.py whose tasks run inside `flask_app`'s context."""

    class AppContextTask(Task):
        def __call__(self, *args, **kwargs):
            with flask_app.app_context():
                try:
                    return self.run(*args, **kwargs)
                finally:
                    db.session.remove()  # one session per task

    celery = Celery(flask_app.name, task_cls=AppContextTask)
    celery.config_from_object("celeryconfig")
    celery.set_default()
    flask_app.extensions["celery"] = celery
    return celery


@worker_process_init.connect
def _reset_after_fork(**_kwargs) -> None:
    """A prefork child must not share the parent's database connections."""
    db.after_fork()

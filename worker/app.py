"""Entry point of worker, beat and Flower processes: `celery -A worker.app ...`."""

from api import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

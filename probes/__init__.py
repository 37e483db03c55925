"""Health, readiness, metrics and status: the Flask app served by gunicorn. Reads state, never drives the pipeline."""

"""Reference AI agent web service: FastAPI API, LangGraph agent, Celery worker."""

__version__ = "0.1.0"

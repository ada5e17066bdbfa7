"""The HTTP layer: a lean ASGI front for the hot paths, FastAPI behind it for everything else."""

from service.http.app import create_app

__all__ = ["create_app"]

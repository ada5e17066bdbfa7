"""Errors of the explanation engine; each maps to an HTTP status through its ProbserveError base."""

from __future__ import annotations

from service.errors import DeadlineExceeded, Overloaded


class ExplainerBusy(Overloaded):
    """The explainer's queue is full: the request was refused at once (503 with Retry-After)."""

    error_type = "explainer_busy"


class ExplanationDeadlineExceeded(DeadlineExceeded):
    """An explanation waited or ran past its deadline and was abandoned (503)."""

    error_type = "explanation_deadline_exceeded"


class BackgroundError(ValueError):
    """The bundle's reference rows cannot serve as a background sample; the message says why."""

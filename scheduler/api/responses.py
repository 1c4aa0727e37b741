"""The error answers endpoints document in the OpenAPI schema: every one is JSON `{"detail": …}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorMessage(BaseModel):
    """Every error but a 422: what was wrong, in one line."""

    detail: str


def errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an endpoint's errors by status, e.g. `errors({404: "no such flow"})`: each an `ErrorMessage`.

    FastAPI documents the 422 of a body it validates itself (`HTTPValidationError`); a 422 given here
    (an endpoint that validates its body by hand) is documented with that same schema.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status, description in descriptions.items():
        if status == 422:
            schema = {"$ref": "#/components/schemas/HTTPValidationError"}
            responses[status] = {"description": description, "content": {"application/json": {"schema": schema}}}
        else:
            responses[status] = {"description": description, "model": ErrorMessage}
    return responses

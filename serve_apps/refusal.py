"""`ActionRefused`: why an action shared by the API and a panel was not done. The API answers it
with its HTTP status; a panel shows its message."""

from __future__ import annotations


class ActionRefused(Exception):
    """Why an action was not done, with the HTTP status the API answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

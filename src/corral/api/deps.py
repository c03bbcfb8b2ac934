"""FastAPI dependencies shared by the REST routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from corral.api.authn import principal_of
from corral.domain.access import Caller
from corral.errors import PermissionDeniedError

__all__ = ["Principal"]


def _principal(request: Request) -> Caller:
    """The caller the authentication middleware established; none is a refusal."""
    caller = principal_of(request)
    if caller is None:
        raise PermissionDeniedError("no authenticated principal for this request")
    return caller


#: The authenticated caller of a route, handed to the service layer as `principal=`.
Principal = Annotated[Caller, Depends(_principal)]

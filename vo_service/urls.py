"""Absolute URLs as clients must see them, also behind a reverse proxy."""

from __future__ import annotations

from starlette.requests import Request


def site_root(request: Request) -> str:
    """``VO_SERVICE_PUBLIC_URL`` when set, else what the request itself says."""
    public = request.app.state.vo.settings.public_url
    return (public or str(request.base_url)).rstrip("/")

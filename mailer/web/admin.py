"""The editor's side of the web app: the admin API (``/api/admin``, token auth, in the
OpenAPI schema) and the dashboard (``/admin``, session cookie + CSRF). ``create_app``
includes ``router``. The two share their operations (``admin_service``)."""

from __future__ import annotations

from fastapi import APIRouter

from mailer.web import admin_api, admin_pages

router = APIRouter()
router.include_router(admin_api.router)
router.include_router(admin_pages.router)

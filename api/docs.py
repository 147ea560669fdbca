"""The interactive docs' assets (Swagger UI, ReDoc), served by the app itself so /docs and /redoc work
offline. They come from pinned packages of requirements.txt, never from a CDN or files in this repository."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, send_from_directory

from api.access import PUBLIC, guard

ASSETS_PATH = "/docs/assets"
# flask-swagger-ui ships Swagger UI's dist folder; flask-openapi3-redoc ships ReDoc's standalone bundle (its
# plugin code needs flask-openapi3, which we install with it but never import).
ASSET_FOLDERS = {
    "swagger-ui": Path(str(files("flask_swagger_ui") / "dist")),
    "redoc": Path(str(files("flask_openapi3_redoc") / "templates" / "redoc" / "js")),
}

blp = Blueprint("api-docs-assets", __name__, url_prefix=ASSETS_PATH)


@blp.get("/<any('swagger-ui', 'redoc'):package>/<path:filename>")
@guard(PUBLIC)
def asset(package: str, filename: str):
    """One file of the Swagger UI or ReDoc distribution."""
    return send_from_directory(ASSET_FOLDERS[package], filename)


DOCS_CONFIG = {
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": f"{ASSETS_PATH}/swagger-ui/",
    # persistAuthorization keeps the pasted token across reloads; no validator badge from another host.
    "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "validatorUrl": None},
    "OPENAPI_REDOC_PATH": "redoc",
    "OPENAPI_REDOC_URL": f"{ASSETS_PATH}/redoc/redoc.standalone.js",
}

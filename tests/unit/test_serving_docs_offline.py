"""Swagger UI is served from the package's own files: /docs references no external host, and its assets load."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings
from tests.support.serving import NullProducer


def test_docs_page_and_assets_are_local(tmp_path: Path) -> None:
    settings = ServingSettings(home=tmp_path, registry_watch_s=0, ort_cuda="never")
    app = create_app(settings, producer=NullProducer(), feature_reader=None)
    client = TestClient(app)  # no lifespan: /docs needs no model
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200, page
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html.text)
        assert urls, html.text
        external = [u for u in urls if re.match(r"^(https?:)?//", u)]
        assert not external, (page, external)
        for url in urls:
            if url.startswith("/static-offline-docs/"):
                asset = client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "cdn.jsdelivr" not in client.get("/docs").text

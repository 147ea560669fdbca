"""The documentation cannot silently fall behind: its links lead somewhere, and it lists every route."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and [text]: target, skipping absolute URLs and in-page anchors.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)>\s]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# Flask's own static route, not part of the API.
NOT_DOCUMENTED = {"static"}


def _relative_links(document):
    for match in LINK.finditer(document.read_text()):
        target = match.group(1) or match.group(2)
        if not EXTERNAL.match(target) and not target.startswith("#"):
            yield target


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_of_the_repository(document):
    broken = []
    for target in _relative_links(document):
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f"{document.name} links outside the repository or to nothing: {broken}"


def test_the_docs_index_and_the_readme_link_the_api_and_scheduling_pages():
    for document in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        targets = {target.split("#", 1)[0].rsplit("/", 1)[-1] for target in _relative_links(document)}
        assert {"api.md", "scheduling.md"} <= targets, document


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_DOCUMENTED:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield f"{method} {path}"


def test_every_route_of_the_app_is_in_docs_api_md(app):
    documented = (ROOT / "docs" / "api.md").read_text()
    missing = [route for route in _routes(app) if f"`{route}`" not in documented]
    assert not missing, f"docs/api.md does not mention: {missing}"

"""Upgrades of a real compose deployment on a real Docker engine, end to end
through the ``updock`` command.

Each test builds its own releases (compose file, a ``front/`` folder served
by busybox httpd on 127.0.0.1, and image tars where a release ships an
image), installs release 1, starts it, upgrades it by patch with
``updock upgrade apply``, and then looks at what really runs: the page an
HTTP client reads, the containers and image tags in the engine, the
deployed tree (whole: every path, mode and content hash) and the journal.
"""

from __future__ import annotations

import pytest
from deploykit import assert_same_tree, explain, killed, snapshot
from upgradefixtures_docker import (  # noqa: F401 - fixtures
    ARCH,
    HTTPD,
    NEW,
    OLD,
    compose_factory,
    docker_deployment,
    docker_engine,
    final_result,
    image_factory,
)

from cli import exitcodes

pytestmark = pytest.mark.docker

SERVICE_STEPS = (
    "images_loaded",
    "services_stopping",
    "services_stopped",
    "op_applied",
    "services_started",
    "health_verdict",
    "committed",
)


def web_release(d, name: str, tag: str, page: str, **web_extra) -> object:
    """A release tree whose web service runs ``<repo>:<tag>`` and serves
    ``page`` as index.html."""
    return d.tree(
        name,
        {"web": d.web(tag, **web_extra)},
        {"front/index.html": page, "front/about.html": "about\n"},
    )


def installed_and_serving(d, tree, page: str) -> None:
    d.install(tree)
    d.start()
    assert d.wait_page(page) == page


def test_upgrade_patch_serves_new_content_and_journals_service_steps(
    docker_deployment,
):
    d = docker_deployment
    d.build("1.0", HTTPD)
    old = web_release(d, "r1", "1.0", "release one\n")
    new = web_release(d, "r2", "2.0", "release two\n")
    (new / "front" / "news.html").write_text("new in two\n", encoding="utf-8")
    new_id = d.pack(new, "web", "2.0", HTTPD, 'LABEL release="2"')
    manifest = d.release(old, new)
    installed_and_serving(d, old, "release one\n")

    result = d.apply(manifest)

    assert result.returncode == exitcodes.OK, explain(result)
    final = final_result(result)
    assert (final["outcome"], final["action"], final["target"]) == (
        "committed", "patch", NEW,
    )
    assert d.page() == "release two\n"
    assert d.page("news.html") == "new in two\n"
    assert d.containers()["web"].image_id == new_id == d.image_id("2.0")
    assert d.image_id(f"2.0-{ARCH}") == new_id
    assert d.kept_tags() == []
    assert_same_tree(d.tree_snapshot(), snapshot(new), "deployed tree")

    events = d.tx_events(final["tx"])
    kinds = [e["type"] for e in events]
    positions = [kinds.index(step) for step in SERVICE_STEPS]
    assert positions == sorted(positions), kinds
    by_kind = {e["type"]: e for e in events}
    for step in ("images_loaded", "services_stopped", "services_started"):
        assert by_kind[step]["seconds"] > 0, by_kind[step]
    verdict = by_kind["health_verdict"]
    assert verdict["passed"] and verdict.get("phase", "upgrade") == "upgrade"
    assert verdict["seconds"] > 0
    assert [(v["service"], v["passed"]) for v in verdict["services"]] == [("web", True)]
    assert by_kind["images_loaded"]["previous"] == {d.ref("1.0"): d.image_id("1.0")}
    assert d.ref("2.0") in by_kind["images_loaded"]["images"]
    assert by_kind["services_stopped"]["services"] == ["web"]
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets)

    table = d.updock("journal", "inspect", "--tx", final["tx"])
    assert table.returncode == exitcodes.OK, explain(table)
    timed = [line.split() for line in table.stdout.splitlines()]
    shown = {cols[2] for cols in timed if len(cols) > 2 and cols[0].startswith("+")}
    assert set(SERVICE_STEPS) <= shown, table.stdout

"""Image tars: selection, checks, loading with kept tags, restoring."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from dockerfixtures import docker_engine, image_factory  # noqa: F401 - fixtures

from engine import images
from engine.dockerapi import ImageLoadError, normalise_ref

TX = "tx-0001"


def test_select_image_tars_skips_other_architectures(tmp_path):
    for name in (
        "web-amd64.tar",
        "web-arm64.tar",
        "db-x86_64.tar",
        "db-aarch64.tar",
        "tools.tar",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"")

    chosen, skipped = images.select_image_tars(tmp_path, images.host_arch("x86_64"))

    assert [p.name for p in chosen] == ["db-x86_64.tar", "tools.tar", "web-amd64.tar"]
    assert [p.name for p in skipped] == ["db-aarch64.tar", "web-arm64.tar"]
    assert images.select_image_tars(tmp_path / "missing", "amd64") == ([], [])


def test_strip_arch_suffix_drops_only_an_arch_suffix():
    assert images.strip_arch_suffix("app:1.2-amd64") == "app:1.2"
    assert images.strip_arch_suffix("reg:5000/app:1.2-aarch64") == "reg:5000/app:1.2"
    assert images.strip_arch_suffix("app:1.2-beta") is None
    assert images.strip_arch_suffix("reg:5000/app") is None


def test_normalise_ref_spells_tags_as_the_engine_lists_them():
    assert normalise_ref("nginx") == "nginx:latest"
    assert normalise_ref("docker.io/library/nginx:1.2") == "nginx:1.2"
    assert normalise_ref("reg:5000/app") == "reg:5000/app:latest"
    assert normalise_ref("docker.io/me/app:3") == "me/app:3"


def test_kept_ref_carries_tag_and_transaction():
    assert images.kept_ref("reg:5000/app:1.2", "tx/9") == (
        "reg:5000/app:updock-prev-tx-9-1.2"
    )
    long = images.kept_ref("app:" + "v" * 120, TX)
    assert len(long.partition(":")[2]) <= images.TAG_MAX
    assert "--" in long


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_inspect_tar_rejects_garbage(tmp_path):
    path = tmp_path / "web-amd64.tar"
    path.write_bytes(b"this is not a tar archive" * 100)

    with pytest.raises(ImageLoadError, match="unreadable archive"):
        images.inspect_tar(path)


def test_inspect_tar_rejects_an_archive_without_manifest(tmp_path):
    path = _tar(tmp_path / "x.tar", {"hello.txt": b"hi"})

    with pytest.raises(ImageLoadError, match="no manifest.json"):
        images.inspect_tar(path)


def test_inspect_tar_rejects_missing_and_cut_members(tmp_path):
    manifest = [
        {"Config": "abc.json", "RepoTags": ["app:1"], "Layers": ["l/layer.tar"]}
    ]
    missing = _tar(
        tmp_path / "m.tar",
        {"manifest.json": json.dumps(manifest).encode(), "abc.json": b"{}"},
    )
    with pytest.raises(ImageLoadError, match="'l/layer.tar' is missing"):
        images.inspect_tar(missing)

    whole = _tar(
        tmp_path / "w.tar",
        {
            "manifest.json": json.dumps(manifest).encode(),
            "abc.json": b"{}",
            "l/layer.tar": b"x" * 4096,
        },
    )
    assert images.inspect_tar(whole).tags == ["app:1"]
    assert images.inspect_tar(whole).ids == ["sha256:abc"]
    cut = tmp_path / "c.tar"
    cut.write_bytes(whole.read_bytes()[:2048])
    with pytest.raises(ImageLoadError):
        images.inspect_tar(cut)


@pytest.fixture
def app_versions(image_factory, tmp_path):
    """``app:1.0`` on version one; a package tar of version two, and its id.

    The tar holds version two under the existing client's arch-suffixed tag
    ``app:1.0-amd64``, which is removed from the engine after saving.
    """
    repo = f"updock-test/app-{tmp_path.name[-12:].lower().replace('_', '')}"
    v2 = image_factory.build(f"{repo}:1.0-amd64", 'LABEL version="2"')
    package = tmp_path / "package" / "images"
    package.mkdir(parents=True)
    image_factory.save(f"{repo}:1.0-amd64", package / "app-amd64.tar")
    image_factory.engine.remove_tag(f"{repo}:1.0-amd64")
    v1 = image_factory.build(f"{repo}:1.0", 'LABEL version="1"')
    image_factory.track(f"{repo}:1.0-amd64")
    return repo, v1, v2, package


@pytest.mark.docker
def test_load_images_keeps_the_old_id_and_restore_puts_it_back(
    docker_engine, app_versions
):
    repo, v1, v2, package = app_versions
    tars, _ = images.select_image_tars(package, "amd64")

    load = images.load_images(docker_engine, tars, [f"{repo}:1.0"], TX)
    after_load = _tags_of(docker_engine, repo)
    moved = images.restore_images(docker_engine, load.previous)
    created = images.created_tags(load.loaded, load.previous)
    stayed = images.remove_tags(docker_engine, [*created, *load.kept.values()])

    assert load.loaded == [f"{repo}:1.0", f"{repo}:1.0-amd64"]
    assert load.previous == {f"{repo}:1.0": v1}
    assert load.kept == {f"{repo}:1.0": f"{repo}:updock-prev-{TX}-1.0"}
    assert after_load == {
        f"{repo}:1.0": v2,
        f"{repo}:1.0-amd64": v2,
        f"{repo}:updock-prev-{TX}-1.0": v1,
    }
    assert moved == [f"{repo}:1.0"]
    assert stayed == []
    assert _tags_of(docker_engine, repo) == {f"{repo}:1.0": v1}


@pytest.mark.docker
def test_load_images_broken_tar_changes_no_tag(docker_engine, app_versions, tmp_path):
    repo, v1, _, package = app_versions
    (package / "zz-broken-amd64.tar").write_bytes(b"\0" * 10240)
    tars, _ = images.select_image_tars(package, "amd64")
    before = docker_engine.tags()

    with pytest.raises(ImageLoadError, match="zz-broken-amd64.tar"):
        images.load_images(docker_engine, tars, [f"{repo}:1.0"], TX)

    assert docker_engine.tags() == before


@pytest.mark.docker
def test_load_images_rejected_by_engine_restores_tags_moved_before(
    docker_engine, app_versions, image_factory
):
    """The second tar passes the archive checks but its layer is damaged, so
    the engine rejects it after the first tar has moved ``app:1.0``."""
    repo, v1, _, package = app_versions
    image_factory.build(f"{repo}:2.0", "RUN echo data > /data.txt")
    damaged = package / "zz-damaged-amd64.tar"
    image_factory.save(f"{repo}:2.0", damaged)
    image_factory.engine.remove_tag(f"{repo}:2.0")
    _damage_last_layer(damaged)
    tars, _ = images.select_image_tars(package, "amd64")
    before = docker_engine.tags()

    with pytest.raises(ImageLoadError, match="zz-damaged-amd64.tar"):
        images.load_images(docker_engine, tars, [f"{repo}:1.0"], TX)

    assert docker_engine.tags() == before


@pytest.mark.docker
def test_load_images_skips_a_tar_already_loaded(docker_engine, app_versions):
    repo, _, v2, package = app_versions
    tars, _ = images.select_image_tars(package, "amd64")
    images.load_images(docker_engine, tars, [], TX)

    again = images.load_images(docker_engine, tars, [], TX + "b")

    assert again.skipped == ["app-amd64.tar"]
    assert _tags_of(docker_engine, repo)[f"{repo}:1.0"] == v2
    images.remove_tags(docker_engine, again.kept.values())


@pytest.mark.docker
def test_find_kept_maps_kept_tags_back_without_the_journal(docker_engine, app_versions):
    repo, v1, _, package = app_versions
    tars, _ = images.select_image_tars(package, "amd64")
    images.load_images(docker_engine, tars, [f"{repo}:1.0"], TX)

    found = images.find_kept(docker_engine, TX)

    assert found == {f"{repo}:1.0": (f"{repo}:updock-prev-{TX}-1.0", v1)}


def _tags_of(engine, repo: str) -> dict[str, str]:
    return {ref: i for ref, i in engine.tags().items() if ref.startswith(repo + ":")}


def _damage_last_layer(path: Path) -> None:
    """Flip bytes inside the last layer of a saved image, keeping every size."""
    manifest = images.inspect_tar(path)
    with tarfile.open(path) as archive:
        doc = json.load(archive.extractfile("manifest.json"))
        layer = archive.getmember(doc[0]["Layers"][-1])
    assert manifest.ids and layer.size > 1024
    with path.open("r+b") as stream:
        stream.seek(layer.offset_data + 512)
        stream.write(b"\xff" * 256)

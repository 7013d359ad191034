"""Image tars of a package: loaded before any service stops, old tags kept.

A package may carry its images as ``images/*.tar`` (``docker save`` archives).
The existing client names them ``<name>-<arch>.tar`` with ``amd64``/``arm64``
(or ``x86_64``/``aarch64``) and tags the images inside with the same suffix,
which it then drops (``app:1.2-amd64`` is also tagged ``app:1.2``). Tars for
another architecture are skipped; tars without a suffix are loaded anywhere.

Why this order (the existing client loaded images after replacing the files,
counted failures as warnings, and kept nothing to roll back to):

1. every selected tar is opened and checked (a readable archive whose
   ``manifest.json`` names members that are all there) before the engine is
   asked to change anything;
2. the image id behind every tag that loading can move, and every tag the
   project uses, is recorded and kept under ``<repo>:updock-prev-<tx>-<tag>``,
   so the old image cannot be pruned and a rollback can put the tag back;
3. the tars are loaded, streamed from disk by the SDK, and arch suffixes are
   dropped from the loaded tags.

A failure in step 3 puts every moved tag back, removes the tags it created
and the kept tags, and raises ``ImageLoadError``: nothing was stopped and the
engine's tags are as they were. The kept tags are themselves a durable record
in the engine, so a crash between keeping and journaling is still restorable
(``find_kept``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import msgspec

from engine.dockerapi import (
    DockerEngine,
    ImageLoadError,
    normalise_ref,
    split_ref,
)
from engine.errors import RollbackFailedError, ServicesError

logger = logging.getLogger(__name__)

# Suffix spellings of the existing client, by the architecture they mean.
ARCH_ALIASES = {
    "amd64": "amd64",
    "x86_64": "amd64",
    "arm64": "arm64",
    "aarch64": "arm64",
}
KEPT_PREFIX = "updock-prev-"
TAG_MAX = 128  # the engine's limit on a tag's length


class ImageRestoreError(ServicesError):
    """Some image tags could not be put back; ``failures`` maps tag to reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        listed = "; ".join(f"{ref}: {why}" for ref, why in failures.items())
        super().__init__(f"image tags could not be restored: {listed}")
        self.failures = failures


class ImageLoad(msgspec.Struct, frozen=True):
    """What loading a package's images did.

    ``loaded`` are the tags (or ids) now present from the package, arch
    suffixes dropped included; ``previous`` maps each recorded tag to the id
    it named before; ``kept`` maps the same tags to their kept name.
    """

    loaded: list[str] = []
    previous: dict[str, str] = {}
    kept: dict[str, str] = {}
    skipped: list[str] = []


def host_arch(override: str | None = None) -> str:
    """The host's architecture in the suffix vocabulary (``amd64``, ``arm64``)."""
    machine = (override or platform.machine()).lower()
    return ARCH_ALIASES.get(machine, machine)


def arch_suffix(name: str) -> str | None:
    """The architecture a ``-<arch>`` suffix of ``name`` means, if it has one."""
    stem, sep, suffix = name.rpartition("-")
    return ARCH_ALIASES.get(suffix.lower()) if sep and stem else None


def strip_arch_suffix(ref: str) -> str | None:
    """``app:1.2-amd64`` gives ``app:1.2``; None when the tag has no suffix."""
    repository, tag = split_ref(ref)
    if arch_suffix(tag) is None:
        return None
    return f"{repository}:{tag.rpartition('-')[0]}"


def select_image_tars(images_dir: Path, arch: str) -> tuple[list[Path], list[Path]]:
    """The tars of ``images_dir`` to load on ``arch``, and those skipped.

    Args:
        images_dir: a package's ``images`` folder (may be missing).
        arch: the host architecture, as ``host_arch`` spells it.

    Returns:
        (tars to load, tars built for another architecture), sorted by name.
    """
    if not images_dir.is_dir():
        return [], []
    selected, skipped = [], []
    for path in sorted(images_dir.glob("*.tar")):
        built_for = arch_suffix(path.stem)
        (skipped if built_for not in (None, arch) else selected).append(path)
    return selected, skipped


def kept_ref(ref: str, tx: str) -> str:
    """The tag that keeps ``ref``'s previous image during transaction ``tx``."""
    repository, tag = split_ref(ref)
    kept = f"{KEPT_PREFIX}{_tag_safe(tx)}-{tag}"
    if len(kept) > TAG_MAX:
        # Too long to carry the tag: only the journal can map it back now.
        digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
        kept = f"{KEPT_PREFIX}{_tag_safe(tx)[:80]}--{digest}"
    return f"{repository}:{kept}"


def _tag_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


class TarImages(msgspec.Struct, frozen=True):
    """The images one tar holds: their tags and config ids (``sha256:...``)."""

    path: Path
    tags: list[str]
    ids: list[str]


def inspect_tar(path: Path) -> TarImages:
    """Check an image tar without loading it; return what it holds.

    Raises:
        ImageLoadError: not a readable archive, no ``manifest.json``, or a
            member it names is missing or cut short.
    """
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {m.name.removeprefix("./"): m for m in archive}
            entry = members.get("manifest.json")
            if entry is None:
                raise ImageLoadError(
                    path, "no manifest.json (not a docker save archive)"
                )
            manifest = json.load(archive.extractfile(entry))
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise ImageLoadError(path, f"unreadable archive: {exc}") from exc
    if not isinstance(manifest, list) or not manifest:
        raise ImageLoadError(path, "manifest.json lists no image")

    size = path.stat().st_size
    tags, ids = [], []
    for image in manifest:
        for name in [image.get("Config"), *(image.get("Layers") or [])]:
            member = members.get(name or "")
            if member is None:
                raise ImageLoadError(path, f"member {name!r} is missing")
            if member.isfile() and member.offset_data + member.size > size:
                raise ImageLoadError(path, f"member {name!r} is cut short")
        tags += [normalise_ref(t) for t in image.get("RepoTags") or ()]
        ids.append("sha256:" + Path(image["Config"]).name.removesuffix(".json"))
    return TarImages(path=path, tags=tags, ids=ids)


def load_images(
    engine: DockerEngine, tars: Iterable[Path], project_refs: Iterable[str], tx: str
) -> ImageLoad:
    """Check, keep and load (see the module doc for the order and why).

    Args:
        engine: the Docker engine.
        tars: image tars to load (``select_image_tars``).
        project_refs: the tags the deployed compose project uses.
        tx: the transaction id, part of the kept tag names.

    Returns:
        What was loaded, recorded and kept.

    Raises:
        ImageLoadError: a tar is broken or the engine rejects it; every tag
            is as it was before the call.
    """
    contents = [inspect_tar(path) for path in tars]
    before = engine.tags()
    moved = {t for c in contents for t in c.tags}
    moved |= {s for t in moved if (s := strip_arch_suffix(t))}
    recorded = moved | {normalise_ref(r) for r in project_refs}
    previous = {ref: before[ref] for ref in sorted(recorded) if ref in before}
    kept = {ref: kept_ref(ref, tx) for ref in previous}
    for ref, image_id in previous.items():
        engine.tag(image_id, kept[ref])

    loaded: list[str] = []
    skipped: list[str] = []
    try:
        for content in contents:
            if _already_present(content, before):
                skipped.append(content.path.name)
                loaded += content.tags
                continue
            logger.info("loading images from %s", content.path.name)
            loaded += engine.load(content.path)
        loaded += _drop_arch_suffixes(engine, loaded)
    except ServicesError as exc:
        created = created_tags(loaded, previous)
        try:
            restore_images(engine, previous)
            remove_tags(engine, [*created, *kept.values()])
        except ServicesError as undo_exc:
            raise RollbackFailedError("loading images failed", exc, undo_exc) from exc
        raise
    return ImageLoad(
        loaded=sorted(set(loaded)), previous=previous, kept=kept, skipped=skipped
    )


def is_tag(name: str) -> bool:
    """Whether a loaded name is a tag, not the id of an untagged image."""
    return not name.startswith("sha256:")


def created_tags(loaded: Iterable[str], previous: dict[str, str]) -> list[str]:
    """The tags among ``loaded`` that did not exist before the load."""
    return [ref for ref in loaded if is_tag(ref) and ref not in previous]


def _already_present(content: TarImages, tags: dict[str, str]) -> bool:
    """Every tag of the tar already names the image id the tar holds."""
    if len(content.ids) != 1 or not content.tags:
        return False
    wanted = content.ids[0]
    refs = content.tags + [s for t in content.tags if (s := strip_arch_suffix(t))]
    return all(tags.get(ref) == wanted for ref in refs)


def _drop_arch_suffixes(engine: DockerEngine, loaded: list[str]) -> list[str]:
    added = []
    for ref in loaded:
        plain = strip_arch_suffix(ref) if is_tag(ref) else None
        if plain is None or plain in loaded:
            continue
        image_id = engine.image_id(ref)
        if image_id:
            engine.tag(image_id, plain)
            added.append(plain)
    return added


def restore_images(engine: DockerEngine, previous: dict[str, str]) -> list[str]:
    """Point every recorded tag back at its previous image.

    Tags the load created are left alone here: a stopped container of the
    new version may still use their image, and compose v1 needs that image
    to recreate the container (see ``remove_tags``, once the old version
    runs again).

    Args:
        engine: the Docker engine.
        previous: tag to image id, as recorded before loading.

    Returns:
        The tags that were moved back.

    Raises:
        ImageRestoreError: some tags could not be restored (all were tried).
    """
    current = engine.tags()
    failures: dict[str, str] = {}
    moved = []
    for ref, image_id in previous.items():
        if current.get(ref) == image_id:
            continue
        try:
            engine.tag(image_id, ref)
            moved.append(ref)
        except ServicesError as exc:
            failures[ref] = str(exc)
    if failures:
        raise ImageRestoreError(failures)
    if moved:
        logger.info("image tags restored: %s", ", ".join(moved))
    return moved


def find_kept(engine: DockerEngine, tx: str) -> dict[str, tuple[str, str]]:
    """Kept tags of ``tx`` found in the engine: tag -> (kept tag, image id).

    Used when the journal has no record of the load (a crash between keeping
    and journaling). A kept tag too long to carry its original (``--<digest>``;
    a real tag cannot start with ``-``) is skipped with a warning.
    """
    prefix = f"{KEPT_PREFIX}{_tag_safe(tx)}-"
    found = {}
    for ref, image_id in engine.tags().items():
        repository, tag = split_ref(ref)
        original = tag.removeprefix(prefix)
        if original == tag:
            continue
        if original.startswith("-"):
            logger.warning("kept tag %s cannot be mapped back without the journal", ref)
            continue
        found[f"{repository}:{original}"] = (ref, image_id)
    return found


def remove_tags(engine: DockerEngine, refs: Iterable[str]) -> list[str]:
    """Remove tags (kept tags after a commit, created tags after a rollback).

    An image nothing else names or uses goes with its last tag. A tag whose
    image a container still uses, and which is that image's last tag, stays.

    Returns:
        The tags that stayed.
    """
    return [ref for ref in refs if not engine.remove_tag(ref)]

"""``updock release build`` and ``updock release keygen``: the publisher's side."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console

from cli import exitcodes
from cli.apps import release_app
from engine.errors import BadInputError
from engine.release import build_release
from engine.signing import generate_keypair, load_private_key

_out = Console(highlight=False, soft_wrap=True)


class BadExpiryError(BadInputError):
    def __init__(self, text: str) -> None:
        super().__init__(f"--expires {text!r} is not an RFC 3339 time with a zone")
        self.text = text


@release_app.command(name="build")
def build(
    *,
    from_: Path,
    to: Path,
    version: str,
    out: Path,
    from_version: str | None = None,
    sign_key: Path | None = None,
    base_url: str | None = None,
    notes: str = "",
    expires: str | None = None,
) -> int:
    """Compare two project folders and write a patch package, a full package
    and a manifest (enhanced shape) into OUT.

    Parameters
    ----------
    from_
        The old project folder (the tree the patch applies to).
    to
        The new project folder.
    version
        The new release's version, e.g. 1.4.2.1.
    out
        Folder for the packages and manifest.json (created when missing).
    from_version
        The only installed version the patch applies to. Without it the patch
        applies to any lower build of the same base version.
    sign_key
        An ed25519 private key (from ``release keygen``): signs both packages
        and the manifest.
    base_url
        Where the files will be published; without it the manifest names the
        packages relative to itself.
    notes
        Release notes for the manifest.
    expires
        RFC 3339 time after which deployments refuse this manifest.
    """
    key = load_private_key(sign_key) if sign_key else None
    built = build_release(
        from_,
        to,
        version,
        from_version,
        out,
        sign_key=key,
        base_url=base_url,
        release_notes=notes,
        expires=_expiry(expires),
    )
    diff = built.diff
    _out.print(f"manifest  {built.manifest_path}")
    _out.print(f"full      {built.full_path}")
    _out.print(
        f"patch     {built.patch_path} (replace {len(diff.replace_files)} files, "
        f"{len(diff.replace_dirs)} directories; delete {len(diff.delete_files)} "
        f"files, {len(diff.delete_dirs)} directories)"
    )
    _out.print("signed" if key else "unsigned")
    return exitcodes.OK


@release_app.command(name="keygen")
def keygen(*, out: Path, name: str = "updock-signing") -> int:
    """Make an ed25519 key pair for signing releases.

    Parameters
    ----------
    out
        Folder for NAME.key (private, mode 0600) and NAME.pub (one line of
        base64: put it in config.toml as [signing] public_key).
    name
        File name stem of the two keys.
    """
    private_path, public_path = generate_keypair(out, name)
    _out.print(f"private key {private_path} (keep it secret)")
    _out.print(f"public key  {public_path}: {public_path.read_text().strip()}")
    return exitcodes.OK


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadExpiryError(text) from exc
    if moment.tzinfo is None:
        raise BadExpiryError(text)
    return moment

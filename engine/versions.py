"""Release versions, host architecture, and the choice between patch and full.

The version grammar is the existing client's: an optional ``v`` or ``V``, then
three or four dot-separated decimal parts (``major.minor.patch[.build]``), each
an unsigned 32-bit number. Nothing else: no whitespace, no pre-release suffix,
no fifth part. A three-part version has build 0 and every version prints with
four parts (``1.2.3`` prints as ``1.2.3.0``). The *base* of a version is its
first three parts; versions order as 4-tuples.

The decision rules (``decide``), in order:

1. ``--strategy full`` installs the full package of the manifest's version,
   even when it equals the installed one (a reinstall).
2. A missing project folder needs the full package (nothing to patch).
3. Equal versions: nothing to do.
4. An older manifest version is refused unless downgrades are allowed; an
   allowed downgrade always installs the full package.
5. Same base, higher build: the patch, when the manifest has one for this
   architecture and it applies to the installed version; otherwise the full
   package. A patch applies when its ``from_version`` (updock's extension)
   equals the installed version or, without ``from_version``, when the
   installed version has the same base (the existing client's only rule, which
   makes every patch cumulative from ``x.y.z.0``).
6. A higher base: the full package, unless the manifest's patch names the
   installed version as its ``from_version`` (updock's extension: such a
   patch was built against exactly the installed tree).

``--strategy patch`` refuses instead of falling back to the full package.
"""

from __future__ import annotations

import logging
import platform
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from engine.errors import BadInputError, RefusedError

if TYPE_CHECKING:
    from engine.manifest import Manifest, Package

logger = logging.getLogger(__name__)

_GRAMMAR = re.compile(r"[vV]?([0-9]+)\.([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")
_U32_MAX = 2**32 - 1

ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8": "aarch64",
}
ARCHES = ("x86_64", "aarch64")

Strategy = Literal["auto", "full", "patch"]
Action = Literal["none", "full", "patch"]


class BadVersionError(BadInputError):
    """A version string does not follow the grammar."""

    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"version {text!r} is invalid: {problem}")
        self.text = text
        self.problem = problem


class UnsupportedArchError(BadInputError):
    """The host (or the override) names an architecture updock has no
    packages for."""

    hint = "set [updates] arch in config.toml to x86_64 or aarch64"

    def __init__(self, name: str) -> None:
        super().__init__(f"architecture {name!r} is not supported (x86_64, aarch64)")
        self.name = name


class DowngradeRefusedError(RefusedError):
    """The manifest offers an older version than the installed one."""

    hint = "pass --allow-downgrade to install the older version on purpose"

    def __init__(self, current: Version, offered: Version) -> None:
        super().__init__(
            f"the manifest offers {offered}, older than the installed {current}"
        )
        self.current = current
        self.offered = offered


class PatchNotApplicableError(BadInputError):
    """``--strategy patch`` was asked and no patch fits the installed version."""

    hint = "use --strategy auto or full to install the full package"

    def __init__(self, current: Version, target: Version, reason: str) -> None:
        super().__init__(f"no patch from {current} to {target}: {reason}")
        self.current = current
        self.target = target
        self.reason = reason


class UnknownVersionError(BadInputError):
    """A release is deployed but no version is recorded for it: a patch
    cannot be chosen, and a full package would be installed blind."""

    hint = (
        "write the installed version into config.toml ([versions] "
        'docker_service = "X.Y.Z"), or pass --strategy full to replace the '
        "project folder (user data kept) with the full package"
    )

    def __init__(self, target: Version) -> None:
        super().__init__(
            "the installed version is unknown (neither config.toml nor the journal "
            f"records one) and the project folder holds a release; not upgrading "
            f"to {target} blind"
        )
        self.target = target


class NoPackageError(BadInputError):
    """The manifest has no full package for this architecture."""

    def __init__(self, version: Version, arch: str) -> None:
        super().__init__(f"the manifest for {version} has no full package for {arch}")
        self.version = version
        self.arch = arch


@dataclass(frozen=True, order=True)
class Version:
    """A release version; orders as the tuple (major, minor, patch, build)."""

    major: int
    minor: int
    patch: int
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text`` with the grammar in this module's docstring.

        Raises:
            BadVersionError: the text does not follow the grammar.
        """
        if not isinstance(text, str):
            raise BadVersionError(repr(text), "not a string")
        match = _GRAMMAR.fullmatch(text)
        if match is None:
            raise BadVersionError(text, "expected [v]MAJOR.MINOR.PATCH[.BUILD]")
        parts = [int(p) if p is not None else 0 for p in match.groups()]
        if any(p > _U32_MAX for p in parts):
            raise BadVersionError(text, "a part exceeds 4294967295")
        return cls(*parts)

    @property
    def base(self) -> Version:
        """The same version with build 0."""
        return Version(self.major, self.minor, self.patch, 0)

    def short(self) -> str:
        """Three parts when the build is 0, four otherwise."""
        if self.build == 0:
            return f"{self.major}.{self.minor}.{self.patch}"
        return str(self)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}.{self.build}"


def detect_arch(override: str | None = None) -> str:
    """Name the package architecture of this host: ``x86_64`` or ``aarch64``.

    Args:
        override: a configured name (aliases ``amd64``, ``x64``, ``arm64``,
            ``armv8`` accepted); when None the host's ``platform.machine()``
            is used, not the interpreter's build.

    Raises:
        UnsupportedArchError: the name is none of the known ones.
    """
    name = override if override else platform.machine()
    arch = ARCH_ALIASES.get(name.strip().lower())
    if arch is None:
        raise UnsupportedArchError(name)
    return arch


@dataclass(frozen=True)
class Decision:
    """What an upgrade will install, and why.

    Attributes:
        action: ``none``, ``full`` or ``patch``.
        current: the installed version (None: nothing recorded).
        target: the manifest's version.
        package: the package to fetch; None when the action is ``none``.
        reason: one line for the operator.
        downgrade: the target is older than the installed version.
    """

    action: Action
    current: Version | None
    target: Version
    package: Package | None
    reason: str
    downgrade: bool = False


def patch_applies(current: Version, target: Version, package: Package) -> str | None:
    """Tell why ``package`` (a patch to ``target``) cannot patch ``current``.

    Returns:
        None when the patch applies, otherwise the reason it does not.
    """
    if package.from_version is not None:
        wanted = Version.parse(package.from_version)
        if wanted != current:
            return f"the patch applies to {wanted} only"
        return None
    if current.base != target.base:
        return f"the patch is for base {target.base.short()}"
    if current.build >= target.build:
        return "the installed build is not older than the patch"
    return None


def decide(
    current: Version | None,
    manifest: Manifest,
    arch: str,
    *,
    strategy: Strategy = "auto",
    allow_downgrade: bool = False,
    tree_present: bool = True,
) -> Decision:
    """Choose between nothing, the patch and the full package.

    Args:
        current: the installed version; None when none is recorded.
        manifest: the verified manifest.
        arch: ``x86_64`` or ``aarch64`` (see ``detect_arch``).
        strategy: ``auto``, or ``full``/``patch`` to force one.
        allow_downgrade: install an older manifest version on purpose.
        tree_present: the project folder and its compose file exist.

    Raises:
        DowngradeRefusedError: the manifest is older and downgrades are off.
        PatchNotApplicableError: ``strategy="patch"`` and no patch fits.
        UnknownVersionError: a release is deployed, its version is unknown,
            and ``strategy`` is ``auto``.
        NoPackageError: a full package is needed and there is none.
    """
    target = Version.parse(manifest.version)
    if strategy == "patch":
        return _forced_patch(current, target, manifest, arch, tree_present)
    if strategy == "full":
        if current is not None and target < current and not allow_downgrade:
            raise DowngradeRefusedError(current, target)
        return _full(manifest, arch, current, target, "full package requested")
    if not tree_present:
        return _full(manifest, arch, current, target, "no installed tree to patch")
    if current is None:
        raise UnknownVersionError(target)

    if target == current:
        return Decision("none", current, target, None, f"{current} is installed")
    if target < current:
        if not allow_downgrade:
            raise DowngradeRefusedError(current, target)
        return _full(manifest, arch, current, target, "downgrade allowed", True)
    patch = manifest.patch_for(arch)
    if target.base != current.base and not _names_installed(patch, current):
        return _full(manifest, arch, current, target, "a new base version")
    if patch is None:
        return _full(manifest, arch, current, target, f"no patch for {arch}")
    why_not = patch_applies(current, target, patch)
    if why_not is not None:
        return _full(manifest, arch, current, target, why_not)
    return Decision("patch", current, target, patch, f"patch {current} -> {target}")


def _names_installed(patch: Package | None, current: Version) -> bool:
    """Whether ``patch`` declares the installed version as its base: such a
    patch was built for exactly this tree, whatever the version numbers."""
    if patch is None or patch.from_version is None:
        return False
    return Version.parse(patch.from_version) == current


def _forced_patch(
    current: Version | None,
    target: Version,
    manifest: Manifest,
    arch: str,
    tree_present: bool,
) -> Decision:
    if current is None or not tree_present:
        raise PatchNotApplicableError(
            current or Version(0, 0, 0), target, "no installed tree to patch"
        )
    patch = manifest.patch_for(arch)
    if patch is None:
        raise PatchNotApplicableError(current, target, f"no patch for {arch}")
    why_not = patch_applies(current, target, patch)
    if why_not is not None:
        raise PatchNotApplicableError(current, target, why_not)
    return Decision("patch", current, target, patch, "patch requested")


def _full(
    manifest: Manifest,
    arch: str,
    current: Version | None,
    target: Version,
    reason: str,
    downgrade: bool = False,
) -> Decision:
    package = manifest.full_for(arch)
    if package is None:
        raise NoPackageError(target, arch)
    logger.debug("full package for %s: %s", target, reason)
    return Decision("full", current, target, package, reason, downgrade)

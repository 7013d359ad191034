"""The upgrade pipeline: one recoverable transaction from manifest to commit.

``apply_upgrade`` runs these steps, each one journaled:

1. read the manifest (URL or file), check its signature when the deployment
   trusts a key, its expiry, and that it is not older than the newest one
   ever accepted (rollback attack);
2. decide the strategy (nothing, patch or full) and describe the plan;
3. ask for confirmation (the caller's ``confirm``);
4. check that the Docker engine answers (unless ``--no-services``);
5. ``TxBegun``; download and verify the package (``DownloadVerified``);
6. stage and check it (``PackageStaged``); plan the file operations and
   check free space; ``ManifestAccepted`` raises the high-water mark;
7. the pre-upgrade backup (``BackupCreated``);
8. load the package's images, before any service stops (``ImagesLoaded``);
9. stop the services; prepare and apply the file transaction;
10. start the services and pass the health gate (``HealthVerdict``);
11. ``CommitDecided``, ``config.toml`` records the version, ``Committed``;
    clean up.

Nothing deployed changes before step 9, when every byte needed has been
downloaded, verified and staged. A failure before step 9 aborts the
transaction and raises the original error. A failure from step 9 on rolls
the files back, restores the image tags, starts the old services, gates them
too, and raises ``UpgradeRolledBackError`` carrying both verdicts. A crash
anywhere is left to recovery, which the next command runs first.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine import patchplan, signing
from engine.backup import create_backup
from engine.config import DeploymentConfig, record_version
from engine.download import DownloadPolicy, Fetched, fetch_package
from engine.errors import (
    BadInputError,
    RefusedError,
    RollbackFailedError,
    RolledBackError,
    ServicesError,
)
from engine.extract import (
    PatchContentError,
    check_patch_package,
    op_relpath,
    stage_package,
)
from engine.health import GateResult
from engine.manifest import (
    Manifest,
    check_freshness,
    load_manifest,
    verify_manifest_signature,
    verify_package_signature,
)
from engine.ops import Op
from engine.progress import Progress, ProgressEvent
from engine.services import Services
from engine.space import SpaceNeed, check_free_space
from engine.transaction import Transaction
from engine.versions import Decision, Strategy, Version, decide, detect_arch
from journal import BlobStore, Journal, State
from journal.crashpoints import crashpoint
from journal.records import DownloadVerified, ManifestAccepted, PackageStaged

logger = logging.getLogger(__name__)


class NoManifestError(RefusedError):
    def __init__(self) -> None:
        super().__init__("no manifest to read")
        self.hint = "pass --manifest URL_OR_FILE or set [updates] manifest_url"


class FullPackageLayoutError(BadInputError):
    def __init__(self, compose_name: str, sample: list[str]) -> None:
        found = ", ".join(sample) if sample else "nothing"
        super().__init__(
            f"the full package has no {compose_name} at its top (it holds: {found})"
        )
        self.hint = (
            "a full package must hold the whole project folder, with or without "
            "a top-level docker/ folder; fix the package; nothing was changed"
        )


class NotConfirmedError(RefusedError):
    def __init__(self, why: str) -> None:
        super().__init__(f"upgrade not confirmed: {why}")
        self.hint = "run it on a terminal to answer the question, or pass --yes"


class UpgradeRolledBackError(RolledBackError):
    """The upgrade failed after the first change and was rolled back."""

    def __init__(self, tx: str, cause: BaseException, verdicts: list[str]) -> None:
        text = f"upgrade {tx} failed and was rolled back: {cause}"
        if verdicts:
            text += "; " + "; ".join(verdicts)
        super().__init__(text, cause)
        self.tx = tx
        self.verdicts = verdicts


class UpgradeInterruptedError(KeyboardInterrupt):
    """Ctrl-C during an upgrade, saying what became of it."""

    def __init__(self, tx: str, outcome: str, hint: str | None = None) -> None:
        super().__init__(f"interrupted: upgrade {tx} {outcome}")
        self.tx = tx
        self.hint = hint


_AGAIN = "run 'updock upgrade apply' again when ready"


class HealthGateError(Exception):
    """Internal: the new release did not pass the health gate."""

    def __init__(self, verdict: str) -> None:
        super().__init__(verdict)


@dataclass(frozen=True)
class UpgradeOptions:
    """What the operator asked for on the command line."""

    manifest: str | None = None
    strategy: Strategy = "auto"
    dry_run: bool = False
    force: bool = False
    allow_downgrade: bool = False
    no_services: bool = False
    arch: str | None = None
    timeout: float = 30.0  # seconds a silent server is waited for, per try


@dataclass
class UpgradePlan:
    """What an upgrade will do; shown before the operator confirms."""

    current: str | None
    target: str
    action: str
    reason: str
    arch: str
    manifest_source: str
    package_url: str | None = None
    download_size: int | None = None
    changes: list[str] = field(default_factory=list)
    space_needed: int | None = None
    signed: bool = False

    def summary(self) -> dict:
        return {
            "current": self.current,
            "target": self.target,
            "action": self.action,
            "reason": self.reason,
            "arch": self.arch,
            "manifest": self.manifest_source,
            "package": self.package_url,
            "download_size": self.download_size,
            "space_needed": self.space_needed,
            "changes": self.changes,
            "signed": self.signed,
        }


@dataclass
class UpgradeResult:
    """How an upgrade ended."""

    plan: UpgradePlan
    outcome: str  # "up-to-date", "dry-run", "committed"
    tx: str | None = None
    backup_id: str | None = None
    seconds: float = 0.0


@dataclass
class _Checked:
    manifest: Manifest
    decision: Decision
    plan: UpgradePlan


def installed_version(config: DeploymentConfig, state: State) -> str | None:
    """The deployed version: the journal's once updock has committed one,
    ``config.toml``'s before that."""
    return state.deployed_version or config.version


def check_upgrade(
    config: DeploymentConfig, state: State, options: UpgradeOptions
) -> UpgradePlan:
    """Read and verify the manifest and decide; changes nothing.

    Args:
        config: the deployment.
        state: its journal's state (empty for a deployment updock never
            changed).
        options: what the operator asked for.

    Raises:
        NoManifestError, ManifestError, IntegrityError, DownloadError,
        RefusedError: see ``engine.manifest`` and ``engine.versions``.
    """
    return _check(config, state, options).plan


def _check(config: DeploymentConfig, state: State, options: UpgradeOptions) -> _Checked:
    source = options.manifest or config.manifest_url
    if not source:
        raise NoManifestError()
    manifest = load_manifest(source, timeout=options.timeout)
    key = signing.load_public_key(config.public_key) if config.public_key else None
    if key is not None:
        verify_manifest_signature(manifest, key)
    check_freshness(
        manifest, state.manifest_high_water, allow_older=options.allow_downgrade
    )

    arch = detect_arch(options.arch or config.arch)
    current_text = installed_version(config, state)
    current = Version.parse(current_text) if current_text else None
    tree_present = config.tree.is_dir() and _compose_present(config)
    decision = decide(
        current,
        manifest,
        arch,
        strategy=options.strategy,
        allow_downgrade=options.allow_downgrade,
        tree_present=tree_present,
    )
    return _Checked(
        manifest, decision, _describe(config, manifest, decision, arch, key)
    )


def _compose_present(config: DeploymentConfig) -> bool:
    compose = config.compose_file
    return compose is None or (config.root / compose).exists()


def _describe(config, manifest, decision, arch, key) -> UpgradePlan:
    package = decision.package
    plan = UpgradePlan(
        current=str(decision.current) if decision.current else None,
        target=str(decision.target),
        action=decision.action,
        reason=decision.reason,
        arch=arch,
        manifest_source=manifest.source,
        package_url=package.url if package else None,
        download_size=package.size if package else None,
        signed=key is not None,
    )
    if package is None:
        return plan
    if decision.action == "full":
        kept = ", ".join(config.user_data)
        plan.changes.append(f"replace the whole {config.project_dir}/ except {kept}")
    elif package.operations is not None:
        kept = frozenset(config.user_data)
        plan.changes.extend(_describe_operations(package.operations, kept))
    if package.size:
        # The download, its staged copy, and the pre-images held in the store
        # (hard links: no data) plus a margin for the backup archive.
        plan.space_needed = package.size * 3
    return plan


def _describe_operations(operations, user_data: frozenset[str]) -> Iterator[str]:
    """One line per listed path; paths in user-data folders are left out, as
    the plan skips them (a release built from a tree holding sample data
    lists that data for deletion)."""
    for side, verb in (("replace", "replace"), ("delete", "delete")):
        files = getattr(operations, side)
        if files is None:
            continue
        for kind, paths in (("folder", files.directories), ("file", files.files)):
            for path in paths:
                if _top_name(path) not in user_data:
                    yield f"{verb} {kind} {path}"


def _top_name(path: str) -> str:
    try:
        return op_relpath(path).split("/")[0]
    except PatchContentError:
        return ""  # refused when the package is checked; shown as listed


def apply_upgrade(
    config: DeploymentConfig,
    journal: Journal,
    store: BlobStore,
    options: UpgradeOptions,
    *,
    confirm: Callable[[UpgradePlan], bool],
    progress: Progress,
) -> UpgradeResult:
    """Run the whole upgrade (see the module docstring).

    Args:
        config: the deployment.
        journal: its journal, open for writing, lock held, recovered.
        store: its blob store.
        options: what the operator asked for.
        confirm: asked once with the plan; False stops before any change.
        progress: receives the progress events.

    Raises:
        NotConfirmedError: ``confirm`` said no.
        UpgradeRolledBackError: failed after the first change; rolled back.
        RollbackFailedError: failed, and so did the rollback.
        EngineError: any other failure, before any change.
    """
    if options.dry_run:
        return dry_run_upgrade(config, journal.state, options, progress=progress)
    started = time.monotonic()
    remove_stale_staging(config)
    checked = _read_plan(config, journal.state, options, progress)
    plan = checked.plan
    if plan.action == "none":
        return UpgradeResult(plan, "up-to-date")
    if not confirm(plan):
        raise NotConfirmedError("the operator said no")

    services = Services(config.root, config, journal, no_services=options.no_services)
    services.preflight()
    run = _Run(config, journal, store, options, checked, services, progress)
    result = run.execute()
    result.seconds = time.monotonic() - started
    return result


def dry_run_upgrade(
    config: DeploymentConfig,
    state: State,
    options: UpgradeOptions,
    *,
    progress: Progress,
) -> UpgradeResult:
    """Everything ``apply_upgrade`` does up to the plan, and stop.

    The manifest is read and verified, the package downloaded, verified and
    staged in a scratch folder outside the deployment, the changes planned
    and the free space checked. Nothing under the deployment root is
    created or changed, so no lock is needed.

    Args:
        config: the deployment.
        state: its journal's state (empty for a deployment updock never
            changed).
        options: what the operator asked for.
        progress: receives the progress events.

    Raises:
        EngineError: whatever the checks, the download or the staging raise.
    """
    started = time.monotonic()
    checked = _read_plan(config, state, options, progress)
    if checked.plan.action == "none":
        return UpgradeResult(checked.plan, "up-to-date")
    result = _dry_run(config, checked, options, progress)
    result.seconds = time.monotonic() - started
    return result


def _read_plan(config, state: State, options, progress: Progress) -> _Checked:
    with _step(progress, "manifest"):
        checked = _check(config, state, options)
    progress(ProgressEvent("plan", "plan", data=checked.plan.summary()))
    return checked


def remove_stale_staging(config: DeploymentConfig) -> None:
    """Delete what killed runs left in the staging folder.

    Only called with the writer lock held and after recovery: no transaction
    is running, and recovery works from the blob store, never from staging.
    """
    staging = config.state_dir / "staging"
    if not staging.is_dir():
        return
    for leftover in staging.iterdir():
        logger.warning("removing %s, left staged by an interrupted run", leftover)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _dry_run(config, checked: _Checked, options, progress) -> UpgradeResult:
    """Download, verify and stage into a scratch folder; change nothing."""
    with tempfile.TemporaryDirectory(prefix="updock-dry-run-") as scratch:
        scratch_dir = Path(scratch)
        fetched = _download(config, checked, options, scratch_dir / "cache", progress)
        with _step(progress, "stage"):
            staged = stage_package(fetched.path, scratch_dir / "staging", sync=False)
            _plan_changes(config, checked, staged)
        checked.plan.space_needed = _space_needed(fetched.size, staged.total_bytes)
        _check_space_for(config, checked.plan.space_needed)
    return UpgradeResult(checked.plan, "dry-run")


def _space_needed(package_size: int, staged_bytes: int) -> int:
    return package_size + staged_bytes + 64 * 1024**2


def _check_space_for(config: DeploymentConfig, needed: int) -> None:
    check_free_space([SpaceNeed(config.root, needed)])


def _download(config, checked: _Checked, options, cache_dir: Path, progress) -> Fetched:
    package = checked.decision.package
    key = signing.load_public_key(config.public_key) if config.public_key else None
    with _step(progress, "download"):
        if package.size:
            check_free_space([SpaceNeed(cache_dir, package.size)])
        fetched = fetch_package(
            package.url,
            cache_dir=cache_dir,
            version=checked.plan.target,
            kind=package.kind,
            arch=package.arch,
            sha256=package.sha256,
            size=package.size,
            require_hash=key is not None,
            force=options.force,
            progress=progress,
            policy=DownloadPolicy(
                read_timeout=options.timeout,
                connect_timeout=min(options.timeout, DownloadPolicy.connect_timeout),
            ),
        )
        if key is not None:
            verify_package_signature(package, fetched.sha256, key)
    return fetched


def _plan_changes(config, checked: _Checked, staged) -> patchplan.Plan:
    package = checked.decision.package
    if checked.decision.action == "full":
        _require_compose_file(config, staged)
        return patchplan.plan_full(staged, config.user_data)
    check_patch_package(staged.root, package.operations, config.tree)
    return patchplan.plan_patch(staged, package.operations, config.user_data)


def _require_compose_file(config: DeploymentConfig, staged) -> None:
    """A full package replaces the whole project folder: one without the
    compose file (empty, or laid out under another top folder) would leave
    a deployment that cannot start, so it is refused before any change."""
    compose = config.compose_file
    name = compose.name if compose is not None else "docker-compose.yml"
    if name not in staged.files:
        raise FullPackageLayoutError(name, sorted(staged.files)[:5])


def to_ops(plan: patchplan.Plan, staging_root: Path) -> list[Op]:
    """The transaction operations of a planned package."""
    ops: list[Op] = []
    for change in plan.changes:
        source = staging_root / change.source if change.source is not None else None
        if change.kind == "put_file":
            ops.append(
                Op.put_file(change.path, source=source, mode=change.mode or 0o644)
            )
        elif change.kind == "replace_dir":
            ops.append(Op.replace_dir(change.path, source=source))
        elif change.kind == "delete_file":
            ops.append(Op.delete_file(change.path))
        elif change.kind == "delete_tree":
            ops.append(Op.delete_tree(change.path))
        elif change.kind == "swap_tree":
            ops.append(Op.swap_tree(staging_root, preserve=change.preserve))
    return ops


@contextmanager
def _step(progress: Progress, step: str, detail: str = "") -> Iterator[None]:
    started = time.monotonic()
    progress(ProgressEvent("step_started", step, detail))
    try:
        yield
    except BaseException as exc:
        detail = str(exc) or type(exc).__name__
        progress(
            ProgressEvent("step_failed", step, detail, seconds=time.monotonic() - started)
        )
        raise
    progress(ProgressEvent("step_finished", step, seconds=time.monotonic() - started))


class _Run:
    """One upgrade from ``TxBegun`` to its end; see the module docstring."""

    def __init__(self, config, journal, store, options, checked, services, progress):
        self.config: DeploymentConfig = config
        self.journal: Journal = journal
        self.store: BlobStore = store
        self.options: UpgradeOptions = options
        self.checked: _Checked = checked
        self.services: Services = services
        self.progress: Progress = progress
        self.staging = config.state_dir / "staging"
        self.tx: Transaction | None = None
        self.changed = False
        self.stopped = False
        self.backup_id: str | None = None

    def execute(self) -> UpgradeResult:
        plan = self.checked.plan
        self.tx = Transaction.begin(
            self.journal,
            self.store,
            self.config.tree,
            kind="upgrade",
            from_version=plan.current,
            to_version=plan.target,
            strategy=plan.action,
        )
        try:
            self._prepare()
            self._change()
        except BaseException as exc:
            self._fail(exc)  # always raises
        self._commit()
        return UpgradeResult(plan, "committed", self.tx.id, self.backup_id)

    # -- before any change ----------------------------------------------------

    def _prepare(self) -> None:
        tx = self.tx
        fetched = _download(
            self.config, self.checked, self.options, self._cache_dir(), self.progress
        )
        self.journal.append(
            DownloadVerified(
                at=time.time(),
                tx=tx.id,
                url=self.checked.decision.package.url,
                sha256=fetched.sha256,
                size=fetched.size,
                seconds=fetched.seconds,
                resumed_from=fetched.resumed_from,
            )
        )
        crashpoint("upgrade.downloaded")

        with _step(self.progress, "stage"):
            staged, plan = self._stage(fetched)
            tx.plan(to_ops(plan, staged.root))
            for warning in plan.warnings:
                logger.warning("%s", warning)
            for skipped in plan.skipped:
                logger.warning("skipped %s: %s", skipped.path, skipped.reason)
            tx.check_space()
        self.journal.append(
            ManifestAccepted(
                at=time.time(),
                tx=tx.id,
                version=self.checked.plan.target,
                url=self.checked.manifest.source,
                signed=self.checked.plan.signed,
            )
        )

        with _step(self.progress, "backup"):
            result, event = create_backup(
                self.config,
                "pre-upgrade",
                self.checked.plan.current or "0.0.0.0",
                tx.id,
            )
            self.journal.append(event)
            self.backup_id = result.backup_id
        crashpoint("upgrade.backed_up")

        with _step(self.progress, "images"):
            self.services.load_images(tx.id, self.staged_root)

    def _cache_dir(self) -> Path:
        return self.config.root / self.config.download_dir

    def _stage(self, fetched: Fetched):
        started = time.monotonic()
        self.staging.mkdir(parents=True, exist_ok=True)
        target = self.staging / self.tx.id
        shutil.rmtree(target, ignore_errors=True)
        staged = stage_package(fetched.path, target)
        self.staged_root = staged.root
        plan = _plan_changes(self.config, self.checked, staged)
        self.journal.append(
            PackageStaged(
                at=time.time(),
                tx=self.tx.id,
                path=str(target),
                files=len(staged.files),
                size=staged.total_bytes,
                seconds=time.monotonic() - started,
            )
        )
        crashpoint("upgrade.staged")
        return staged, plan

    # -- the change -----------------------------------------------------------

    def _change(self) -> None:
        tx = self.tx
        with _step(self.progress, "stop"):
            self.stopped = True
            self.services.stop(tx.id)
        with _step(self.progress, "apply"):
            self.changed = True
            tx.prepare(progress=self.progress)
            tx.apply(progress=self.progress)
        with _step(self.progress, "start"):
            self.services.start(tx.id)
        with _step(self.progress, "health"):
            gate = self.services.gate(tx.id, "upgrade")
            if not gate.passed:
                raise HealthGateError(f"health gate {describe_gate(gate)}")

    def _commit(self) -> None:
        tx = self.tx
        with _step(self.progress, "commit"):
            tx.decide()
            record_version(self.config, self.checked.plan.target)
            crashpoint("upgrade.config_recorded")
            tx.commit(version=self.checked.plan.target)
        with _step(self.progress, "cleanup"):
            shutil.rmtree(self.staging / tx.id, ignore_errors=True)
            try:
                self.services.cleanup_images(tx.id)
            except ServicesError as exc:
                # The upgrade is committed: a tag left behind costs disk
                # space, not correctness, and must not fail the command.
                logger.warning(
                    "upgrade %s committed, but its old image tags stay: %s", tx.id, exc
                )
            # No transaction is being prepared now: the journal may drop what
            # only older transactions needed (it keeps this one's pre-images,
            # which 'upgrade rollback' restores, and every listed backup).
            compaction = self.journal.compact(self.store)
            logger.debug("after %s: %s", tx.id, compaction)
        logger.info(
            "upgrade %s committed: %s -> %s",
            tx.id,
            self.checked.plan.current,
            self.checked.plan.target,
        )

    # -- failure --------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Abort or roll back, then raise the right error.

        Ctrl-C is a failure like any other: the upgrade is rolled back at
        once (a second Ctrl-C leaves that to the next command's recovery).
        """
        tx = self.tx
        interrupted = isinstance(exc, KeyboardInterrupt)
        if not self.stopped and not self.changed:
            if tx.phase != "ended":  # a refused space check already aborted it
                tx.abort(f"{type(exc).__name__}: {exc}")
            shutil.rmtree(self.staging / tx.id, ignore_errors=True)
            self.services.cleanup_images(tx.id, rolled_back=True)
            if interrupted:
                raise UpgradeInterruptedError(
                    tx.id, "stopped before any change", _AGAIN
                ) from exc
            raise exc
        try:
            with _step(self.progress, "rollback"):
                verdict = self._roll_back(exc)
        except KeyboardInterrupt as again:
            raise UpgradeInterruptedError(
                tx.id,
                "is left half-way; the next updock command (or 'updock recover') "
                "rolls it back",
            ) from again
        except BaseException as rollback_error:
            raise RollbackFailedError(
                f"upgrade {tx.id} failed", exc, rollback_error
            ) from exc
        if interrupted:
            raise UpgradeInterruptedError(
                tx.id, "was rolled back: the previous release is in place", _AGAIN
            ) from exc
        raise UpgradeRolledBackError(tx.id, exc, [verdict] if verdict else []) from exc

    def _roll_back(self, exc: BaseException) -> str:
        """Undo files, image tags and services; return the rollback verdict."""
        tx = self.tx
        reason = f"{type(exc).__name__}: {exc}"
        logger.error("upgrade %s failed: %s; rolling back", tx.id, reason)
        self.services.stop(tx.id)
        if tx.phase != "ended":
            tx.roll_back(reason)
        self.services.restore_images(tx.id)
        self.services.start(tx.id)
        gate = self.services.gate(tx.id, "rollback")
        self.services.cleanup_images(tx.id, rolled_back=True)
        shutil.rmtree(self.staging / tx.id, ignore_errors=True)
        if not self.services.active:
            return ""
        verdict = f"rollback health gate: {describe_gate(gate)}"
        if not gate.passed:
            raise HealthGateError(verdict)
        return verdict


def describe_gate(gate: GateResult) -> str:
    """One line naming each service's verdict and why."""
    verdicts = ", ".join(
        f"{v.service} {'passed' if v.passed else 'FAILED'} ({v.reason})"
        for v in gate.services
    )
    return f"{'passed' if gate.passed else 'failed'}: {verdicts or 'no services'}"

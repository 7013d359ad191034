"""``updock upgrade check``, ``upgrade apply`` and ``upgrade rollback``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter
from rich.console import Console
from rich.prompt import Confirm

from cli import exitcodes
from cli.apps import upgrade_app
from cli.errors import exit_code_for
from cli.render import JsonRenderer, make_renderer
from cli.session import open_deployment, open_read_only
from engine.config import DeploymentConfig, load_config, record_version
from engine.errors import BadInputError, RolledBackError
from engine.rollback import undo_last_commit
from engine.services import Services
from engine.upgrade import (
    HealthGateError,
    NotConfirmedError,
    UpgradeOptions,
    UpgradePlan,
    UpgradeResult,
    apply_upgrade,
    check_upgrade,
    describe_gate,
    dry_run_upgrade,
)
from journal import JournalNotFoundError, State

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _services_hook(no_services: bool):
    return lambda session: Services(
        session.root, session.config, session.journal, no_services
    )


@contextmanager
def _state_for_reading(
    root: Path, no_services: bool
) -> Iterator[tuple[DeploymentConfig, State]]:
    """The deployment's config and journal state, recovering first only when
    a crash left something unfinished (so a plain check takes no lock and
    writes nothing)."""
    try:
        with open_read_only(root) as session:
            pending = bool(session.journal.state.unfinished())
            if not pending:
                yield session.config, session.journal.state
                return
    except JournalNotFoundError:
        yield load_config(root), State()
        return
    with open_deployment(root, services=_services_hook(no_services)) as session:
        yield session.config, session.journal.state


def _print_plan(plan: UpgradePlan) -> None:
    _err.print(f"installed: {plan.current or 'unknown'}   target: {plan.target}")
    _err.print(f"strategy:  {plan.action} ({plan.reason}), arch {plan.arch}")
    if plan.package_url:
        size = f"{plan.download_size} bytes" if plan.download_size else "size unknown"
        _err.print(f"package:   {plan.package_url} ({size})")
    if plan.space_needed:
        _err.print(f"free space needed: about {plan.space_needed} bytes")
    for line in plan.changes[:50]:
        _err.print(f"  {line}")
    if len(plan.changes) > 50:
        _err.print(f"  ... and {len(plan.changes) - 50} more")


def _confirm(yes: bool, as_json: bool):
    def ask(plan: UpgradePlan) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmedError("no terminal to ask on and no --yes")
        if as_json:
            raise NotConfirmedError("--json needs --yes")
        return Confirm.ask(f"Upgrade to {plan.target}?", console=_err, default=False)

    return ask


@Parameter(name="*")
@dataclass(kw_only=True)
class Release:
    """Which release to look at, and how to fetch it (shared by check and
    apply).

    Parameters
    ----------
    manifest
        Manifest URL or file; default [updates] manifest_url in config.toml.
    strategy
        auto, or force full or patch.
    allow_downgrade
        Accept (and install) a manifest older than the installed version.
    arch
        Architecture to pick packages for (x86_64, aarch64); default the host's.
    timeout
        Seconds to wait for a server that sends nothing before a try fails
        (a download is tried up to 5 times, resuming each time).
    """

    manifest: str | None = None
    strategy: Literal["auto", "full", "patch"] = "auto"
    allow_downgrade: bool = False
    arch: str | None = None
    timeout: float = 30.0

    def options(self, **more) -> UpgradeOptions:
        if not self.timeout > 0:
            raise BadTimeoutError(self.timeout)
        return UpgradeOptions(
            manifest=self.manifest,
            strategy=self.strategy,
            allow_downgrade=self.allow_downgrade,
            arch=self.arch,
            timeout=self.timeout,
            **more,
        )


class BadTimeoutError(BadInputError):
    hint = "give --timeout a number of seconds above zero"

    def __init__(self, value: float) -> None:
        super().__init__(f"--timeout {value} is not a positive number of seconds")


@upgrade_app.command(name="check")
def check_command(
    release: Release | None = None,
    *,
    root: Path = Path("."),
    json: bool = False,
) -> int:
    """Say whether an upgrade is available; change nothing.

    Exits 0 when the deployment is up to date and 20 when an upgrade is
    available.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    json
        Print the plan as one JSON object.
    """
    options = (release or Release()).options()
    with _state_for_reading(root, no_services=False) as (config, state):
        plan = check_upgrade(config, state, options)
    code = exitcodes.OK if plan.action == "none" else exitcodes.UPGRADE_AVAILABLE
    if json:
        JsonRenderer().emit({"event": "result", "exit_code": code, **plan.summary()})
    else:
        _print_plan(plan)
        _err.print("up to date" if code == exitcodes.OK else "an upgrade is available")
    return code


@upgrade_app.command(name="apply")
def apply(
    release: Release | None = None,
    *,
    root: Path = Path("."),
    check: bool = False,
    dry_run: bool = False,
    force: bool = False,
    yes: Annotated[bool, Parameter(name=["--yes", "-y"])] = False,
    no_services: bool = False,
    json: bool = False,
) -> int:
    """Upgrade the deployment, as one recoverable transaction.

    Reads the manifest, decides between the patch and the full package,
    shows the plan and asks for confirmation, downloads and verifies the
    package, stages it, takes a pre-upgrade backup, loads the new images,
    stops the services, applies the files, starts the services and waits for
    the health gate, then commits. Any failure after the first change rolls
    everything back and exits 6.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    check
        Only say whether an upgrade is available (as 'upgrade check').
    dry_run
        Download, verify and stage into a scratch folder, check free space,
        print the plan, and stop: the deployment is not touched.
    force
        Download the package again even when a verified copy is cached.
    yes
        Do not ask for confirmation.
    no_services
        Change files only: do not load images, stop, start or health-check
        services (for deployments without a Docker engine).
    json
        Print JSON lines of progress events and a final result object.
    """
    release = release or Release()
    if check:
        return check_command(release, root=root, json=json)
    options = release.options(dry_run=dry_run, force=force, no_services=no_services)
    renderer = make_renderer(json)
    try:
        if dry_run:
            result = _read_only(
                root,
                options,
                lambda config, state: dry_run_upgrade(
                    config, state, options, progress=renderer
                ),
            )
        elif not yes and (json or not sys.stdin.isatty()):
            result = _read_only(root, options, _refuse_unless_up_to_date(options, json))
        else:
            result = _run_apply(root, options, renderer, _confirm(yes, json))
    except BaseException as exc:
        renderer.close()
        if isinstance(renderer, JsonRenderer):
            code = exit_code_for(exc)
            renderer.emit(
                {
                    "event": "result",
                    "outcome": "failed",
                    "exit_code": code,
                    "error": str(exc),
                }
            )
        raise
    renderer.close()

    if isinstance(renderer, JsonRenderer):
        renderer.emit(
            {
                "event": "result",
                "outcome": result.outcome,
                "exit_code": 0,
                "tx": result.tx,
                "backup": result.backup_id,
                "seconds": result.seconds,
                **result.plan.summary(),
            }
        )
    elif result.outcome == "up-to-date":
        _err.print(f"{result.plan.target} is installed: nothing to do")
    elif result.outcome == "dry-run":
        _print_plan(result.plan)
        _err.print("dry run: package downloaded, verified and staged; nothing changed")
    else:
        _err.print(
            f"upgraded {result.plan.current or 'an unknown version'} -> "
            f"{result.plan.target} "
            f"(transaction {result.tx}, backup {result.backup_id}) "
            f"in {result.seconds:.1f}s"
        )
    return exitcodes.OK


def _read_only(root: Path, options: UpgradeOptions, run):
    """``run(config, state)`` without the lock and without writing anything
    (recovering first only when a crash left something unfinished)."""
    with _state_for_reading(root, options.no_services) as (config, state):
        return run(config, state)


def _refuse_unless_up_to_date(options: UpgradeOptions, as_json: bool):
    """Nobody can confirm: say so before anything is downloaded or written,
    unless there is nothing to do."""

    def run(config: DeploymentConfig, state: State) -> UpgradeResult:
        plan = check_upgrade(config, state, options)
        if plan.action == "none":
            return UpgradeResult(plan, "up-to-date")
        if as_json:
            raise NotConfirmedError("--json needs --yes")
        _print_plan(plan)
        raise NotConfirmedError("no terminal to ask on and no --yes")

    return run


def _run_apply(root: Path, options: UpgradeOptions, renderer, confirm):
    with open_deployment(root, services=_services_hook(options.no_services)) as session:

        def confirm_with_plan(plan: UpgradePlan) -> bool:
            if not isinstance(renderer, JsonRenderer):
                renderer.pause()
                _print_plan(plan)
            return confirm(plan)

        return apply_upgrade(
            session.config,
            session.journal,
            session.store,
            options,
            confirm=confirm_with_plan,
            progress=renderer,
        )


@upgrade_app.command(name="rollback")
def rollback(
    *,
    root: Path = Path("."),
    yes: Annotated[bool, Parameter(name=["--yes", "-y"])] = False,
    no_services: bool = False,
) -> int:
    """Undo the last committed upgrade, as a new transaction.

    The files the upgrade changed get their previous content, modes and
    links back (from the journal's pre-images); the services are stopped
    before and started and health-checked after. A failure undoes the undo.

    Parameters
    ----------
    root
        The deployment root.
    yes
        Do not ask for confirmation.
    no_services
        Change files only.
    """
    with open_deployment(root, services=_services_hook(no_services)) as session:
        state = session.journal.state
        last = state.txs.get(state.last_committed_tx or "")
        if last is not None and not yes:
            question = (
                f"Undo transaction {last.tx} ({last.from_version} -> "
                f"{last.to_version})?"
            )
            if not sys.stdin.isatty():
                raise NotConfirmedError("no terminal to ask on and no --yes")
            if not Confirm.ask(question, console=_err, default=False):
                raise NotConfirmedError("the operator said no")
        services = Services(session.root, session.config, session.journal, no_services)
        services.preflight()

        def stop(tx) -> None:
            services.stop(tx.id)

        def start(tx) -> None:
            services.start(tx.id)
            gate = services.gate(tx.id, "upgrade")
            if not gate.passed:
                raise HealthGateError(f"health gate {describe_gate(gate)}")

        try:
            outcome = undo_last_commit(
                session.journal,
                session.store,
                session.tree,
                before_apply=stop,
                after_apply=start,
            )
        except RolledBackError:
            services.start(None)
            raise
        record_version(session.config, outcome.version)
    _err.print(outcome.describe())
    return exitcodes.OK

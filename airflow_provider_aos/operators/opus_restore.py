"""AvePoint Opus: restore archived data (a SharePoint site collection or a Teams/Microsoft 365 Group)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_aos.exceptions import AosApiError, AosConfigError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.operators.jobs import AosJobOperatorBase

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

OPUS_RESTORE_KIND = "opus_restore"
OPUS_SCOPE = "records.readwrite.all"
CONFLICT_RESOLUTIONS = {"overwrite": 0, "skip": 1, "append": 2}
"""``conflictResolution`` / ``appsConflictResolution`` (opus.md §2)."""
MAX_GRACE_PERIOD_DAYS = 365


@dataclass(frozen=True)
class OpusRestoreTarget:
    """The endpoints of one kind of archived data (opus.md §2)."""

    name: str
    title: str
    scope_is: str
    check_path: str
    start_path: str
    grace_path: str


RESTORE_TARGETS = {
    "site_collection": OpusRestoreTarget(
        name="site_collection",
        title="site collection",
        scope_is="the site collection URL (https://...)",
        check_path="/api/restore/HasArchivedSiteCollectionData",
        start_path="/api/restore/RestoreSiteCollection",
        grace_path="/api/restore/SetRestoreGracePeriodSiteCollection",
    ),
    "teams_group": OpusRestoreTarget(
        name="teams_group",
        title="Teams/Microsoft 365 Group",
        scope_is="the group's email address",
        check_path="/api/restore/HasArchivedTeamsGroupData",
        start_path="/api/restore/RestoreTeamsGroup",
        # The doc's sample URL is truncated (".../SetRestoreGracePeriodTeamsGrou"); the table's path.
        grace_path="/api/restore/SetRestoreGracePeriodTeamsGroup",
    ),
}

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


class AosOpusNoArchivedDataError(AosConfigError):
    """AvePoint Opus holds no archived data for the scope: there is nothing to restore."""


@dataclass(frozen=True)
class OpusRestorePlan:
    """The checked request: where to send it, its body, and the grace period to set after it."""

    target: OpusRestoreTarget
    body: dict[str, Any]
    grace_period_days: int | None

    @property
    def scope(self) -> str:
        return str(self.body["scope"])


def restore_target(kind: Any) -> OpusRestoreTarget:
    """``site_collection`` or ``teams_group`` (case and ``-`` tolerated), else an error naming ``kind``."""
    name = re.sub(r"[\s\-]+", "_", str(kind).strip().lower())
    if name not in RESTORE_TARGETS:
        raise AosConfigError("kind", f"{kind!r}: use 'site_collection' or 'teams_group'")
    return RESTORE_TARGETS[name]


def restore_scope(target: OpusRestoreTarget, scope: Any) -> str:
    """The site collection URL or group email, checked for its kind."""
    text = str(scope).strip() if isinstance(scope, str) else ""
    if target.name == "site_collection":
        if not re.fullmatch(r"https://[^/\s?#]+(/[^\s]*)?", text, flags=re.IGNORECASE):
            raise AosConfigError("scope", f"a site collection restore needs {target.scope_is}, got {scope!r}")
    elif not _EMAIL.fullmatch(text):
        raise AosConfigError("scope", f"a Teams/Group restore needs {target.scope_is}, got {scope!r}")
    return text


def conflict_resolution(value: Any, field: str) -> int | None:
    """0/``"Overwrite"``, 1/``"Skip"``, 2/``"Append"`` (a template renders a string), or None."""
    if value is None or value == "":
        return None
    valid = "0 (Overwrite), 1 (Skip) or 2 (Append)"
    if isinstance(value, bool):
        raise AosConfigError(field, f"expected {valid}, got {value!r}")
    text = str(value).strip().lower()
    number = CONFLICT_RESOLUTIONS.get(text)
    if number is None and re.fullmatch(r"\d+", text):
        number = int(text)
    if number not in CONFLICT_RESOLUTIONS.values():
        raise AosConfigError(field, f"expected {valid}, got {value!r}")
    return number


def flag(value: Any, field: str) -> bool | None:
    """A bool, or ``"true"``/``"false"`` as a template renders it; None: not given."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise AosConfigError(field, f"expected true or false, got {value!r}")


def grace_period(value: Any) -> int | None:
    """``deleteArchivedDataDaysAfterRestore``: whole days, 0 to 365; None: leave the UI setting."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d+", text) or int(text) > MAX_GRACE_PERIOD_DAYS:
        raise AosConfigError(
            "grace_period_days", f"expected whole days from 0 to {MAX_GRACE_PERIOD_DAYS}, got {value!r}"
        )
    return int(text)


def opus_restore_plan(
    kind: Any,
    scope: Any,
    conflict: Any = None,
    apps_conflict: Any = None,
    include_workflow_definition: Any = None,
    include_sharing_link: Any = None,
    site_administrator: Any = None,
    grace_period_days: Any = None,
) -> OpusRestorePlan:
    """
    The restore request, every field checked before anything is sent (opus.md §2). Optional fields
    not given are left out of the body, so the service's own defaults apply.
    """
    target = restore_target(kind)
    body: dict[str, Any] = {"scope": restore_scope(target, scope)}
    for key, value in (
        ("conflictResolution", conflict_resolution(conflict, "conflict_resolution")),
        ("appsConflictResolution", conflict_resolution(apps_conflict, "apps_conflict_resolution")),
        ("includeWorkflowDefinition", flag(include_workflow_definition, "include_workflow_definition")),
        ("includeSharingLink", flag(include_sharing_link, "include_sharing_link")),
    ):
        if value is not None:
            body[key] = value
    if site_administrator not in (None, ""):
        upn = str(site_administrator).strip()
        if not _EMAIL.fullmatch(upn):
            raise AosConfigError(
                "site_administrator",
                f"expected a user principal name such as megan@contoso.com, got {site_administrator!r}",
            )
        body["siteAdministratorUserPrincipalName"] = upn
    return OpusRestorePlan(target=target, body=body, grace_period_days=grace_period(grace_period_days))


def opus_answer(reply: Any, method: str, path: str) -> dict[str, Any]:
    """
    The ``{success, message, ...}`` envelope of an ``/api/restore`` call, or an error with the
    server's message: HTTP codes are not documented there, so ``success: false`` may come with 200.
    """
    if not isinstance(reply, dict):
        raise AosApiError(
            method=method, path=path, status=200, error=f"expected a JSON object, got {type(reply).__name__}"
        )
    if reply.get("success") is False:
        message = reply.get("message")
        said = message.strip() if isinstance(message, str) and message.strip() else "no message"
        raise AosApiError(method=method, path=path, status=200, error=f"success: false - {said}")
    return reply


class AosOpusRestoreOperator(AosJobOperatorBase):
    """
    Restore archived data in place with AvePoint Opus (a SharePoint Online site collection, or a
    Teams/Microsoft 365 Group), and wait for the restore job.

    First asks whether Opus holds archived data for ``scope`` and fails, naming the scope, if it
    does not (nothing is started). Then starts the restore and pushes the job id to XCom (key
    ``aos_job_id``) at once, sets the grace period if ``grace_period_days`` is given, and, with
    ``wait``, waits for the job as :class:`~airflow_provider_aos.sensors.opus.AosOpusRestoreJobSensor`
    does (Finished passes; Failed, Timed out, Stopped and Skipped fail; Finished with exception
    passes only with ``accept_partial``). Every argument is checked before the first request, each
    bad one named. Asks for ``records.readwrite.all`` itself.

    A retried task does not start a second restore: on Airflow 3.3+ the job id is kept in the task
    instance's ``task_state_store``, and a retry resumes that job while it runs (or returns it if it
    finished); only a restore that ended badly is started again. The grace period is set again on
    a resumed job (the same value: harmless, and it may not have been set before the retry).
    Airflow 2.11 has no such store: a retry there starts a new restore (``retries=0`` avoids it).

    :param scope: the site collection URL (``kind="site_collection"``) or the group's email address
        (``kind="teams_group"``) (templated).
    :param kind: ``site_collection`` or ``teams_group`` (templated).
    :param conflict_resolution: primary content that exists already: 0/``"Overwrite"``,
        1/``"Skip"`` or 2/``"Append"``; None: the service's default (templated).
    :param apps_conflict_resolution: the same, for apps data (templated).
    :param include_workflow_definition: restore workflow definitions; None: the default (templated).
    :param include_sharing_link: restore sharing links; None: the default (templated).
    :param site_administrator: a UPN added to the restored site's Site admins group, or to the
        Team/Group's owners (templated).
    :param grace_period_days: days (0-365) to keep the archive copy after the restore, overriding
        Opus > Storage Optimization for this restore; None: the UI setting applies. AOS applies it
        only if its post-restore deletion job has not started yet (templated).
    :param wait: wait for the restore job to end; otherwise return its id.
    :param deferrable: wait in the triggerer.
    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait before failing (the restore goes on in Opus).
    :param accept_partial: let a restore that finished with exception pass.
    :param aos_conn_id: the AOS connection (templated).
    :return: with ``wait``, the final job as ``AosJob.to_dict()``; else the job id.
    """

    template_fields: Sequence[str] = (
        "aos_conn_id",
        "scope",
        "kind",
        "conflict_resolution",
        "apps_conflict_resolution",
        "include_workflow_definition",
        "include_sharing_link",
        "site_administrator",
        "grace_period_days",
    )
    job_kind = OPUS_RESTORE_KIND
    job_noun = "Opus restores"

    def __init__(
        self,
        *,
        scope: str,
        kind: str = "site_collection",
        conflict_resolution: int | str | None = None,
        apps_conflict_resolution: int | str | None = None,
        include_workflow_definition: bool | str | None = None,
        include_sharing_link: bool | str | None = None,
        site_administrator: str | None = None,
        grace_period_days: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.scope = scope
        self.kind = kind
        self.conflict_resolution = conflict_resolution
        self.apps_conflict_resolution = apps_conflict_resolution
        self.include_workflow_definition = include_workflow_definition
        self.include_sharing_link = include_sharing_link
        self.site_administrator = site_administrator
        self.grace_period_days = grace_period_days

    def prepare(self, context: Context) -> OpusRestorePlan:
        return opus_restore_plan(
            self.kind,
            self.scope,
            self.conflict_resolution,
            self.apps_conflict_resolution,
            self.include_workflow_definition,
            self.include_sharing_link,
            self.site_administrator,
            self.grace_period_days,
        )

    def start_job(self, hook: AosHook, prepared: OpusRestorePlan, context: Context) -> str:
        target, scope = prepared.target, prepared.scope
        self._check_archive(hook, target, scope)
        path = target.start_path
        reply = self.start_with_capacity_wait(hook, "POST", path, json=prepared.body, scope=OPUS_SCOPE)
        answer = opus_answer(reply, "POST", path)
        job_id = answer.get("jobId")
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)
        if not isinstance(job_id, str) or not job_id.strip():
            raise AosApiError(
                method="POST", path=path, status=200,
                error=f"the restore was accepted but no jobId came back (keys: {sorted(answer)})",
            )  # fmt: skip
        self.log.info("Started AvePoint Opus restore job %s of %s %s", job_id, target.title, scope)
        return job_id.strip()

    def _check_archive(self, hook: AosHook, target: OpusRestoreTarget, scope: str) -> None:
        path = target.check_path
        answer = opus_answer(
            hook.request_json("GET", path, params={"scope": scope}, scope=OPUS_SCOPE), "GET", path
        )
        has = answer.get("hasArchivedData")
        if isinstance(has, str) and has.strip().lower() in ("true", "false"):
            has = has.strip().lower() == "true"
        if has is False:
            raise AosOpusNoArchivedDataError(
                "scope",
                f"AvePoint Opus holds no archived data for the {target.title} {scope!r} "
                f"({path.rsplit('/', 1)[-1]} answered hasArchivedData: false); no restore was started",
            )
        if has is not True:
            raise AosApiError(
                method="GET", path=path, status=200,
                error=f"no hasArchivedData true/false in the answer (keys: {sorted(answer)}); no restore was started",
            )  # fmt: skip

    def after_start(self, hook: AosHook, job_id: str, prepared: OpusRestorePlan, context: Context) -> None:
        days = prepared.grace_period_days
        if days is None:
            return
        path = prepared.target.grace_path
        body = {"scope": prepared.scope, "deleteArchivedDataDaysAfterRestore": days}
        try:
            # Setting a value: safe to send again after a dropped connection or a 5xx.
            opus_answer(
                hook.request_json("POST", path, json=body, scope=OPUS_SCOPE, idempotent=True), "POST", path
            )
        except AosApiError as exc:
            raise AosApiError(
                method=exc.method, path=exc.path, status=exc.status, trace_id=exc.trace_id, attempts=exc.attempts,
                error=f"{exc.error or 'failed'}. Restore job {job_id} goes on, but its grace period was not set "
                "(a retry of this task resumes the job and sets it again)",
            ) from exc  # fmt: skip
        self.log.info(
            "Archived data of %s will be deleted %d day(s) after restore job %s", prepared.scope, days, job_id
        )

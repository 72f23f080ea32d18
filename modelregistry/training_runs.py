"""Training runs: asked for by a schedule, the admin or the API; one at a time per spec."""

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from mlsite import sending
from mlsite.errors import Conflict, DomainError
from mlsite.leases import Heartbeat

from . import loader, scheduling, training, versions
from .models import (
    PromotionPolicy,
    RunStatus,
    RunTrigger,
    Stage,
    TrainingRun,
    TrainingSpec,
    VersionSource,
)

logger = logging.getLogger(__name__)


class TrainingInProgress(Conflict):
    code = "training_in_progress"


class NotCancellable(Conflict):
    code = "not_cancellable"


class RunNotSent(DomainError):
    """The broker refused the run's message (Redis down or not answering)."""

    code = "broker_unavailable"
    http_status = 503


class BadMessage(DomainError):
    """A retrain message that cannot be run; it still ends as a failed run that says why."""

    code = "bad_retrain_message"

    def __init__(self, message: str, spec: TrainingSpec | None = None) -> None:
        super().__init__(message)
        self.spec = spec


# --- requesting ------------------------------------------------------------------------


def request_run(spec: TrainingSpec, trigger: str) -> TrainingRun:
    """A queued run of the spec, sent to the training queue once the row is committed.

    Raises RunNotSent when the broker refused the message (the run is recorded as failed,
    saying so), and TrainingInProgress when a run of the spec is running, or queued and not yet
    started (a second request, a double click, would only fail when the worker took it).
    """
    busy = running_run(spec.pk) or _queued_run(spec.pk)
    if busy is not None:
        raise TrainingInProgress(
            f"run {busy.pk} of {spec.name} is {busy.status}; try again once it has finished"
        )
    task_id = str(uuid4())
    with transaction.atomic():
        run = TrainingRun.objects.create(spec=spec, trigger=trigger, task_id=task_id)
        transaction.on_commit(lambda: _send(run))
    run.refresh_from_db()  # sent by now, unless an outer transaction holds the send back
    if run.status == RunStatus.FAILED:
        raise RunNotSent(f"run {run.pk} of {spec.name} failed: {run.error}; try again shortly")
    return run


def _send(run: TrainingRun) -> None:
    """Send the run's message; a broker outage fails the run saying so, not leaving it queued."""
    try:
        sending.publish(
            scheduling.RETRAIN_TASK, args=[run.spec_id, run.trigger, run.pk], task_id=run.task_id
        )
    except sending.BrokerUnavailable as exc:
        logger.warning("training run %s not sent: %s", run.pk, exc)
        finish(run, RunStatus.FAILED, error=f"could not reach the broker to start it: {exc}")


def running_run(spec_id: int, now: datetime | None = None) -> TrainingRun | None:
    fail_stale_runs(spec_id, now or timezone.now())
    return TrainingRun.objects.filter(spec_id=spec_id, status=RunStatus.RUNNING).first()


def _queued_run(spec_id: int) -> TrainingRun | None:
    """A queued run that may still start: one whose message went out within a task time limit
    (the reconciler sends it again after that, resend_unstarted_runs). One sent longer ago,
    with no reconciler to send it again, is taken for lost and does not hold the spec back."""
    queued = TrainingRun.objects.filter(spec_id=spec_id, status=RunStatus.QUEUED)
    return queued.filter(sent_at__gte=_outlived(timezone.now())).first()


def _outlived(now: datetime) -> datetime:
    """Before this, a run has had longer than a task may run (its hard time limit)."""
    return now - timedelta(seconds=settings.TASK_TIME_LIMIT + 60)


def fail_stale_runs(spec_id: int | None, now: datetime) -> int:
    """Fail runs still marked running whose worker is gone: their lease lapsed (the process
    stopped renewing it), or they outlived the task's hard time limit. All specs' for None."""
    lost = Q(lease_expires_at__lt=now) | Q(started_at__lt=_outlived(now))
    runs = TrainingRun.objects.filter(lost, status=RunStatus.RUNNING)
    if spec_id is not None:
        runs = runs.filter(spec_id=spec_id)
    return runs.update(
        status=RunStatus.FAILED,
        finished_at=now,
        lease_expires_at=None,
        error="the worker running it stopped (killed, out of memory, or past the time limit)",
    )


def resend_unstarted_runs(now: datetime) -> int:
    """Send again the message of each run still queued a task time limit after its last send;
    how many were sent. The message may be lost (a worker that took it while the database was
    away acknowledged it without running it; a Redis without persistence restarted), or only
    waiting behind a long queue: a copy finds the run taken (claim), so either way it runs
    once, and a run is never failed for having waited."""
    sent = 0
    for run in TrainingRun.objects.filter(status=RunStatus.QUEUED, sent_at__lt=_outlived(now)):
        # Only one reconciler sends it: the one whose update still finds the last send's time.
        unchanged = TrainingRun.objects.filter(
            pk=run.pk, status=RunStatus.QUEUED, sent_at=run.sent_at
        )
        if unchanged.update(sent_at=now):
            _send(run)
            sent += 1
    return sent


def _renew(run_ids: list[str], until: datetime) -> int:
    running = TrainingRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING)
    return running.update(lease_expires_at=until)


_heartbeat = Heartbeat("TRAINING_LEASE_SECONDS", _renew)


# --- cancelling -------------------------------------------------------------------------

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
CANCEL_CHECK_SECONDS = 2.0


def cancel(runs: QuerySet[TrainingRun], by: str) -> int:
    """Cancel the queued or running runs among these; the count cancelled.

    The row says so: a queued run's message then finds it taken, and a running run's end is
    not recorded (nor the version it made kept). The process fitting a running run sees it
    within CANCEL_CHECK_SECONDS and ends itself (stopping_if_cancelled); its worker starts
    another.
    """
    cancelled = 0
    for run in runs.filter(status__in=ACTIVE):
        # Queued first, then running: a worker may claim it between the read and the update,
        # and a claim only moves a run forward.
        for status in ACTIVE:
            if _cancel_if(run, status, by):
                cancelled += 1
                break
    return cancelled


def _cancel_if(run: TrainingRun, status: str, by: str) -> bool:
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status=status).update(
            status=RunStatus.CANCELLED,
            finished_at=timezone.now(),
            lease_expires_at=None,
            error=f"cancelled by {by}",
        )
    )


def cancel_one(run: TrainingRun, by: str) -> TrainingRun:
    """Cancel one run; raises NotCancellable if it already finished."""
    if not cancel(TrainingRun.objects.filter(pk=run.pk), by):
        run.refresh_from_db()
        raise NotCancellable(f"training run {run.pk} already finished ({run.status})")
    run.refresh_from_db()
    return run


@contextmanager
def stopping_if_cancelled(run_id: int) -> Iterator[None]:
    """While it lasts, a thread looks every CANCEL_CHECK_SECONDS whether the run was cancelled
    and, if so, ends this process at once (SIGKILL: a fit in compiled code would not see a
    gentler signal until it finished). For a worker's pool process only: its worker starts
    another, and the message, rejected with the lost process, finds the run taken.

    Celery's revoke(terminate=True) would signal the pool process from outside, which may
    have moved on to another task by then; this thread ends its own process only while the
    run is still held here.
    """
    done = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        try:
            while not done.wait(CANCEL_CHECK_SECONDS):
                try:
                    cancelled = TrainingRun.objects.filter(
                        pk=run_id, status=RunStatus.CANCELLED
                    ).exists()
                except Exception:  # a database away, say: the next look tries again
                    logger.warning("training run %s: cancel not looked for", run_id, exc_info=True)
                    continue
                if cancelled:
                    with lock:
                        if not done.is_set():
                            logger.warning("training run %s cancelled: ending its fit", run_id)
                            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            connections.close_all()  # this thread's own connection

    watcher = threading.Thread(target=watch, name=f"cancel-watch-{run_id}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            done.set()
        watcher.join(timeout=CANCEL_CHECK_SECONDS)  # done now: it only ends a look under way


# --- handling a retrain message --------------------------------------------------------


def handle_message(
    spec_id: Any,
    trigger: Any,
    run_id: Any,
    unexpected: dict[str, Any],
    task_id: str = "",
    *,
    in_pool_process: bool = False,
) -> TrainingRun | None:
    """Run what a retrain message asks for. Every outcome, even a bad message, is a run row.

    None means the run was already handled (a message delivered twice). `in_pool_process`:
    a cancel may end this process (stopping_if_cancelled).
    """
    try:
        run = _run_for(spec_id, trigger, run_id, unexpected, task_id)
    except BadMessage as exc:
        logger.warning("retrain message refused: %s", exc)
        return _record_refused(exc, trigger, task_id)
    if run is None:
        return None
    if not claim(run):
        run.refresh_from_db()
        return run
    if not in_pool_process:
        return execute(run)
    with stopping_if_cancelled(run.pk):
        return execute(run)


def _run_for(
    spec_id: Any, trigger: Any, run_id: Any, unexpected: dict[str, Any], task_id: str
) -> TrainingRun | None:
    if isinstance(run_id, int) and _fail_if_spec_deleted(run_id):
        return None
    spec = _spec_for(spec_id)
    if unexpected:
        raise BadMessage(f"unexpected arguments: {', '.join(sorted(unexpected))}", spec)
    if trigger not in RunTrigger.values:
        choices = ", ".join(RunTrigger.values)
        raise BadMessage(f"trigger must be one of {choices}, got {trigger!r}", spec)
    if run_id is None:  # beat's message (a schedule): its run is made on its first delivery
        if task_id and TrainingRun.objects.filter(task_id=task_id).exists():
            return None  # delivered again (its process was lost, or ended by a cancel)
        return TrainingRun.objects.create(spec=spec, trigger=trigger, task_id=task_id)
    run = TrainingRun.objects.filter(pk=run_id, spec=spec).first()
    if run is None:
        raise BadMessage(f"no training run {run_id!r} of spec {spec.name}", spec)
    return run if run.status == RunStatus.QUEUED else None


def _fail_if_spec_deleted(run_id: int) -> bool:
    """End a queued run whose spec was deleted since it was asked for: the run itself, not a
    new row saying its message named no spec (the queued one was then sent again for ever)."""
    orphaned = TrainingRun.objects.filter(pk=run_id, spec__isnull=True, status=RunStatus.QUEUED)
    return bool(
        orphaned.update(
            status=RunStatus.FAILED,
            finished_at=timezone.now(),
            error="the training spec was deleted before the run started",
        )
    )


def _spec_for(spec_id: Any) -> TrainingSpec:
    if isinstance(spec_id, bool) or not isinstance(spec_id, int | str):
        raise BadMessage(f"spec_id must be the id of a training spec, got {spec_id!r}")
    try:
        pk = int(spec_id)
    except ValueError:
        raise BadMessage(f"spec_id must be the id of a training spec, got {spec_id!r}") from None
    spec = TrainingSpec.objects.filter(pk=pk).first()
    if spec is None:
        raise BadMessage(
            f"no training spec with id {pk}: fix or delete the periodic task that names it"
        )
    return spec


def _record_refused(exc: BadMessage, trigger: Any, task_id: str) -> TrainingRun:
    now = timezone.now()
    return TrainingRun.objects.create(
        spec=exc.spec,
        trigger=trigger if trigger in RunTrigger.values else RunTrigger.SCHEDULE,
        status=RunStatus.FAILED,
        error=str(exc),
        task_id=task_id,
        started_at=now,
        finished_at=now,
    )


def claim(run: TrainingRun, now: datetime | None = None) -> bool:
    """Move a queued run to running. False: it was not queued, or another run holds the spec."""
    now = now or timezone.now()
    if run.spec_id is not None:
        fail_stale_runs(run.spec_id, now)
    try:
        with transaction.atomic():
            # The partial unique index one_running_run_per_spec is the lock: a second
            # running run of the spec cannot exist, whatever process or host tries.
            changed = TrainingRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING, started_at=now, lease_expires_at=_heartbeat.until(now)
            )
    except IntegrityError:
        busy = TrainingRun.objects.filter(spec_id=run.spec_id, status=RunStatus.RUNNING).first()
        holder = f" (run {busy.pk})" if busy else ""
        finish(run, RunStatus.FAILED, error=f"another run of this spec is in progress{holder}")
        return False
    return bool(changed)


# --- executing -------------------------------------------------------------------------


def execute(run: TrainingRun) -> TrainingRun:
    """Train, register, compare and maybe promote. Any failure leaves production untouched."""
    try:
        with _heartbeat.holding([run.pk]):
            return _train_and_record(run)
    except Exception as exc:  # every failure, time limits too, ends as a failed run saying why
        if not isinstance(exc, DomainError):
            logger.exception("training run %s failed", run.pk)
        return finish(run, RunStatus.FAILED, error=_describe(exc))


def _train_and_record(run: TrainingRun) -> TrainingRun:
    # A deleted spec leaves spec_id None, which matches no row (the stubs refuse None).
    spec = TrainingSpec.objects.select_related("registered_model", "dataset").filter(
        pk=run.spec_id  # type: ignore[misc]
    )
    if not spec:
        raise BadMessage("the training spec was deleted before the run started")
    trained = training.train(spec[0])
    compared_with = _production_id(spec[0])
    production_metrics, promote, reason = _compare(spec[0], trained)
    with transaction.atomic():  # a version that cannot be promoted as decided is not kept
        version = _register(spec[0], trained, run)  # locks the model row until the commit
        if _production_id(spec[0]) != compared_with:  # another run, or a hand, promoted since
            production_metrics, promote, reason = _compare(spec[0], trained)
        if promote:
            versions.promote(version, Stage.PRODUCTION, note=f"training run {run.pk}: {reason}")
        recorded = _finish_active(
            run,
            RunStatus.SUCCEEDED,
            version=version,
            metrics=trained.metrics,
            production_metrics=production_metrics,
            promoted=promote,
            promotion_reason=reason[:300],
        )
        if not recorded:  # cancelled while it trained: nothing it made is kept
            transaction.set_rollback(True)
    if not recorded:
        version.artifact.delete(save=False)
    run.refresh_from_db()
    return run


def _production_id(spec: TrainingSpec) -> int | None:
    production = spec.registered_model.versions.filter(stage=Stage.PRODUCTION)
    return production.values_list("pk", flat=True).first()


def _compare(spec: TrainingSpec, trained: training.Trained) -> tuple[dict[str, float], bool, str]:
    """The production version's metrics on the same holdout, and the promotion decision."""
    model = spec.registered_model
    production = model.versions.filter(stage=Stage.PRODUCTION).first()
    scores: dict[str, float] | None = None
    if production is not None:
        try:
            scores = training.score(loader.load(production), trained.holdout, model.task_kind)
        except Exception as exc:  # a broken production version must not stop training
            logger.warning("production %s not scored: %s", production.ref, exc)
            if spec.promotion_policy == PromotionPolicy.IF_BETTER:
                why = f"production {production.ref} could not be scored on the holdout: {exc}"
                return {}, False, why
            scores = {}
    promote, reason = training.decide(
        spec.promotion_policy, spec.primary_metric, trained.metrics, scores
    )
    if production is not None:
        reason = f"{reason} [production was {production.ref}]"
    return scores or {}, promote, reason


def _register(
    spec: TrainingSpec, trained: training.Trained, run: TrainingRun
) -> versions.ModelVersion:
    model = spec.registered_model
    if not model.input_schema:  # a model without a schema takes the features it was trained on
        model.input_schema = [{"name": name, "type": "number"} for name in trained.feature_names]
        model.save(update_fields=["input_schema"])
    # The registry serialises the estimator and reads it back through the restricted
    # unpickler, so a trained version is held to the same checks as an upload.
    return versions.register_estimator(
        model,
        trained.estimator,
        source=VersionSource.TRAINING,
        metrics=trained.metrics,
        description=f"Trained by run {run.pk} of spec {spec.name} on dataset {spec.dataset.name}.",
    )


def finish(run: TrainingRun, status: str, **fields: Any) -> TrainingRun:
    """End a run that has not ended (one cancelled meanwhile stays cancelled); read it back."""
    _finish_active(run, status, **fields)
    run.refresh_from_db()
    return run


def _finish_active(run: TrainingRun, status: str, **fields: Any) -> bool:
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status__in=ACTIVE).update(
            status=status, finished_at=timezone.now(), lease_expires_at=None, **fields
        )
    )


def _describe(exc: Exception) -> str:
    message = str(exc) or type(exc).__name__
    return message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {message}"

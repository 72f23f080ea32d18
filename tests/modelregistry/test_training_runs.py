"""Training runs on a real worker: versions registered, policies obeyed, one run at a time."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier

from mlsite import sending
from modelregistry import demo, training_runs
from modelregistry.models import (
    Estimator,
    ModelVersion,
    PromotionPolicy,
    RunStatus,
    RunTrigger,
    Stage,
    TrainingRun,
    VersionSource,
)
from modelregistry.tasks import retrain
from predictions import reconcile
from tests.builders import make_training_spec, make_version
from tests.faults.harness import pool_processes
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


def finished(run: TrainingRun, timeout: float = 30) -> TrainingRun:
    def is_finished() -> bool:
        run.refresh_from_db()
        return run.status in FINISHED

    wait_for(is_finished, timeout, f"training run {run.pk}")
    return run


def run_sent_by_message(timeout: float = 30, **kwargs: object) -> TrainingRun:
    """Send a retrain message as beat would, and return the run row it ended as."""
    run_id = retrain.apply_async(kwargs=kwargs).get(timeout=timeout)
    return TrainingRun.objects.get(pk=run_id)


def dummy_production() -> ModelVersion:
    iris = load_iris()
    return make_version("iris", estimator=DummyClassifier().fit(iris.data, iris.target))


def production_of(spec_model_name: str = "iris") -> ModelVersion:
    return ModelVersion.objects.get(registered_model__name=spec_model_name, stage=Stage.PRODUCTION)


def test_a_run_registers_a_version_with_its_holdout_metrics(live_worker) -> None:
    spec = make_training_spec(params={"max_iter": 500})

    run = finished(training_runs.request_run(spec, RunTrigger.ADMIN))

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.version.source == VersionSource.TRAINING
    assert run.version.metrics == run.metrics
    assert run.metrics["accuracy"] > 0.85
    assert set(run.metrics) == {"accuracy", "f1", "roc_auc"}
    assert run.started_at <= run.finished_at
    assert run.promoted  # the model had no production version yet
    assert production_of() == run.version


def test_a_worse_estimator_is_not_promoted_if_better_is_the_policy(live_worker) -> None:
    production = make_version("iris")
    spec = make_training_spec(estimator=Estimator.DUMMY_CLASSIFIER)

    run = finished(training_runs.request_run(spec, RunTrigger.API))

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert not run.promoted
    assert run.promotion_reason.startswith("not better than production")
    assert run.production_metrics["accuracy"] > run.metrics["accuracy"]
    assert production_of() == production
    assert run.version.stage == Stage.NONE


def test_a_better_estimator_is_promoted_if_better_is_the_policy(live_worker) -> None:
    baseline = dummy_production()
    spec = make_training_spec(params={"max_iter": 500})

    run = finished(training_runs.request_run(spec, RunTrigger.API))

    assert run.promoted, run.promotion_reason
    assert run.metrics["accuracy"] > run.production_metrics["accuracy"]
    assert production_of() == run.version
    baseline.refresh_from_db()
    assert baseline.stage == Stage.ARCHIVED
    assert run.version.stage_changes.get(to_stage=Stage.PRODUCTION).note.startswith(
        f"training run {run.pk}: better than production"
    )


def test_never_registers_a_better_version_without_promoting_it(live_worker) -> None:
    baseline = dummy_production()
    spec = make_training_spec(promotion_policy=PromotionPolicy.NEVER, params={"max_iter": 500})

    run = finished(training_runs.request_run(spec, RunTrigger.ADMIN))

    assert run.status == RunStatus.SUCCEEDED
    assert not run.promoted
    assert run.metrics["accuracy"] > run.production_metrics["accuracy"]
    assert production_of() == baseline


def test_always_promotes_even_a_worse_version(live_worker) -> None:
    make_version("iris")
    spec = make_training_spec(
        estimator=Estimator.DUMMY_CLASSIFIER, promotion_policy=PromotionPolicy.ALWAYS
    )

    run = finished(training_runs.request_run(spec, RunTrigger.ADMIN))

    assert run.promoted
    assert run.metrics["accuracy"] < run.production_metrics["accuracy"]
    assert production_of() == run.version


@pytest.mark.postgres
def test_a_run_is_refused_while_another_run_of_the_spec_is_in_progress(live_worker) -> None:
    production = make_version("iris")
    spec = make_training_spec()
    ongoing = TrainingRun.objects.create(
        spec=spec, trigger=RunTrigger.SCHEDULE, status=RunStatus.RUNNING, started_at=timezone.now()
    )

    with pytest.raises(training_runs.TrainingInProgress):
        training_runs.request_run(spec, RunTrigger.API)
    refused = run_sent_by_message(spec_id=spec.pk)

    assert refused.status == RunStatus.FAILED
    assert refused.error == f"another run of this spec is in progress (run {ongoing.pk})"
    assert refused.version is None
    assert production_of() == production


@pytest.mark.postgres
def test_two_runs_sent_at_once_never_overlap(live_worker) -> None:
    # A forest big enough that the first run is still fitting when the second is claimed.
    spec = make_training_spec(
        estimator=Estimator.RANDOM_FOREST_CLASSIFIER, params={"n_estimators": 300}
    )
    first = training_runs.request_run(spec, RunTrigger.ADMIN)
    # Beat's message, sent while the first is queued (the admin and the API would refuse).
    second = run_sent_by_message(timeout=120, spec_id=spec.pk, trigger=RunTrigger.SCHEDULE)

    outcomes = sorted([finished(first).status, finished(second).status])

    assert outcomes == [RunStatus.FAILED, RunStatus.SUCCEEDED]
    loser = first if first.status == RunStatus.FAILED else second
    assert loser.error.startswith("another run of this spec is in progress")
    assert ModelVersion.objects.filter(registered_model=spec.registered_model).count() == 1


def test_a_run_of_a_worker_that_died_does_not_hold_the_spec_forever(live_worker) -> None:
    spec = make_training_spec(params={"max_iter": 500})
    long_ago = timezone.now() - timezone.timedelta(hours=2)
    TrainingRun.objects.create(
        spec=spec, trigger=RunTrigger.SCHEDULE, status=RunStatus.RUNNING, started_at=long_ago
    )

    run = run_sent_by_message(spec_id=spec.pk)

    assert run.status == RunStatus.SUCCEEDED, run.error
    stale = TrainingRun.objects.get(started_at=long_ago)
    assert stale.status == RunStatus.FAILED
    assert "worker running it stopped" in stale.error


def test_a_message_naming_an_unknown_spec_ends_as_a_failed_run(live_worker) -> None:
    run = run_sent_by_message(spec_id=987654, trigger="schedule")

    assert run.status == RunStatus.FAILED
    assert run.spec is None
    assert run.error.startswith("no training spec with id 987654")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"spec_id": "abc"}, "spec_id must be the id of a training spec, got 'abc'"),
        ({}, "spec_id must be the id of a training spec, got None"),
        ({"spec_id": 1, "trigger": "cron"}, "trigger must be one of schedule, admin, api"),
        ({"spec_id": 1, "spec": 1}, "unexpected arguments: spec"),
    ],
)
def test_bad_message_arguments_end_as_a_failed_run(
    live_worker, kwargs: dict[str, object], error: str
) -> None:
    spec = make_training_spec()
    if kwargs.get("spec_id") == 1:
        kwargs["spec_id"] = spec.pk

    run = run_sent_by_message(**kwargs)

    assert run.status == RunStatus.FAILED
    assert run.error.startswith(error)


def test_a_spec_with_unknown_params_fails_cleanly_and_leaves_production(live_worker) -> None:
    production = make_version("iris")
    spec = make_training_spec(params={"n_trees": 10}, estimator=Estimator.RANDOM_FOREST_CLASSIFIER)

    run = finished(training_runs.request_run(spec, RunTrigger.ADMIN))

    assert run.status == RunStatus.FAILED
    assert run.error.startswith("unknown params for RandomForestClassifier: n_trees")
    assert run.version is None
    assert production_of() == production
    assert ModelVersion.objects.count() == 1
    # The worker survived it: the next good run of the same spec goes through.
    spec.params = {"n_estimators": 5}
    spec.save()
    assert finished(training_runs.request_run(spec, RunTrigger.ADMIN)).status == "succeeded"


def test_the_demo_spec_retrains_the_demo_model_and_keeps_an_equal_production(live_worker) -> None:
    demo.seed_one(demo.DEMOS[0])
    spec = demo.seed_training()
    assert demo.seed_training() is None  # seeding twice changes nothing

    run = finished(training_runs.request_run(spec, RunTrigger.ADMIN))

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.version.ref == "iris:2"
    assert run.metrics["accuracy"] == run.production_metrics["accuracy"]
    assert not run.promoted
    assert production_of().number == 1


@override_settings(TRAINING_LEASE_SECONDS=10)
def test_a_run_whose_worker_died_fails_a_lease_later_and_frees_the_spec(monkeypatch) -> None:
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)  # no worker here
    spec = make_training_spec()
    lost = training_runs.request_run(spec, RunTrigger.API)
    assert training_runs.claim(lost)  # its worker is killed while it trains: no renewals
    in_five = timezone.now() + timedelta(seconds=5)
    assert reconcile.reconcile(now=in_five).training_runs_failed == 0  # lease still valid
    with pytest.raises(training_runs.TrainingInProgress):
        training_runs.request_run(spec, RunTrigger.API)

    outcome = reconcile.reconcile(now=timezone.now() + timedelta(seconds=11))

    lost.refresh_from_db()
    assert (outcome.training_runs_failed, lost.status) == (1, RunStatus.FAILED)
    assert "worker running it stopped" in lost.error
    assert training_runs.request_run(spec, RunTrigger.API).status == RunStatus.QUEUED


@override_settings(TASK_TIME_LIMIT=60)
def test_a_run_still_queued_a_time_limit_after_its_send_is_sent_again(monkeypatch) -> None:
    # A worker took its message while the database was away: storing the task's STARTED
    # state failed before the task ran, and the message was acknowledged; the run said
    # "queued" for ever. Failing it instead would fail runs only waiting behind a long queue.
    sent = []
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: sent.append(kwargs))
    spec = make_training_spec()
    lost = training_runs.request_run(spec, RunTrigger.API)
    later = timezone.now() + timedelta(seconds=110)
    assert reconcile.reconcile(now=later).training_runs_resent == 0

    much_later = timezone.now() + timedelta(seconds=121)
    outcomes = [reconcile.reconcile(now=much_later) for _ in range(2)]

    lost.refresh_from_db()
    assert [outcome.training_runs_resent for outcome in outcomes] == [1, 0]  # once a limit
    assert [each["task_id"] for each in sent] == [lost.task_id] * 2
    assert lost.status == RunStatus.QUEUED  # the copy will run it; its spec stays held
    with pytest.raises(training_runs.TrainingInProgress):
        training_runs.request_run(spec, RunTrigger.API)


def test_a_cancelled_running_fit_is_stopped_and_registers_nothing(live_worker) -> None:
    # 20,000 trees: minutes of fitting, unless the cancel stops it.
    spec = make_training_spec(
        estimator=Estimator.RANDOM_FOREST_CLASSIFIER, params={"n_estimators": 20000}
    )
    pool_before = set(pool_processes(live_worker))
    run = training_runs.request_run(spec, RunTrigger.ADMIN)
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == RunStatus.RUNNING, 30, "fit")

    run = training_runs.cancel_one(run, by="admin")

    assert (run.status, run.error) == (RunStatus.CANCELLED, "cancelled by admin")
    # The process fitting it is ended, and its worker starts another in its place.
    wait_for(lambda: set(pool_processes(live_worker)) - pool_before, 20, "a new pool process")
    assert len(pool_processes(live_worker)) == len(pool_before)
    # The spec is free at once, and the worker trains the next run.
    spec.params = {"n_estimators": 10}
    spec.save()
    assert finished(training_runs.request_run(spec, RunTrigger.ADMIN)).status == (
        RunStatus.SUCCEEDED
    )
    run.refresh_from_db()
    assert (run.status, run.version) == (RunStatus.CANCELLED, None)
    assert ModelVersion.objects.filter(registered_model=spec.registered_model).count() == 1


def test_a_cancelled_scheduled_run_does_not_start_again_from_its_redelivered_message(
    live_worker,
) -> None:
    # Beat's message names no run: each delivery made one. Its process ended by the cancel,
    # the message came back and a new run of the spec started at once.
    spec = make_training_spec(
        estimator=Estimator.RANDOM_FOREST_CLASSIFIER, params={"n_estimators": 20000}
    )
    pool_before = set(pool_processes(live_worker))
    retrain.apply_async(kwargs={"spec_id": spec.pk, "trigger": RunTrigger.SCHEDULE})
    wait_for(
        lambda: TrainingRun.objects.filter(spec=spec, status=RunStatus.RUNNING).exists(),
        30,
        "the scheduled fit",
    )

    training_runs.cancel(TrainingRun.objects.filter(spec=spec), by="admin")

    wait_for(lambda: set(pool_processes(live_worker)) - pool_before, 20, "a new pool process")
    time.sleep(3)  # the redelivered message has been taken by now
    assert list(TrainingRun.objects.filter(spec=spec).values_list("status", flat=True)) == [
        RunStatus.CANCELLED
    ]


def test_a_run_cancelled_as_it_finished_keeps_neither_its_version_nor_its_end(
    monkeypatch, private_artifacts
) -> None:
    # The revoke came too late (or never): the fit ended, and its end finds the run cancelled.
    production = make_version("iris")
    spec = make_training_spec(params={"max_iter": 500}, promotion_policy=PromotionPolicy.ALWAYS)
    run = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.ADMIN)
    assert training_runs.claim(run)
    real_compare = training_runs._compare

    def cancelled_meanwhile(*args: object) -> tuple[dict[str, float], bool, str]:
        TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
        return real_compare(*args)

    monkeypatch.setattr(training_runs, "_compare", cancelled_meanwhile)
    run = training_runs.execute(run)

    assert (run.status, run.version, run.promoted) == (RunStatus.CANCELLED, None, False)
    assert production_of() == production
    assert list(ModelVersion.objects.filter(registered_model=spec.registered_model)) == [production]
    assert [path.name for path in private_artifacts.rglob("*.joblib")] == ["v1.joblib"]


def test_a_run_is_compared_again_with_a_production_promoted_while_it_registered(
    monkeypatch, private_artifacts
) -> None:
    # Another spec's run (or a hand) promotes a better version after this run compared itself
    # with the old production and before it registered: it must not replace the better one.
    dummy_production()
    spec = make_training_spec(params={"max_iter": 500})
    run = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.ADMIN)
    assert training_runs.claim(run)
    real_compare = training_runs._compare
    iris = load_iris()
    # Fitted on every row, the holdout too: no run can beat it (a tie is not promoted).
    perfect = RandomForestClassifier(random_state=0).fit(iris.data, iris.target)
    better: list[ModelVersion] = []

    def promoted_meanwhile(*args: object) -> tuple[dict[str, float], bool, str]:
        decided = real_compare(*args)
        if not better:
            better.append(make_version("iris", estimator=perfect))
        return decided

    monkeypatch.setattr(training_runs, "_compare", promoted_meanwhile)
    run = training_runs.execute(run)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert not run.promoted, run.promotion_reason
    assert production_of() == better[0]
    assert f"[production was {better[0].ref}]" in run.promotion_reason
    assert run.production_metrics["accuracy"] == 1.0


@override_settings(TASK_TIME_LIMIT=60)
def test_a_run_queued_when_its_spec_is_deleted_fails_saying_so_and_is_not_sent_again(
    monkeypatch,
) -> None:
    sent = []
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: sent.append(kwargs))
    spec = make_training_spec()
    queued = training_runs.request_run(spec, RunTrigger.ADMIN)
    spec.delete()  # from the admin, say, while the run waits behind a long queue

    retrain.apply(args=sent[0]["args"], task_id=sent[0]["task_id"])  # its message arrives
    much_later = timezone.now() + timedelta(seconds=121)
    resent = reconcile.reconcile(now=much_later).training_runs_resent

    queued.refresh_from_db()
    assert list(TrainingRun.objects.all()) == [queued]
    assert (queued.status, queued.error) == (
        RunStatus.FAILED,
        "the training spec was deleted before the run started",
    )
    assert resent == 0

"""The training API: specs and runs for everyone signed in; staff start runs."""

from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from mlsite import sending
from modelregistry import scheduling, training_runs
from modelregistry.models import RunStatus, RunTrigger, TrainingRun
from tests.base import make_user, owner, staff, with_permissions
from tests.builders import make_training_spec
from tests.processes import wait_for


def client_for(user: object) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_specs_list_their_estimator_policy_and_next_scheduled_runs() -> None:
    spec = make_training_spec(timezone="Asia/Tokyo")
    scheduling.ensure_schedule(spec)

    response = client_for(owner()).get("/api/v1/training/specs/")

    assert response.status_code == 200
    [listed] = response.json()["results"]
    assert listed["name"] == "iris-nightly"
    assert listed["model"] == "iris"
    assert listed["dataset"] == "iris-builtin"
    assert listed["promotion_policy"] == "if_better"
    assert listed["schedule"]["enabled"] is True
    assert len(listed["schedule"]["next_runs"]) == 5
    assert all(at.endswith("+09:00") for at in listed["schedule"]["next_runs"])


@pytest.mark.django_db
def test_only_staff_may_start_a_run() -> None:
    spec = make_training_spec()

    response = client_for(owner()).post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_signed_out_callers_see_nothing() -> None:
    assert APIClient().get("/api/v1/training/runs/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_staff_start_a_run_that_a_worker_carries_out(live_worker) -> None:
    spec = make_training_spec(params={"max_iter": 500})
    client = client_for(staff())

    response = client.post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["trigger"] == "api"
    run_url = f"/api/v1/training/runs/{response.json()['id']}/"
    wait_for(lambda: client.get(run_url).json()["status"] == "succeeded", 30, "the run")
    run = client.get(run_url).json()
    assert run["version"] == "iris:1"
    assert run["promoted"] is True
    assert run["metrics"]["accuracy"] > 0.85


@pytest.mark.django_db
def test_starting_a_run_while_one_is_in_progress_is_a_conflict() -> None:
    spec = make_training_spec()
    TrainingRun.objects.create(
        spec=spec, trigger=RunTrigger.ADMIN, status=RunStatus.RUNNING, started_at=timezone.now()
    )

    response = client_for(staff()).post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert response.status_code == 409
    assert response.json()["code"] == "training_in_progress"
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db
def test_a_second_request_while_the_first_run_is_queued_is_a_conflict() -> None:
    spec = make_training_spec()
    client = client_for(staff())
    with mock.patch.object(sending, "publish"):  # no worker here: the first run stays queued
        first = client.post(f"/api/v1/training/specs/{spec.pk}/run/")
        second = client.post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert first.status_code == 202
    assert (second.status_code, second.json()["code"]) == (409, "training_in_progress")
    assert "is queued" in second.json()["detail"]
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the send follows the run's commit
def test_a_run_the_broker_did_not_take_is_a_503_and_recorded_as_failed() -> None:
    spec = make_training_spec()
    refused = sending.BrokerUnavailable("ConnectionError: Connection refused")
    with mock.patch.object(sending, "publish", side_effect=refused):
        response = client_for(staff()).post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable")
    run = TrainingRun.objects.get()  # was a 202 whose body said it had failed
    assert run.status == RunStatus.FAILED
    assert (
        run.error == "could not reach the broker to start it: ConnectionError: Connection refused"
    )
    assert f"run {run.pk} of {spec.name} failed" in response.json()["detail"]


@pytest.mark.django_db
def test_a_run_sent_longer_ago_than_a_task_may_run_does_not_hold_the_spec_back() -> None:
    # Its message lost, and no reconciler to send it again (resend_unstarted_runs).
    spec = make_training_spec()
    lost = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.API)
    long_ago = timezone.now() - timedelta(seconds=settings.TASK_TIME_LIMIT + 120)
    TrainingRun.objects.filter(pk=lost.pk).update(created_at=long_ago, sent_at=long_ago)
    with mock.patch.object(sending, "publish"):
        response = client_for(staff()).post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert response.status_code == 202
    assert TrainingRun.objects.count() == 2


@pytest.mark.django_db
def test_staff_who_may_not_change_the_spec_cannot_start_a_run() -> None:
    # A run registers a version and may promote it: it is not for every staff member.
    spec = make_training_spec()
    viewer = with_permissions(make_user("viewer", staff=True), "view_trainingspec")

    response = client_for(viewer).post(f"/api/v1/training/specs/{spec.pk}/run/")

    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_starting_a_run_of_an_unknown_spec_is_not_found() -> None:
    response = client_for(staff()).post("/api/v1/training/specs/4242/run/")
    assert response.status_code == 404


@pytest.mark.django_db
def test_runs_can_be_filtered_by_status_and_show_why_they_failed() -> None:
    spec = make_training_spec()
    TrainingRun.objects.create(
        spec=spec,
        trigger=RunTrigger.SCHEDULE,
        status=RunStatus.FAILED,
        error="unknown params for LogisticRegression: Cee",
    )
    TrainingRun.objects.create(
        spec=spec, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCEEDED, metrics={"f1": 0.9}
    )

    response = client_for(make_user("viewer")).get("/api/v1/training/runs/?status=failed")

    [failed] = response.json()["results"]
    assert failed["spec_name"] == "iris-nightly"
    assert failed["error"] == "unknown params for LogisticRegression: Cee"
    assert failed["version"] is None


@pytest.mark.django_db
def test_staff_cancel_a_queued_run_and_its_message_then_trains_nothing() -> None:
    spec = make_training_spec()
    run = TrainingRun.objects.create(spec=spec, trigger=RunTrigger.API, task_id="t-queued")
    user = staff()

    response = client_for(user).post(f"/api/v1/training/runs/{run.pk}/cancel/")

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"] == f"cancelled by {user.username}"
    assert training_runs.handle_message(spec.pk, "api", run.pk, {}) is None  # its message
    run.refresh_from_db()
    assert (run.status, run.version) == (RunStatus.CANCELLED, None)
    # The spec is free again, and a finished run cannot be cancelled twice.
    assert training_runs.running_run(spec.pk) is None
    again = client_for(user).post(f"/api/v1/training/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"training run {run.pk} already finished (cancelled)",
        "code": "not_cancellable",
    }


@pytest.mark.django_db
def test_only_staff_who_may_start_runs_may_cancel_them() -> None:
    run = TrainingRun.objects.create(spec=make_training_spec(), trigger=RunTrigger.API)

    viewer = with_permissions(make_user("viewer", staff=True), "view_trainingrun")
    for user in (owner(), viewer):
        response = client_for(user).post(f"/api/v1/training/runs/{run.pk}/cancel/")
        assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED

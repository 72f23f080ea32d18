"""Single jobs through the REST API and a real worker: the model's own predictions, on time."""

import numpy as np
import pytest
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient

from mlsite import broker
from mlsite.celery import app
from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import in_process_predictions, iris_rows, make_version
from tests.processes import wait_for


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_a_job_waited_on_returns_the_predictions_the_model_gives_in_process(live_worker) -> None:
    version = make_version()
    rows = iris_rows(5, offset=40)
    client = client_for(make_user())

    answer = client.post("/api/v1/jobs/?wait=20", {"model": "iris", "inputs": rows}, format="json")

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["status"] == "succeeded"
    assert body["version"] == version.ref
    expected = in_process_predictions(version, rows)
    assert [row["prediction"] for row in body["outputs"]] == expected.tolist()
    for row in body["outputs"]:
        assert set(row["probabilities"]) == {"0", "1", "2"}
        assert np.isclose(sum(row["probabilities"].values()), 1.0)


@pytest.mark.django_db(transaction=True)
def test_many_single_jobs_all_succeed_each_with_its_own_task_result(live_worker) -> None:
    version = make_version()
    client = client_for(make_user())
    ids = []
    for offset in range(40):
        answer = client.post(
            "/api/v1/jobs/", {"model": "iris", "input": iris_rows(1, offset)[0]}, format="json"
        )
        assert answer.status_code == 201
        ids.append(answer.json()["id"])

    def all_finished() -> bool:
        unfinished = PredictionJob.objects.filter(pk__in=ids).exclude(status=Status.SUCCEEDED)
        return not unfinished.exists()

    wait_for(all_finished, 30, "40 single jobs")
    expected = in_process_predictions(version, iris_rows(40))
    for offset, job_id in enumerate(ids):
        job = PredictionJob.objects.get(pk=job_id)
        assert job.outputs[0]["prediction"] == expected[offset]
        result = TaskResult.objects.get(task_id=job.task_id)
        assert result.status == "SUCCESS"
        assert job_id in result.result
    task_ids = PredictionJob.objects.filter(pk__in=ids).values_list("task_id", flat=True)
    assert len(set(task_ids)) == 40


@pytest.mark.django_db(transaction=True)
def test_get_with_wait_returns_the_job_once_it_finished(live_worker) -> None:
    make_version()
    client = client_for(make_user())
    created = client.post("/api/v1/jobs/", {"model": "iris", "inputs": iris_rows(2)}, format="json")
    job_id = created.json()["id"]

    answer = client.get(f"/api/v1/jobs/{job_id}/?wait=20")

    assert answer.status_code == 200
    assert answer.json()["status"] == "succeeded"
    assert len(answer.json()["outputs"]) == 2


@pytest.mark.django_db(transaction=True)
def test_a_job_reaches_its_worker_when_redis_has_forgotten_the_queue_bindings(live_worker) -> None:
    """As after a Redis restart without saving: the web sends without declaring the queue."""
    version = make_version()
    client = client_for(make_user())
    redis = broker.client()
    bindings = f"_kombu.binding.{app.amqp.default_exchange.name}"  # where our queues are bound
    assert redis.exists(bindings)  # the worker declared them
    redis.delete(bindings)

    answer = client.post(
        "/api/v1/jobs/?wait=20", {"model": "iris", "inputs": iris_rows(1)}, format="json"
    )

    assert answer.json()["status"] == "succeeded"
    expected = in_process_predictions(version, iris_rows(1))
    assert answer.json()["outputs"][0]["prediction"] == expected[0]

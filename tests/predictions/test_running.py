"""Claiming and scoring small jobs, cancel and retry, as plain functions (no worker)."""

import time
from datetime import timedelta
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.utils import timezone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlsite import dbretry, sending
from mlsite.leases import Heartbeat
from modelregistry import loader
from predictions import batching, heartbeat, running, submission, waiting
from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version
from tests.outages import answer_lost_at_call, fails_at_call

pytestmark = pytest.mark.django_db


def submit_file(text: str) -> PredictionJob:
    upload = SimpleUploadedFile("rows.csv", text.encode())
    return submission.submit_file(make_user(), "iris", upload, size=upload.size)[0]


def submit(rows: int = 1, ref: str = "iris", offset: int = 0) -> PredictionJob:
    job, _ = submission.submit_rows(make_user(f"u{uuid4().hex[:8]}"), ref, iris_rows(rows, offset))
    return job


def test_only_the_first_claim_wins() -> None:
    make_version()
    job = submit()
    assert running.claim(job.pk, "task-a") is not None
    assert running.claim(job.pk, "task-b") is None
    assert running.claim(job.pk, "task-b", retrying=True) is None
    assert running.claim(job.pk, "task-a", retrying=True) is not None  # its own retry
    job.refresh_from_db()
    assert (job.status, job.task_id, job.attempts) == (Status.RUNNING, "task-a", 1)
    assert job.lease_expires_at > timezone.now()


def test_a_micro_batch_claims_only_queued_jobs_once_each() -> None:
    make_version()
    jobs = [submit() for _ in range(3)]
    running.cancel(PredictionJob.objects.filter(pk=jobs[2].pk))
    requests = [(str(job.pk), f"t{i}") for i, job in enumerate(jobs)] + [(str(jobs[0].pk), "t0")]

    claimed = running.claim_many(requests)

    assert sorted(str(job.pk) for job in claimed) == sorted(str(job.pk) for job in jobs[:2])
    assert running.claim_many(requests) == []  # the same messages again: nothing to do


def score_as_one_micro_batch(jobs: list[PredictionJob]) -> None:
    """Claim and score the jobs as a worker's micro-batch does, each under its own task id."""
    claimed = running.claim_many([(str(job.pk), str(uuid4())) for job in jobs])
    for job in claimed:
        job.task_id = PredictionJob.objects.get(pk=job.pk).task_id
    running.score_jobs(claimed)


def test_scoring_a_micro_batch_gives_each_job_the_models_own_predictions() -> None:
    first, second = make_version(), make_version("iris-b")
    jobs = [submit(3, "iris", 0), submit(2, "iris-b", 50), submit(1, "iris", 100)]
    score_as_one_micro_batch(jobs)

    for job, version, rows in [
        (jobs[0], first, iris_rows(3, 0)),
        (jobs[1], second, iris_rows(2, 50)),
        (jobs[2], first, iris_rows(1, 100)),
    ]:
        job.refresh_from_db()
        assert job.status == Status.SUCCEEDED
        predictions = [row["prediction"] for row in job.outputs]
        assert predictions == in_process_predictions(version, rows).tolist()


@pytest.fixture
def two_unsent_jobs(monkeypatch: pytest.MonkeyPatch) -> list[PredictionJob]:
    """Two committed jobs with no message sent (a live worker left by an earlier test takes
    none), and dbretry's delays cut short."""
    make_version()
    monkeypatch.setattr(submission, "send", lambda *args: True)
    monkeypatch.setattr(dbretry, "DELAYS", (0.01, 0.01))
    return [submit() for _ in range(2)]


@pytest.mark.django_db(transaction=True)  # the retry closes the connection, as after a real outage
def test_a_micro_batch_outlasts_a_database_that_is_briefly_away(
    monkeypatch: pytest.MonkeyPatch, two_unsent_jobs: list[PredictionJob]
) -> None:
    jobs = two_unsent_jobs
    for step in (running.CLAIM, running.FINISH):
        monkeypatch.setattr(step, "run", fails_at_call(step.run))

    claimed = running.claim_many([(str(job.pk), "t") for job in jobs])
    finished = running.score_jobs(claimed)

    assert sorted(finished) == sorted(str(job.pk) for job in jobs)
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts, job.outputs is not None) == (Status.SUCCEEDED, 1, True)


@pytest.mark.postgres  # a write is known again by its timestamp, as each database stores it
@pytest.mark.django_db(transaction=True)
def test_a_micro_batch_whose_commits_lost_their_answers_still_finishes_and_announces_its_jobs(
    monkeypatch: pytest.MonkeyPatch, two_unsent_jobs: list[PredictionJob]
) -> None:
    jobs = two_unsent_jobs
    for step in ("_claim_rows", "_write_finished"):
        monkeypatch.setattr(running, step, answer_lost_at_call(getattr(running, step)))
    announced: list[str] = []
    monkeypatch.setattr(
        waiting, "announce_finished", lambda done: announced.extend(str(job.pk) for job in done)
    )
    recorded: list[str] = []

    claimed = running.claim_many([(str(job.pk), "t") for job in jobs])
    finished = running.score_jobs(
        claimed, on_written=lambda done: recorded.extend(str(job.pk) for job in done)
    )

    ids = sorted(str(job.pk) for job in jobs)
    assert (sorted(finished), sorted(announced), sorted(recorded)) == (ids, ids, ids)
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts, job.lease_expires_at) == (Status.SUCCEEDED, 1, None)


def test_a_job_cancelled_while_scored_stays_cancelled() -> None:
    make_version()
    job = submit()
    claimed = running.claim_many([(str(job.pk), "t")])
    running.cancel(PredictionJob.objects.filter(pk=job.pk))
    running.score_jobs(claimed)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert job.outputs is None


def test_an_artifact_that_no_longer_matches_fails_its_jobs_with_artifact_mismatch() -> None:
    version = make_version()
    job = submit()
    with open(version.artifact.path, "ab") as artifact:
        artifact.write(b"tampered")
    loader.clear_cache()
    running.score_jobs(running.claim_many([(str(job.pk), "t")]))
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "artifact_mismatch")


def test_a_version_marked_unusable_fails_its_jobs_though_the_worker_holds_its_model() -> None:
    version = make_version()
    first, second = submit(), submit()
    running.score_jobs(running.claim_many([(str(first.pk), "t1")]))  # the model is now cached
    version.is_usable, version.unusable_reason = False, "stored artifact does not match its sha256"
    version.save()  # as "Verify in a worker" found it, in another process

    running.score_jobs(running.claim_many([(str(second.pk), "t2")]))

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Status.SUCCEEDED
    assert (second.status, second.error_code, second.outputs) == (
        Status.FAILED,
        "artifact_mismatch",
        None,
    )
    assert second.error_message == "iris:1 is unusable (stored artifact does not match its sha256)"


@pytest.mark.parametrize(
    "estimator",
    [RandomForestClassifier(n_estimators=10, random_state=0), HistGradientBoostingClassifier()],
)
def test_labels_derived_from_probabilities_equal_the_models_predict(estimator) -> None:
    data = load_iris()
    estimator.fit(data.data, data.target)
    version = make_version(estimator=estimator)
    job = submit(150)
    running.score_jobs(running.claim_many([(str(job.pk), "t")]))
    job.refresh_from_db()
    predictions = np.array([row["prediction"] for row in job.outputs])
    assert (predictions == in_process_predictions(version, iris_rows(150))).all()


def test_a_pipeline_that_picks_columns_by_name_scores_single_and_batch_rows() -> None:
    # A ColumnTransformer naming its columns takes only a DataFrame; the registry accepts it
    # (fitted on one, its names are the schema's), so scoring must give it one.
    frame = load_iris(as_frame=True)
    features = frame.data.set_axis(IRIS_FEATURES, axis=1)
    encode = ColumnTransformer(
        [("scaled", StandardScaler(), IRIS_FEATURES[:2])], remainder="passthrough"
    )
    pipeline = make_pipeline(encode, LogisticRegression(max_iter=500))
    make_version(estimator=pipeline.fit(features, frame.target))
    job = submit(150)
    running.score_jobs(running.claim_many([(str(job.pk), "t")]))
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED, job.error_message
    predictions = [row["prediction"] for row in job.outputs]
    assert predictions == pipeline.predict(features).tolist()

    batch = submit_file(pd.DataFrame(iris_rows(150)).to_csv(index=False))
    batching.start(batch.pk, "t")
    for chunk_id in batch.chunks.values_list("pk", flat=True):
        batching.score_chunk(chunk_id)
    batch.refresh_from_db()
    assert batch.status == Status.SUCCEEDED, batch.error_message
    result = pd.read_csv(batch.result_file.path)["prediction"]
    assert result.tolist() == pipeline.predict(pd.DataFrame(iris_rows(150))).tolist()


def test_retry_resets_a_failed_job_for_a_new_attempt() -> None:
    make_version()
    job = submit()
    running.claim(job.pk, "t1")
    running.fail(job.pk, "scoring_failed", "boom")
    assert running.retry(PredictionJob.objects.filter(pk=job.pk)) == 1
    job.refresh_from_db()
    assert (job.status, job.error_code, job.attempts) == (Status.QUEUED, "", 0)
    assert job.task_id != "t1"
    assert running.retry(PredictionJob.objects.filter(pk=job.pk)) == 0


def test_a_lease_is_renewed_only_while_running() -> None:
    make_version()
    job = submit()
    assert not running.renew_lease(job.pk)
    running.claim(job.pk, "t", now=timezone.now() - timedelta(hours=1))
    assert running.renew_lease(job.pk)
    job.refresh_from_db()
    assert job.lease_expires_at > timezone.now()


def test_a_job_the_model_cannot_answer_fails_alone_in_its_micro_batch() -> None:
    version = make_version()
    huge = dict.fromkeys(IRIS_FEATURES, 1.7e308)  # finite; the model's answer is NaN
    bad, _ = submission.submit_rows(make_user("u-huge"), "iris", [*iris_rows(1), huge])
    jobs = [submit(2), bad, submit(1, offset=9)]
    score_as_one_micro_batch(jobs)

    for job in jobs:
        job.refresh_from_db()
    assert (bad.status, bad.error_code) == (Status.FAILED, "scoring_failed")
    assert bad.error_message.startswith("row 2: ") and "not a finite number" in bad.error_message
    assert [jobs[0].status, jobs[2].status] == [Status.SUCCEEDED, Status.SUCCEEDED]
    assert [row["prediction"] for row in jobs[2].outputs] == (
        in_process_predictions(version, iris_rows(1, 9)).tolist()
    )


@pytest.mark.django_db(transaction=True)  # the heartbeat writes from a thread of its own
@override_settings(SINGLE_JOB_LEASE_SECONDS=0.6)
def test_a_micro_batchs_jobs_keep_a_short_lease_only_while_it_runs(monkeypatch) -> None:
    monkeypatch.setattr(sending, "publish", lambda *args, **kwargs: None)  # no live worker
    make_version()
    job = submit()
    [claimed] = running.claim_many([(str(job.pk), "t")])
    claimed_lease = claimed.lease_expires_at
    assert claimed_lease - claimed.started_at == timedelta(seconds=0.6)

    def lease() -> object:
        return PredictionJob.objects.get(pk=job.pk).lease_expires_at

    beats = Heartbeat("SINGLE_JOB_LEASE_SECONDS", heartbeat.renew_jobs)  # beats every 0.2 s
    with beats.holding([str(job.pk)]):
        time.sleep(1.0)  # a micro-batch outliving its first lease
        renewed = lease()
    assert renewed > claimed_lease + timedelta(seconds=0.3)
    time.sleep(0.3)  # a beat begun as the micro-batch ended may still land
    settled = lease()
    time.sleep(0.5)  # two more beats: once it ended, nothing renews its jobs
    assert lease() == settled


def test_a_multi_output_model_fails_its_own_jobs_and_not_its_micro_batch() -> None:
    # Fitted on several targets, an estimator answers several values a row; the registry takes
    # it (a classifier with predict), and its answer broke the finiteness check outside the
    # scoring errors: every job of its micro-batch stayed running until its lease ran out.
    data = load_iris()
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    make_version("iris-multi", estimator=forest.fit(data.data, np.c_[data.target, data.target]))
    make_version()
    multi = submit(2, "iris-multi")
    jobs = [submit(1), multi, submit(3, offset=20)]
    score_as_one_micro_batch(jobs)

    for job in jobs:
        job.refresh_from_db()
    assert (multi.status, multi.error_code) == (Status.FAILED, "scoring_failed")
    assert "2 values a row" in multi.error_message, multi.error_message
    assert [jobs[0].status, jobs[2].status] == [Status.SUCCEEDED, Status.SUCCEEDED]


def test_a_batch_file_for_a_multi_output_model_fails_as_no_rows_scored() -> None:
    data = load_iris()
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    make_version("iris-multi", estimator=forest.fit(data.data, np.c_[data.target, data.target]))
    upload = SimpleUploadedFile("rows.csv", pd.DataFrame(iris_rows(4)).to_csv(index=False).encode())
    batch = submission.submit_file(make_user(), "iris-multi", upload, size=upload.size)[0]

    batching.start(batch.pk, "t")
    for chunk_id in batch.chunks.values_list("pk", flat=True):
        batching.score_chunk(chunk_id)

    batch.refresh_from_db()
    assert (batch.status, batch.error_code, batch.rows_failed) == (
        Status.FAILED,
        "no_rows_scored",
        4,
    )
    errors = pd.read_csv(batch.error_file.path)["error"]
    assert errors.str.contains("2 values a row").all(), errors.tolist()


def test_a_lease_renewal_the_database_refused_is_one_warning_line(caplog) -> None:
    # Every beat of every pool process while the database is away: a line each, not a traceback.
    beats = Heartbeat("SINGLE_JOB_LEASE_SECONDS", fails_at_call(heartbeat.renew_jobs))
    assert beats.renew([str(uuid4())]) == 0
    [record] = caplog.records
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert "server closed the connection" in record.getMessage()

"""Parquet uploads: columns are checked from the file's footer before the job is accepted."""

import io
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rest_framework.test import APIClient

from predictions import batching
from predictions.models import PredictionJob, Status
from tests.base import make_user
from tests.builders import IRIS_FEATURES, iris_rows, make_version


def post_parquet(table: pa.Table, **fields: str):
    client = APIClient()
    client.force_authenticate(make_user())
    upload = io.BytesIO()
    pq.write_table(table, upload)
    upload.seek(0)
    upload.name = "rows.parquet"
    return client.post("/api/v1/jobs/", {"model": "iris", "file": upload, **fields})


def iris_table(**replaced: pa.Array) -> pa.Table:
    columns = {name: pa.array([5.1, 6.3]) for name in IRIS_FEATURES}
    return pa.table({**columns, **replaced})


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["5.1", "6.3"]),
        pa.array([True, False]),
        pa.array([Decimal("5.1"), Decimal("6.3")]),
        pa.array([1, 2], pa.timestamp("s")),
        pa.array(["5.1", "6.3"]).dictionary_encode(),
    ],
    ids=["string", "bool", "decimal", "timestamp", "dictionary"],
)
@pytest.mark.django_db
def test_a_feature_column_that_is_not_numeric_is_refused_at_upload(column: pa.Array) -> None:
    make_version()
    answer = post_parquet(iris_table(petal_width=column))

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "bad_file"
    assert "petal_width" in answer.json()["detail"]


@pytest.mark.django_db
def test_integer_and_float_feature_columns_are_accepted() -> None:
    make_version()
    table = iris_table(
        sepal_length=pa.array([5, 6], pa.int32()), petal_width=pa.array([0.2, 1.9], pa.float32())
    )
    assert post_parquet(table).status_code == 201


@pytest.mark.django_db
def test_an_id_column_that_cannot_be_text_is_refused_at_upload() -> None:
    make_version()
    ids = pa.array([{"a": 1}, {"a": 2}])
    answer = post_parquet(iris_table(row_id=ids), id_column="row_id")

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "bad_file"
    assert "row_id" in answer.json()["detail"]


@pytest.mark.django_db
def test_the_index_pandas_writes_for_a_filtered_frame_is_not_taken_for_a_column() -> None:
    # df[df.x > 0].to_parquet() stores the row labels as __index_level_0__, which pandas reads
    # back as the index; the file was refused for an unknown column.
    make_version()
    frame = pd.DataFrame(iris_rows(6), columns=IRIS_FEATURES)
    table = pa.Table.from_pandas(frame.iloc[[0, 1, 4]])  # an index no range can describe
    assert "__index_level_0__" in table.column_names

    answer = post_parquet(table)

    assert answer.status_code == 201, answer.content
    job = PredictionJob.objects.get(pk=answer.json()["id"])
    batching.start(job.pk, "t")
    for chunk_id in job.chunks.values_list("pk", flat=True):
        batching.score_chunk(chunk_id)
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.rows_failed) == (Status.SUCCEEDED, 3, 0)

"""The OpenAPI schema is generated from the code, validates, and describes every endpoint."""

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from tests.base import make_user


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --fail-on-warn: an endpoint spectacular cannot describe (an untyped field, a view
    # without a serializer) fails the build instead of leaving a hole in the docs.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return yaml.safe_load(Path(out).read_text())


def test_the_schema_validates_as_openapi_3(schema: dict) -> None:
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "ML prediction queue API"


def test_the_schema_lists_the_job_model_and_training_endpoints(schema: dict) -> None:
    paths = set(schema["paths"])
    assert "/api/v1/jobs/" in paths
    assert "/api/v1/jobs/{id}/" in paths
    assert any(path.startswith("/api/v1/models/") for path in paths)
    assert any("train" in path for path in paths)


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [
        (method, path, operation)
        for path, by_method in schema["paths"].items()
        for method, operation in by_method.items()
    ]


def query_parameters(operation: dict) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def test_every_operation_describes_the_error_shape(schema: dict) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) >= {"detail", "code", "field"}
    for method, path, operation in operations(schema):
        for status in ("400", "401", "403", "406", "429"):
            body = operation["responses"][status]["content"]["application/json"]
            assert body["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
            assert "code" in body["example"]


def test_every_error_a_view_declares_has_the_error_shape(schema: dict) -> None:
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                body = response["content"]["application/json"]
                assert body["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    method,
                    path,
                    status,
                )


def test_the_error_shape_is_one_object_of_detail_code_and_field(schema: dict) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"detail", "code", "field"}
    assert set(error["required"]) == {"detail", "code"}
    assert error["additionalProperties"] is False  # no lists of messages under field names
    assert "under the field" not in error["description"]


def test_an_item_endpoint_documents_its_404(schema: dict) -> None:
    detail = schema["paths"]["/api/v1/jobs/{id}/"]["get"]
    assert "404" in detail["responses"]


def test_a_body_can_be_refused_for_its_length_size_or_type(schema: dict) -> None:
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        if method == "post":
            assert "411" in responses, path  # chunked, without a Content-Length
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), path


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("post", "/api/v1/jobs/", "404", "unknown_model"),
        ("post", "/api/v1/jobs/", "409", "unusable_version"),
        ("post", "/api/v1/jobs/{id}/cancel/", "409", "not_cancellable"),
        ("post", "/api/v1/jobs/{id}/retry/", "409", "not_retryable"),
        ("get", "/api/v1/jobs/{id}/result/", "409", "result_not_ready"),
        ("get", "/api/v1/jobs/{id}/result/", "410", "result_purged"),
        ("get", "/api/v1/jobs/{id}/result/", "400", "result_too_large"),
        ("get", "/api/v1/jobs/{id}/errors/", "409", "result_not_ready"),
        ("get", "/api/v1/jobs/{id}/errors/", "410", "result_purged"),
        ("post", "/api/v1/models/{name}/rollback/", "409", "stage_conflict"),
        ("post", "/api/v1/models/{model_name}/versions/{number}/promote/", "409", "stage_conflict"),
        ("post", "/api/v1/training/specs/{id}/run/", "409", "training_in_progress"),
    ],
)
def test_an_operation_documents_the_domain_errors_it_answers_with(
    schema: dict, method: str, path: str, status: str, code: str
) -> None:
    response = schema["paths"][path][method]["responses"][status]
    assert code in response["description"]


def test_a_jobs_result_is_a_bare_array_of_rows_not_a_page(schema: dict) -> None:
    result = schema["paths"]["/api/v1/jobs/{id}/result/"]["get"]
    assert not result["operationId"].endswith("_list")
    assert query_parameters(result) == {"format"}
    rows = result["responses"]["200"]["content"]["application/json"]["schema"]
    assert rows["type"] == "array"
    assert "prediction" in rows["items"]["properties"]
    assert "PaginatedResultRowList" not in schema["components"]["schemas"]


def test_only_the_collections_are_documented_as_paged_lists(schema: dict) -> None:
    lists = {"jobs_list", "models_list", "models_versions_list", "training_runs_list"}
    lists.add("training_specs_list")
    for method, path, operation in operations(schema):
        body = str(operation["responses"].get("200", {}).get("content", {}))
        is_paged = "page" in query_parameters(operation) or "Paginated" in body
        assert is_paged == (operation["operationId"] in lists), (method, path)


@pytest.mark.parametrize(
    "component, field",
    [
        ("ModelVersion", "created_by"),  # versions the demo seeding made have no creator
        ("ModelVersionDetail", "created_by"),
        ("StageChange", "changed_by"),
        ("TrainingRun", "version"),  # a queued or failed run made none
        ("TrainingRun", "spec_name"),  # a run of a spec that was deleted
    ],
)
def test_a_field_that_can_be_null_is_nullable(schema: dict, component: str, field: str) -> None:
    assert schema["components"]["schemas"][component]["properties"][field]["nullable"] is True


@pytest.mark.parametrize("method, path", [("get", "/api/v1/jobs/{id}/"), ("post", "/api/v1/jobs/")])
def test_wait_cannot_be_negative(schema: dict, method: str, path: str) -> None:
    operation = schema["paths"][path][method]
    (wait,) = [p for p in operation["parameters"] if p["name"] == "wait"]
    assert wait["schema"]["minimum"] == 0
    assert "MAX_WAIT_SECONDS" in wait["description"]  # larger values are capped, not refused


def test_a_json_job_submission_refuses_unknown_fields(schema: dict) -> None:
    assert schema["components"]["schemas"]["SubmitRowsRequest"]["additionalProperties"] is False


@pytest.mark.django_db
def test_the_schema_swagger_and_redoc_pages_are_served() -> None:
    client = Client()
    client.force_login(make_user())
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/auth/token/" in schema.json()["paths"]
    swagger = client.get("/api/schema/swagger-ui/")
    assert swagger.status_code == 200 and b"swagger-ui" in swagger.content
    redoc = client.get("/api/schema/redoc/")
    assert redoc.status_code == 200 and b"redoc" in redoc.content


@pytest.mark.django_db
def test_the_browsable_api_renders_html_for_a_signed_in_user() -> None:
    client = Client()
    client.force_login(make_user())
    page = client.get("/api/v1/jobs/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b"Django REST framework" in page.content


@pytest.mark.django_db
@pytest.mark.parametrize("version", ["a\nb", "a\rb", "x\x00"], ids=["lf", "cr", "nul"])
def test_a_version_query_with_a_control_character_is_not_a_500(version: str) -> None:
    # spectacular put ?version= into the Content-Disposition header: a line break raised
    # BadHeaderError, and gunicorn refused a NUL byte (an empty 500 for anyone).
    answer = Client().get("/api/schema/", {"version": version})
    assert answer.status_code == 200
    assert all(ord(char) >= 32 for char in answer["Content-Disposition"])


@pytest.mark.django_db
def test_an_unknown_schema_format_is_a_400_in_json() -> None:
    answer = Client().get("/api/schema/?format=xml")
    assert answer.status_code == 400
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {
        "detail": "format must be one of yaml, json",
        "code": "bad_input",
        "field": "format",
    }


@pytest.mark.django_db
def test_a_lang_query_does_not_make_the_process_keep_another_catalogue() -> None:
    from django.utils.translation import trans_real

    before = len(trans_real._translations)
    for index in range(5):
        assert Client().get(f"/api/schema/?lang=x{index}").status_code == 200
    assert len(trans_real._translations) == before


@pytest.mark.django_db
def test_the_schema_is_made_once_per_process(monkeypatch) -> None:
    # Made per request, it cost 0.1 s of CPU for each, signed in or not.
    from drf_spectacular.generators import SchemaGenerator

    from mlsite.schema import SchemaView

    made = []
    real = SchemaGenerator.get_schema
    monkeypatch.setattr(
        SchemaGenerator, "get_schema", lambda self, **kwargs: made.append(1) or real(self, **kwargs)
    )
    monkeypatch.setattr(SchemaView, "_made", None)
    answers = [
        Client().get("/api/schema/", {"format": shape}) for shape in ("json", "yaml", "json")
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[0].json()["paths"] and answers[1].content.startswith(b"openapi:")
    assert len(made) == 1

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


def test_every_operation_describes_the_error_shape(schema: dict) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) >= {"detail", "code", "field"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status in ("401", "403", "429"):
                body = operation["responses"][status]["content"]["application/json"]
                assert body["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
                assert "code" in body["example"]


def test_an_item_endpoint_documents_its_404(schema: dict) -> None:
    detail = schema["paths"]["/api/v1/jobs/{id}/"]["get"]
    assert "404" in detail["responses"]


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

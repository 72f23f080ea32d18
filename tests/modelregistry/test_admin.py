"""The registry admin: lists, the version page, the upload form, stage actions and buttons."""

import io
import json
import re
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils.html import strip_tags

from mlsite import sending
from modelregistry.artifacts import dump_skops
from modelregistry.models import ModelVersion, RegisteredModel, Stage
from tests.base import make_user, staff, with_permissions
from tests.builders import IRIS_FEATURES, artifact_bytes, iris_estimator, make_model, make_version
from tests.modelregistry.hostile import hostile_artifacts
from tests.processes import wait_for

VERSIONS = "/admin/modelregistry/modelversion/"
MODELS = "/admin/modelregistry/registeredmodel/"


@pytest.fixture
def admin_client(db, private_artifacts) -> Client:
    client = Client()
    client.force_login(staff())
    return client


def named_file(data: bytes, name: str = "model.joblib") -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def messages_of(response) -> list[str]:
    """The messages as a user reads them (a link to the object shows as its text)."""
    return [strip_tags(str(message)) for message in get_messages(response.wsgi_request)]


def with_metrics(version: ModelVersion, **metrics: float) -> ModelVersion:
    ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
    version.refresh_from_db()
    return version


def test_the_models_list_shows_the_production_version_and_counts(admin_client) -> None:
    make_version("iris", stage=Stage.ARCHIVED)
    make_version("iris", stage=Stage.PRODUCTION)
    page = admin_client.get(MODELS).content.decode()
    assert ">v2</a>" in page
    assert "registered_model__id__exact=" in page and ">2</a>" in page


def test_a_version_page_shows_hash_size_metrics_history_and_all_versions_side_by_side(
    admin_client,
) -> None:
    first = with_metrics(make_version("iris", stage=Stage.NONE), accuracy=0.91, f1=0.9)
    second = with_metrics(make_version("iris", stage=Stage.NONE), accuracy=0.97, f1=0.96)
    admin_client.post(f"{VERSIONS}{first.pk}/stage/", {"stage": "production"})
    admin_client.post(f"{VERSIONS}{second.pk}/stage/", {"stage": "production"})
    page = admin_client.get(f"{VERSIONS}{first.pk}/change/").content.decode()
    assert first.sha256 in page
    assert f"{first.size / 1024:.1f} KiB" in page or f"{first.size} bytes" in page
    assert "0.9100" in page and "0.9700" in page  # the comparison table has both versions
    assert page.count("by version</svg>") + page.count('by version">') == 2  # a chart a metric
    assert "iris:2 (production): accuracy = 0.97" in page
    assert "replaced by version 2" in page  # the stage history
    assert '<script src="http' not in page


def test_a_model_with_thousands_of_stored_metrics_charts_only_the_first_fifty(
    admin_client,
) -> None:
    many = {f"metric{i:05d}": i / 3000 for i in range(3000)}  # stored before the upload limit
    first = with_metrics(make_version("iris", stage=Stage.NONE), **many)
    with_metrics(make_version("iris", stage=Stage.NONE), **many)
    for url in [f"{VERSIONS}{first.pk}/change/", f"{MODELS}{first.registered_model_id}/change/"]:
        page = admin_client.get(url).content.decode()
        assert page.count('by version">') == 50, url  # a chart a metric, the first 50
        assert "metric00049" in page and "metric00050" not in page, url
        assert "2950 more are not shown here" in page, url
        assert len(page) < 1_000_000, url
    page = admin_client.get(f"{VERSIONS}{first.pk}/change/").content.decode()
    assert "… and 2950 more metrics, not shown." in page


def test_staff_upload_a_version_on_the_add_page(admin_client) -> None:
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "new_model_name": "flowers",
            "artifact_file": named_file(artifact_bytes(iris_estimator()).read()),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get()
    assert (version.ref, version.stage) == ("flowers:1", Stage.NONE)
    assert RegisteredModel.objects.get(name="flowers").feature_names == ["x0", "x1", "x2", "x3"]
    assert response["Location"].endswith(f"/{version.pk}/change/")
    assert messages_of(response) == ["The model version “flowers:1” was added successfully."]


def test_staff_who_may_only_add_versions_land_on_a_page_they_may_see_after_uploading(
    db, private_artifacts
) -> None:
    make_version("iris")
    uploader = with_permissions(make_user("uploader", staff=True), "add_modelversion")
    client = Client()
    client.force_login(uploader)
    response = client.post(
        f"{VERSIONS}add/",
        {
            "existing_model": RegisteredModel.objects.get(name="iris").pk,
            "artifact_file": named_file(artifact_bytes(iris_estimator()).read()),
        },
        follow=True,
    )
    assert response.redirect_chain == [("/admin/", 302)]
    assert response.status_code == 200
    assert "The model version “iris:2” was added successfully." in messages_of(response)


def test_the_add_page_refuses_a_hostile_artifact_without_running_it(
    admin_client, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "new_model_name": "flowers",
            "artifact_file": named_file(hostile_artifacts(marker)["os.system"]),
        },
    )
    assert response.status_code == 200
    assert "not an allowed scikit-learn, NumPy or SciPy type" in response.content.decode()
    assert not marker.exists()
    assert not ModelVersion.objects.exists()
    assert not RegisteredModel.objects.filter(name="flowers").exists()


def test_the_add_page_refuses_an_upload_that_does_not_fit_the_schema(admin_client) -> None:
    make_version("diabetes")
    iris = RegisteredModel.objects.get(name="diabetes")
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "existing_model": iris.pk,
            "artifact_file": named_file(artifact_bytes(iris_estimator()).read()),
        },
    )
    assert response.status_code == 200
    assert (
        "is a regression model, but the artifact is a classification" in response.content.decode()
    )
    assert ModelVersion.objects.count() == 1


def test_promote_action_archives_the_previous_production_and_reports(admin_client) -> None:
    first = make_version("iris", stage=Stage.PRODUCTION)
    second = make_version("iris", stage=Stage.STAGING)
    response = admin_client.post(
        VERSIONS, {"action": "promote_to_production", "_selected_action": [second.pk]}, follow=True
    )
    assert "Moved 1 of 1 version(s) to production." in messages_of(response)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.stage, second.stage) == (Stage.ARCHIVED, Stage.PRODUCTION)


def test_demote_archive_and_rollback_actions(admin_client) -> None:
    first = make_version("iris", stage=Stage.NONE)
    second = make_version("iris", stage=Stage.NONE)
    for version in (first, second):
        admin_client.post(f"{VERSIONS}{version.pk}/stage/", {"stage": "production"})
    response = admin_client.post(
        MODELS,
        {"action": "rollback_selected", "_selected_action": [first.registered_model_id]},
        follow=True,
    )
    assert "Rolled back 1 model(s): iris:1." in messages_of(response)
    admin_client.post(VERSIONS, {"action": "demote", "_selected_action": [first.pk]})
    admin_client.post(VERSIONS, {"action": "archive", "_selected_action": [second.pk]})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.stage, second.stage) == (Stage.NONE, Stage.ARCHIVED)


def test_a_stage_button_reports_a_refusal_as_a_message(admin_client) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    ModelVersion.objects.filter(pk=version.pk).update(is_usable=False, unusable_reason="bad hash")
    response = admin_client.post(
        f"{VERSIONS}{version.pk}/stage/", {"stage": "production"}, follow=True
    )
    assert any("is unusable (bad hash)" in message for message in messages_of(response))
    version.refresh_from_db()
    assert version.stage == Stage.STAGING


@pytest.mark.django_db
def test_staff_without_the_change_permission_cannot_press_stage_buttons(private_artifacts) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    client = Client()
    client.force_login(make_user("viewer", staff=True))
    client.post(f"{VERSIONS}{version.pk}/stage/", {"stage": "production"})
    version.refresh_from_db()
    assert version.stage == Stage.STAGING


@pytest.mark.django_db(transaction=True)
def test_the_verify_action_has_a_worker_mark_a_corrupted_version_unusable(live_worker) -> None:
    version = make_version("iris", stage=Stage.STAGING)
    path = Path(version.artifact.path)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    client = Client()
    client.force_login(staff())
    response = client.post(
        VERSIONS, {"action": "verify_in_worker", "_selected_action": [version.pk]}, follow=True
    )
    assert any("Sent 1 version(s) to a worker" in m for m in messages_of(response))

    def marked_unusable() -> bool:
        return not ModelVersion.objects.get(pk=version.pk).is_usable

    wait_for(marked_unusable, 30, "the worker's verdict")


@pytest.mark.django_db
def test_verifying_while_the_broker_does_not_answer_says_so(private_artifacts, monkeypatch):
    def refuse(*args: object, **kwargs: object) -> None:
        raise sending.BrokerUnavailable("TimeoutError: Timeout reading from socket")

    monkeypatch.setattr(sending, "publish", refuse)
    version = make_version("iris", stage=Stage.STAGING)
    client = Client()
    client.force_login(staff())
    pressed = client.post(f"{VERSIONS}{version.pk}/verify/", follow=True)
    acted = client.post(
        VERSIONS, {"action": "verify_in_worker", "_selected_action": [version.pk]}, follow=True
    )
    for response in (pressed, acted):  # each was a 500 (Celery's .delay raised)
        assert response.status_code == 200
        assert any("could not reach the broker" in m for m in messages_of(response))


@pytest.mark.django_db
def test_staff_who_may_only_view_versions_get_no_stage_actions(private_artifacts) -> None:
    production = make_version("iris", stage=Stage.PRODUCTION)
    staging = make_version("iris", stage=Stage.STAGING)
    user = make_user("viewer", staff=True)
    client = Client()
    client.force_login(with_permissions(user, "view_modelversion", "view_registeredmodel"))

    assert "promote_to_production" not in client.get(VERSIONS).content.decode()
    for action in ("promote_to_production", "move_to_staging", "demote", "archive"):
        client.post(VERSIONS, {"action": action, "_selected_action": [staging.pk]})
    client.post(VERSIONS, {"action": "rollback_models", "_selected_action": [staging.pk]})
    model = staging.registered_model_id
    client.post(MODELS, {"action": "rollback_selected", "_selected_action": [model]})

    production.refresh_from_db()
    staging.refresh_from_db()
    assert (production.stage, staging.stage) == (Stage.PRODUCTION, Stage.STAGING)


def model_form(model: RegisteredModel, schema: str, **fields: str) -> dict[str, str]:
    return {"task_kind": model.task_kind, "description": "", "input_schema": schema, **fields}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("null", "cannot be null"),
        ("{}", "must be a list of features"),
        ('"string"', "must be a list of features"),
        ('{"features": "x"}', "must be a list of features"),
        ('["sepal_length"]', "Feature 1 must be an object"),
        ('[{"name": "sepal_length"}]', "Feature 1 (sepal_length) must have &quot;type&quot;"),
        ('[{"name": "a", "type": "text"}]', "the only type"),
        ('[{"name": "", "type": "number"}]', "Feature 1 needs a name"),
        ('[{"name": 3, "type": "number"}]', "Feature 1 needs a name"),
        ('[{"name": " a", "type": "number"}]', "starts or ends with a space"),
        ('[{"name": "a", "type": "number", "unit": "cm"}]', "unknown key unit"),
        ('[{"name": "a", "type": "number"}, {"name": "a", "type": "number"}]', "a appears twice"),
    ],
)
def test_the_model_form_refuses_a_schema_rows_cannot_be_checked_against(
    admin_client, schema: str, message: str
) -> None:
    model = make_model("manual")
    before = model.input_schema
    response = admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, schema))
    assert response.status_code == 200
    assert message in response.content.decode()
    model.refresh_from_db()
    assert model.input_schema == before


def test_a_schema_nested_thousands_deep_is_a_form_error(admin_client) -> None:
    # Django's JSON box let the decoder's RecursionError through: a 500.
    deep = "[" * 5000 + "]" * 5000
    response = admin_client.post(
        f"{MODELS}add/", {"name": "deep", "task_kind": "classification", "input_schema": deep}
    )
    assert response.status_code == 200
    assert "JSON parse error - maximum recursion depth" in response.content.decode()
    assert not RegisteredModel.objects.filter(name="deep").exists()


def test_a_model_without_versions_may_have_its_schema_edited_or_emptied(admin_client) -> None:
    model = make_model("manual")
    renamed = '[{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]'
    response = admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, renamed))
    assert response.status_code == 302, response.content.decode()[:3000]
    model.refresh_from_db()
    assert model.feature_names == ["a", "b"]
    admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, "[]"))
    model.refresh_from_db()
    assert model.input_schema == []


def test_a_model_with_versions_shows_its_kind_and_schema_read_only(admin_client) -> None:
    model = make_version("iris").registered_model
    page = admin_client.get(f"{MODELS}{model.pk}/change/").content.decode()
    assert 'name="input_schema"' not in page and 'name="task_kind"' not in page
    assert "versions were fitted on" in page
    admin_client.post(
        f"{MODELS}{model.pk}/change/", model_form(model, "[]", task_kind="regression")
    )
    model.refresh_from_db()
    assert (model.task_kind, model.feature_names) == ("classification", IRIS_FEATURES)


def test_clean_refuses_to_change_the_kind_or_schema_of_a_model_with_versions(db) -> None:
    model = make_version("iris").registered_model
    model.input_schema = [{"name": "a", "type": "number"}]
    model.task_kind = "regression"
    with pytest.raises(ValidationError) as refused:
        model.full_clean()
    assert "versions were fitted on" in str(refused.value.message_dict["input_schema"])
    assert "versions were fitted" in str(refused.value.message_dict["task_kind"])


def test_a_broken_schema_saved_before_the_checks_can_be_repaired(admin_client) -> None:
    model = make_version("iris").registered_model
    RegisteredModel.objects.filter(pk=model.pk).update(input_schema="string")
    page = admin_client.get(f"{MODELS}{model.pk}/change/").content.decode()
    assert 'name="input_schema"' in page
    refused = admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, "[]"))
    assert "must list the features its versions take" in refused.content.decode()
    schema = json.dumps([{"name": name, "type": "number"} for name in IRIS_FEATURES])
    admin_client.post(f"{MODELS}{model.pk}/change/", model_form(model, schema))
    model.refresh_from_db()
    assert model.feature_names == IRIS_FEATURES


def test_a_model_added_without_a_schema_takes_it_from_its_first_upload(admin_client) -> None:
    response = admin_client.post(
        f"{MODELS}add/",
        {"name": "manual4", "task_kind": "classification", "description": "", "input_schema": "[]"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    model = RegisteredModel.objects.get(name="manual4")
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "existing_model": model.pk,
            "artifact_file": named_file(artifact_bytes(iris_estimator()).read()),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    model.refresh_from_db()
    assert model.feature_names == ["x0", "x1", "x2", "x3"]
    assert model.versions.get().number == 1


def test_the_upload_form_picks_the_format_from_the_file_name_by_default(admin_client) -> None:
    page = admin_client.get(f"{VERSIONS}add/").content.decode()
    select = re.search(r'<select name="upload_format".*?</select>', page, re.DOTALL)
    assert select and '<option value="" selected>' in select[0]
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "new_model_name": "flowers",
            "artifact_file": named_file(dump_skops(iris_estimator()).read(), "good.skops"),
            "upload_format": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert ModelVersion.objects.get().artifact_format == "skops"


def test_the_add_page_says_random_bytes_are_not_a_joblib_or_pickle_file(admin_client) -> None:
    response = admin_client.post(
        f"{VERSIONS}add/",
        {"new_model_name": "flowers", "artifact_file": named_file(b"v" + bytes(range(256)))},
    )
    assert "is not a joblib or pickle file" in response.content.decode()


def test_a_bad_new_model_name_shows_only_its_own_error(admin_client) -> None:
    response = admin_client.post(
        f"{VERSIONS}add/",
        {
            "new_model_name": "Bad Name!",
            "artifact_file": named_file(artifact_bytes(iris_estimator()).read()),
        },
    )
    page = response.content.decode()
    assert "Enter a valid “slug”" in page
    assert "Choose an existing model" not in page
    assert not ModelVersion.objects.exists()


def test_a_new_model_name_that_exists_is_a_form_error_not_a_new_version(admin_client) -> None:
    def upload_as_new(name: str):
        artifact = named_file(artifact_bytes(iris_estimator()).read())
        return admin_client.post(
            f"{VERSIONS}add/", {"new_model_name": name, "artifact_file": artifact}
        )

    assert upload_as_new("iris2").status_code == 302
    response = upload_as_new("iris2")
    assert response.status_code == 200
    assert (
        "A model named &#x27;iris2&#x27; exists already: choose it under “model” to add a "
        "version to it, or pick another name." in response.content.decode()
    )
    assert [version.ref for version in ModelVersion.objects.all()] == ["iris2:1"]
    # The artifact chosen is gone from the form that came back (no browser refills one).
    assert "Choose the file again" in response.content.decode()


def test_a_version_page_names_its_artifact_without_a_link_that_would_404(admin_client) -> None:
    version = make_version("iris")
    page = admin_client.get(f"{VERSIONS}{version.pk}/change/").content.decode()
    assert version.artifact.name == "artifacts/iris/v1.joblib"
    assert version.artifact.name in page
    assert 'href="/artifacts/' not in page


def test_the_admins_view_site_link_goes_to_the_api_root(admin_client) -> None:
    page = admin_client.get("/admin/").content.decode()
    assert '<a href="/api/v1/">View site</a>' in page
    assert admin_client.get("/api/v1/").status_code == 200


@pytest.mark.parametrize(
    ("action", "label"),
    [("move_to_staging", "staging"), ("demote", "none"), ("archive", "archived")],
)
def test_a_stage_action_on_a_filtered_list_counts_the_versions_selected(
    admin_client, action: str, label: str
) -> None:
    version = make_version("iris", stage=Stage.PRODUCTION)
    # Counted after the move, the selection within "stage: production" was empty.
    response = admin_client.post(
        f"{VERSIONS}?stage__exact=production",
        {"action": action, "_selected_action": [version.pk]},
        follow=True,
    )
    assert f"Moved 1 of 1 version(s) to {label}." in messages_of(response)


def test_a_stage_button_names_the_version_as_it_is_typed(admin_client) -> None:
    version = make_version("iris", stage=Stage.NONE)
    page = admin_client.post(f"{VERSIONS}{version.pk}/stage/", {"stage": "staging"}, follow=True)
    # The admin capitalises a message's first letter: "Iris:1 is now staging." named no model.
    assert "Moved iris:1 to staging." in page.content.decode()

"""The admin's upload form: a new version from an artifact file, checked like an API upload."""

from typing import Any, cast

from django import forms

from mlsite import uploads
from mlsite.errors import DomainError

from . import versions
from .models import ArtifactFormat, ModelVersion, RegisteredModel


def model_exists(name: str) -> str:
    # A new name that exists used to add a version to that model without a word.
    return (
        f"A model named {name!r} exists already: choose it under “model” to add a version "
        "to it, or pick another name."
    )


class UploadVersionForm(forms.ModelForm):
    """The add page: an artifact file, checked by the same function as an API upload."""

    existing_model = forms.ModelChoiceField(
        RegisteredModel.objects.all(),
        required=False,
        label="model",
        help_text="The model this is a new version of.",
    )
    new_model_name = forms.SlugField(
        required=False,
        max_length=100,
        help_text="Or a new model's name; its kind and schema come from the estimator.",
    )
    artifact_file = forms.FileField(
        label="artifact",
        help_text="A fitted scikit-learn estimator saved with joblib.dump or skops.io.dump. "
        "It is read with a restricted unpickler: it may only contain scikit-learn, NumPy "
        "and SciPy types.",
    )
    upload_format = forms.ChoiceField(
        label="format",
        choices=[("", "From the file name"), *ArtifactFormat.choices],
        required=False,
        help_text="From the file name: skops for a .skops file, else joblib.",
    )
    version_description = forms.CharField(
        label="description", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )

    user: Any = None  # set per request by ModelVersionAdmin.get_form
    may_create_models = False

    class Meta:
        model = ModelVersion
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = cast(dict[str, Any], super().clean())  # ModelForm.clean returns cleaned_data
        if "new_model_name" in self.errors:
            return data  # a name that is not a slug: its own error says so
        name = cast(
            str, data.get("new_model_name") or getattr(data.get("existing_model"), "name", "")
        )
        if bool(data.get("new_model_name")) == bool(data.get("existing_model")):
            raise forms.ValidationError("Choose an existing model or name a new one (not both).")
        if data.get("new_model_name") and RegisteredModel.objects.filter(name=name).exists():
            self.add_error("new_model_name", model_exists(name))
            return data
        if data.get("new_model_name") and not self.may_create_models:
            raise forms.ValidationError("You may add versions, but not create models.")
        upload = data.get("artifact_file")
        if upload is None or self.errors:
            return data
        fmt = data.get("upload_format") or (
            ArtifactFormat.SKOPS
            if upload.name.lower().endswith(".skops")
            else ArtifactFormat.JOBLIB
        )
        try:
            # Registers the version now: a failed check stores nothing and shows here.
            self.instance = versions.upload(
                name,
                upload,
                artifact_format=fmt,
                created_by=self.user,
                description=data.get("version_description", ""),
                new_model=bool(data.get("new_model_name")),
            )
        except versions.ModelExists:  # created since the check above
            self.add_error("new_model_name", model_exists(name))
        except DomainError as exc:
            self.add_error("artifact_file", str(exc))
        return data

    def full_clean(self) -> None:
        super().full_clean()
        uploads.ask_for_the_file_again(self, "artifact_file")

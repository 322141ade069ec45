"""
What Airflow learns about this provider, and whether both connection forms say the same thing.

Airflow 3.2+ builds the connection form from ``get_provider_info()`` (``conn-fields``,
``ui-field-behaviour``, ``hook-name``) without importing the hook; Airflow 2.11 imports the hook and
asks ``get_connection_form_widgets()`` / ``get_ui_field_behaviour()``. These tests pin the provider
info to Airflow's schemas, check that the installed Airflow really picks it up, and check that the two
forms agree. Tests that only make sense on one Airflow line skip on the other, saying why.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points, metadata, version
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from airflow_provider_aos.config import EXTRA_FIELDS
from airflow_provider_aos.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info

DIST_NAME = "airflow-provider-aos"
ENTRY_POINT_GROUP = "apache_airflow_provider"
ENTRY_POINT_VALUE = "airflow_provider_aos.get_provider_info:get_provider_info"
HOOK_CLASS_PATH = "airflow_provider_aos.hooks.aos.AosHook"
HOOK_NAME = "AvePoint Online Services"
CONN_TYPE = "aos"

AIRFLOW_VERSION = Version(Version(airflow.__version__).base_version)
# Airflow 3.2+ takes the connection form from provider info (conn-fields) and never calls the hook's
# widget methods for a type that declares conn-fields; older Airflow only knows the hook methods.
READS_CONN_FIELDS = Version("3.2") <= AIRFLOW_VERSION
needs_conn_fields_airflow = pytest.mark.skipif(
    not READS_CONN_FIELDS,
    reason=f"Airflow {airflow.__version__} builds the connection form from the hook, not from conn-fields",
)
needs_hook_form_airflow = pytest.mark.skipif(
    READS_CONN_FIELDS,
    reason=f"Airflow {airflow.__version__} builds the connection form from conn-fields, not from the hook",
)

# Standard connection form fields (names as used by ui-field-behaviour).
STANDARD_FIELDS = {"description", "host", "port", "login", "password", "schema", "extra"}
# Fields that carry secrets, whatever form they are typed into.
SECRET_FIELDS = {"password", "private_key", "private_key_passphrase"}

# The stricter shape of one connection type, as in Airflow 3.3's provider.yaml.schema.json
# (`connection-types` items; see anchors-airflow.md §2.2). Kept here so the check also runs where the
# installed schema predates conn-fields (Airflow 2.11).
CONNECTION_TYPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["connection-type", "hook-class-name", "hook-name", "conn-fields", "ui-field-behaviour"],
    "properties": {
        "connection-type": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "hook-class-name": {"type": "string"},
        "hook-name": {"type": "string", "minLength": 1},
        "ui-field-behaviour": {
            "type": "object",
            "properties": {
                "hidden-fields": {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": "string", "enum": sorted(STANDARD_FIELDS)},
                },
                "relabeling": {"type": "object", "additionalProperties": {"type": "string"}},
                "placeholders": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "conn-fields": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["label", "schema"],
                "properties": {
                    "label": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "schema": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {
                                "oneOf": [
                                    {
                                        "type": "string",
                                        "enum": ["string", "integer", "boolean", "number", "object", "array"],
                                    },
                                    {"type": "array", "items": {"type": "string"}},
                                ]
                            },
                            "format": {
                                "type": "string",
                                "enum": [
                                    "password",
                                    "multiline",
                                    "email",
                                    "url",
                                    "json",
                                    "date",
                                    "date-time",
                                    "time",
                                ],
                            },
                            "enum": {"type": "array", "minItems": 1},
                            "minimum": {"type": "number"},
                            "maximum": {"type": "number"},
                            "pattern": {"type": "string"},
                            "minLength": {"type": "integer", "minimum": 0},
                            "maxLength": {"type": "integer", "minimum": 1},
                        },
                        "additionalProperties": True,
                    },
                },
                "additionalProperties": False,
            },
        },
    },
}


def _airflow_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped inside the installed ``airflow`` package."""
    resource = importlib.resources.files("airflow").joinpath(name)
    if not resource.is_file():  # pragma: no cover - depends on the Airflow build
        resource = Path(airflow.__file__).parent / name
    return json.loads(resource.read_text(encoding="utf-8"))


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema).validate(instance)


def _connection_type() -> dict[str, Any]:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == CONN_TYPE]
    return entry


def _aos_hook() -> type:
    from airflow_provider_aos.hooks.aos import AosHook

    return AosHook


def _fields_with_format(fmt: str) -> set[str]:
    return {name for name, spec in CONN_FIELDS.items() if spec["schema"].get("format") == fmt}


def _should_hide_value_for_key() -> Any:
    """Airflow's own key-name test for secrets: Task SDK masker on 3.x, utils masker on 2.x."""
    for module in (
        "airflow.sdk._shared.secrets_masker",
        "airflow._shared.secrets_masker",
        "airflow.utils.log.secrets_masker",
    ):
        try:
            return importlib.import_module(module).should_hide_value_for_key
        except (ImportError, AttributeError):
            continue
    pytest.fail("no should_hide_value_for_key in the installed Airflow")  # pragma: no cover


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path, check=False
    )


# -- registration -----------------------------------------------------------------------------------


def test_entry_point_loads_get_provider_info_with_canonical_package_name() -> None:
    ours = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value == ENTRY_POINT_VALUE]
    assert len(ours) == 1, f"expected exactly one {ENTRY_POINT_GROUP} entry point for us, got {ours}"
    (ep,) = ours
    assert ep.dist is not None
    assert canonicalize_name(ep.dist.name) == DIST_NAME

    loaded = ep.load()
    assert loaded is get_provider_info

    info = loaded()
    # Airflow compares this with the canonicalized distribution name and refuses the provider otherwise.
    assert info["package-name"] == canonicalize_name(metadata(DIST_NAME)["Name"])


def test_provider_info_validates_against_installed_runtime_schema() -> None:
    schema = _airflow_schema("provider_info.schema.json")
    info = get_provider_info()
    _validate(info, schema)
    for key in ("package-name", "name", "description"):
        assert isinstance(info[key], str)
        assert info[key]


def test_connection_type_has_strict_conn_fields_and_ui_field_behaviour_shape() -> None:
    entry = _connection_type()
    _validate(entry, CONNECTION_TYPE_SCHEMA)

    behaviour = entry["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) <= STANDARD_FIELDS
    assert set(behaviour["relabeling"]) <= STANDARD_FIELDS
    # The 3.3 React UI applies placeholders to standard fields only; extra fields take their hints
    # from the conn-field description.
    assert set(behaviour["placeholders"]) <= STANDARD_FIELDS
    hidden = set(behaviour["hidden-fields"])
    assert not hidden & (set(behaviour["relabeling"]) | set(behaviour["placeholders"])), (
        "relabelling or a placeholder on a hidden field is never shown"
    )


def test_connection_type_matches_installed_provider_yaml_schema_when_it_defines_conn_fields() -> None:
    schema = _airflow_schema("provider.yaml.schema.json")
    subtree = schema["properties"]["connection-types"]["items"]
    if "conn-fields" not in subtree.get("properties", {}):
        pytest.skip(f"Airflow {airflow.__version__}'s provider.yaml.schema.json predates conn-fields")
    _validate(_connection_type(), subtree)


def test_conn_field_schemas_are_valid_json_schemas_and_names_fit_airflow_keys() -> None:
    for name, spec in CONN_FIELDS.items():
        assert name.isidentifier(), name
        # Airflow keys these as extra__<conn_type>__<name> and splits on "__".
        assert "__" not in name, name
        assert name not in STANDARD_FIELDS, f"{name} would shadow a standard connection field"
        field_schema = spec["schema"]
        jsonschema.Draft7Validator.check_schema(field_schema)
        validator = jsonschema.Draft7Validator(field_schema)
        for value in field_schema.get("enum", []):
            validator.validate(value)
        if "default" in field_schema:
            validator.validate(field_schema["default"])
        assert isinstance(spec.get("description"), str)
        assert spec["description"], f"{name} has no help text"


def test_data_center_enum_is_unique() -> None:
    choices = CONN_FIELDS["data_center"]["schema"]["enum"]
    assert len(choices) == len(set(choices))
    assert all(isinstance(c, str) and c for c in choices)


def test_connection_type_matches_hook_class() -> None:
    entry = _connection_type()
    module_name, class_name = entry["hook-class-name"].rsplit(".", 1)
    hook_class = getattr(importlib.import_module(module_name), class_name)
    assert hook_class is _aos_hook()
    assert entry["hook-class-name"] == HOOK_CLASS_PATH
    assert hook_class.conn_type == entry["connection-type"] == CONN_TYPE
    assert hook_class.hook_name == entry["hook-name"] == HOOK_NAME


def test_declared_python_modules_import() -> None:
    info = get_provider_info()
    modules = [
        m for section in ("hooks", "operators") for item in info[section] for m in item["python-modules"]
    ]
    assert modules
    for module in modules:
        importlib.import_module(module)
    integrations = {i["integration-name"] for i in info["integrations"]}
    for section in ("hooks", "operators"):
        assert {item["integration-name"] for item in info[section]} <= integrations


def test_get_provider_info_is_import_light(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from airflow_provider_aos.get_provider_info import get_provider_info
        get_provider_info()
        heavy = ("requests", "jwt", "cryptography")
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in heavy
            or (m.startswith("airflow_provider_aos.")
                and m != "airflow_provider_aos.get_provider_info")
        )
        print(json.dumps(loaded))
        """
    )
    result = _run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"get_provider_info pulled in {loaded}"


# -- the installed Airflow sees us ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
def test_providers_manager_registers_provider_and_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    provider = pm.providers.get(DIST_NAME)
    assert provider is not None, f"{DIST_NAME} not among {sorted(pm.providers)}"
    assert provider.version == version(DIST_NAME)
    assert provider.data["package-name"] == DIST_NAME

    hook_info = pm.hooks.get(CONN_TYPE)
    assert hook_info is not None, "Airflow could not register the aos connection type (see its log)"
    assert hook_info.hook_class_name == HOOK_CLASS_PATH
    assert hook_info.hook_name == HOOK_NAME
    assert hook_info.connection_type == CONN_TYPE
    assert hook_info.connection_id_attribute_name == "aos_conn_id"
    assert hook_info.package_name == DIST_NAME


def test_providers_manager_field_behaviour_equals_hook_field_behaviour() -> None:
    """Whichever source this Airflow reads (conn-fields or hook), it ends with the same behaviour."""
    from airflow.providers_manager import ProvidersManager

    assert ProvidersManager().field_behaviours.get(CONN_TYPE) == _aos_hook().get_ui_field_behaviour()


def test_airflow_cli_lists_provider_and_hook(tmp_path: Path) -> None:
    providers = _run([sys.executable, "-m", "airflow", "providers", "list", "-o", "json"], tmp_path)
    assert providers.returncode == 0, providers.stderr
    listed = {p["package_name"]: p for p in json.loads(providers.stdout)}
    assert DIST_NAME in listed
    assert listed[DIST_NAME]["version"] == version(DIST_NAME)

    hooks = _run([sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"], tmp_path)
    assert hooks.returncode == 0, hooks.stderr
    ours = [h for h in json.loads(hooks.stdout) if h["connection_type"] == CONN_TYPE]
    assert ours == [
        {
            "connection_type": CONN_TYPE,
            "class": HOOK_CLASS_PATH,
            "conn_id_attribute_name": "aos_conn_id",
            "package_name": DIST_NAME,
            "hook_name": HOOK_NAME,
        }
    ]


@needs_conn_fields_airflow
def test_providers_manager_loads_conn_fields_without_the_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    pm.initialize_providers_hooks()
    widgets = {
        k: w for k, w in pm._connection_form_widgets_from_metadata.items() if k.startswith("extra__aos__")
    }
    assert set(widgets) == {f"extra__aos__{name}" for name in CONN_FIELDS}
    for name, spec in CONN_FIELDS.items():
        widget = widgets[f"extra__aos__{name}"]
        assert widget.field_name == name
        assert widget.hook_class_name == HOOK_CLASS_PATH
        assert widget.is_sensitive == (spec["schema"].get("format") == "password")
        assert widget.field["schema"]["title"] == spec["label"]

    (meta,) = [m for m in pm.iter_connection_type_hook_ui_metadata() if m.connection_type == CONN_TYPE]
    assert meta.hook_name == HOOK_NAME
    assert meta.hook_class_name == HOOK_CLASS_PATH


@needs_conn_fields_airflow
def test_hook_meta_endpoint_data_has_our_form() -> None:
    connections_ui = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    service = connections_ui.HookMetaService
    if hasattr(service.hook_meta_data, "cache_clear"):
        service.hook_meta_data.cache_clear()

    ours = [m for m in service.hook_meta_data() if m.connection_type == CONN_TYPE]
    assert len(ours) == 1
    (meta,) = ours
    assert meta.hook_name == HOOK_NAME
    assert meta.hook_class_name == HOOK_CLASS_PATH

    extra = dict(meta.extra_fields or {})
    assert set(extra) == set(CONN_FIELDS)
    for name, spec in CONN_FIELDS.items():
        field = extra[name]
        assert field["schema"]["title"] == spec["label"]
        assert field["description"] == spec["description"]
        assert field["schema"]["type"] == spec["schema"]["type"]
        assert field["schema"].get("format") == spec["schema"].get("format")
        assert field["schema"].get("enum") == spec["schema"].get("enum")

    standard = meta.standard_fields
    assert standard is not None
    by_name = {
        "description": standard.description,
        "schema": standard.url_schema,
        "host": standard.host,
        "port": standard.port,
        "login": standard.login,
        "password": standard.password,
    }
    hidden = set(UI_FIELD_BEHAVIOUR["hidden-fields"])
    for name, behaviour in by_name.items():
        assert bool(behaviour and behaviour.hidden) == (name in hidden), name
        expected_title = UI_FIELD_BEHAVIOUR["relabeling"].get(name)
        assert (behaviour.title if behaviour else None) == expected_title, name
        expected_placeholder = UI_FIELD_BEHAVIOUR["placeholders"].get(name)
        assert (behaviour.placeholder if behaviour else None) == expected_placeholder, name


# -- the 2.x (hook-built) form agrees with the provider info ----------------------------------------


def _wtforms() -> Any:
    pytest.importorskip(
        "flask_appbuilder", reason="no Flask AppBuilder: the wtforms form is Airflow 2.x only"
    )
    return pytest.importorskip("wtforms", reason="no wtforms: the hook-built form is Airflow 2.x only")


def _label(unbound: Any) -> str:
    label = unbound.args[0] if unbound.args else unbound.kwargs.get("label")
    return str(label)


def test_hook_widgets_have_exactly_the_conn_fields_with_same_labels_and_descriptions() -> None:
    _wtforms()
    widgets = _aos_hook().get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    for name, spec in CONN_FIELDS.items():
        assert _label(widgets[name]) == spec["label"], name
        assert widgets[name].kwargs.get("description") == spec.get("description"), name


def test_hook_widgets_render_like_the_conn_field_formats() -> None:
    wtforms = _wtforms()
    from wtforms.widgets import PasswordInput, TextArea

    widgets = _aos_hook().get_connection_form_widgets()
    form = type("AosForm", (wtforms.Form,), dict(widgets))()
    for name, spec in CONN_FIELDS.items():
        unbound = widgets[name]
        bound = form[name]
        assert bound.label.text == spec["label"], name
        assert bound.description == spec.get("description"), name
        html = str(bound())
        fmt = spec["schema"].get("format")
        widget = unbound.kwargs.get("widget") or unbound.field_class.widget
        if fmt == "password":
            assert issubclass(unbound.field_class, wtforms.PasswordField), name
            assert isinstance(widget, PasswordInput), name
            assert 'type="password"' in html, name
        elif fmt == "multiline":
            assert isinstance(widget, TextArea), name
            assert html.startswith("<textarea"), name
        elif "enum" not in spec["schema"]:
            assert unbound.field_class is wtforms.StringField, name
            assert 'type="text"' in html, name


def test_hook_enum_widget_accepts_exactly_the_enum_or_nothing() -> None:
    wtforms = _wtforms()
    from werkzeug.datastructures import MultiDict

    widgets = _aos_hook().get_connection_form_widgets()
    form_class = type("AosForm", (wtforms.Form,), dict(widgets))
    enum_fields = {n: s["schema"]["enum"] for n, s in CONN_FIELDS.items() if "enum" in s["schema"]}
    assert enum_fields
    for name, choices in enum_fields.items():
        unbound = widgets[name]
        if issubclass(unbound.field_class, wtforms.SelectField):
            assert list(unbound.kwargs["choices"]) == [("", ""), *((c, c) for c in choices)], name
        for value in ["", *choices]:
            form = form_class(formdata=MultiDict({name: value}))
            assert form.validate(), (name, value, form.errors)
        for value in ("not-a-data-center", choices[0].upper() + "x"):
            form = form_class(formdata=MultiDict({name: value}))
            assert not form.validate(), (name, value)
            assert name in form.errors


def test_hook_widgets_use_field_classes_airflow_2_accepts() -> None:
    """
    Airflow 2.x ``ProvidersManager._import_hook`` refuses the whole hook (connection type, widgets and
    field behaviour) when any widget's ``field_class`` is not exactly one of these four classes.
    """
    wtforms = _wtforms()
    allowed = (wtforms.IntegerField, wtforms.PasswordField, wtforms.StringField, wtforms.BooleanField)
    widgets = _aos_hook().get_connection_form_widgets()
    refused = {name: w.field_class.__name__ for name, w in widgets.items() if w.field_class not in allowed}
    assert refused == {}, f"Airflow 2.x drops the aos connection type because of {refused}"


@needs_hook_form_airflow
def test_airflow_2_providers_manager_registers_hook_widgets() -> None:
    _wtforms()
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    widgets = {k: w for k, w in pm.connection_form_widgets.items() if k.startswith("extra__aos__")}
    assert set(widgets) == {f"extra__aos__{name}" for name in CONN_FIELDS}
    for name, spec in CONN_FIELDS.items():
        widget = widgets[f"extra__aos__{name}"]
        assert widget.field_name == name
        assert widget.is_sensitive == (spec["schema"].get("format") == "password"), name


def test_hook_ui_field_behaviour_equals_provider_info() -> None:
    behaviour = _aos_hook().get_ui_field_behaviour()
    assert behaviour == {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }
    assert set(UI_FIELD_BEHAVIOUR) == {"hidden-fields", "relabeling", "placeholders"}
    # Airflow 2.x validates the hook's answer against this schema before using it.
    _validate(behaviour, _airflow_schema("customized_form_field_behaviours.schema.json"))


def test_hook_reads_exactly_the_form_fields() -> None:
    assert set(CONN_FIELDS) == set(EXTRA_FIELDS)
    assert len(EXTRA_FIELDS) == len(set(EXTRA_FIELDS))


# -- masking ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_secret_field_names_are_masked_by_airflow(name: str) -> None:
    assert _should_hide_value_for_key()(name)


def test_only_secret_conn_fields_are_masked() -> None:
    """Public settings stay readable in the UI/API (e.g. ``identity_url``, not ``token_url``)."""
    should_hide = _should_hide_value_for_key()
    assert {name for name in CONN_FIELDS if should_hide(name)} == SECRET_FIELDS & set(CONN_FIELDS)


def test_redact_hides_secret_extras_and_keeps_public_ones() -> None:
    from airflow.providers.common.compat.sdk import redact

    values = {name: f"value-of-{name}-0123456789" for name in [*CONN_FIELDS, "password"]}
    redacted = redact(values)
    for name, value in values.items():
        if name in SECRET_FIELDS:
            assert redacted[name] != value, name
            assert value not in json.dumps(redacted), name
        else:
            assert redacted[name] == value, name


def test_password_format_is_the_private_key_passphrase_and_is_masked() -> None:
    assert _fields_with_format("password") == {"private_key_passphrase"}
    should_hide = _should_hide_value_for_key()
    # format: password only picks the input box; server-side redaction goes by the key name.
    assert all(should_hide(name) for name in _fields_with_format("password"))


# -- hook class attributes and Connection.get_hook --------------------------------------------------


def test_hook_class_attributes() -> None:
    hook_class = _aos_hook()
    assert hook_class.conn_type == "aos"
    assert hook_class.conn_name_attr == "aos_conn_id"
    assert hook_class.default_conn_name == "aos_default"
    assert hook_class.hook_name == "AvePoint Online Services"
    assert hook_class().aos_conn_id == "aos_default"


def _connection_class() -> type:
    try:
        from airflow.sdk import Connection
    except ImportError:
        from airflow.models import Connection
    return Connection


def test_connection_get_hook_builds_aos_hook() -> None:
    conn = _connection_class()(
        conn_id="aos_get_hook", conn_type=CONN_TYPE, login="client-id", password="client-secret"
    )
    hook = conn.get_hook(hook_params={"timeout": 7.5})
    assert type(hook) is _aos_hook()
    assert hook.aos_conn_id == "aos_get_hook"
    assert hook.timeout == 7.5


def test_base_hook_get_hook_from_environment_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import BaseHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_AOS_FROM_ENV",
        json.dumps({"conn_type": CONN_TYPE, "login": "client-id", "password": "client-secret"}),
    )
    hook = BaseHook.get_hook("aos_from_env")
    assert type(hook) is _aos_hook()
    assert hook.aos_conn_id == "aos_from_env"

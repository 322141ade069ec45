"""
What Airflow reads about this provider at start-up, in every component.

Import-light by design: no hook imports, no network. Airflow 3.2+ builds the connection form from
``conn-fields``/``ui-field-behaviour`` here without importing the hook; Airflow 2.11 asks the hook's
``get_connection_form_widgets``/``get_ui_field_behaviour``, which are generated from the same tables
below so the two forms cannot drift.
"""

from __future__ import annotations

from typing import Any

DATA_CENTER_CHOICES = [
    "us", "au", "sg", "ca", "ne", "we", "fr", "de", "jp", "kr", "ch", "uk", "uae", "za", "qa",
    "gov", "aos2", "fedramp", "gcp-au", "gcp-jp", "gcp-us", "gcp-we", "gcp-kr",
]  # fmt: skip

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "data_center": {
        "label": "Data center",
        "description": "Data center of your AOS tenant. Picks the Graph API URL and the identity service "
        "(Commercial, U.S. Government, AOS2, FedRAMP). Host, when set, overrides the API URL.",
        "schema": {"type": ["string", "null"], "enum": DATA_CENTER_CHOICES},
    },
    "identity_url": {
        "label": "Identity service URL",
        "description": "Overrides the identity service of the data center, e.g. "
        "https://identity.avepointonlineservices.com. Leave empty normally.",
        "schema": {"type": ["string", "null"]},
    },
    "scope": {
        "label": "Default scope(s)",
        "description": "Space-separated permission(s) used when an operator asks for none, e.g. audit.read.all.",
        "schema": {"type": ["string", "null"]},
    },
    "private_key": {
        "label": "Private key (PEM) or .pfx (base64)",
        "description": "Certificate auth: the app certificate's private key as PEM, or the whole .pfx bundle "
        "base64-encoded. Used instead of the client secret when set.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "certificate": {
        "label": "Certificate (PEM)",
        "description": "Certificate auth with a PEM key: the certificate uploaded to the app registration "
        "(for its thumbprint). Not needed with a .pfx.",
        "schema": {"type": ["string", "null"], "format": "multiline"},
    },
    "private_key_passphrase": {
        "label": "Private key passphrase",
        "description": "Passphrase of an encrypted PEM key or of the .pfx bundle.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "certificate_path": {
        "label": "Certificate file on the worker",
        "description": "Certificate auth from a file instead: a .pem (key and certificate) or .pfx on every worker.",
        "schema": {"type": ["string", "null"]},
    },
    "username": {
        "label": "Delegated user (Cloud Governance)",
        "description": "Login name (UPN) of the delegated user for Cloud Governance APIs. Empty otherwise.",
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "Graph API base URL (optional)",
        "login": "Client ID",
        "password": "Client secret",
    },
    "placeholders": {
        "host": "https://graph-us.avepointonlineservices.com (leave empty to use the data center)",
        "login": "Application (client) ID from AOS > Administration > App registrations",
        "password": "Client secret (leave empty for certificate auth)",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-aos",
        "name": "AvePoint Online Services",
        "description": "Apache Airflow provider for the AvePoint Online Services (AOS) Graph API.",
        "integrations": [
            {
                "integration-name": "AvePoint Online Services",
                "external-doc-url": "https://github.com/AvePoint/cloud-api",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "AvePoint Online Services",
                "python-modules": ["airflow_provider_aos.hooks.aos"],
            }
        ],
        "operators": [
            {
                "integration-name": "AvePoint Online Services",
                "python-modules": [
                    "airflow_provider_aos.operators.audit",
                    "airflow_provider_aos.operators.backup",
                    "airflow_provider_aos.operators.jobs",
                    "airflow_provider_aos.operators.opus",
                    "airflow_provider_aos.operators.opus_restore",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "AvePoint Online Services",
                "python-modules": [
                    "airflow_provider_aos.sensors.backup",
                    "airflow_provider_aos.sensors.opus",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "AvePoint Online Services",
                "python-modules": ["airflow_provider_aos.triggers.jobs"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "aos",
                "hook-class-name": "airflow_provider_aos.hooks.aos.AosHook",
                "hook-name": "AvePoint Online Services",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }

"""Validate documents against the CRD without a cluster: its OpenAPI schema (as JSON Schema) and its CEL rules.

The apiserver remains the authority (the integration tests apply the same documents to a real one);
this lets unit tests say exactly which field a bad document trips, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
CRD_PATH = REPO / "crds" / "recon.dev_reconstructionjobs.yaml"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def openapi_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or load_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """The rules of a structural schema (Kubernetes docs, 'Specifying a structural schema') that apply here."""
    problems = []
    where = path or "<root>"
    special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not special:
        problems.append(f"{where}: no type")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        problems.append(f"{where}: x-kubernetes-int-or-string must not have a type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are exclusive")
    for banned in ("$ref", "allOf", "oneOf", "not"):
        if banned in node and path:
            problems.append(f"{where}: {banned} is not allowed in a structural schema")
    if node.get("type") == "object" and path.count(".") >= 1 and not node.get("description"):
        problems.append(f"{where}: no description")
    if node.get("type") not in (None, "object") and not node.get("description") and path.count(".") >= 1:
        problems.append(f"{where}: no description")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}" if path else name)
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (Kubernetes flavour) → JSON Schema. Unknown fields are errors, as with `kubectl apply`
    (server-side strict field validation), except where the schema preserves them."""
    out: dict[str, Any] = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "properties"}
    out.pop("default", None)
    out.pop("format", None)  # int64 / date-time: not type constraints in JSON Schema
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node:
        out["properties"] = {name: to_json_schema(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    return out


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _cel_errors(node: dict[str, Any], value: Any, old: Any, path: str, env: celpy.Environment) -> list[str]:
    errors = []
    for rule in node.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue  # transition rules apply to updates only
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not env.program(env.compile(rule["rule"])).evaluate(activation):
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in node.get("properties", {}).items():
            if name in value:
                child_old = old.get(name) if isinstance(old, dict) else None
                errors += _cel_errors(child, value[name], child_old, f"{path}.{name}" if path else name, env)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):  # list items have no oldSelf here (atomic lists)
            errors += _cel_errors(node["items"], item, None, f"{path}.{index}", env)
    return errors


def validate(document: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Every problem with `document` (an update of `old` when given), each naming its field."""
    schema = openapi_schema()
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    errors = [f"{_field(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    if errors:
        return errors  # CEL rules assume a schema-valid object, as in the apiserver
    return _cel_errors(schema, document, old, "", celpy.Environment())


def load_examples() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted((REPO / "examples").glob("*.yaml"))
    }

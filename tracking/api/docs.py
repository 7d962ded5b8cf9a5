"""The API's reference page, read from its own OpenAPI schema (drf-spectacular), so the page
can never say something the schema does not: each operation with its parameters and answers,
and each shape with its fields."""

from dataclasses import dataclass, field
from functools import cache

from drf_spectacular.generators import SchemaGenerator

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Type:
    """A schema's type in words ("array of Position"), and the shape it names, to link to."""

    text: str
    ref: str | None = None


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    required: bool
    description: str = ""
    where: str = ""  # a parameter's place: query, path, header


@dataclass(frozen=True)
class Answer:
    status: str
    description: str
    media_types: list[tuple[str, Type | None]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    description: str
    parameters: list[Field]
    answers: list[Answer]
    anchor: str


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    fields: list[Field] = field(default_factory=list)


@cache
def schema() -> dict:
    """The API's OpenAPI schema, as /api/v1/schema/ serves it (built once per process)."""
    return SchemaGenerator().get_schema(request=None, public=True)


def reference(request=None) -> dict:
    """The docs page's context: the API's title and description, operations and shapes."""
    spec = schema()
    operations = [
        _operation(method, path, item[method])
        for path, item in spec.get("paths", {}).items()
        for method in METHODS
        if method in item
    ]
    shapes = [
        Shape(
            name=name,
            description=component.get("description", ""),
            fields=_fields(component),
        )
        for name, component in spec.get("components", {}).get("schemas", {}).items()
    ]
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return {
        "info": spec.get("info", {}),
        "operations": operations,
        "shapes": shapes,
        "security_schemes": sorted(schemes.items()),
    }


def type_of(node: dict) -> Type:
    """Say a JSON schema's type in words."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return Type(name, name)
    if "allOf" in node and len(node["allOf"]) == 1:
        return type_of(node["allOf"][0])
    kind = node.get("type", "any")
    if kind == "array":
        inner = type_of(node.get("items", {}))
        return Type(f"array of {inner.text}", inner.ref)
    text = f"{kind} ({node['format']})" if "format" in node else kind
    if "enum" in node:
        text += ": one of " + ", ".join(str(value) for value in node["enum"])
    if "minimum" in node or "maximum" in node:
        text += f", {node.get('minimum', '…')} to {node.get('maximum', '…')}"
    if node.get("nullable"):
        text += ", or null"
    return Type(text)


def _operation(method: str, path: str, spec: dict) -> Operation:
    parameters = [
        Field(
            name=parameter["name"],
            type=type_of(parameter.get("schema", {})),
            required=parameter.get("required", False),
            description=parameter.get("description", ""),
            where=parameter.get("in", ""),
        )
        for parameter in spec.get("parameters", [])
    ]
    answers = [
        Answer(
            status=status,
            description=answer.get("description", ""),
            media_types=[
                (media_type, type_of(body["schema"]) if "schema" in body else None)
                for media_type, body in answer.get("content", {}).items()
            ],
        )
        for status, answer in spec.get("responses", {}).items()
    ]
    return Operation(
        method=method.upper(),
        path=path,
        summary=spec.get("summary", ""),
        description=spec.get("description", ""),
        parameters=parameters,
        answers=answers,
        anchor=spec.get("operationId", f"{method}-{path}"),
    )


def _fields(component: dict) -> list[Field]:
    required = set(component.get("required", []))
    return [
        Field(
            name=name,
            type=type_of(node),
            required=name in required,
            description=node.get("description", ""),
        )
        for name, node in component.get("properties", {}).items()
    ]

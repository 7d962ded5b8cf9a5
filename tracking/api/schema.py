"""Touches to the generated OpenAPI schema that drf-spectacular's annotations cannot make
(SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""

# tracking.history.parse_query reads an empty filter as an absent one (`?since=&until=`, as a
# form sends them): the schema says so, or a client (or schemathesis) would take them for errors.
EMPTY_MEANS_ABSENT = {"worker", "since", "until"}


def allow_empty_filters(result: dict, generator, request, public) -> dict:
    """Mark the history filters `allowEmptyValue`."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in EMPTY_MEANS_ABSENT:
                    parameter["allowEmptyValue"] = True
    return result

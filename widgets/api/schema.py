"""OpenAPI descriptions drf-spectacular cannot infer on its own."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "widgets.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` (or `Bearer <key>`). Issue keys with `manage.py issue_token`.",
        }


ERROR = {"$ref": "#/components/schemas/Error"}
VALIDATION_ERROR = {
    "type": "object",
    "description": "Each invalid field or query parameter, with its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "example": {"name": ["This field is required."]},
}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def add_error_responses(result, generator, request, public):
    """Post-processing hook: the error responses every operation shares, described once.

    Views document only their own errors (409s); 400, 401, 403 and 404 follow from
    validation, authentication, permissions and lookups alike.
    """
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Error",
        {"type": "object", "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
         "required": ["detail", "code"]},
    )
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            takes_input = method in {"post", "put", "patch"} or operation.get("parameters")
            if takes_input:
                responses.setdefault("400", _json("Invalid input or query parameter.", VALIDATION_ERROR))
            responses.setdefault("401", _json("Not authenticated (see WWW-Authenticate).", ERROR))
            responses.setdefault("403", _json("Authenticated, but the role does not allow this.", ERROR))
            if "{" in path:
                responses.setdefault("404", _json("No such object.", ERROR))
    return result

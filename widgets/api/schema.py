"""OpenAPI descriptions drf-spectacular cannot infer on its own."""
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse


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


BODY_METHODS = {"POST", "PUT", "PATCH"}
VALIDATION_ERROR = {
    "type": "object",
    "description": (
        "Invalid input: `{field: [messages]}` naming each field or parameter, or "
        "`{detail, code}` for a body that is not valid JSON."
    ),
    "additionalProperties": {},
}


def _error(description: str) -> OpenApiResponse:
    from .serializers import ErrorSerializer  # here, so that settings can name this module early

    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema plus the error answers every operation can give.

    Each is added only where it can happen (400 where there is input, 404 where the
    path names an object, 429 where a throttle applies), so the documented status
    codes are exactly the ones a client must handle.
    """

    def map_parsers(self):
        # The API's contract is JSON. The form parsers serve the browsable API's HTML
        # forms, whose text-only encoding cannot express null or a number.
        return ["application/json"]

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, response in self._error_responses().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses

    def _error_responses(self) -> dict:
        errors = {}
        if self.method in BODY_METHODS or self.get_filter_backends() or self._get_paginator():
            errors["400"] = VALIDATION_ERROR
        errors["401"] = _error("No valid credentials: a missing, unknown, expired or revoked token.")
        errors["403"] = _error("Authenticated, but the role or token does not allow this.")
        if "{" in self.path:
            errors["404"] = _error("No such object.")
        if self.method in BODY_METHODS:
            errors["413"] = _error("The request body is larger than the server accepts.")
        if self.view.get_throttles():
            errors["429"] = _error("Too many requests; retry after the Retry-After header's seconds.")
        errors["503"] = _error("The database is unreachable; retry shortly.")
        return errors


def allow_empty_query_values(result, generator, request, public):
    """drf-spectacular postprocessing hook: an empty query value (``?min_stock=``) means the
    parameter was not given, as HTML filter forms send it; say so for every typed parameter.
    Text parameters refuse NUL (Django's form fields do), so say that too."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                # (An empty list already reads as an empty value.)
                typed = schema.get("type") not in ("string", "array") or {"enum", "format", "pattern"} & schema.keys()
                if parameter.get("in") != "query":
                    continue
                if typed:
                    parameter["schema"] = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
                elif schema.get("type") == "string":
                    schema["pattern"] = "^[^\\u0000]*$"
    return result

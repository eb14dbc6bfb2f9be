"""OpenAPI descriptions drf-spectacular cannot infer on its own."""

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from .serializers import ErrorSerializer


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "widgets.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Token <key>` (or `Bearer <key>`). Get a key from `POST /api/auth/token/` "
                "(or `manage.py issue_token`); it is shown once and expires."
            ),
        }


# --- Retries and conditional requests ---------------------------------------------------
# Shared declarations, so every endpoint documents these headers the same way.

HEADER = OpenApiParameter.HEADER

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    HEADER,
    pattern=r"^[\x20-\x7e]{1,255}$",
    description=(
        "1-255 printable ASCII characters, unique per request you mean (a UUID is ideal). "
        "A retry with the same key and body gets the first answer back instead of applying "
        "twice; keys are kept for at least 24 hours and are private to your user."
    ),
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    str,
    HEADER,
    enum=["true"],
    response=[201, 400, 404, 409],
    description="Present when this is the stored answer to an earlier request with the same Idempotency-Key.",
)
IDEMPOTENT = [IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED]
IDEMPOTENT_RESPONSES = {
    422: OpenApiResponse(
        ErrorSerializer,
        description="The Idempotency-Key was already used with another body or path (code `idempotency_key_reused`).",
    ),
}
IN_FLIGHT = OpenApiResponse(
    ErrorSerializer,
    description="A request with the same Idempotency-Key is still in progress (code `idempotency_key_in_flight`).",
)


def etag_header(*codes: int) -> OpenApiParameter:
    return OpenApiParameter(
        "ETag",
        str,
        HEADER,
        response=list(codes),
        description="Strong entity tag of the object's current version; send it back in If-Match / If-None-Match.",
    )


WIDGET_ETAG = OpenApiParameter("ETag", str, HEADER, response=[201], description="The adjusted widget's new entity tag.")
IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    HEADER,
    description=(
        "Apply only if the object's current ETag is one of these (strong comparison), or `*`. "
        "Otherwise 412 and nothing changes. Required (428 without it) when the server sets "
        "DJANGO_REQUIRE_IF_MATCH."
    ),
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match", str, HEADER, description="304 Not Modified if the object's ETag is one of these, or `*`."
)
PRECONDITION_FAILED = OpenApiResponse(
    ErrorSerializer,
    description=(
        "If-Match did not match: the object changed since you read it. Nothing changed; "
        "the ETag header carries the current tag."
    ),
)
PRECONDITION_REQUIRED = OpenApiResponse(
    ErrorSerializer, description="This server requires If-Match on writes (DJANGO_REQUIRE_IF_MATCH)."
)


def conditional_schema(serializer, *, idempotent_create: bool = False, conflict=None, update_request=None) -> dict:
    """``extend_schema_view`` arguments for a ``ConditionalMixin`` viewset. ``conflict`` documents
    the 409 of create and update (a taken unique value); ``update_request`` the PUT/PATCH body."""
    conditional_write = {412: PRECONDITION_FAILED, 428: PRECONDITION_REQUIRED}
    update = extend_schema(
        request=update_request or serializer,
        parameters=[IF_MATCH, etag_header(200, 412)],
        responses={200: serializer, **({409: conflict} if conflict else {}), **conditional_write},
    )
    create_parameters = [etag_header(201), *(IDEMPOTENT if idempotent_create else [])]
    create_responses = {201: serializer, **({**IDEMPOTENT_RESPONSES, 409: IN_FLIGHT} if idempotent_create else {})}
    if conflict:
        create_responses[409] = conflict
    return {
        "retrieve": extend_schema(
            parameters=[IF_NONE_MATCH, etag_header(200, 304)],
            responses={200: serializer, 304: OpenApiResponse(description="Not modified: your copy is current.")},
        ),
        "create": extend_schema(parameters=create_parameters, responses=create_responses),
        "update": update,
        "partial_update": update,
        "destroy": extend_schema(
            parameters=[IF_MATCH, etag_header(412)],
            responses={
                204: None,
                409: OpenApiResponse(ErrorSerializer, description="Conflicts with the current state."),
                **conditional_write,
            },
        ),
    }


ERROR = {"$ref": "#/components/schemas/Error"}
VALIDATION_ERROR = {
    "type": "object",
    "description": (
        "Each invalid field or query parameter with its messages (nested for nested input), "
        "or `{detail, code}` for a body that cannot be parsed."
    ),
    "additionalProperties": {},
    "example": {"name": ["This field is required."]},
}


RETRY_AFTER = {"description": "Seconds until the rate limit allows another request.", "schema": {"type": "integer"}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def add_error_responses(result, generator, request, public):
    """Post-processing hook: the error responses every operation shares, described once.

    Views document only their own errors (409s); 400, 401, 403, 404 and 429 follow from
    validation, authentication, permissions, lookups and throttling alike.
    """
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Error",
        {
            "type": "object",
            "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
            "required": ["detail", "code"],
        },
    )
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            takes_input = method in {"post", "put", "patch"} or operation.get("parameters")
            if takes_input:
                responses.setdefault("400", _json("Invalid input or query parameter.", VALIDATION_ERROR))
            if operation.get("security"):  # not on POST /api/auth/token/, which takes no credentials
                responses.setdefault("401", _json("Not authenticated (see WWW-Authenticate).", ERROR))
                responses.setdefault("403", _json("Authenticated, but the role does not allow this.", ERROR))
            # Every API view is throttled (widgets.api.throttling).
            responses.setdefault(
                "429",
                {
                    **_json("Too many requests; retry after Retry-After seconds.", ERROR),
                    "headers": {"Retry-After": RETRY_AFTER},
                },
            )
            if "{" in path:
                responses.setdefault("404", _json("No such object.", ERROR))
            elif any(p.get("name") == "format" for p in operation.get("parameters", [])):
                responses.setdefault("404", _json("No such `format` (DRF's answer to an unknown one).", ERROR))
    return result


REQUEST_ID_DESCRIPTION = (
    "Identifies the request in the server's logs: the caller's own X-Request-ID when it is "
    "1-128 characters of letters, digits and `._:-`, otherwise a generated one."
)


def add_request_id_header(result, generator, request, public):
    """Postprocessing hook: every operation accepts X-Request-ID and every response echoes it
    (config.middleware.RequestLogMiddleware does both for the whole site)."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation.setdefault("parameters", []).append(
                {
                    "in": "header",
                    "name": "X-Request-ID",
                    "required": False,
                    # Any value is accepted (one that is not a usable id is replaced), so no maxLength.
                    "schema": {"type": "string"},
                    "description": REQUEST_ID_DESCRIPTION,
                }
            )
            for response in operation["responses"].values():
                if "$ref" not in response:
                    response.setdefault("headers", {})["X-Request-ID"] = {
                        "schema": {"type": "string"},
                        "description": REQUEST_ID_DESCRIPTION,
                    }
    return result


BODY_METHODS = {"POST", "PUT", "PATCH"}


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, JSON request bodies only, and the error answers that come
    from the transport rather than from validation, auth or lookups (``add_error_responses``
    adds those, and 429 with its Retry-After): 413, 414, 431, and 503 when the database is away.
    """

    # An operation's summary is the heading Swagger UI and ReDoc show for it.
    STANDARD_SUMMARIES = {
        "list": "List {plural}",
        "retrieve": "Get {a} {name}",
        "create": "Create {a} {name}",
        "update": "Replace {a} {name}",
        "partial_update": "Change fields of {a} {name}",
        "destroy": "Delete {a} {name}",
    }

    def get_summary(self):
        """The first sentence of the operation's own docstring (up to a ';'), else a phrase
        made from its action and model: "List widgets", "Get a stock movement"."""
        action = getattr(self.view, "action", None) or self.method.lower()
        handler = getattr(self.view, action, None)
        if handler is not None and handler.__module__.startswith(("widgets.", "webhooks.")) and handler.__doc__:
            first = " ".join(handler.__doc__.split()).split(". ", 1)[0]
            return first.split(";", 1)[0].rstrip(".")
        queryset = getattr(self.view, "queryset", None)
        if action in self.STANDARD_SUMMARIES and queryset is not None:
            meta = queryset.model._meta
            name = str(meta.verbose_name)
            return self.STANDARD_SUMMARIES[action].format(
                plural=meta.verbose_name_plural, name=name, a="an" if name[0].lower() in "aeiou" else "a"
            )
        return None

    def map_parsers(self):
        # The API's contract is JSON. The form parsers serve the browsable API's HTML
        # forms, whose text-only encoding cannot express null or a number.
        return ["application/json"]

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # drf-spectacular leaves out a nested many=True serializer's length bounds.
        if isinstance(field, serializers.ListSerializer) and schema.get("type") == "array":
            if field.min_length is not None:
                schema["minItems"] = field.min_length
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _with_error_responses(self, direction):
        responses = super()._get_response_bodies(direction)
        for code, response in self._error_responses().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses

    def _error_responses(self) -> dict:
        errors = {}
        if self.method in BODY_METHODS:
            errors["413"] = _error("The request body is larger than the server accepts.")
        errors["503"] = _error("The database is unreachable; retry shortly.")
        return errors

    def _get_response_bodies(self, direction="response"):
        responses = self._with_error_responses(direction)
        # Answered before any view (config.middleware.RequestSizeMiddleware, or gunicorn and
        # nginx in front, all as JSON), whatever the operation's parameters say.
        responses.setdefault(
            "414",
            self._get_response_for_code(
                _error("The URL is longer than the server accepts (8,000 bytes)."), "414", direction=direction
            ),
        )
        responses.setdefault(
            "431",
            self._get_response_for_code(
                _error("A header is longer than the server accepts (8,000 bytes)."), "431", direction=direction
            ),
        )
        return responses


def allow_empty_query_values(result, generator, request, public):
    """drf-spectacular postprocessing hook: an empty query value (``?min_stock=``) means the
    parameter was not given, as HTML filter forms send it; say so for every typed parameter.
    Text parameters refuse NUL (Django's form fields do), so say that too."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                typed = schema.get("type") != "string" or {"enum", "format", "pattern"} & schema.keys()
                if parameter.get("in") != "query":
                    continue
                if schema.get("type") == "string" and "enum" in schema:
                    schema["enum"] = [*schema["enum"], ""] if "" not in schema["enum"] else schema["enum"]
                elif typed:
                    parameter["schema"] = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
                elif schema.get("type") == "string":
                    schema["pattern"] = "^[^\\u0000]*$"
    return result

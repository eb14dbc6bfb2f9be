"""OpenAPI descriptions drf-spectacular cannot infer on its own."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

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
    "Idempotency-Key", str, HEADER,
    description=(
        "1-255 printable ASCII characters, unique per request you mean (a UUID is ideal). "
        "A retry with the same key and body gets the first answer back instead of applying "
        "twice; keys are kept for at least 24 hours and are private to your user."
    ),
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed", str, HEADER, enum=["true"], response=[201, 400, 404, 409],
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
        "ETag", str, HEADER, response=list(codes),
        description="Strong entity tag of the object's current version; send it back in If-Match / If-None-Match.",
    )


WIDGET_ETAG = OpenApiParameter(
    "ETag", str, HEADER, response=[201], description="The adjusted widget's new entity tag."
)
IF_MATCH = OpenApiParameter(
    "If-Match", str, HEADER,
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
    ErrorSerializer, description="If-Match did not match: the object changed since you read it. Nothing changed; the ETag header carries the current tag."
)
PRECONDITION_REQUIRED = OpenApiResponse(
    ErrorSerializer, description="This server requires If-Match on writes (DJANGO_REQUIRE_IF_MATCH)."
)


def conditional_schema(serializer, *, idempotent_create: bool = False) -> dict:
    """``extend_schema_view`` arguments for a ``ConditionalMixin`` viewset."""
    conditional_write = {412: PRECONDITION_FAILED, 428: PRECONDITION_REQUIRED}
    update = extend_schema(
        parameters=[IF_MATCH, etag_header(200, 412)], responses={200: serializer, **conditional_write}
    )
    create_parameters = [etag_header(201), *(IDEMPOTENT if idempotent_create else [])]
    create_responses = {201: serializer, **({**IDEMPOTENT_RESPONSES, 409: IN_FLIGHT} if idempotent_create else {})}
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

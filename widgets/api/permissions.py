"""Role-based access: Django model permissions, view permissions included.

Every permission class here also refuses unsafe methods to a read-only token, so no
endpoint can forget that rule.
"""

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission, DjangoModelPermissions

VIEW = ["%(app_label)s.view_%(model_name)s"]


def _check_token_scope(request) -> None:
    if getattr(request.auth, "read_only", False) and request.method not in SAFE_METHODS:
        raise exceptions.PermissionDenied("This token is read-only.")


def _check_method_offered(request, view) -> None:
    # Checked before permissions: a method the endpoint lacks is 405 for every
    # authenticated user, never a 403 that suggests some role could use it.
    if not hasattr(view, request.method.lower()):
        raise exceptions.MethodNotAllowed(request.method)


class ModelPermissions(DjangoModelPermissions):
    """DjangoModelPermissions that also requires the *view* permission to read.

    A method the endpoint does not offer is 405 for every authenticated user,
    checked before permissions so that it is never reported as a 403.
    """

    perms_map = {**DjangoModelPermissions.perms_map, "GET": VIEW, "HEAD": VIEW, "OPTIONS": VIEW}

    def has_permission(self, request, view):
        if request.user and request.user.is_authenticated:
            _check_method_offered(request, view)
            _check_token_scope(request)
        return super().has_permission(request, view)


class HasPermission(BasePermission):
    """Requires one named permission: ``HasPermission.of("widgets.add_stockmovement")``."""

    perm = ""

    @classmethod
    def of(cls, perm: str) -> type["HasPermission"]:
        return type(f"HasPermission({perm})", (cls,), {"perm": perm})

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        _check_method_offered(request, view)
        _check_token_scope(request)
        return request.user.has_perm(self.perm)


class IsAuthenticated(BasePermission):
    """Any signed-in user (read-only tokens limited to safe methods)."""

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        _check_method_offered(request, view)
        _check_token_scope(request)
        return True

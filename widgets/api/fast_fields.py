"""Speed-ups for serializers: the same output as plain DRF, with less work per request.

Serving a widget is mostly DRF building fields and reading them, row by row. Five pieces
make that cheaper without changing a byte of the output:

- ``SharedFieldsMixin``: a serializer class's fields are built once, and each serializer
  gets copies of them (sharing no mutable state with the templates), each made when first
  asked for;
- ``ReadPlanMixin``: the per-field decisions of ``to_representation`` are made once per
  serializer instead of once per row;
- ``IdentityUrlField``: ``reverse()`` once per process and the absolute URL once per
  request, instead of both once per row;
- ``DateTimeField``: the output time zone looked up once, UTC times written directly;
- ``DecimalField``: no rounding step for a value that already has the field's places.

``tests/test_fast_fields.py`` serializes the same objects with these on and with
``plain_drf()`` (every piece falls back to DRF's own code) and requires identical output
from every serializer that uses them.
"""

import contextlib
import copy
import datetime
import decimal
from collections.abc import Mapping

from django.core.exceptions import FieldDoesNotExist
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf
from django.urls import reverse as django_reverse
from django.utils.functional import cached_property
from django.utils.translation import get_language
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField
from rest_framework.relations import Hyperlink, PKOnlyObject
from rest_framework.settings import api_settings
from rest_framework.utils.serializer_helpers import BindingDict

# Off only inside plain_drf(), which the comparison test uses.
_enabled = True


@contextlib.contextmanager
def plain_drf():
    """Within this block every speed-up here falls back to DRF's own code (for tests)."""
    global _enabled
    _enabled = False
    _field_templates.clear()
    _read_recipes.clear()
    try:
        yield
    finally:
        _enabled = True


# The path of a view with a placeholder for the object's key, per (view name, key name, URLconf,
# script prefix, language): what Django's reverse() gives for them, worked out once per process.
_url_paths: dict[tuple, str] = {}


class IdentityUrlField(serializers.HyperlinkedIdentityField):
    """The object's ``url``, with the absolute URL made once per request instead of once
    per row (only the id differs between rows), from a path Django's ``reverse()`` gives
    once per process. Same output as DRF's field."""

    PLACEHOLDER = "987654321987654321"

    def get_url(self, obj, view_name, request, format):
        lookup_value = getattr(obj, self.lookup_field, None)
        if (
            not _enabled
            or format
            or request is None
            or lookup_value in (None, "")
            or getattr(request, "versioning_scheme", None) is not None  # its own reverse()
        ):
            return super().get_url(obj, view_name, request, format)
        cached = getattr(self, "_url_template", None)
        if cached is None or cached[0] is not request:
            # DRF's reverse() without versioning: Django's reverse(), made absolute.
            key = (view_name, self.lookup_url_kwarg, get_urlconf(), get_script_prefix(), get_language())
            path = _url_paths.get(key)
            if path is None:
                path = _url_paths[key] = django_reverse(view_name, kwargs={self.lookup_url_kwarg: self.PLACEHOLDER})
            cached = self._url_template = (request, *request.build_absolute_uri(path).split(self.PLACEHOLDER))
        if len(cached) != 3:  # the placeholder did not appear exactly once
            return super().get_url(obj, view_name, request, format)
        return f"{cached[1]}{lookup_value}{cached[2]}"


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, asking for the active time zone (a context-local look-up)
    once per request rather than for every value of every row, and writing a UTC time
    for a UTC output zone in ISO 8601 directly. Same output."""

    def to_representation(self, value):
        if not _enabled:
            return super().to_representation(value)
        utc_iso = self.__dict__.get("_utc_iso")
        if utc_iso is None:
            if not hasattr(self, "timezone"):
                self.timezone = self.default_timezone()
            output_format = getattr(self, "format", api_settings.DATETIME_FORMAT)
            utc_iso = self._utc_iso = (
                isinstance(output_format, str) and output_format.lower() == ISO_8601 and str(self.timezone) == "UTC"
            )
        if utc_iso and type(value) is datetime.datetime and value.tzinfo is datetime.UTC:
            # What DRF writes after converting to the (UTC) output zone: +00:00 as Z.
            return f"{value.isoformat()[:-6]}Z"
        return super().to_representation(value)


class DecimalField(serializers.DecimalField):
    """DRF's DecimalField, without the rounding step for a value that needs none. DRF
    quantizes every value to the field's decimal places in a copy of the decimal context
    (a fifth of serializing a widget); a value read from a NUMERIC column of the same scale
    already has exactly those places, and then its string is DRF's output. Anything else
    (other places, more digits than the field allows, output as numbers, localized or
    normalized) takes DRF's way. Same output."""

    def to_representation(self, value):
        if (
            _enabled
            and type(value) is decimal.Decimal
            and self.decimal_places
            and not self.normalize_output
            and not self.localize
            and getattr(self, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)
        ):
            text = str(value)
            whole, point, places = text.partition(".")
            digits = whole[1:] if whole[:1] == "-" else whole
            if (
                point
                and len(places) == self.decimal_places
                and places.isdigit()
                and digits.isdigit()
                and (self.max_digits is None or len(digits) + len(places) <= self.max_digits)
            ):
                return text
        return super().to_representation(value)


# Fields built once per serializer class (SharedFieldsMixin) and how ReadPlanMixin reads
# them; rebuilt when DRF's settings change, as some fields read them when built.
_field_templates: dict[type, dict[str, serializers.Field]] = {}
_read_recipes: dict[type, list[tuple]] = {}


@receiver(setting_changed)
def _forget_field_templates(*, setting, **kwargs):
    if setting == "REST_FRAMEWORK":
        _field_templates.clear()
        _read_recipes.clear()
    elif setting == "ROOT_URLCONF":
        _url_paths.clear()


class SharedFieldsMixin:
    """Builds a serializer class's fields once instead of for every serializer.

    DRF's ``get_fields`` builds every field anew for each serializer (deep copies of the
    declared fields, ModelSerializer's mapping of the model's fields): about a third of
    the CPU of serving one widget. Here they are built once per class, and each serializer
    gets its own shallow copies, which it binds to itself as usual, so no state set on a
    field while serving one request (its parent, a cached URL or time zone) is seen by
    another. Fields holding other fields (nested serializers, lists, many-relations) are
    deep-copied, as DRF does.
    """

    def get_fields(self):
        if not _enabled:
            return super().get_fields()
        return {name: _copy_field(field) for name, field in self._field_templates().items()}

    def _field_templates(self):
        templates = _field_templates.get(type(self))
        if templates is None:
            templates = _field_templates[type(self)] = super().get_fields()
        return templates

    @cached_property
    def fields(self):
        # DRF's BindingDict of get_fields(), made as each field is first asked for by name:
        # serializing a widget through its read plan needs 3 of its 15 fields.
        if not _enabled or type(self).get_fields is not SharedFieldsMixin.get_fields:
            return super().fields  # a subclass changes get_fields(): DRF's way
        return _FieldsCopiedOnUse(self, self._field_templates())


class _FieldsCopiedOnUse(BindingDict):
    """A serializer's fields: DRF's BindingDict, in which each field is copied from its
    class's template and bound to the serializer the first time it is asked for by name.
    Going over the fields, or changing them, first makes all of them, in their order."""

    def __init__(self, serializer, templates):
        super().__init__(serializer)
        self._templates = templates  # None once every field is made
        self._made = {}

    def __getitem__(self, key):
        if self._templates is None:
            return self.fields[key]
        field = self._made.get(key)
        if field is None:
            field = self._made[key] = self._bound(key, self._templates[key])
        return field

    def _bound(self, key, template):
        field = _copy_field(template)
        field.bind(field_name=key, parent=self.serializer)
        return field

    def _all(self):
        templates = self._templates
        if templates is not None:
            self._templates = None
            made = self._made
            self.fields = {
                key: made[key] if key in made else self._bound(key, template) for key, template in templates.items()
            }
        return self.fields

    def __setitem__(self, key, field):
        self._all()
        super().__setitem__(key, field)

    def __delitem__(self, key):
        self._all()
        super().__delitem__(key)

    def __iter__(self):
        return iter(self._all())

    # The views of the dict itself, as fast to go over as DRF's (Mapping's would ask
    # __getitem__ for each field).
    def keys(self):
        return self._all().keys()

    def values(self):
        return self._all().values()

    def items(self):
        return self._all().items()

    def __len__(self):
        return len(self._all())

    def __repr__(self):
        self._all()
        return super().__repr__()


# Field attributes holding a list or dict that code commonly changes after the field is made.
MUTABLE_FIELD_STATE = ("_validators", "error_messages", "style")


def _copy_field(field):
    if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child") or hasattr(field, "child_relation"):
        return copy.deepcopy(field)
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    # The containers a serializer's code may change at run time are the copy's own: one that
    # appends a validator to its field, as DRF code often does, must not add it to the
    # template and so to every later request's field. (Named rather than found by a loop over
    # every attribute: that loop cost more than the rest of the copy.)
    for name in MUTABLE_FIELD_STATE:
        value = field.__dict__.get(name)
        if value is not None:
            clone.__dict__[name] = value.copy()
    return clone


_MISSING = object()
_URL = object()  # in a read recipe: the object's url, IdentityUrlField


class _Annotation(str):
    """The name of a query annotation in a read plan (read from the instance's __dict__)."""


# Fields whose output is a plain conversion of the model attribute: their own
# to_representation is exactly this (subclasses that keep it, the strict input fields
# above among them, are recognised by the method, not the class).
def _unchanged(value):
    return value


PLAIN_OUTPUT = {
    serializers.IntegerField.to_representation: int,
    serializers.CharField.to_representation: str,
    serializers.ReadOnlyField.to_representation: _unchanged,
}
# Fields whose to_representation reads only what the field was made with (never its parent,
# the context or state set while serving): the class's template field can write the value,
# and the serializer needs no copy of the field. (A BooleanField's output is _boolean_output.)
STATELESS_OUTPUT = {
    serializers.BigIntegerField.to_representation,
    serializers.DecimalField.to_representation,
    DecimalField.to_representation,
}


def _own(field, name):
    """The function behind ``field.name`` (a method as its class defines it)."""
    return getattr(type(field), name)


def _boolean_output(field):
    """A BooleanField's output: a bool as it is, which is what DRF's to_representation
    gives for one when the field's TRUE_VALUES and FALSE_VALUES hold True and False the
    usual way (it tests each value against both sets, ignoring case, for every row)."""
    to_representation = field.to_representation
    if not (True in field.TRUE_VALUES and False not in field.TRUE_VALUES and False in field.FALSE_VALUES):
        return to_representation

    def output(value):
        return value if value.__class__ is bool else to_representation(value)

    return output


class ReadPlanMixin:
    """DRF's ``to_representation`` with the per-field decisions made once per
    serializer instead of once per row: which fields are readable and, for fields that
    read a model attribute as DRF's ``Field.get_attribute`` does, a direct read of the
    attribute, handed to the field's own ``to_representation`` (or, for integers,
    strings and foreign-key ids, whose ``to_representation`` is a plain conversion, to
    that conversion). Every other field goes through its own ``get_attribute`` and
    ``to_representation`` as in DRF. The output is identical. Needs SharedFieldsMixin
    (the decisions are kept per class)."""

    def to_representation(self, instance):
        model = self.Meta.model
        if not _enabled or type(instance) is not model or isinstance(instance, Mapping):
            return super().to_representation(instance)
        plan = self.__dict__.get("_read_plan")
        if plan is None:
            plan = self._read_plan = self._make_read_plan(model)
        ret = {}
        instance_dict = instance.__dict__
        for name, attname, convert, field in plan:
            if attname is not None:
                if attname.__class__ is _Annotation:
                    # An annotation is set on the instance by the query, or is not there at
                    # all (DRF's way then decides: a default, SkipField or an error).
                    value = instance_dict.get(attname, _MISSING)
                    if callable(value):
                        value = _MISSING
                else:
                    try:
                        value = getattr(instance, attname)
                    except AttributeError:  # a property that cannot be read: DRF's way decides
                        value = _MISSING
                if value is not _MISSING:
                    ret[name] = None if value is None else convert(value)
                    continue
            elif convert is not None:  # the object's url (IdentityUrlField)
                try:
                    ret[name] = convert(instance)
                    continue
                except NoReverseMatch:  # DRF's way explains it
                    pass
            if field is None:  # a step that needed no field until now
                field = self.fields[name]
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            check_for_none = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            ret[name] = None if check_for_none is None else field.to_representation(attribute)
        return ret

    def _make_read_plan(self, model):
        # The decisions are the same for every serializer of a class (its fields are built
        # once, SharedFieldsMixin); the plan binds them to this serializer's fields.
        recipe = _read_recipes.get(type(self))
        if recipe is None:
            templates = self._field_templates()
            recipe = _read_recipes[type(self)] = [
                self._stateless(self._read_step(field, model), templates) for field in self._readable_fields
            ]
        fields = self.fields
        plan = []
        for name, attname, convert in recipe:
            field = None  # a step that reads the attribute and converts it needs no field
            if attname is _URL:
                field = fields[name]
                attname, convert = None, self._url_reader(field)
            elif attname is None:  # DRF's way
                field = fields[name]
            elif convert is None:
                field = fields[name]
                convert = field.to_representation
            plan.append((name, attname, convert, field))
        return plan

    @staticmethod
    def _stateless(step, templates):
        """The step, with the template field's to_representation as its conversion when
        that writes the value from what the field was made with alone."""
        name, attname, convert = step
        if attname is not None and attname is not _URL and convert is None:
            template = templates[name]
            own = _own(template, "to_representation")
            if own is serializers.BooleanField.to_representation:
                return (name, attname, _boolean_output(template))
            if own in STATELESS_OUTPUT:
                return (name, attname, template.to_representation)
        return step

    def _url_reader(self, field):
        """What DRF's ``HyperlinkedRelatedField.to_representation`` does for the object's
        url, with the request and format looked up in the context once per serializer
        instead of for every row; None (DRF's way) without a request in the context."""
        context = self.context
        if "request" not in context:
            return None
        request, format = context["request"], context.get("format")
        if format and field.format and field.format != format:
            format = field.format
        get_url, view_name = field.get_url, field.view_name

        def url_of(instance):
            url = get_url(instance, view_name, request, format)
            return None if url is None else Hyperlink(url, instance)

        return url_of

    @staticmethod
    def _read_step(field, model):
        """(name, attribute to read or None for DRF's way, conversion or None for the
        field's own to_representation)."""
        slow = (field.field_name, None, None)
        if (
            isinstance(field, IdentityUrlField)
            and field.source == "*"
            and _own(field, "get_attribute") is serializers.RelatedField.get_attribute
            and _own(field, "to_representation") is serializers.HyperlinkedRelatedField.to_representation
            and not field.use_pk_only_optimization()
        ):
            # The object itself is the attribute (source "*"), never None.
            return (field.field_name, _URL, None)
        if len(field.source_attrs) != 1:
            return slow
        source = field.source_attrs[0]
        try:
            model_field = model._meta.get_field(source)
        except FieldDoesNotExist:  # a property, perhaps
            model_field = None
        if isinstance(field, serializers.PrimaryKeyRelatedField):
            # A foreign key's id is on the instance: no related object is loaded, as in DRF.
            if (
                _own(field, "get_attribute") is serializers.RelatedField.get_attribute
                and _own(field, "to_representation") is serializers.PrimaryKeyRelatedField.to_representation
                and field.pk_field is None
                and model_field is not None
                and model_field.many_to_one
                and model_field.concrete
            ):
                return (field.field_name, model_field.attname, _unchanged)
            return slow
        # Otherwise only fields that read their source as DRF's Field does, a model field
        # or a property, whose value is then given to their own to_representation.
        if _own(field, "get_attribute") is not serializers.Field.get_attribute:
            return slow
        if model_field is None:
            if isinstance(getattr(model, source, None), property):
                return (field.field_name, source, PLAIN_OUTPUT.get(_own(field, "to_representation")))
            if field.read_only and not hasattr(model, source) and source.isidentifier():
                # Not on the class: an annotation of the query (``reserved``), read from the
                # instance when it is there.
                return (field.field_name, _Annotation(source), PLAIN_OUTPUT.get(_own(field, "to_representation")))
            return slow
        if model_field.is_relation or not model_field.concrete:
            return slow
        return (field.field_name, source, PLAIN_OUTPUT.get(_own(field, "to_representation")))

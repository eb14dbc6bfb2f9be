"""The input rules, once: what a SKU, a line of text, a block of text and a category name
may be. The model fields carry them (``widgets.models``), so every door applies the same
rule: the API's ModelSerializers pick model validators up by themselves, the admin's
ModelForms run them in ``full_clean()``, and the CSV import (``widgets.csv_io``, also the
``import_widgets`` command) cleans each cell with the model field. docs/input-rules.md
describes them for people.

The rule about movement reasons and the sign of their delta is a rule about a write, so
it lives in ``widgets.services`` (``check_movement``), which every stock change goes
through.
"""

import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

# --- SKU ------------------------------------------------------------------------------------
# Typed case-insensitively, stored upper-case. The typed text is checked *before* it is
# upper-cased: 'ß'.upper() is 'SS', 'ı'.upper() is 'I' and 'ﬀ'.upper() is 'FF', and none of
# them may become a valid SKU by case folding.

SKU_MAX_LENGTH = 32
SKU_MESSAGE = "SKU must be 1-32 characters of A-Z, 0-9 and '-'."
SKU_TYPED = re.compile(r"[A-Za-z0-9-]{1,32}")
# The stored form (\Z, not $: $ also matches before a trailing newline).
sku_validator = RegexValidator(r"^[A-Z0-9-]{1,32}\Z", SKU_MESSAGE + " (stored upper-case)")


def normalize_sku(value: str) -> str:
    """The SKU as stored, from the SKU as typed; raises ``ValidationError`` (code
    ``invalid``) for anything else, surrounding spaces included."""
    if not isinstance(value, str) or not SKU_TYPED.fullmatch(value):
        raise ValidationError(SKU_MESSAGE, code="invalid")
    return value.upper()


class SkuFormField(forms.CharField):
    """The form field of a SKU (the admin): typed as the API takes it, cleaned to the stored form."""

    def __init__(self, **kwargs):
        kwargs["strip"] = False  # validated as typed
        super().__init__(**kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return value
        return normalize_sku(value)


# --- Text -----------------------------------------------------------------------------------
# Control characters never belong in stored text (PostgreSQL cannot even store NUL); text
# that is only whitespace is refused too. Surrounding whitespace is kept: text is stored as
# typed. The same patterns are published in the OpenAPI schema; drf-spectacular turns \Z
# (Python's true end of string, where $ would allow a trailing newline) into ECMA's $.

CONTROL = r"\x00-\x1f\x7f-\x9f\ufeff"
# A block of text may also hold tabs and line breaks.
CONTROL_IN_BLOCK = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff"

ONE_LINE_PATTERN = rf"^[^{CONTROL}]*[^\s{CONTROL}][^{CONTROL}]*\Z"
MULTI_LINE_PATTERN = rf"^[^{CONTROL_IN_BLOCK}]*[^\s{CONTROL_IN_BLOCK}][^{CONTROL_IN_BLOCK}]*\Z"
# One line with at least one ASCII letter or digit, so that the slug is never empty and
# never made up by transliteration ('é' would slugify to 'e', '½' to '12').
CATEGORY_NAME_PATTERN = rf"^[^{CONTROL}]*[A-Za-z0-9][^{CONTROL}]*\Z"

one_line = RegexValidator(
    ONE_LINE_PATTERN, "Must contain a visible character and no control characters (tabs, line breaks, NUL...)."
)
multi_line = RegexValidator(
    MULTI_LINE_PATTERN,
    "Must contain a visible character and no control characters other than tab and line breaks.",
)
category_name = RegexValidator(CATEGORY_NAME_PATTERN, "The name must contain a letter (A-Z) or a digit.")

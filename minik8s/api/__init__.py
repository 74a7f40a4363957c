"""The API object model shared by every minik8s component.

Objects are plain JSON dicts (the wire shape); :mod:`minik8s.api.types` describes them for mypy.
Each write in the apiserver goes ``apply_defaults`` → ``validate`` (→ ``unknown_fields`` with
``fieldValidation=Strict``, ``unused_fields`` for warnings); readers use the selectors.

    registry     which kinds are served and how they are named
    types        TypedDicts of the wire shape (KINDS: kind → type)
    names        DNS-1123 / qualified-name / label-value checks with Kubernetes' wording
    quantity     resource quantities as exact fractions
    selectors    label and field selectors
    defaults     server-side defaults
    validation   field errors (``Cause``s) with Kubernetes' paths and messages
    schema       unknown and unused fields, from the upstream schema
"""

from minik8s.api import registry
from minik8s.api.defaults import apply_defaults
from minik8s.api.quantity import parse_quantity
from minik8s.api.schema import unknown_fields, unused_fields
from minik8s.api.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
    selector_from_dict,
    selector_from_labels,
    selector_to_string,
)
from minik8s.api.validation import validate

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "apply_defaults",
    "parse_field_selector",
    "parse_label_selector",
    "parse_quantity",
    "registry",
    "selector_from_dict",
    "selector_from_labels",
    "selector_to_string",
    "unknown_fields",
    "unused_fields",
    "validate",
]

"""Name and label checks with Kubernetes' exact wording.

Every function returns a list of problems (empty when the value is fine), phrased exactly as the
Kubernetes apiserver phrases them, so that a ``Cause`` built from them reads like the real thing.
They accept any value: a non-string is reported, never raised on.
"""

from __future__ import annotations

import re
from typing import Any

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_ENV_VAR_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_PERCENT_FMT = "[0-9]+%"

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_ENV_VAR_RE = re.compile(_ENV_VAR_FMT)
_PERCENT_RE = re.compile(_PERCENT_FMT)
_IANA_ALNUM_RE = re.compile("[-a-z0-9]+")
_IANA_LETTER_RE = re.compile("[a-z]")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' ``RegexError`` text (its double space between examples included)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    parts = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {parts}regex used for validation is '{fmt}')"


def max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


DNS1123_LABEL_ERROR = regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character", _DNS1123_LABEL_FMT, "my-name", "123-abc")
DNS1123_SUBDOMAIN_ERROR = regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character", _DNS1123_SUBDOMAIN_FMT, "example.com")
DNS1035_LABEL_ERROR = regex_error(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character", _DNS1035_LABEL_FMT, "my-name", "abc-123")
QUALIFIED_NAME_ERROR = regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character", _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
LABEL_VALUE_ERROR = regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character", _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
ENV_VAR_ERROR = regex_error(
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and "
    "must not start with a digit", _ENV_VAR_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1")
PERCENT_ERROR = regex_error("a valid percent string must be a numeric string followed by an ending '%'",
                            _PERCENT_FMT, "1%", "93%")


def _not_str(value: Any) -> list[str]:
    return [] if isinstance(value, str) else ["must be a string"]


def dns1123_label(value: Any) -> list[str]:
    """An RFC 1123 label: namespace names, container and port names."""
    if not isinstance(value, str):
        return _not_str(value)
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        errs.append(DNS1123_LABEL_ERROR)
    return errs


def dns1123_subdomain(value: Any) -> list[str]:
    """An RFC 1123 subdomain: the names of most kinds, label-key prefixes, hosts."""
    if not isinstance(value, str):
        return _not_str(value)
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(DNS1123_SUBDOMAIN_ERROR)
    return errs


def dns1035_label(value: Any) -> list[str]:
    """An RFC 1035 label (starts with a letter): Service names, as Kubernetes requires."""
    if not isinstance(value, str):
        return _not_str(value)
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(DNS1035_LABEL_ERROR)
    return errs


def qualified_name(value: Any) -> list[str]:
    """A label or annotation key: ``[prefix/]name`` with a DNS subdomain prefix."""
    if not isinstance(value, str):
        return _not_str(value)
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        prefix_errs = dns1123_subdomain(prefix)
        if prefix_errs:
            return ["prefix part " + e for e in prefix_errs]
    else:
        return ["a qualified name " + QUALIFIED_NAME_ERROR
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        return ["name part must be non-empty"]
    errs = []
    if len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append("name part " + QUALIFIED_NAME_ERROR)
    return errs


def label_value(value: Any) -> list[str]:
    """A label value: empty, or up to 63 characters of ``[-A-Za-z0-9_.]`` framed by alphanumerics."""
    if not isinstance(value, str):
        return _not_str(value)
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(LABEL_VALUE_ERROR)
    return errs


def env_var_name(value: Any) -> list[str]:
    if not isinstance(value, str):
        return _not_str(value)
    return [] if _ENV_VAR_RE.fullmatch(value) else [ENV_VAR_ERROR]


def iana_svc_name(value: Any) -> list[str]:
    """An IANA service name: named ports (``http``), ``targetPort`` strings."""
    if not isinstance(value, str):
        return _not_str(value)
    errs = []
    if len(value) > 15:
        errs.append(max_len_error(15))
    if not _IANA_ALNUM_RE.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not _IANA_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def percent(value: Any) -> list[str]:
    if not isinstance(value, str):
        return _not_str(value)
    return [] if _PERCENT_RE.fullmatch(value) else [PERCENT_ERROR]

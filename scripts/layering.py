"""Import layering of minik8s, checked by import-linter.

The rules (the design notes: STYLE.md practice 9, ARCHITECTURE.md "Component rules")::

    daemons:  apiserver  scheduler  controllers  kubelet  kubeproxy  serverless  minictl
                 │           │           │          │         │          │          │
                 └───────────┴───────────┴────┬─────┴─────────┴──────────┴──────────┘
                                              ▼  (never sideways: daemons are independent)
    library:                               minik8s        (imports no daemon)

    aetcd (etcd client)   only in apiserver
    grpc                  only in kubelet (CRI) and apiserver (under aetcd)
    imagedata             the function runtime shipped inside images: imports nothing of ours

Packages that do not exist yet (a folder with only a README) are left out, so the contracts
always name real, importable packages; a top-level package that the rules do not know about is
an error, so a new package cannot slip past them.

    python scripts/layering.py                 check the repository (exit 1 on a broken contract)
    python scripts/layering.py --root DIR      check another tree laid out the same way
    python scripts/layering.py --print-config  show the import-linter config it generates
    python scripts/layering.py --list-packages print the top-level packages that exist
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

LIBRARY = "minik8s"
DAEMONS = ("apiserver", "scheduler", "controllers", "kubelet", "kubeproxy", "serverless", "clusterdns", "ingress",
           "minictl")
FUNCTION_RUNTIME = "imagedata"
KNOWN = (LIBRARY, *DAEMONS, FUNCTION_RUNTIME)
# Top-level folders that hold Python but are not packages of the product.
NOT_PRODUCT = frozenset({"tests", "benchmarks", "examples", "scripts", "docs", "build", "dist"})
# External module -> the only packages allowed to import it.
ONLY_IN = {
    "aetcd": ("apiserver",),
    "grpc": ("kubelet", "apiserver"),
}


def existing_packages(root: Path) -> list[str]:
    """Top-level folders of ``root`` with an ``__init__.py``, known ones first in rule order."""
    found = {p.parent.name for p in root.glob("*/__init__.py")
             if p.parent.name not in NOT_PRODUCT and not p.parent.name.startswith(".")}
    return [name for name in KNOWN if name in found] + sorted(found - set(KNOWN))


def _lines(names: list[str] | tuple[str, ...]) -> str:
    return "".join(f"\n    {name}" for name in names)


def generate_config(packages: list[str]) -> str:
    """The import-linter INI for the packages that exist."""
    daemons = [p for p in packages if p in DAEMONS]
    ours = [p for p in packages if p in KNOWN]
    sections = [f"[importlinter]\nroot_packages ={_lines(ours)}\ninclude_external_packages = True\n"]
    if LIBRARY in packages:
        above = [p for p in ours if p != LIBRARY]
        if above:
            sections.append(
                "[importlinter:contract:library]\n"
                f"name = the library ({LIBRARY}) imports no daemon\n"
                f"type = forbidden\nsource_modules =\n    {LIBRARY}\nforbidden_modules ={_lines(above)}\n")
    if len(daemons) >= 2:
        sections.append(
            "[importlinter:contract:daemons]\n"
            "name = daemons do not import each other\n"
            f"type = independence\nmodules ={_lines(daemons)}\n")
    if FUNCTION_RUNTIME in packages:
        others = [p for p in ours if p != FUNCTION_RUNTIME]
        if others:
            sections.append(
                "[importlinter:contract:function-runtime]\n"
                f"name = the function runtime ({FUNCTION_RUNTIME}) imports nothing of minik8s\n"
                f"type = forbidden\nsource_modules =\n    {FUNCTION_RUNTIME}\nforbidden_modules ={_lines(others)}\n")
    for module, allowed in ONLY_IN.items():
        sources = [p for p in ours if p not in allowed]
        if sources:
            sections.append(
                f"[importlinter:contract:only-{module}]\n"
                f"name = only {' and '.join(allowed)} {'imports' if len(allowed) == 1 else 'import'} {module}\n"
                f"type = forbidden\nsource_modules ={_lines(sources)}\nforbidden_modules =\n    {module}\n")
    return "\n".join(sections)


def check(root: Path) -> int:
    """Run import-linter over ``root``; 0 when every contract is kept."""
    packages = existing_packages(root)
    unknown = [p for p in packages if p not in KNOWN]
    if unknown:
        print(f"layering: unknown top-level package(s) {', '.join(unknown)}: "
              "add them to the rules in scripts/layering.py", file=sys.stderr)
        return 1
    if not packages:
        print(f"layering: no packages under {root}", file=sys.stderr)
        return 1
    try:
        from importlinter.cli import lint_imports
    except ImportError:
        print("layering: import-linter is not installed (run make deps)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mk8s-layers-") as tmp:
        config = Path(tmp) / "importlinter.ini"
        config.write_text(generate_config(packages))
        # import-linter finds the root packages through sys.path; it adds the working directory.
        os.chdir(root)
        sys.path.insert(0, str(root))
        return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--list-packages", action="store_true")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.list_packages:
        print("\n".join(existing_packages(root)))
        return 0
    if args.print_config:
        print(generate_config(existing_packages(root)), end="")
        return 0
    return check(root)


if __name__ == "__main__":
    sys.exit(main())

"""An import-linter contract for "only one module may use this library's internals".

import-linter sees an external package as one node (``arq``, not ``arq.worker``), so its own
contract types cannot tell ``from arq.connections import ArqRedis`` (arq's documented API)
from ``from arq.worker import Worker`` (its internals). This contract reads the import lines
grimp records and names, for each importer, every module it takes from the package's
non-public parts; only the ``allowed_importers`` may do that.

    [[tool.importlinter.contracts]]
    name = "arq's internals only through service.engine.arq_api"
    type = "internal_api"
    package = "arq"
    public_modules = ["arq", "arq.connections"]
    allowed_importers = ["service.engine.arq_api"]
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any, cast

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output

FROM_IMPORT = re.compile(r"^\s*from\s+([\w.]+)\s+import\s+\(?\s*(.*?)\)?\s*$")
PLAIN_IMPORT = re.compile(r"^\s*import\s+(.*)$")


def imported_modules(line: str, package: ModuleType) -> set[str]:
    """The modules of ``package`` an import line takes: ``from arq.worker import X`` ->
    ``arq.worker``; ``from arq import worker`` -> ``arq.worker`` when ``worker`` is a module."""
    root = package.__name__
    found: set[str] = set()
    if match := FROM_IMPORT.match(line):
        module, names = match.groups()
        found.add(module)
        if module == root:
            for part in names.split(","):
                name = part.strip().split(" as ")[0].strip()
                if name and isinstance(getattr(package, name, None), ModuleType):
                    found.add(f"{root}.{name}")
    elif match := PLAIN_IMPORT.match(line):
        for part in match.group(1).split(","):
            found.add(part.strip().split(" as ")[0].strip())
    return {name for name in found if name == root or name.startswith(root + ".")}


def _values(field: object) -> list[str]:
    """A list option's values (a field on the class, its parsed value on the instance)."""
    return [str(value) for value in cast(list[object], field)]


class InternalApiContract(Contract):
    """Only ``allowed_importers`` may import modules of ``package`` beyond ``public_modules``."""

    type_name = "internal_api"

    package = fields.StringField()
    public_modules = fields.ListField(subfield=fields.StringField())
    allowed_importers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        package_name = str(self.package)
        package = importlib.import_module(package_name)
        public = set(_values(self.public_modules))
        allowed = set(_values(self.allowed_importers))
        violations: list[dict[str, Any]] = []
        for importer in sorted(graph.find_modules_that_directly_import(package_name)):
            if importer in allowed:
                continue
            for detail in graph.get_import_details(importer=importer, imported=package_name):
                line = str(detail["line_contents"])
                for module in sorted(imported_modules(line, package) - public):
                    violations.append(
                        {
                            "importer": importer,
                            "line_number": detail["line_number"],
                            "module": module,
                        }
                    )
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(_values(self.allowed_importers))
        for violation in check.metadata["violations"]:
            output.print_error(
                f"{violation['importer']}:{violation['line_number']} imports "
                f"{violation['module']}, which only {allowed} may use",
                bold=False,
            )
        output.new_line()

#!/usr/bin/env python3
"""Fails when an end-to-end test imports a Python module that scripts/install-deps.sh does not
install (directly or as a dependency of what it installs): a module this machine happens to ship
would pass here and fail on a fresh one (issue 24)."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

root = Path(__file__).resolve().parents[1]
script = (root / "scripts" / "install-deps.sh").read_text()
listed = re.search(r"^python_packages=\((.*)\)$", script, re.M).group(1)


def normal(name):
    return name.lower().replace("_", "-")


# Everything pip brings in for the listed packages (with the extras asked for, on this Python).
installed, queue = set(), [Requirement(name.strip('"')) for name in listed.split()]
while queue:
    requirement = queue.pop()
    name = normal(requirement.name)
    if name in installed:
        continue
    installed.add(name)
    try:
        requirements = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{name} is needed by scripts/install-deps.sh but not installed: run the script first")
    for text in requirements:
        dependency = Requirement(text)
        extras = requirement.extras or {""}
        if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
            queue.append(dependency)

providers = importlib.metadata.packages_distributions()
local = {path.stem for path in (root / "e2e").glob("*.py")}
problems = []
for path in sorted((root / "e2e").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in local:
                continue
            distributions = {normal(d) for d in providers.get(top, [])}
            if not distributions & installed:
                problems.append(f"{path.relative_to(root)} imports {top} (from {', '.join(sorted(distributions)) or 'nowhere'}), "
                                "which scripts/install-deps.sh does not install")
if problems:
    sys.exit("\n".join(problems))
print(f"test imports: every third-party module comes from scripts/install-deps.sh ({len(listed.split())} packages listed)")

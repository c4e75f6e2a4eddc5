#!/usr/bin/env python3
"""Holds the code to the module map in docs/architecture.md (issue 16):
  - a module imports only the modules of ours its row lists ("may import (ours)");
  - only the modules named on the "HTTP frameworks ... only by" line import an HTTP framework;
  - only the files and folders named on the "SQL is written only in" line import a SQL library.
The map is the document: change the document and the code together."""

import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
document = (root / "docs" / "architecture.md").read_text()

allowed = {}
for line in document.splitlines():
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("| `") else []
    if len(cells) == 4:
        module = cells[0].strip("`")
        allowed[module] = {name.strip() for name in cells[2].split(",") if name.strip() not in ("", "—")}
if not allowed:
    sys.exit("docs/architecture.md has no module table")

http_line = re.search(r"^HTTP frameworks \(([^)]*)\) are imported only by: (.*)$", document, re.M)
sql_line = re.search(r"^SQL is written only in: (.*)$", document, re.M)
if not http_line or not sql_line:
    sys.exit("docs/architecture.md lost its 'HTTP frameworks' or 'SQL is written only in' line")
http_frameworks = {name.strip() for name in http_line.group(1).split(",")}
http_modules = set(re.findall(r"`([^`]+)`", http_line.group(2)))
sql_owners = re.findall(r"`([^`]+)`", sql_line.group(1))
sql_libraries = {"SQLKit", "SQLiteKit", "PostgresKit", "PostgresNIO", "SQLiteNIO"}

ours = {path.name for path in (root / "Sources").iterdir() if path.is_dir()}
missing = ours - set(allowed)
problems = [f"Sources/{name} has no row in docs/architecture.md's module table" for name in sorted(missing)]
checked = 0
for path in sorted((root / "Sources").rglob("*.swift")):
    relative = path.relative_to(root).as_posix()
    module = path.relative_to(root / "Sources").parts[0]
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = re.match(r"^\s*(?:@testable\s+|@_exported\s+)?import\s+(?:(?:struct|class|enum|func|protocol)\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
        if not found:
            continue
        checked += 1
        imported = found.group(1)
        where = f"{relative}:{number}"
        if imported in ours and imported != module and imported not in allowed.get(module, set()):
            problems.append(f"{where}: {module} imports {imported}, which its row in docs/architecture.md does not allow")
        # Hummingbird's modules are HTTP, except HummingbirdBcrypt (only password hashing).
        if imported in http_frameworks or (imported.startswith("Hummingbird") and imported != "HummingbirdBcrypt"):
            if module not in http_modules:
                problems.append(f"{where}: {module} imports the HTTP framework {imported}; only {', '.join(sorted(http_modules))} may")
        if imported in sql_libraries and not any(relative == owner or (owner.endswith("/") and relative.startswith(owner)) for owner in sql_owners):
            problems.append(f"{where}: imports {imported}, but SQL is written only in the stores docs/architecture.md names")
if problems:
    sys.exit("architecture check failed:\n  " + "\n  ".join(problems))
print(f"architecture: {checked} imports in {len(allowed)} modules follow docs/architecture.md")

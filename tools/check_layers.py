#!/usr/bin/env python3
"""The dependency check (issue 21): no #include runs from a lower layer to a higher one, and no
circle between folders. The layers are the table between the `layers:` markers in
docs/ARCHITECTURE.md, so the document and the check cannot drift apart.

Checked:
  - core/<folder>/: a file may include its own folder and folders on lower levels only (two
    folders on one level may not include each other, so no circle can form);
  - core/ includes no Qt header, no app/ and no widgets/ header;
  - widgets/ includes no core/ (LibTorch) or app/ header; QCustomPlot is included only in widgets/;
  - app/cli/ and app/gui/ include nothing of each other; app/cli/ includes no Qt.
Prints every violation with file:line and exits 1 when there is one.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCES = (".h", ".hpp", ".cpp", ".cc")


def read_layers():
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- layers: begin -->(.*?)<!-- layers: end -->", text, re.S)
    if not m:
        sys.exit(f"{DOC}: no '<!-- layers: begin -->' ... '<!-- layers: end -->' table")
    level_of = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for folder in re.findall(r"`([a-z_]+)/`", cells[1]):
            if folder in level_of:
                sys.exit(f"{DOC}: folder {folder}/ is listed twice in the layer table")
            level_of[folder] = int(cells[0])
    if not level_of:
        sys.exit(f"{DOC}: the layer table names no folder")
    return level_of


def includes(path):
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        m = INCLUDE.match(line)
        if m:
            yield n, m.group(1), m.group(2)


def main():
    level_of = read_layers()
    errors = []
    core = ROOT / "core"
    for d in sorted(p for p in core.iterdir() if p.is_dir()):
        if d.name not in level_of:
            errors.append(f"core/{d.name}/: not in the layer table of docs/ARCHITECTURE.md (add it at its level)")
    for f in sorted(core.rglob("*")):
        if f.suffix not in SOURCES:
            continue
        rel = f.relative_to(ROOT)
        folder = f.relative_to(core).parts[0] if len(f.relative_to(core).parts) > 1 else None
        for n, kind, inc in includes(f):
            where = f"{rel}:{n}: #include {inc}"
            top = inc.split("/")[0]
            if kind == "<" and re.match(r"Q[A-Za-z]|qcustomplot", inc):
                errors.append(f"{where}: Qt in core")
            if kind != '"' or "/" not in inc:
                continue
            if top in ("app", "widgets"):
                errors.append(f"{where}: core includes {top}/")
            elif folder and top in level_of and top != folder:
                if folder not in level_of:
                    continue  # reported above
                if level_of[top] >= level_of[folder]:
                    errors.append(f"{where}: core/{folder}/ (level {level_of[folder]}) may not include "
                                  f"core/{top}/ (level {level_of[top]}): includes run downwards only")
    for f in sorted((ROOT / "widgets").rglob("*")):
        if f.suffix in SOURCES:
            for n, kind, inc in includes(f):
                top = inc.split("/")[0]
                if kind == '"' and (top in level_of or top == "app"):
                    errors.append(f"{f.relative_to(ROOT)}:{n}: #include {inc}: widgets/ uses Qt and QCustomPlot only")
    for app, other in (("cli", "gui"), ("gui", "cli")):
        for f in sorted((ROOT / "app" / app).rglob("*")):
            if f.suffix not in SOURCES:
                continue
            for n, kind, inc in includes(f):
                where = f"{f.relative_to(ROOT)}:{n}: #include {inc}"
                if inc.startswith(f"app/{other}/") or inc.startswith(f"{other}/"):
                    errors.append(f"{where}: app/{app}/ may not use app/{other}/")
                if "qcustomplot" in inc.lower():
                    errors.append(f"{where}: QCustomPlot is used only inside widgets/")
                if app == "cli" and kind == "<" and re.match(r"Q[A-Za-z]", inc):
                    errors.append(f"{where}: the CLI has no Qt")
    for e in errors:
        print(e)
    levels = sorted(set(level_of.values()))
    print(f"check_layers: {len(errors)} violation(s); layers: " +
          " < ".join(", ".join(sorted(k + "/" for k, v in level_of.items() if v == lvl)) for lvl in levels))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

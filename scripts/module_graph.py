#!/usr/bin/env python3
"""Print which module of the crate uses which, and fail if any import cycle exists.

    python3 scripts/module_graph.py [src]

A module is a file under src/ (a folder's mod.rs is the folder). It uses another when its code,
comments aside, names it through a `crate::` or `super::` path. `.ci/run` runs this, so a cycle
turns CI red.
"""
import os
import re
import sys


def modules(root):
    """Map each module path (a tuple of names) to its file."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                parts = tuple(os.path.relpath(path, root)[:-3].split(os.sep))
                if parts[-1] in ("mod", "lib"):
                    parts = parts[:-1]
                found[parts] = path
    return found


def uses(module, path, known):
    """The modules `module` (in file `path`) names, itself and its ancestors excluded."""
    code = open(path, encoding="utf-8").read()
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", code, flags=re.S)
    is_folder = os.path.basename(path) in ("mod.rs", "lib.rs")
    parent = module if is_folder else module[:-1]
    targets = set()
    for match in re.finditer(r"\b(crate|super)((?:::\w+)+)", code):
        names = match.group(2).strip(":").split("::")
        base = [] if match.group(1) == "crate" else list(parent[:-1] if is_folder else parent)
        full = base + names
        for cut in range(len(full), 0, -1):
            target = tuple(full[:cut])
            if target in known:
                if target != module and module[: len(target)] != target:
                    targets.add(target)
                break
    return targets


def cycles(graph):
    """Every cycle a depth-first walk finds."""
    state, stack, found = {}, [], []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    known = modules(root)
    graph = {module: uses(module, path, known) for module, path in known.items()}
    name = lambda module: "::".join(module) or "lib"
    for module in sorted(graph):
        print(f"{name(module):<24} uses {', '.join(sorted(map(name, graph[module]))) or '-'}")
    found = cycles(graph)
    for cycle in found:
        print("import cycle:", " -> ".join(map(name, cycle)), file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

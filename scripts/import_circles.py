#!/usr/bin/env python3
"""Prints any import circle among the top-level modules of cache-core and exits 1 when there is
one (scripts/test.sh runs it: architecture.md promises none); `-v` also prints every module's
imports.

An edge A -> B is a `crate::b` path, or a `crate::Name` re-exported at the crate root from module b
(`pub use b::Name` in lib.rs), in the code of A's files (comments and unit tests aside). A stricter
variant of the shared tools' import_circles.py, which sees `crate::b` paths only.

Usage: python3 scripts/import_circles.py [-v] [CRATE_SRC_DIR]
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if a != '-v']
verbose = '-v' in sys.argv[1:]
src = args[0] if args else os.path.join(os.path.dirname(__file__), '..', 'cache-core', 'src')

# Names re-exported at the crate root, and the module each comes from.
lib = open(os.path.join(src, 'lib.rs'), encoding='utf-8').read()
reexported = {}
for module, names in re.findall(r'pub use ([a-z_]+)::\{?([^;]*?)\}?;', lib, flags=re.S):
    for name in re.findall(r'[A-Za-z_]+', names):
        reexported[name] = module

# Top-level modules and their files.
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs'):
            continue
        top = os.path.relpath(os.path.join(root, f), src).split(os.sep)[0]
        top = top[:-3] if top.endswith('.rs') else top
        if top not in ('lib', 'main'):
            mods.setdefault(top, []).append(os.path.join(root, f))

edges = {m: set() for m in mods}
for m, paths in mods.items():
    for p in paths:
        if os.path.basename(p) == 'tests.rs':
            continue
        text = open(p, encoding='utf-8', errors='replace').read()
        text = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', text, flags=re.S)
        text = '\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
        names = re.findall(r'crate::([A-Za-z_][A-Za-z0-9_]*)', text)
        for group in re.findall(r'crate::\{([^}]*)\}', text):
            names += re.findall(r'(?:^|[,{\s])([A-Za-z_][A-Za-z0-9_]*)', group)
        for name in names:
            target = name if name in mods else reexported.get(name)
            if target and target != m:
                edges[m].add(target)

if verbose:
    for m in sorted(edges):
        print(f"{m} -> {' '.join(sorted(edges[m]))}")

# Tarjan's strongly connected components.
sys.setrecursionlimit(10000)
index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            circles.append(comp)


for v in sorted(edges):
    if v not in index:
        visit(v)
for comp in circles:
    print('circle:', ' '.join(sorted(comp)))
if not circles:
    print(f'no import circle among the {len(mods)} modules of {os.path.normpath(src)}')
sys.exit(1 if circles else 0)

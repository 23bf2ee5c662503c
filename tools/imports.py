#!/usr/bin/env python3
"""The import graph between mlsys's modules: who imports whom, at module level or inside a function, and any cycle.

Usage: python tools/imports.py [--check]   (--check: exit 1 on a cycle or a function-local import between modules)
"""
import ast, sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent/'mlsys'

def _optional(node:ast.AST) -> list[str]:
    "The mlsys module an `importlib.import_module('mlsys.x')` call names: an optional capability looked up by name."
    if (isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'import_module' and node.args
            and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith('mlsys.')):
        return [node.args[0].value.split('.')[1]]
    return []

def _target(node:ast.AST, module:str) -> list[str]:
    "The mlsys modules an import statement names."
    if isinstance(node, ast.Import):
        return [a.name.split('.')[1] for a in node.names if a.name.startswith('mlsys.')]
    if isinstance(node, ast.ImportFrom):
        if node.level: return [node.module.split('.')[0]] if node.module else [a.name for a in node.names]
        if node.module == 'mlsys': return [a.name for a in node.names]
        if node.module and node.module.startswith('mlsys.'): return [node.module.split('.')[1]]
    return []

def graph() -> dict[str, dict[str, str]]:
    "`{module: {imported: 'top', 'local' or 'optional'}}` for every module of the package."
    mods = sorted(p.stem for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx'))
    g = {}
    for m in mods:
        tree, edges = ast.parse((PKG/f'{m}.py').read_text()), {}
        for node in ast.walk(tree):
            for t in _target(node, m):
                if t in mods and t != m:
                    local = node not in tree.body
                    edges[t] = 'top' if edges.get(t) == 'top' or not local else 'local'
            for t in _optional(node): edges.setdefault(t, 'optional')
        g[m] = edges
    return g

def cycles(g:dict) -> list[list[str]]:
    "Every elementary cycle found by depth-first search (each reported once, from its smallest module)."
    found = set()
    def walk(start, node, path):
        for nxt in g.get(node, {}):   # optional edges count: an optional capability must not close a circle either
            if nxt == start: found.add(tuple(path))
            elif nxt > start and nxt not in path: walk(start, nxt, path + [nxt])
    for m in g: walk(m, m, [m])
    return [list(c) for c in sorted(found)]

if __name__ == '__main__':
    g = graph()
    for m, edges in g.items():
        marks = {'local': '*', 'optional': '~', 'top': ''}
        print(f"{m:10} -> {', '.join(t + marks[k] for t, k in sorted(edges.items())) or '-'}")
    local = sum(k == 'local' for e in g.values() for k in e.values())
    cyc = cycles(g)
    print(f"\n{local} function-local import edge(s) (marked *); optional capabilities looked up by name marked ~; "
          f"{len(cyc)} cycle(s)")
    for c in cyc: print('  cycle: ' + ' -> '.join(c + c[:1]))
    if '--check' in sys.argv and (local or cyc): sys.exit(1)

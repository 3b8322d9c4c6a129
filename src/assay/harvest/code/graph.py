"""Dependencies-first order of a repository's files, deterministic, with import cycles handled.

``order(nodes, edges)`` where ``edges[a]`` are the files ``a`` imports returns every node exactly once, each
after the files it imports whenever the imports form no cycle. Cycles are the strongly connected components of
the graph (Tarjan's algorithm, iterative so that deep chains cannot overflow the stack). The components are
ordered by Kahn's algorithm on the condensed graph, taking among the ready components the one whose smallest path
sorts first, so the order depends only on the files and their imports, never on input order or hashing. Inside a
cycle some import edge must point forwards; the files are ordered by Eades, Lin & Smyth's greedy heuristic for a
small feedback arc set: files importing nothing left go first, files nothing left imports go last, and otherwise
the file most imported and least importing goes first (ties: imported by more files of the whole repository, then
the smaller path). A module that many files import (click's ``_compat.py``) thus comes before its importers.
"""

from __future__ import annotations

import heapq
from typing import Iterable


def strongly_connected_components(nodes: list[str], edges: dict[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's SCCs (iterative). Each component is sorted; edges to unknown nodes are ignored."""
    known = set(nodes)
    succ = {n: sorted(d for d in edges.get(n, ()) if d in known) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, i = work[-1]
            children = succ[node]
            if i < len(children):
                work[-1] = (node, i + 1)
                child = children[i]
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                components.append(sorted(comp))
    return components


def _order_cycle(members: list[str], succ: dict[str, list[str]], importers: dict[str, int]) -> list[str]:
    """Order one component so that few of its import edges point forwards (greedy, Eades-Lin-Smyth).

    ``importers``: for each file, how many files of the repository import it (the tie-break)."""
    left = set(members)
    imports = {n: {c for c in succ[n] if c in left} for n in members}
    imported_by: dict[str, set[str]] = {n: set() for n in members}
    for n in members:
        for c in imports[n]:
            imported_by[c].add(n)
    front: list[str] = []
    back: list[str] = []

    def remove(n: str) -> None:
        left.discard(n)
        for c in imports[n]:
            imported_by[c].discard(n)
        for a in imported_by[n]:
            imports[a].discard(n)

    while left:
        changed = True
        while changed:
            changed = False
            for n in sorted(left):
                if not imports[n]:  # imports nothing that is still to be placed: it can go first
                    front.append(n)
                    remove(n)
                    changed = True
                elif not imported_by[n]:  # nothing still to be placed imports it: it can go last
                    back.append(n)
                    remove(n)
                    changed = True
        if left:
            n = min(left, key=lambda m: (len(imports[m]) - len(imported_by[m]), -importers.get(m, 0), m))
            front.append(n)
            remove(n)
    return front + back[::-1]


def dependency_order(nodes: Iterable[str], edges: dict[str, Iterable[str]]) -> tuple[list[str], list[list[str]]]:
    """(every node once, dependencies first; the import cycles found, each as a sorted list of files)."""
    nodes = sorted(set(nodes))
    known = set(nodes)
    succ = {n: sorted(set(d for d in edges.get(n, ()) if d in known and d != n)) for n in nodes}
    components = strongly_connected_components(nodes, succ)
    importers = {n: 0 for n in nodes}
    for n in nodes:
        for d in succ[n]:
            importers[d] += 1
    comp_of = {n: k for k, comp in enumerate(components) for n in comp}
    # condensed graph: component -> components it depends on
    waiting = [0] * len(components)  # number of dependency components not emitted yet
    dependents: list[set[int]] = [set() for _ in components]
    for n in nodes:
        a = comp_of[n]
        for d in succ[n]:
            b = comp_of[d]
            if a != b and a not in dependents[b]:
                dependents[b].add(a)
                waiting[a] += 1
    ready = [(components[k][0], k) for k in range(len(components)) if waiting[k] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, k = heapq.heappop(ready)
        comp = components[k]
        order.extend(comp if len(comp) == 1 else _order_cycle(comp, succ, importers))
        for a in sorted(dependents[k]):
            waiting[a] -= 1
            if waiting[a] == 0:
                heapq.heappush(ready, (components[a][0], a))
    cycles = [c for c in components if len(c) > 1]
    return order, sorted(cycles)

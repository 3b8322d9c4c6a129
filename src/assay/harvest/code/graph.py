"""Dependencies-first order of a repository's files, deterministic, with import cycles handled.

``order(nodes, edges)`` where ``edges[a]`` are the files ``a`` imports returns every node exactly once, each
after the files it imports whenever the imports form no cycle. Cycles are the strongly connected components of
the graph (Tarjan's algorithm, iterative so that deep chains cannot overflow the stack). The components are
ordered by Kahn's algorithm on the condensed graph, taking among the ready components the one whose smallest path
sorts first, so the order depends only on the files and their imports, never on input order or hashing. Inside a
cycle the files are ordered by a depth-first walk that starts at the smallest path and visits imports in path
order, emitting a file after its imports (post-order): every import edge of the cycle is respected but the one
that closes the cycle.
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


def _order_cycle(members: list[str], succ: dict[str, list[str]]) -> list[str]:
    """Post-order DFS inside one component from its smallest member (members sorted), imports in path order."""
    inside = set(members)
    seen: set[str] = set()
    out: list[str] = []
    for start in members:
        if start in seen:
            continue
        seen.add(start)
        work = [(start, 0)]
        while work:
            node, i = work[-1]
            children = [c for c in succ[node] if c in inside]
            if i < len(children):
                work[-1] = (node, i + 1)
                child = children[i]
                if child not in seen:
                    seen.add(child)
                    work.append((child, 0))
                continue
            work.pop()
            out.append(node)
    return out


def dependency_order(nodes: Iterable[str], edges: dict[str, Iterable[str]]) -> tuple[list[str], list[list[str]]]:
    """(every node once, dependencies first; the import cycles found, each as a sorted list of files)."""
    nodes = sorted(set(nodes))
    known = set(nodes)
    succ = {n: sorted(set(d for d in edges.get(n, ()) if d in known and d != n)) for n in nodes}
    components = strongly_connected_components(nodes, succ)
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
        order.extend(comp if len(comp) == 1 else _order_cycle(comp, succ))
        for a in sorted(dependents[k]):
            waiting[a] -= 1
            if waiting[a] == 0:
                heapq.heappush(ready, (components[a][0], a))
    cycles = [c for c in components if len(c) > 1]
    return order, sorted(cycles)

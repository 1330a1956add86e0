#!/usr/bin/python3
"""Checks that the modules of daemon/ include each other without a circle.

A module is a .c file and its .h. For each daemon/*.c (and its header), the script lists the
headers of other daemon/ modules it includes, prints the graph, and fails (exit 1) naming the
circle if there is one. Run by .ci/test; `tests/check-includes.py [DIR]` by hand.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)


def graph(folder):
    names = sorted({os.path.splitext(f)[0] for f in os.listdir(folder)
                    if f.endswith(('.c', '.h'))})
    headers = {n for n in names if os.path.exists(os.path.join(folder, n + '.h'))}
    edges = {}
    for n in names:
        deps = set()
        for ext in ('.c', '.h'):
            path = os.path.join(folder, n + ext)
            if os.path.exists(path):
                with open(path) as f:
                    deps |= {d for d in INCLUDE.findall(f.read()) if d in headers and d != n}
        edges[n] = sorted(deps)
    return edges


def find_cycle(edges):
    """A list of modules forming a circle, or None (depth-first search, colours)."""
    colour, stack = {}, []

    def visit(n):
        colour[n] = 'grey'
        stack.append(n)
        for d in edges.get(n, []):
            if colour.get(d) == 'grey':
                return stack[stack.index(d):] + [d]
            if d not in colour:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        colour[n] = 'black'
        return None

    for n in sorted(edges):
        if n not in colour:
            found = visit(n)
            if found:
                return found
    return None


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, 'daemon')
    edges = graph(folder)
    for n, deps in edges.items():
        print(f'{n}: {" ".join(deps) or "-"}')
    cycle = find_cycle(edges)
    if cycle:
        print('include circle: ' + ' -> '.join(cycle))
        return 1
    print('no include circle')
    return 0


if __name__ == '__main__':
    sys.exit(main())

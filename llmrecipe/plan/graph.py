"""Order steps by their references and name the cycle when there is one."""

from __future__ import annotations


def run_order(deps: dict[str, list[str]]) -> list[str]:
    """Every step after its dependencies; ties keep the order the steps were written in.

    Raises ValueError naming one cycle (`a -> b -> a`) when the references loop.
    """
    position = {name: i for i, name in enumerate(deps)}
    done: list[str] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name) :] + [name]
            raise ValueError(" -> ".join(cycle))
        visiting.append(name)
        for dep in sorted(deps[name], key=position.__getitem__):
            visit(dep)
        visiting.pop()
        placed.add(name)
        done.append(name)

    for name in deps:
        visit(name)
    return done

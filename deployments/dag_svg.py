"""A picture of an analysis' DAG as SVG, drawn in Python on the server (no script, no CDN: works offline).

    svg = dag_svg(analysis, tier="desktop")     # a str: <svg …> with one <g class="dag-node" data-key=…> per node

Layout: one column per layer (the scenario on the left; a dependency always right of its dependents),
nodes in the analysis' order within a column; an edge is a curve from dependent to dependency,
dashed when the dependency is optional, marked when a swap put it there. A node is coloured by
its fitness on `tier`: blocking red, weak (score < 0.6) amber, fine green; missing and invalid
entries are drawn from `missing`/`invalid` in grey with a red outline.
"""
from __future__ import annotations

from html import escape

NODE_WIDTH, NODE_HEIGHT = 190, 44
COLUMN_GAP, ROW_GAP, MARGIN = 70, 18, 16
COLOURS = {"blocking": ("#fde2e1", "#c0392b"), "weak": ("#fff4d6", "#b9770e"), "fine": ("#e3f4e8", "#1e8449"),
           "absent": ("#eeeeee", "#c0392b")}


def _state(fitness: dict | None, key: str) -> tuple[str, str]:
    if fitness is None:
        return "fine", ""
    for dependency in fitness.get("dependencies", []):
        if dependency["key"] == key:
            state = "blocking" if dependency["blocking"] else "weak" if dependency["score"] < 0.6 else "fine"
            return state, f"{dependency['score']:.2f}: {dependency['reason']}"
    return "fine", ""


def dag_svg(analysis: dict, *, tier: str | None = None) -> str:
    """The DAG of `analysis` as one SVG document (see the module docstring)."""
    fitness = analysis["fitness"].get(tier) if tier else None
    nodes = [dict(node, absent=False) for node in analysis["nodes"]]
    known = {node["key"] for node in nodes}
    depth_of = {node["key"]: node["depth"] for node in nodes}
    for item in analysis.get("missing", []):
        if item["key"] not in known:
            parents = [depth_of.get(parent, 0) for parent in item.get("needed_by", [])]
            nodes.append({"key": item["key"], "depth": max(parents, default=0) + 1, "required": item["required"],
                          "version": "", "absent": "missing"})
            known.add(item["key"])
    edges = [*analysis["edges"], *({"from": parent, "to": item["key"], "required": item["required"]}
                                   for item in analysis.get("missing", []) for parent in item.get("needed_by", []))]
    # The column is the longest path from the root, so every edge points to the right (nodes come dependencies
    # first: walking them backwards visits each dependent before its dependencies).
    layer = {node["key"]: 0 for node in nodes}
    outgoing: dict[str, list[str]] = {}
    for edge in edges:
        outgoing.setdefault(edge["from"], []).append(edge["to"])
    for node in reversed(nodes):
        for target in outgoing.get(node["key"], []):
            if target in layer:
                layer[target] = max(layer[target], layer[node["key"]] + 1)
    columns: dict[int, list[dict]] = {}
    for node in nodes:
        columns.setdefault(layer[node["key"]], []).append(node)
    position = {}
    for depth, members in columns.items():
        for row, node in enumerate(members):
            position[node["key"]] = (MARGIN + depth * (NODE_WIDTH + COLUMN_GAP),
                                     MARGIN + row * (NODE_HEIGHT + ROW_GAP))
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = MARGIN * 2 + max((len(m) for m in columns.values()), default=1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph of {escape(analysis["root"])}">',
             '<defs><marker id="dag-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for edge in edges:
        if edge["from"] not in position or edge["to"] not in position:
            continue
        (x1, y1), (x2, y2) = position[edge["from"]], position[edge["to"]]
        x1, y1, x2, y2 = x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, x2, y2 + NODE_HEIGHT / 2
        bend = max((x2 - x1) / 2, 30)
        dash = "" if edge.get("required", True) else ' stroke-dasharray="5 4"'
        label = f"{edge['from']} → {edge['to']}"
        if edge.get("swapped_from"):
            label += f" (swapped from {edge['swapped_from']})"
        parts.append(f'<path class="dag-edge" data-from="{escape(edge["from"])}" data-to="{escape(edge["to"])}" '
                     f'd="M {x1:.0f} {y1:.0f} C {x1 + bend:.0f} {y1:.0f}, {x2 - bend:.0f} {y2:.0f}, {x2:.0f} '
                     f'{y2:.0f}" fill="none" stroke="#555" stroke-width="1.4"{dash} marker-end="url(#dag-arrow)">'
                     f'<title>{escape(label)}</title></path>')
    for node in nodes:
        x, y = position[node["key"]]
        if node["absent"] or not node.get("valid", True):
            state, reason = "absent", "missing from the catalog" if node["absent"] else "invalid catalog file"
        else:
            state, reason = _state(fitness, node["key"])
        fill, stroke = COLOURS[state]
        optional = "" if node["required"] else " (optional)"
        caption = f"{node.get('version') or ''}{optional}".strip()
        outline = "" if node["required"] else ' stroke-dasharray="4 3"'
        title = f"{node['key']} {caption}" + (f" — {reason}" if reason else "")
        parts.append(
            f'<g class="dag-node dag-{state}" data-key="{escape(node["key"])}" transform="translate({x},{y})">'
            f'<title>{escape(title)}</title>'
            f'<rect width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="1.5"{outline}/>'
            f'<text x="10" y="18" font-family="sans-serif" font-size="13" font-weight="bold" fill="#222">'
            f'{escape(node["key"])}</text>'
            f'<text x="10" y="35" font-family="sans-serif" font-size="11" fill="#555">{escape(caption)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)

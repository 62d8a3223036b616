"""The catalogue's reference pages: one Markdown page per family under docs/reference/catalogue/
(its types, their transitions, a Mermaid state diagram per lifecycle, the required fields),
rendered from dutylink.catalogue by tools/gen_proto.py and checked fresh with the schema docs."""

from __future__ import annotations

from dutylink.catalogue import NONE, Catalogue, EventType, Lifecycle

ROOT = "reference/catalogue"


def render_all(catalogue: Catalogue) -> dict[str, str]:
    """The pages by path relative to docs/."""
    pages = {
        f"{ROOT}/{family}.md": _family_page(catalogue, family) for family in catalogue.families()
    }
    pages[f"{ROOT}/README.md"] = _index(catalogue)
    return pages


def _index(catalogue: Catalogue) -> str:
    lines = [
        "# Event-type catalogue",
        "",
        "Generated from `proto/dutylink/catalogue.toml` by `python tools/gen_proto.py`; do not edit.",
        "`dutylink catalogue list --json` prints the same data.",
        "",
        "| family | types | lifecycles |",
        "|---|---|---|",
    ]
    for family in catalogue.families():
        types = catalogue.types_of(family=family)
        lifecycles = sorted({t.lifecycle for t in types if t.lifecycle})
        lines.append(f"| [{family}]({family}.md) | {len(types)} | {', '.join(lifecycles) or '-'} |")
    return "\n".join(lines) + "\n"


def _family_page(catalogue: Catalogue, family: str) -> str:
    types = catalogue.types_of(family=family)
    lines = [
        f"# `{family}` event types",
        "",
        "Generated from `proto/dutylink/catalogue.toml` by `python tools/gen_proto.py`; do not edit.",
        "",
        "| type | lifecycle | from | to | roles | required fields |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(entry) for entry in types]
    lines += ["", "## Types", ""]
    for entry in types:
        lines += [f"- `{entry.type}`: {entry.description}"]
    for name in dict.fromkeys(t.lifecycle for t in types if t.lifecycle):
        lines += ["", *_lifecycle_section(catalogue.lifecycle(name), catalogue)]
    return "\n".join(lines) + "\n"


def _row(entry: EventType) -> str:
    row = entry.as_row()
    roles = ", ".join(row["roles"])
    if entry.not_roles:
        roles += f" (not {', '.join(entry.not_roles)})"
    cells = [
        f"`{row['type']}`",
        row["lifecycle"] or "-",
        ", ".join(row["from_states"]) or "-",
        row["to_state"] or "-",
        roles,
        ", ".join(f"`{p}`" for p in row["required_fields"]) or "-",
    ]
    return "| " + " | ".join(cells) + " |"


def _lifecycle_section(lifecycle: Lifecycle, catalogue: Catalogue) -> list[str]:
    lines = [
        f"## Lifecycle `{lifecycle.name}`",
        "",
        lifecycle.description,
        "",
        f"Key: `{lifecycle.key}` (per plane). Terminal: {', '.join(lifecycle.terminal) or '-'}.",
        "",
        "```mermaid",
        "stateDiagram-v2",
    ]
    edges: list[str] = []
    for entry in catalogue.types_of(lifecycle=lifecycle.name):
        transition = entry.transition
        if transition is None:
            continue
        for source in transition.from_states:
            start = "[*]" if source == NONE else source
            targets = [transition.to_state or source, *transition.outcomes.values()]
            for target in dict.fromkeys(targets):
                edges.append(f"    {start} --> {target}: {entry.type}")
        if transition.opens:
            edges.append(f"    [*] --> {transition.opens}: {entry.type} (its own)")
    lines += list(dict.fromkeys(edges))
    lines += [f"    {state} --> [*]" for state in lifecycle.terminal]
    lines += ["```", ""]
    return lines

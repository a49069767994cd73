"""Imports run one way: the domain at the bottom, then audiences and channels (beside each
other, neither importing the other), the flow steps, the Prefect flows, and the command line
and the webhooks on top (docs/ARCHITECTURE.md). `make lint` runs this file too.

Every import counts, the ones inside functions as well: a lazy import still ties a lower
layer to a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("promo", "audiences", "channels", "flows")

# (layer, module prefixes), bottom first; the longest matching prefix decides. A package
# root alone (`promo`, `flows`) names only its own __init__: a new module must be placed.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("domain", ("promo", "promo.domain", "promo.settings", "promo.errors", "promo.db",
                "promo.masking", "promo.secrets", "promo.tokens", "promo.settings_sources")),
    ("audiences", ("audiences",)),
    ("channels", ("channels",)),
    # promo.report reads the store like flows.preview does: the flows and the CLI call it
    ("steps", ("flows", "flows.plan", "flows.decide", "flows.wave", "flows.send",
               "flows.ledger", "flows.store", "flows.preview", "flows.lease", "flows.resume",
               "flows.fallback", "flows.account", "flows.digest", "promo.report")),
    ("flows", ("flows.campaign", "flows.daily", "flows.digest_flow", "flows.artifacts",
               "flows.schedule", "flows.sending", "flows.parts")),
    ("top", ("promo.cli", "promo.webhooks", "promo.demo", "promo.demo_series")),
]
ROOTS_ONLY = {"promo", "flows"}
RANK = {"domain": 0, "audiences": 1, "channels": 1, "steps": 2, "flows": 3, "top": 4}


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer, prefixes in LAYERS:
        for p in prefixes:
            below = module.startswith(p + ".") and p not in ROOTS_ONLY
            if (module == p or below) and (best is None or len(p) > best[0]):
                best = (len(p), layer)
    return best[1] if best else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file)."""
    out: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = module_name(path)
            targets = out.setdefault(name, set())
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    targets.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets.add(node.module)
                    # `from promo.cli import campaign` imports the module promo.cli.campaign
                    targets.update(f"{node.module}.{a.name}" for a in node.names)
    known = set(out)
    return {m: {t for t in ts if t in known and t != m} for m, ts in out.items()}


def test_every_module_has_a_layer() -> None:
    assert [m for m in project_imports() if layer_of(m) is None] == []


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that runs up a layer, or sideways between audiences and channels."""
    wrong = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            upward = RANK[theirs] > RANK[mine]
            sideways = RANK[theirs] == RANK[mine] == 1 and theirs != mine
            if upward or sideways:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    return wrong


def test_imports_run_one_way() -> None:
    assert violations(project_imports()) == []


def test_no_import_cycle() -> None:
    graph = project_imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_check_catches_a_wrong_import() -> None:
    assert layer_of("channels.base") == "channels"
    assert layer_of("flows.send") == "steps"
    assert layer_of("flows.campaign") == "flows"
    assert layer_of("promo.cli.campaign") == "top"
    assert layer_of("promo.domain.rules") == "domain"
    assert layer_of("promo.report.series") == "steps"
    assert RANK[layer_of("flows.ledger")] > RANK[layer_of("channels.base")]
    assert layer_of("flows.not_placed_yet") is None and layer_of("promo.not_placed") is None
    assert violations({"channels.base": {"flows.send"}, "audiences.contacts": {"channels.base"},
                       "flows.send": {"channels.base"}}) == [
        "audiences.contacts (audiences) imports channels.base (channels)",
        "channels.base (channels) imports flows.send (steps)"]


def test_every_provider_table_speaks_the_one_delivery_vocabulary() -> None:
    """Each webhook maps its provider's statuses with a table; every word it maps to is one
    of `Delivery`'s, so the ledger and the views never meet a status they do not know."""
    from promo.domain.names import Delivery
    from promo.webhooks import sendgrid, twilio

    tables = [twilio.MESSAGE_STATUSES, twilio.CALL_STATUSES, sendgrid.EVENTS]
    assert all(tables)
    assert {v for t in tables for v in t.values()} <= set(Delivery)

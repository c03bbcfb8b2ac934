"""One identity for directory entities: policies name users, agents and groups by their ids.

Decisions describe each user, agent and group as the Cedar entity of its stable id
(`Agent::"a-1f2e..."`, with its name as the `name` attribute), so a policy means the same
identity for its whole life: renaming nothing, and a new group with a deleted group's name
inherits none of its policies. People write names (`Agent::"my-agent"`); `rewrite_names`
turns each name that exists now into its id when the policy is stored (and says so), and lists
the entities a policy names that match nothing, so `corral policy add` can warn.

Pure: the caller hands in the directory's (id, name) pairs and the names of pools and roles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from corral.access.engine import EntityRef, PolicyError

__all__ = ["DIRECTORY_TYPES", "DirectoryNames", "Rewritten", "entity_refs", "rewrite_names"]

#: the entity types whose Cedar id is the directory's stable id (names are attributes)
DIRECTORY_TYPES = ("Agent", "User", "Group")


@dataclass(frozen=True)
class DirectoryNames:
    """Ids and names of the directory's agents, users and groups, per entity type."""

    ids: Mapping[str, Collection[str]]
    by_name: Mapping[str, Mapping[str, str]]

    @classmethod
    def of(
        cls,
        *,
        agents: Iterable[tuple[str, str]],
        users: Iterable[tuple[str, str]],
        groups: Iterable[tuple[str, str]],
    ) -> DirectoryNames:
        """From (id, name) pairs."""
        ids: dict[str, set[str]] = {}
        by_name: dict[str, dict[str, str]] = {}
        for kind, pairs in (("Agent", agents), ("User", users), ("Group", groups)):
            ids[kind] = set()
            by_name[kind] = {}
            for ident, name in pairs:
                ids[kind].add(str(ident))
                by_name[kind][str(name)] = str(ident)
        return cls(ids, by_name)

    def resolve(self, ref: EntityRef) -> EntityRef | None:
        """The entity as decisions know it: by id (a name resolved to the id it has now);
        None for a directory type that matches nothing. Other types are returned as they are.
        Names never look like ids (the directory refuses such names), so there is no doubt."""
        if ref.type not in DIRECTORY_TYPES:
            return ref
        if ref.id in self.ids.get(ref.type, ()):
            return ref
        found = self.by_name.get(ref.type, {}).get(ref.id)
        return EntityRef(ref.type, found) if found is not None else None


@dataclass(frozen=True)
class Rewritten:
    """A policy text with names replaced by ids, what was replaced, and what matches nothing."""

    text: str
    renamed: tuple[tuple[EntityRef, str], ...] = ()  # (the name as written, its id)
    unknown: tuple[EntityRef, ...] = field(default=())

    def notes(self) -> list[str]:
        return [f"{ref} is stored as {ref.type}::{json.dumps(i)}" for ref, i in self.renamed]

    def warnings(self) -> list[str]:
        return [f"{ref} matches nothing in the directory" for ref in self.unknown]


def _walk(node: Any, found: list[EntityRef], swap: Mapping[EntityRef, str] | None) -> Any:
    """Every entity literal of a policy's JSON form (scopes and conditions); with `swap`, a
    copy with those ids replaced."""
    if isinstance(node, list):
        return [_walk(n, found, swap) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (
            key in ("__entity", "entity")
            and isinstance(value, dict)
            and isinstance(value.get("type"), str)
            and isinstance(value.get("id"), str)
        ):
            ref = EntityRef(value["type"], value["id"])
            found.append(ref)
            out[key] = {**value, "id": swap.get(ref, ref.id)} if swap else value
        elif key == "entities" and isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, dict) and {"type", "id"} <= set(item):
                    ref = EntityRef(str(item["type"]), str(item["id"]))
                    found.append(ref)
                    items.append({**item, "id": swap.get(ref, ref.id)} if swap else item)
                else:
                    items.append(_walk(item, found, swap))
            out[key] = items
        else:
            out[key] = _walk(value, found, swap)
    return out


def _est(text: str) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyError(f"the policy does not parse: {exc}") from None
    return parsed


def entity_refs(text: str) -> list[EntityRef]:
    """The entities a policy text names, in order (repeats included)."""
    found: list[EntityRef] = []
    _walk(_est(text), found, None)
    return found


def rewrite_names(
    text: str, names: DirectoryNames, others: Mapping[str, Collection[str]] | None = None
) -> Rewritten:
    """`text` with every `Agent`/`User`/`Group` named by a name that exists now written with
    its id instead; entities that match nothing (directory types, and the types in `others`,
    e.g. {"Pool": pool names, "Role": role names}) are listed as unknown.

    The text is rewritten in place (comments and layout kept) and then checked: its parsed
    form must equal the original's with exactly those ids replaced, or PolicyError.
    """
    est = _est(text)
    found: list[EntityRef] = []
    _walk(est, found, None)
    swap: dict[EntityRef, str] = {}
    unknown: list[EntityRef] = []
    for ref in dict.fromkeys(found):
        if ref.type in DIRECTORY_TYPES:
            resolved = names.resolve(ref)
            if resolved is None:
                unknown.append(ref)
            elif resolved.id != ref.id:
                swap[ref] = resolved.id
        elif others is not None and ref.type in others and ref.id not in others[ref.type]:
            unknown.append(ref)
    if not swap:
        return Rewritten(text, (), tuple(unknown))
    new = text
    for ref, ident in swap.items():
        pattern = re.compile(
            rf"(?<![\w:]){re.escape(ref.type)}\s*::\s*{re.escape(json.dumps(ref.id))}"
        )
        written = f"{ref.type}::{json.dumps(ident)}"
        new = pattern.sub(lambda _m: written, new)  # noqa: B023 (used at once)
    if _est(new) != _walk(est, [], swap):
        raise PolicyError(
            "the policy's names could not be turned into ids safely",
            hint="write users, agents and groups by their ids (corral agent list shows them)",
        )
    return Rewritten(new, tuple(swap.items()), tuple(unknown))

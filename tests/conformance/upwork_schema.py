"""Check the Upwork plugin against Upwork's live GraphQL schema, when a copy is at hand.

Usage: ``python tests/conformance/upwork_schema.py [LIVE_SDL]`` (default:
``../shared/research/upwork-schema/upwork.graphql`` from the repository root). The live
schema is research data and is never copied into the project; this script only reads it.

It checks two things and exits 1 on any problem:

1. every operation in :data:`plugins.upwork.queries.OPERATIONS` validates against the
   live schema (graphql-core's ``validate``: unknown fields, wrong argument or variable
   types, missing sub-selections);
2. the project's trimmed SDL (``plugins/upwork/schema.graphql``) is a true subset of the
   live one: every type, field, argument and enum value it declares exists there, with
   the same type and nullability, so the sandbox cannot serve what Upwork would not.

Exit status 2 when the live schema file is missing (``tests/run.sh`` skips the step then).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIVE = ROOT.parent / "shared" / "research" / "upwork-schema" / "upwork.graphql"


def operation_problems(live_sdl: str) -> list[str]:
    from graphql import build_schema, parse, validate

    from plugins.upwork.queries import OPERATIONS

    schema = build_schema(live_sdl)
    problems = []
    for name, text in OPERATIONS.items():
        for error in validate(schema, parse(text)):
            problems.append(f"{name}: {error.message}")
    return problems


def subset_problems(ours_sdl: str, live_sdl: str) -> list[str]:
    from graphql import (
        GraphQLEnumType,
        GraphQLInputObjectType,
        GraphQLInterfaceType,
        GraphQLObjectType,
        build_schema,
    )

    ours, live = build_schema(ours_sdl), build_schema(live_sdl)
    problems = []
    for name, ours_type in ours.type_map.items():
        if name.startswith("__"):
            continue
        live_type = live.type_map.get(name)
        if live_type is None:
            problems.append(f"type {name} is not in the live schema")
            continue
        if type(live_type) is not type(ours_type):
            problems.append(f"{name} is a {type(live_type).__name__} in the live schema")
            continue
        if isinstance(ours_type, GraphQLEnumType):
            assert isinstance(live_type, GraphQLEnumType)
            problems += [f"enum {name} has no value {v}" for v in ours_type.values
                         if v not in live_type.values]
            continue
        if not isinstance(ours_type, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            continue
        live_fields = live_type.fields  # type: ignore[union-attr]
        for field_name, field in ours_type.fields.items():
            live_field = live_fields.get(field_name)
            if live_field is None:
                problems.append(f"{name}.{field_name} is not in the live schema")
                continue
            if str(field.type) != str(live_field.type):
                problems.append(f"{name}.{field_name} is {live_field.type} live, {field.type} here")
            for arg_name, arg in getattr(field, "args", {}).items():
                live_arg = live_field.args.get(arg_name)
                if live_arg is None or str(live_arg.type) != str(arg.type):
                    problems.append(f"{name}.{field_name}({arg_name}: {arg.type}) differs live")
    return problems


def main(argv: list[str]) -> int:
    live_path = Path(argv[0]) if argv else DEFAULT_LIVE
    if not live_path.is_file():
        print(f"no live Upwork schema at {live_path}; nothing checked")
        return 2
    sys.path.insert(0, str(ROOT))
    from plugins.upwork.queries import OPERATIONS, SCHEMA_PATH

    live_sdl = live_path.read_text(encoding="utf-8")
    problems = operation_problems(live_sdl) + subset_problems(
        SCHEMA_PATH.read_text(encoding="utf-8"), live_sdl)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    print(f"ok: {len(OPERATIONS)} Upwork operations and the trimmed schema agree with {live_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

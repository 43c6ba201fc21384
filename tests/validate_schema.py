#!/usr/bin/env python3
"""Checks YAML files against a JSON Schema with the `jsonschema` package
(https://github.com/python-jsonschema/jsonschema, `pip install jsonschema
pyyaml`), as an editor's YAML language server would.

    validate_schema.py SCHEMA.json FILE.yaml...

Checks the schema itself against its meta-schema (draft 7), then prints one
line per file: `ok FILE`, or `invalid FILE: where: why; ...`.

The files are read by YAML 1.2's core schema, as the agent reads them:
PyYAML's default (YAML 1.1) would take `off`, `yes` or `10:30` for a
boolean or a number. Of a key written twice the first counts, as the
agent's `type` (remap reads a second `type` as its own setting, which JSON
cannot hold).
"""

import json
import re
import sys

import yaml
from jsonschema import Draft7Validator

CHANGED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}


class Loader(yaml.SafeLoader):
    pass


Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] not in CHANGED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def first_wins(loader, node):
    loader.flatten_mapping(node)
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key not in mapping:
            mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


Loader.add_constructor("tag:yaml.org,2002:map", first_wins)


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    Draft7Validator.check_schema(schema)
    validator = Draft7Validator(schema)
    for path in sys.argv[2:]:
        with open(path) as f:
            doc = yaml.load(f, Loader=Loader)
        errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            why = "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
            print(f"invalid {path}: {why}")
        else:
            print(f"ok {path}")


if __name__ == "__main__":
    main()

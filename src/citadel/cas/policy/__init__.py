"""The session (policy) language: YAML in, a validated document out, errors pointing at lines.

`schema.SCHEMA` is the JSON Schema (`citadel session schema`), `parse.parse_policy` validates a
YAML text, `model` gives the evaluation its typed view, `refs` the `$$citadel:NAME$$` references,
`render` the released configuration. docs/policy.md describes every field.
"""

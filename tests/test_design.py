"""docs/design.md's module table names every package module and exactly what it imports, and
the import rules hold: no library module imports a command, commands import no command."""

import ast
import os
import re

from conftest import ROOT

PKG = os.path.join(ROOT, "diffgrm_jax")
COMMANDS = {"train", "eval", "prepare", "recommend", "plot"}


def package_imports():
  """{module: set of package modules it imports}, modules named as in the table
  (`model`, `data` for the data/ package and everything in it)."""
  out = {}
  for folder, _, files in os.walk(PKG):
    for f in files:
      if not f.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(folder, f), PKG)[:-3].replace(os.sep, ".")
      name = "data" if rel.startswith("data") else rel
      if name == "__init__":
        continue
      deps = out.setdefault(name, set())
      for node in ast.walk(ast.parse(open(os.path.join(folder, f)).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffgrm_jax"):
          parts = node.module.split(".")[1:]
          if parts:
            deps.add(parts[0])
          else:  # from diffgrm_jax import x
            deps.update(a.name for a in node.names)
      deps.discard(name)
  return out


def documented():
  rows = {}
  for line in open(os.path.join(ROOT, "docs", "design.md")):
    m = re.match(r"\| `([a-z_]+)(?:\.py|/)` \| .* \| ([^|]*) \|$", line.strip())
    if m:
      deps = {d.strip().split(" ")[0].strip("`") for d in m.group(2).split(",")}
      rows[m.group(1)] = deps - {"-", ""}
  return rows


def test_design_table_matches_the_imports():
  actual, doc = package_imports(), documented()
  assert set(doc) == set(actual), set(doc) ^ set(actual)
  for name, deps in actual.items():
    assert doc[name] == deps, (name, doc[name], deps)


def test_no_module_imports_a_command():
  for name, deps in package_imports().items():
    assert not deps & COMMANDS, (name, deps & COMMANDS)

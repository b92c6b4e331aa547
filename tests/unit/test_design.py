"""docs/design.md's module table names every package module and exactly what it imports, and
the import rules hold: no library module imports a command, the commands import no command,
the core reaches release/ only through the two factories and never imports analysis/, and a
stage's `__init__.py` is a docstring (data/ re-exports its API)."""

import ast
import os
import re

from support.configs import ROOT

PKG = os.path.join(ROOT, "diffgrm_jax")
COMMANDS = {"train", "eval", "prepare", "recommend", "plot"}
# The modules that build a release variant when a config asks for one.
RELEASE_SEAMS = {"model.factory", "decoding.decoders"}


def _is_module(dotted):
  return os.path.isfile(os.path.join(PKG, *dotted.split(".")) + ".py")


def _name(rel):
  """A module's name in the table: its dotted path below the package (`model.diffgrm`), and
  `data` for the data/ package and everything in it."""
  return "data" if rel.split(".")[0] == "data" else rel


def _modules():
  """{name: (path, parsed source)} of every package module but the `__init__.py` files."""
  out = {}
  for folder, _, files in os.walk(PKG):
    for f in sorted(files):
      if f.endswith(".py") and f != "__init__.py":
        path = os.path.join(folder, f)
        rel = os.path.relpath(path, PKG)[:-3].replace(os.sep, ".")
        out.setdefault(_name(rel), []).append(ast.parse(open(path).read()))
  return out


def package_imports():
  """{module: set of package modules it imports}."""
  out = {}
  for name, trees in _modules().items():
    deps = out.setdefault(name, set())
    for tree in trees:
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffgrm_jax"):
          parts = node.module.split(".")[1:]
          if parts and _is_module(".".join(parts)):
            deps.add(_name(".".join(parts)))
          else:  # from diffgrm_jax[.stage] import module, ...
            prefix = ".".join(parts)
            deps.update(_name(f"{prefix}.{a.name}" if prefix else a.name) for a in node.names)
    deps.discard(name)
  return out


def documented():
  rows = {}
  for line in open(os.path.join(ROOT, "docs", "design.md")):
    m = re.match(r"\| `([a-z_/]+)(?:\.py|/)` \| .* \| ([^|]*) \|$", line.strip())
    if m:
      deps = {d.strip().split(" ")[0].strip("`") for d in m.group(2).split(",")}
      rows[m.group(1).replace("/", ".")] = deps - {"-", ""}
  return rows


def test_design_table_matches_the_imports():
  actual, doc = package_imports(), documented()
  assert set(doc) == set(actual), set(doc) ^ set(actual)
  for name, deps in actual.items():
    assert doc[name] == deps, (name, doc[name], deps)


def test_no_module_imports_a_command():
  for name, deps in package_imports().items():
    assert not deps & COMMANDS, (name, deps & COMMANDS)


def test_the_core_reaches_release_through_the_factories_only():
  for name, deps in package_imports().items():
    stage = name.split(".")[0]
    if stage in ("release", "analysis"):
      continue
    assert not {d for d in deps if d.startswith("analysis.")}, name
    if name not in RELEASE_SEAMS:
      assert not {d for d in deps if d.startswith("release.")}, name


def test_stage_inits_are_docstrings():
  for stage in sorted(os.listdir(PKG)):
    init = os.path.join(PKG, stage, "__init__.py")
    if stage == "data" or not os.path.isfile(init):
      continue
    body = ast.parse(open(init).read()).body
    assert len(body) == 1 and isinstance(body[0].value, ast.Constant), init

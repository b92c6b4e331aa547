"""Item text for sentence embeddings (docs/data.md, Item text)."""

import html
import re

_TAG = re.compile(r"<[^>]+>")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SPACES = re.compile(r"\s+")


def clean_text(value) -> str:
  """HTML tags stripped, entities unescaped, non-ASCII replaced by spaces, spaces collapsed."""
  text = html.unescape(_TAG.sub(" ", str(value)))
  return _SPACES.sub(" ", _NON_ASCII.sub(" ", text)).strip()


def flatten_categories(categories) -> list[str]:
  """All category paths flattened in order, duplicates dropped (a path is a list of names)."""
  out = []
  for entry in categories or ():
    for name in (entry if isinstance(entry, (list, tuple)) else [entry]):
      name = clean_text(name)
      if name and name not in out:
        out.append(name)
  return out


def item_text(meta: dict) -> str:
  """'Title: ... Price: ... Brand: ... Category: a, b. Description: ...' from the fields present."""
  parts = []
  for key, label in (("title", "Title"), ("price", "Price"), ("brand", "Brand")):
    value = clean_text(meta.get(key) or "")
    if value:
      parts.append(f"{label}: {value}.")
  cats = flatten_categories(meta.get("categories"))
  if cats:
    parts.append(f"Category: {', '.join(cats)}.")
  desc = clean_text(meta.get("description") or "")
  if desc:
    parts.append(f"Description: {desc}")
  return " ".join(parts)

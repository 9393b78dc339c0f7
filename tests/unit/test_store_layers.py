"""chatmem.store stays a bottom layer: it never imports the session, models, recall or config.

Each check runs in a fresh interpreter, so modules other tests imported cannot hide an import.
``chatmem/__init__.py`` imports the whole library (session, models, config...), so the child
replaces the ``chatmem`` package with an empty one over the same folder: what ends up in
``sys.modules`` is then only what the store's own modules import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chatmem.store

CHATMEM_DIR = Path(chatmem.store.__file__).resolve().parent.parent
FORBIDDEN = (
    "chatmem.recall",
    "chatmem.embeddings",
    "chatmem.models",
    "chatmem.session",
    "chatmem.config",
    "chatmem.ui",
)
ALLOWED = ("chatmem", "chatmem.errors", "chatmem.events", "chatmem.text", "chatmem.redact")

_CHILD = """
import importlib, json, pkgutil, sys, types
package = types.ModuleType("chatmem")
package.__path__ = [sys.argv[1]]
sys.modules["chatmem"] = package
store = importlib.import_module("chatmem.store")
names = sorted(info.name for info in pkgutil.iter_modules(store.__path__))
for name in names:
    importlib.import_module("chatmem.store." + name)
loaded = sorted(m for m in sys.modules if m == "chatmem" or m.startswith("chatmem."))
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def _import_every_store_module() -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(CHATMEM_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_store_imports_nothing_above_it() -> None:
    result = _import_every_store_module()
    assert {"core", "records", "schema", "search", "transfer", "urls"} <= set(result["modules"])
    loaded = result["loaded"]
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == [], f"chatmem.store imports {bad}"
    others = [m for m in loaded if m not in ALLOWED and not m.startswith("chatmem.store")]
    assert others == [], f"chatmem.store imports {others}; allowed: {ALLOWED}"

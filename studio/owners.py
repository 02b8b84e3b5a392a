"""Who may open which workspace: an unguessable key held by the browser, checked by the server.

A workspace folder's name (its id) appears in server logs and, once, in exported files: it
must not be what opens the workspace. So each browser holds a *key* (192 random bits) and the
server keeps, in a private file, which workspace the key's HMAC opens (the HMAC's secret never
leaves the server). A client that presents a workspace id, a folder name or a guessed key gets a
new empty workspace of its own, never someone else's. Nothing else the client sends names a
workspace: the app keeps the opened workspace in the session's server-side state.

Workspaces made before keys existed were opened by their bare id; such an id is honoured once,
to hand that browser a key, and never again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from pathlib import Path

from .runs import write_atomic
from .workspace import Workspace

__all__ = ["Owners"]

_KEY = re.compile(r"^[A-Za-z0-9_-]{32}$")
_OLD_ID = re.compile(r"^[a-f0-9]{8,32}$")


class Owners:
    """The key -> workspace table of one workspace base folder (kept in ``base/.private``)."""

    def __init__(self, base: str | Path):
        self.base = Path(base)
        self.private = self.base / ".private"
        self.private.mkdir(parents=True, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._secret = self._read_secret()

    def open(self, key: str | None) -> tuple[str, Workspace]:
        """``(key, workspace)`` for what the browser holds: its own workspace for a known key,
        else a new workspace with a new key (the browser stores the key it is given)."""
        key = str(key or "")
        with self._lock:
            table = self._table()
            folder = table.get(self._digest(key)) if _KEY.match(key) else None
            if folder is None and _OLD_ID.match(key) and self._unclaimed(key, table):
                folder = key  # a workspace from before keys: claimed once, by this browser
                key = ""
            if folder is None or key == "":
                key = secrets.token_urlsafe(24)
                folder = folder or Workspace(self.base).id
                table[self._digest(key)] = folder
                write_atomic(self.private / "owners.json", json.dumps(table).encode())
        return key, Workspace(self.base, folder)

    def _unclaimed(self, folder: str, table: dict[str, str]) -> bool:
        return (self.base / folder).is_dir() and folder not in table.values()

    def _digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def _table(self) -> dict[str, str]:
        try:
            table = json.loads((self.private / "owners.json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}

    def _read_secret(self) -> bytes:
        path = self.private / "owners-secret"
        if not path.is_file():
            write_atomic(path, secrets.token_bytes(32))
            path.chmod(0o600)
        return path.read_bytes()

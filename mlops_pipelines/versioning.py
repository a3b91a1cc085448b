"""Code version: a hash of the package's source and the SQL project, plus the git commit if any."""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 (first 16 hex digits) over every .py file of the package and every file of
    dbt_like_sql/: the same code gives the same version on any clone, committed or not."""
    digest = hashlib.sha256()
    files = sorted(_PACKAGE_DIR.rglob("*.py"))
    sql_dir = _REPO_DIR / "dbt_like_sql"
    if sql_dir.is_dir():
        files += sorted(p for p in sql_dir.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(_REPO_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checked-out commit, or "unknown" outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_REPO_DIR), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

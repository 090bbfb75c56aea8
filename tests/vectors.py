"""Access to the known-answer vectors produced by the Go peers (../shared/vectors)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(
    os.environ.get(
        "SUDP_VECTORS", Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
    )
)


def require_vectors() -> Path:
    if not (VECTORS_DIR / "sudp-v2.json").is_file():
        pytest.skip(f"known-answer vectors not found in {VECTORS_DIR} (set SUDP_VECTORS)")
    return VECTORS_DIR


@cache
def load(version: int) -> dict[str, Any]:
    path = require_vectors() / f"sudp-v{version}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def hmac_key(version: int) -> bytes | None:
    key = load(version)["hmac_key"]
    return None if key is None else key.encode()

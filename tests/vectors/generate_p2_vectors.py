"""Regenerate the coordinator pseudonym (P2) vectors from the P1 vectors beside this file.

Run once when the format version changes: ``.venv/bin/python tests/vectors/generate_p2_vectors.py``. The vectors
are pinned in git; ``test_p2_vectors.py`` checks the code against them, never the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from kansrijk import crypto

HERE = Path(__file__).parent
COORDINATOR_KEY = hashlib.sha256(b"kansrijk test vector: coordinator pseudonym key").digest()


def main() -> None:
    p1 = json.loads((HERE / "pseudonyms_v1.json").read_text())
    cases = []
    for case in p1["cases"]:
        p1_bytes = bytes.fromhex(case["pseudonym_hex"])
        # the standard library's HMAC, independent of the vectorised code under test
        p2 = hmac.new(COORDINATOR_KEY, p1_bytes, hashlib.sha256).hexdigest()
        cases.append({"p1_hex": case["pseudonym_hex"], "p2_hex": p2})
    (HERE / "pseudonyms_p2_v1.json").write_text(
        json.dumps(
            {
                "description": "P2 = HMAC-SHA256(coordinator_key, P1), P1 the 32 bytes of the partner pseudonym",
                "coordinator_key_hex": COORDINATOR_KEY.hex(),
                "coordinator_key_fingerprint": crypto.fingerprint("coordinator-pseudonym-key", COORDINATOR_KEY),
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

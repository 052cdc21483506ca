"""The cost of envelope encryption, measured in one run:

    python -m bench.envelope

- the cold import of AES-GCM from ``cryptography`` (fresh interpreters, against ``import json``);
- CPU per seal and per open of a one-week pair (AES-256-GCM, a data key already in hand/cached);
- the size ``cryptography`` adds to the layer (the built layer, if ``make build`` made one).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import harness as h

sys.path.insert(0, str(h.ROOT / "layers" / "apicbase_oauth"))
from apicbase_oauth.adapters.crypto import DataKey, TokenCipher
from apicbase_oauth.model import TokenPair

ROUNDS = 9
OPS = 2000
LAYER = h.ROOT / ".aws-sam" / "build" / "BrokerLayer" / "python"


def _cold(statement: str) -> float:
    """CPU seconds of a fresh interpreter that runs ``statement`` (the median of ROUNDS)."""
    code = f"import time; t=time.process_time(); {statement}; print(time.process_time()-t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(ROUNDS)]
    return statistics.median(runs)


def _per_op(fn: object, ops: int = OPS) -> float:
    started = time.process_time()
    for _ in range(ops):
        fn()  # type: ignore[operator]
    return (time.process_time() - started) / ops


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    baseline = _cold("import json")
    aesgcm = _cold("from cryptography.hazmat.primitives.ciphers.aead import AESGCM")
    cipher = TokenCipher(kms_client=None, key_id="unused")
    key = DataKey("lib-bench", b"k" * 32, b"encrypted-data-key" * 10)
    cipher._remember(key)  # the warm path: the data key is cached
    pair = TokenPair("a" * 40, "r" * 40)
    sealed = cipher.seal(key, pair)
    seal = _per_op(lambda: cipher.seal(key, pair))
    unseal = _per_op(lambda: cipher.decrypt("lib-bench", sealed))
    print(f"cold import of AESGCM: {(aesgcm - baseline) * 1000:.1f} ms CPU over a bare interpreter")
    print(f"seal a pair: {seal * 1e6:.0f} µs CPU; open a pair (data key cached): {unseal * 1e6:.0f} µs CPU")
    print(f"sealed pair: {len(sealed)} bytes (the KMS-encrypted data key included)")
    if LAYER.exists():
        crypto = sum(_size(p) for p in LAYER.glob("cryptography*"))
        print(f"layer: {_size(LAYER) / 1e6:.1f} MB unzipped, of which cryptography {crypto / 1e6:.1f} MB")
    else:
        print("layer: run `make build` first for its size")


if __name__ == "__main__":
    main()

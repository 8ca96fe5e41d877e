#!/usr/bin/env python3
"""Checks a skill-verifier attestation with an independent implementation.

Usage: verify_dsse.py ENVELOPE.json PUBKEY.pem

1. The DSSE signature, with securesystemslib (`securesystemslib.dsse.Envelope.verify` and an
   ed25519 `SSlibKey`). The key id is recomputed as documented (hex SHA-256 of the DER
   SubjectPublicKeyInfo); securesystemslib only tries signatures whose keyid matches, so this
   also checks the key-id derivation.
2. The report_data binding, recomputed from the documented formula with hashlib/json only:
   SHA-512("skill-verifier report_data <binding>" || 0x00 || SHA-256(canonical statement
   with predicate.tee removed (v1) or cut to its bound fields (v2)) || raw Ed25519 public
   key).

Exit 0 when both hold, 1 when either does not, 2 on a usage or setup error (for example
securesystemslib not installed: `pip install 'securesystemslib[crypto]'`).
"""

import hashlib
import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from cryptography.hazmat.primitives import serialization
        from securesystemslib.dsse import Envelope
        from securesystemslib.exceptions import VerificationError
        from securesystemslib.signer import SSlibKey
    except ImportError as e:
        print(f"setup error: {e} (pip install 'securesystemslib[crypto]')", file=sys.stderr)
        return 2

    with open(sys.argv[1], "rb") as f:
        envelope_json = json.load(f)
    with open(sys.argv[2], "rb") as f:
        public_key = serialization.load_pem_public_key(f.read())

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keyid = hashlib.sha256(der).hexdigest()
    key = SSlibKey.from_crypto(public_key, keyid=keyid)

    envelope = Envelope.from_dict(envelope_json)
    try:
        envelope.verify([key], 1)
    except VerificationError as e:
        print(f"signature: INVALID ({e})")
        return 1
    print(f"signature: ok (securesystemslib, keyid {keyid})")

    # Only the verified payload is read from here on.
    statement = json.loads(envelope.payload)
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"payload type: INVALID ({envelope.payload_type})")
        return 1
    tee = statement.get("predicate", {}).pop("tee", None)
    if tee is None:
        print("report_data: INVALID (no predicate.tee)")
        return 1
    binding = tee.get("binding", "v1")
    if binding == "v2":
        # v2 also binds every tee field that exists before the quote is requested.
        unbound = {"quote", "report_data", "event_log", "vm_config", "collateral"}
        statement["predicate"]["tee"] = {
            k: v for k, v in tee.items() if k not in unbound
        }
    elif binding != "v1":
        print(f"report_data: INVALID (unknown binding {binding!r})")
        return 1
    canonical = json.dumps(
        statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    h = hashlib.sha512()
    h.update(f"skill-verifier report_data {binding}\x00".encode())
    h.update(hashlib.sha256(canonical).digest())
    h.update(raw)
    if h.hexdigest() != tee.get("report_data", "").lower():
        print("report_data: INVALID (does not bind this statement and key)")
        return 1
    print(f"report_data: ok (quote provider {tee.get('provider')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

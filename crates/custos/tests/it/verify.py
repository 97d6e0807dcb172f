#!/usr/bin/env python3
"""An independent verifier of the Custos audit log, following docs/verify.md step by step.

It uses only Python's hashlib (SHA-256) and the `cryptography` package (Ed25519), never the
server's code. Usage: verify.py BASE_URL TOKEN EARLIER_CHECKPOINT_FILE. Exits non-zero on any
failure; prints "verified …" on success.
"""
import base64
import decimal
import hashlib
import json
import sys
import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def get(base, token, path):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request) as response:
        return response.read().decode("utf-8")


def sha256(data):
    return hashlib.sha256(data).digest()


def node(left, right):
    return sha256(b"\x01" + left + right)


# --- 0. the key -------------------------------------------------------------------------------

def parse_key(line):
    name, key_id, blob = line.strip().split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 1 and len(raw) == 33, "not an Ed25519 verifier key"
    public = raw[1:]
    expected = sha256(name.encode() + b"\n" + b"\x01" + public)[:4]
    assert expected.hex() == key_id, "key id does not match the key"
    return name, expected, Ed25519PublicKey.from_public_bytes(public)


# --- 1. checkpoints ---------------------------------------------------------------------------

def verify_checkpoint(note, key):
    name, key_id, public = key
    assert all(ch == "\n" or ord(ch) >= 0x20 for ch in note), "a control character"
    body, signatures = note.rsplit("\n\n", 1)  # the text ends at the last blank line
    body += "\n"
    verified = False
    for line in signatures.splitlines():
        assert line.startswith("\u2014 "), "signature line without the em dash"
        line_name, blob = line[2:].split(" ", 1)
        blob = base64.b64decode(blob)
        if line_name != name or blob[:4] != key_id:
            continue
        public.verify(blob[4:], body.encode("utf-8"))  # raises InvalidSignature
        verified = True
    assert verified, "no signature by the pinned key"
    origin, size, root = body.split("\n")[:3]
    assert origin == name, "origin differs from the key name"
    assert size == str(int(size)), "tree size is not canonical decimal"
    root = base64.b64decode(root)
    assert len(root) == 32
    return int(size), root


# --- 2. canonical JSON (RFC 8785) and inclusion -----------------------------------------------

def es_number(x):
    """ECMAScript Number::toString for a finite double."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    _, digits, exponent = decimal.Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digits))
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped or "0"
    k, n = len(digits), exponent + len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + text


def canon_string(s):
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for ch in s:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def canon(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return es_number(value)
    if isinstance(value, str):
        return canon_string(value)
    if isinstance(value, list):
        return "[" + ",".join(canon(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(canon_string(k) + ":" + canon(value[k]) for k in keys) + "}"
    raise TypeError(type(value))


def verify_inclusion(index, size, leaf, hashes, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in hashes:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- 3. consistency ---------------------------------------------------------------------------

def verify_consistency(m, n, root_m, root_n, hashes):
    if m == n:
        return not hashes and root_m == root_n
    if m == 0 or m > n:
        return False
    if not hashes:
        return False  # the empty-path guard
    path = ([root_m] if m & (m - 1) == 0 else []) + hashes
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root_m and sr == root_n and sn == 0


def main():
    base, token, earlier_file = sys.argv[1], sys.argv[2], sys.argv[3]
    assert es_number(1000.0) == "1000" and es_number(1e21) == "1e+21" and es_number(1e-7) == "1e-7"
    assert es_number(0.000001) == "0.000001" and es_number(123456789012.5) == "123456789012.5"
    key = parse_key(get(base, token, "/api/audit/key"))

    records = json.loads(get(base, token, "/api/audit/records?top=1000&start=2000-01-01"))["value"]
    assert len(records) >= 5, "expected some records"
    checked = 0
    for record in records:
        shown = json.loads(get(base, token, "/api/audit/records/" + record["Id"]))
        leaf = sha256(b"\x00" + canon(shown).encode("utf-8"))
        proof = json.loads(get(base, token, "/api/audit/proofs/inclusion?id=" + record["Id"]))
        size, root = verify_checkpoint(proof["checkpoint"], key)
        assert size == proof["treeSize"], "proof and checkpoint disagree on the size"
        assert base64.b64decode(proof["leafHash"]) == leaf, "leaf of %s differs from its canonical JSON" % record["Id"]
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        assert verify_inclusion(proof["leafIndex"], size, leaf, hashes, root), "inclusion of %s" % record["Id"]
        # Negative controls: the same check rejects a changed record and a changed proof.
        changed = dict(shown, UserUpn=shown["UserUpn"] + "x")
        assert not verify_inclusion(proof["leafIndex"], size, sha256(b"\x00" + canon(changed).encode()), hashes, root)
        if hashes:
            bad = [bytes([hashes[0][0] ^ 1]) + hashes[0][1:]] + hashes[1:]
            assert not verify_inclusion(proof["leafIndex"], size, leaf, bad, root)
        checked += 1

    with open(earlier_file, encoding="utf-8") as f:
        earlier = f.read()
    m, root_m = verify_checkpoint(earlier, key)
    forged = earlier.replace("\n%d\n" % m, "\n%d\n" % (m + 1), 1)
    try:
        verify_checkpoint(forged, key)
        raise AssertionError("a forged checkpoint verified")
    except Exception as error:  # InvalidSignature
        if isinstance(error, AssertionError):
            raise
    latest = get(base, token, "/api/audit/checkpoint")
    n, root_n = verify_checkpoint(latest, key)
    assert n > m, "the log grew"
    proof = json.loads(get(base, token, "/api/audit/proofs/consistency?from=%d&to=%d" % (m, n)))
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    assert verify_consistency(m, n, root_m, root_n, hashes), "consistency %d -> %d" % (m, n)
    assert not verify_consistency(m, n, root_m, sha256(b"fork"), hashes), "a fork must fail"
    print("verified %d records, checkpoints %d and %d, and their consistency" % (checked, m, n))


if __name__ == "__main__":
    main()

"""A SIEM receiver for the stream tests, written apart from Custos from the RFCs: it accepts
TCP or TLS connections, splits RFC 6587 octet-counted frames or lines, parses each message as
RFC 5424 syslog (header, structured data with its escapes, MSG) and, when asked, the ArcSight
CEF line inside it, and writes one JSON object per message to --out (or {"error": ...} for a
message that breaks the format, {"connected": true} for each connection made, after its TLS
handshake).

    python3 siem_receiver.py --port N --out FILE [--framing octet|line] [--parse syslog|cef|json]
                             [--tls CERT KEY] [--max-frame BYTES]

With --max-frame, a frame over that many bytes is refused as a default syslog daemon refuses
it: {"overLimit": length} is written and the connection dropped. A syslog message that is one
part of an event (structured data part/parts/sha256) keeps its MSG as "fragment" for the test
to join, since a part alone is not JSON.
    python3 siem_receiver.py --make-cert DIR     (ca.pem, and cert.pem / key.pem for 127.0.0.1)
"""

import argparse
import datetime
import ipaddress
import json
import re
import socket
import ssl
import sys
import threading

HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S{1,255}) (?P<app>\S{1,48}) "
    r"(?P<procid>\S{1,128}) (?P<msgid>\S{1,32}) "
)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


def parse_structured_data(text):
    """Parses STRUCTURED-DATA at the start of text; returns (elements, rest)."""
    if text.startswith("-"):
        return {}, text[1:]
    elements = {}
    i = 0
    while i < len(text) and text[i] == "[":
        i += 1
        sd_id = re.match(r'[^ =\]"]{1,32}', text[i:]).group(0)
        i += len(sd_id)
        params = {}
        while text[i] == " ":
            i += 1
            name = re.match(r'[^ =\]"]{1,32}', text[i:]).group(0)
            i += len(name)
            if text[i:i + 2] != '="':
                raise ValueError("a PARAM-NAME must be followed by =\"")
            i += 2
            value = []
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '"\\]':
                    value.append(text[i + 1])
                    i += 2
                else:
                    if text[i] == "]":
                        raise ValueError("an unescaped ] inside a PARAM-VALUE")
                    value.append(text[i])
                    i += 1
            i += 1
            params[name] = "".join(value)
        if text[i] != "]":
            raise ValueError("an SD-ELEMENT must end with ]")
        i += 1
        elements[sd_id] = params
    if not elements:
        raise ValueError("STRUCTURED-DATA is neither - nor an element")
    return elements, text[i:]


def parse_syslog(message):
    m = HEADER.match(message)
    if not m:
        raise ValueError("not an RFC 5424 header: " + message[:80])
    out = m.groupdict()
    pri = int(out["pri"])
    if pri > 191:
        raise ValueError("PRI out of range")
    out["pri"] = pri
    if not TIMESTAMP.match(out["timestamp"]):
        raise ValueError("TIMESTAMP is not RFC 3339: " + out["timestamp"])
    for field in ("hostname", "app", "procid", "msgid"):
        if not all(33 <= ord(c) <= 126 for c in out[field]):
            raise ValueError(field + " is not printable US-ASCII")
    sd, rest = parse_structured_data(message[m.end():])
    out["sd"] = sd
    if rest:
        if not rest.startswith(" "):
            raise ValueError("MSG must follow a space")
        rest = rest[1:]
    out["bom"] = rest.startswith("\ufeff")
    out["msg"] = rest[1:] if out["bom"] else rest
    return out


def split_unescaped(text, separator, count):
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if c == separator and len(parts) < count:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def unescape_header(value):
    return value.replace("\\|", "|").replace("\\\\", "\\")


def unescape_extension(value):
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({"n": "\n", "r": "\r"}.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_cef(line):
    if not line.startswith("CEF:"):
        raise ValueError("not a CEF line: " + line[:80])
    parts = split_unescaped(line[4:], "|", 7)
    if len(parts) != 8:
        raise ValueError("a CEF header has 7 fields and an extension")
    version, vendor, product, device_version, signature, name, severity, extension = parts
    if not 0 <= int(severity) <= 10:
        raise ValueError("severity out of range")
    ext = {}
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", extension))
    for n, key in enumerate(keys):
        # '=' inside a value is escaped, so every unescaped "key=" starts a pair.
        end = keys[n + 1].start() if n + 1 < len(keys) else len(extension)
        ext[key.group(1)] = unescape_extension(extension[key.end():end])
    return {
        "version": int(version),
        "vendor": unescape_header(vendor),
        "product": unescape_header(product),
        "deviceVersion": unescape_header(device_version),
        "signature": unescape_header(signature),
        "name": unescape_header(name),
        "severity": int(severity),
        "ext": ext,
    }


class OverLimit(Exception):
    pass


def frames(conn, framing, max_frame):
    buffer = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while True:
            if framing == "line":
                if b"\n" not in buffer:
                    break
                frame, buffer = buffer.split(b"\n", 1)
                yield frame
            else:
                if b" " not in buffer:
                    break
                length, rest = buffer.split(b" ", 1)
                if not length.isdigit():
                    raise ValueError("an octet count is digits: %r" % length[:20])
                if max_frame and int(length) > max_frame:
                    raise OverLimit(int(length))
                if len(rest) < int(length):
                    break
                yield rest[:int(length)]
                buffer = rest[int(length):]


def serve(args):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(16)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
    out = open(args.out, "a", encoding="utf-8")
    lock = threading.Lock()

    def write(obj):
        with lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    def handle(conn):
        try:
            if context:
                conn = context.wrap_socket(conn, server_side=True)
            write({"connected": True})
            for frame in frames(conn, args.framing, args.max_frame):
                try:
                    text = frame.decode("utf-8")
                    if args.parse == "json":
                        write({"json": json.loads(text)})
                        continue
                    parsed = parse_syslog(text)
                    if args.parse == "cef":
                        parsed["cef"] = parse_cef(parsed["msg"])
                    elif "part" in parsed["sd"].get("custos@32473", {}):
                        parsed["fragment"] = parsed["msg"]
                    else:
                        parsed["json"] = json.loads(parsed["msg"])
                    write(parsed)
                except Exception as error:  # a broken message is a finding, not a crash
                    write({"error": str(error)})
        except OverLimit as error:
            write({"overLimit": error.args[0]})
        except (ssl.SSLError, OSError) as error:
            write({"connectionError": str(error)})
        finally:
            conn.close()

    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def make_cert(folder):
    """Writes ca.pem (a private certificate authority), and cert.pem / key.pem (the
    receiver's certificate for 127.0.0.1, issued by it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("SIEM test CA", "SIEM test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        builder("siem.test", "SIEM test CA", key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(folder + "/ca.pem", "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(folder + "/cert.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(folder + "/key.pem", "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--out")
    parser.add_argument("--framing", choices=["octet", "line"], default="octet")
    parser.add_argument("--parse", choices=["syslog", "cef", "json"], default="syslog")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--max-frame", type=int, default=0)
    parser.add_argument("--make-cert")
    args = parser.parse_args()
    if args.make_cert:
        make_cert(args.make_cert)
        return
    serve(args)


if __name__ == "__main__":
    sys.exit(main())

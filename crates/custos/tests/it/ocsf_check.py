"""Checks OCSF records against the OCSF 1.1.0 schema, apart from Custos: each line of a file of
JSON lines is validated by the pydantic-ocsf models generated from OCSF's own 1.1.0 schema
(API Activity 6003, Authentication 3002), then held to what the models leave loose: `time` an
integer of milliseconds, every `ip` an IP address, no empty string anywhere.

    python3 ocsf_check.py FILE      prints {"checked": N, "errors": [...]}
"""

import ipaddress
import json
import sys

from ocsf.v1_1_0.events import APIActivity, Authentication

MODELS = {6003: APIActivity, 3002: Authentication}


def empty_strings(value, at=""):
    if isinstance(value, str):
        return [at] if value == "" else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empty_strings(v, f"{at}.{k}")]
    if isinstance(value, list):
        return [p for v in value for p in empty_strings(v, at + "[]")]
    return []


def ips(value, at=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "ip":
                yield f"{at}.ip", inner
            else:
                yield from ips(inner, f"{at}.{key}")
    elif isinstance(value, list):
        for inner in value:
            yield from ips(inner, at + "[]")


def problems(record):
    found = []
    model = MODELS.get(record.get("class_uid"))
    if model is None:
        return [f"class_uid {record.get('class_uid')} is not a class Custos declares"]
    try:
        model.model_validate(record)
    except Exception as error:  # a refusal by the schema's models is a finding
        found.append(str(error))
    if not isinstance(record.get("time"), int):
        found.append("time is not an integer of milliseconds")
    if record.get("metadata", {}).get("version") != "1.1.0":
        found.append("metadata.version is not 1.1.0")
    found += [f"an empty string at {path}" for path in empty_strings(record)]
    for path, ip in ips(record):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            found.append(f"{path} is not an IP address: {ip!r}")
    return found


def main():
    checked, errors = 0, []
    with open(sys.argv[1], encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            record = json.loads(line)
            checked += 1
            errors += [f"line {number}: {p}" for p in problems(record)]
    print(json.dumps({"checked": checked, "errors": errors}))


if __name__ == "__main__":
    main()

"""Drives the Web API with python-odata (PyPI), an OData v4 client written apart from Custos.

The client reads `$metadata`, builds a class per entity set from it, and then does what an
integrator's script does: creates records (leaving out what the document marks as computed),
binds lookups, queries with filters and paging (following `@odata.nextLink`), counts, reads by
key, expands, walks navigation properties by their paths, updates and deletes. Nothing here
builds a URL or a body by hand.

Usage: odata_client.py SERVICE_ROOT TOKEN. Prints one JSON object of what the client saw.
"""

import json
import sys

import requests
from odata import ODataService
from odata.exceptions import NoResultsFound

root, token = sys.argv[1], sys.argv[2]
session = requests.Session()
session.headers["Authorization"] = "Bearer " + token
service = ODataService(
    root,
    session=session,
    reflect_entities=True,
    quiet_progress=True,
    # Dataverse answers a create with 204 unless asked for the record; pages of two make the
    # client follow next links.
    extra_headers={"Prefer": "return=representation, odata.maxpagesize=2"},
)
Account = service.entities["accounts"]
Contact = service.entities["contacts"]
seen = {"entity_sets": sorted(service.entities)}

accounts = []
for n in range(5):
    account = Account()
    account.name = f"Interop {n}"
    account.revenue = 100 * n
    service.save(account)
    accounts.append(account)
seen["accounts"] = [a.accountid for a in accounts]

contacts = {}
for first, last, parent in [
    ("Grace", "Hopper", 0),
    ("Ada", "Lovelace", 0),
    ("Alan", "Turing", 1),
]:
    contact = Contact()
    contact.firstname = first
    contact.lastname = last
    contact.parentcustomerid = accounts[parent]
    service.save(contact)
    contacts[last] = contact
seen["contacts"] = {last: c.contactid for last, c in contacts.items()}
seen["fullname"] = contacts["Hopper"].fullname

interop = Account.name.startswith("Interop ")
rich = service.query(Account).filter(interop).filter(Account.revenue >= 200)
seen["rich"] = [a.name for a in rich.order_by(Account.revenue.desc())]
seen["count"] = service.query(Account).filter(interop).count()

first = service.query(Account).get(accounts[0].accountid)
seen["read"] = {"name": first.name, "revenue": float(first.revenue)}
first.revenue = 12345
service.save(first)
seen["updated"] = float(service.query(Account).get(accounts[0].accountid).revenue)

hopper = (
    service.query(Contact)
    .expand(Contact.parentcustomerid)
    .filter(Contact.lastname == "Hopper")
    .first()
)
seen["expanded"] = hopper.parentcustomerid.name

# Navigation properties by their paths: accounts(<id>)/contact_parentcustomerid and
# contacts(<id>)/parentcustomerid, which the client requests when the property is read.
staff = service.query(Account).get(accounts[0].accountid).contact_parentcustomerid
seen["staff"] = sorted(c.fullname for c in staff)
turing = service.query(Contact).get(contacts["Turing"].contactid)
seen["employer"] = turing.parentcustomerid.name
turing.parentcustomerid = accounts[2]
service.save(turing)
turing = service.query(Contact).get(contacts["Turing"].contactid)
seen["moved"] = turing.parentcustomerid.name

service.delete(accounts[4])
try:
    service.query(Account).get(accounts[4].accountid)
    seen["deleted"] = False
except NoResultsFound:
    seen["deleted"] = True

print(json.dumps(seen))

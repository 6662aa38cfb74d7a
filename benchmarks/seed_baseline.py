"""The seed article's report-ready logic (plain http.client + ElementTree), as a baseline.

Kept faithful to the published sample: one connection, GET the goal state, read ContainerId and
InstanceId, build the health XML with the incarnation hard-coded to 1, POST it.  Two changes so
it can run against the emulator: the address comes from argv, and the GET carries
x-ms-agent-name (the emulator, like azprov, expects it).  It has no retries and no error handling:
it is what azprov is measured against, not an example to follow.
"""

import http.client
import sys
from xml.etree import ElementTree

host, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection(host, port)
conn.request("GET", "/machine?comp=goalstate",
             headers={"x-ms-version": "2012-11-30", "x-ms-agent-name": "custom-provisioning"})
resp = conn.getresponse()
if resp.status != 200:
    sys.exit(1)
root = ElementTree.fromstring(resp.read().decode("utf-8"))
container_id = root.findtext("Container/ContainerId")
instance_id = root.findtext("Container/RoleInstanceList/RoleInstance/InstanceId")

health = ElementTree.Element("Health")
ElementTree.SubElement(health, "GoalStateIncarnation").text = "1"
container = ElementTree.SubElement(health, "Container")
ElementTree.SubElement(container, "ContainerId").text = container_id
role = ElementTree.SubElement(ElementTree.SubElement(container, "RoleInstanceList"), "Role")
ElementTree.SubElement(role, "InstanceId").text = instance_id
ElementTree.SubElement(ElementTree.SubElement(role, "Health"), "State").text = "Ready"
conn.request("POST", "/machine?comp=health",
             headers={"x-ms-version": "2012-11-30", "Content-Type": "text/xml;charset=utf-8",
                      "x-ms-agent-name": "custom-provisioning"},
             body=ElementTree.tostring(health, encoding="unicode", method="xml"))
resp = conn.getresponse()
resp.read()
conn.close()
sys.exit(0 if resp.status == 200 else 1)

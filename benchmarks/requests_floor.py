"""The requests floor of ``azprov report-ready`` (issue 23): the same two requests with ``requests``.

One ``requests.Session`` (no proxies: ``trust_env = False``, as azprov), GET the goal state,
read the incarnation, ContainerId and InstanceId with ElementTree, POST the Ready health report
built with ElementTree.  No retries, no validation, no KVP report: the least any program using
``requests`` pays for these two requests, so what ``azprov report-ready`` costs above it is
azprov's own.  ``requests`` is the project's HTTP library; the seed script (``seed_baseline.py``,
http.client) is the floor without it.

Usage: python benchmarks/requests_floor.py HOST PORT
"""

import sys
from xml.etree import ElementTree

import requests

HEADERS = {"x-ms-version": "2012-11-30", "x-ms-agent-name": "requests-floor"}

base = f"http://{sys.argv[1]}:{int(sys.argv[2])}/machine"
session = requests.Session()
session.trust_env = False
reply = session.get(base, params={"comp": "goalstate"}, headers=HEADERS, timeout=10)
if reply.status_code != 200:
    sys.exit(1)
goal = ElementTree.fromstring(reply.content)
incarnation = goal.findtext("Incarnation")
container_id = goal.findtext("Container/ContainerId")
instance_id = goal.findtext("Container/RoleInstanceList/RoleInstance/InstanceId")

health = ElementTree.Element("Health")
ElementTree.SubElement(health, "GoalStateIncarnation").text = incarnation
container = ElementTree.SubElement(health, "Container")
ElementTree.SubElement(container, "ContainerId").text = container_id
role = ElementTree.SubElement(ElementTree.SubElement(container, "RoleInstanceList"), "Role")
ElementTree.SubElement(role, "InstanceId").text = instance_id
ElementTree.SubElement(ElementTree.SubElement(role, "Health"), "State").text = "Ready"
reply = session.post(base, params={"comp": "health"}, timeout=10,
                     headers=dict(HEADERS, **{"Content-Type": "text/xml;charset=utf-8"}),
                     data=ElementTree.tostring(health, encoding="utf-8"))
session.close()
sys.exit(0 if reply.status_code == 200 else 1)

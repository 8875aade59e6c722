#!/usr/bin/env python3
"""Scrapes envelopd's /metrics the way Prometheus does and parses it with the reference
OpenMetrics parser of the Prometheus Python client (prometheus_client from PyPI), which rejects
anything malformed. Prints the samples as JSON: [[name, labels, value], ...].

usage: scrape.py URL
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

req = urllib.request.Request(sys.argv[1], headers={
    "Accept": "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"})
with urllib.request.urlopen(req, timeout=10) as r:
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode("utf-8")
assert ctype.startswith("application/openmetrics-text"), ctype
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps({"families": len(list(text_string_to_metric_families(text))), "samples": out}))

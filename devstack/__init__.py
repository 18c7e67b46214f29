"""The development package, never deployed: the local stand-ins for the cluster's parts (broker,
Lambda, OTLP collector, fault proxy), the local stack that runs them, and the test support that
scripts/ and tests/ share (sample and test photos, the TEST model pack, the B2 webhook sender,
the soak's reconciliation). No image a Knative Service runs copies it.
"""

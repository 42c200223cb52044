#!/usr/bin/env python3
"""A Keel worker in Python, with the client package of clients/python (pip install ./clients/python;
from this repository it is found without installing).

Serves one task queue with three example activities:
  py-upper   input "text"                                  -> "TEXT"
  py-fail    input {"type", "message", "nonRetryable"}     -> a failure of that type
  py-count   input {"to": N, "delay": S}                   -> counts to N, a step each S seconds,
             heartbeating the step; a later attempt resumes from its last heartbeat
             -> {"counted": N, "resumedFrom": step}

Usage: python_worker.py [QUEUE] [CONCURRENCY]   (broker: KEEL_AMQP_URL, default
amqp://guest:guest@localhost:$KEEL_AMQP_PORT; namespace: KEEL_NAMESPACE, default keel)
"""
import os
import sys
import time

try:
    import keel_client
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
    import keel_client

from keel_client import ActivityError, Worker


def upper(context, text):
    return str(text).upper()


def fail(context, spec):
    raise ActivityError(spec.get("type", "PythonError"), spec.get("message", ""), spec.get("nonRetryable", False))


def count(context, spec):
    start = (context.heartbeat_details or {}).get("step", 0)
    for step in range(start, spec["to"]):
        time.sleep(spec.get("delay", 0.1))
        context.heartbeat({"step": step + 1})
    return {"counted": spec["to"], "resumedFrom": start}


if __name__ == "__main__":
    queue = sys.argv[1] if len(sys.argv) > 1 else "python"
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    Worker(queue, {"py-upper": upper, "py-fail": fail, "py-count": count}, concurrency=concurrency).run()

#!/usr/bin/env python3
"""Scenarios of the Python client against a real broker and coordinator, run by Keel's Swift
suite (Tests/KeelRuntimeTests/PythonClientTests.swift). Each prints what it checked and exits 1
at the first check that fails.

  scenarios.py start-and-wait          a run started and awaited; refusals as typed exceptions
  scenarios.py worker GATE             serves the `python` queue with py-gated-count
  scenarios.py start RUN_ID GATE       a py-gated-count run started without waiting
  scenarios.py wait RUN_ID             waits for it; prints its result as JSON
  scenarios.py dead-letters FILE       lists, then drains the dead-letter queue into FILE
  scenarios.py redrive-and-discard ID  redrives the parked activity of run ID, then discards it
"""
import json
import os
import sys
import time

import keel_client
from keel_client import Client, Worker


def check(condition, what):
    if not condition:
        print("FAILED: " + what, flush=True)
        sys.exit(1)
    print("ok: " + what, flush=True)


def start_and_wait(keel):
    result = keel.start("bench-sequential", "py-client-run", 4, budget={"maxTokens": 1000}, priority=2,
                        wait=True, timeout=60)
    check(result == 6, "bench-sequential 4 returns 6, got %r" % (result,))
    run = keel.describe("py-client-run")
    check(run["status"] == "completed" and run["options"]["priority"] == 2, "describe: completed, priority 2")
    again = keel.start("bench-sequential", "py-client-run", 4, request_id="same-request")
    joined = keel.start("bench-sequential", "py-client-run", 4, request_id="same-request")
    check(again.run_id == joined.run_id and not joined.started, "a start repeated with its request id joins its run")
    try:
        keel.start("no-such-workflow", "py-x", None)
        check(False, "an unknown workflow type is refused")
    except keel_client.UnknownWorkflowType as error:
        check("no-such-workflow" in error.message, "UnknownWorkflowType names the type")
    try:
        keel.start("bench-sequential", "py-y", 1, priority=9)
        check(False, "priority 9 is refused")
    except keel_client.InvalidOptions as error:
        check("priority" in error.message, "InvalidOptions names the field: " + error.message)
    try:
        keel.signal("never-started", "approve")
        check(False, "a signal to no run is refused")
    except keel_client.WorkflowNotFound:
        check(True, "WorkflowNotFound for a signal to no run")
    try:
        keel.start("call-activity", "py-fails", {"activityType": "py-fail", "taskQueue": "python",
                                                  "input": {"type": "Bad", "message": "no", "nonRetryable": True}},
                   wait=True, timeout=60)
        check(False, "a failing run raises")
    except keel_client.WorkflowFailed as error:
        check(error.status == "failed" and "Bad: no" in error.message, "WorkflowFailed carries the failure")


def dead_letters(keel, path):
    items = keel.dead_letters.list()
    parked = [item for item in items if item["kind"] == "activity"]
    check(len(parked) >= 1 and parked[0]["entry"]["activityType"] == "py-fail", "list shows the failed activity")
    check(len(keel.dead_letters.list()) == len(items), "list removes nothing")
    drained = keel.dead_letters.drain(path)
    check(drained == len(items), "drain moved %d of %d items" % (drained, len(items)))
    check(keel.dead_letters.list() == [], "the queue is empty after drain")
    with open(path) as file:
        lines = [json.loads(line) for line in file]
    check([line["id"] for line in lines] == [item["id"] for item in items], "the file holds every item, in order")


def parked_entry(keel, workflow_id, deadline):
    while time.time() < deadline:
        for entry in keel.dead_letters.list():
            if entry["kind"] == "activity" and entry["entry"]["workflowId"] == workflow_id and entry["entry"]["parked"]:
                return entry
        time.sleep(0.2)
    return None


def redrive_and_discard(keel, workflow_id):
    deadline = time.time() + 60
    entry = parked_entry(keel, workflow_id, deadline)
    check(entry is not None, "the parked activity of %s is listed" % workflow_id)
    outcome = keel.dead_letters.redrive([entry["id"]])
    check(len(outcome) == 1 and outcome[0]["done"], "redrive: %s" % outcome)
    missing = keel.dead_letters.redrive(["no-such-entry"])
    check(not missing[0]["done"] and "no such entry" in missing[0]["detail"], "an unknown id is named: %s" % missing)
    # The fresh attempt fails again (py-fail always does) and parks the activity once more.
    again = parked_entry(keel, workflow_id, deadline)
    check(again is not None and again["id"] != entry["id"], "the redriven activity ran and parked again")
    outcome = keel.dead_letters.discard([again["id"]])
    check(outcome[0]["done"] and "receives the failure" in outcome[0]["detail"], "discard: %s" % outcome)
    run = keel.wait_for_result(workflow_id, timeout=60)
    check(run["status"] == "failed", "the workflow received the failure and failed")


def gated_count(context, spec):
    """Counts to ``to``, heartbeating each step; after step 3 it waits (heartbeating) until the
    ``gate`` file exists, so that a test can kill its worker there. A later attempt resumes from
    the last heartbeat's step."""
    start = (context.heartbeat_details or {}).get("step", 0)
    for step in range(start, spec["to"]):
        while step >= 3 and not os.path.exists(spec["gate"]):
            context.heartbeat({"step": step})
            time.sleep(0.1)
        time.sleep(0.05)
        context.heartbeat({"step": step + 1})
    return {"counted": spec["to"], "resumedFrom": start}


def main():
    command = sys.argv[1]
    if command == "worker":
        Worker("python", {"py-gated-count": gated_count}, concurrency=2).run()
        return
    with Client() as keel:
        if command == "start-and-wait":
            start_and_wait(keel)
        elif command == "start":
            keel.start("call-activity", sys.argv[2], {"activityType": "py-gated-count", "taskQueue": "python",
                                                      "input": {"to": 20, "gate": sys.argv[3]},
                                                      "heartbeatSeconds": 3, "maximumAttempts": 5})
        elif command == "wait":
            run = keel.wait_for_result(sys.argv[2], timeout=120)
            check(run["status"] == "completed", "the run completed: %s" % (run.get("failure"),))
            print(json.dumps(run["result"]), flush=True)
        elif command == "dead-letters":
            dead_letters(keel, sys.argv[2])
        elif command == "redrive-and-discard":
            redrive_and_discard(keel, sys.argv[2])


if __name__ == "__main__":
    main()

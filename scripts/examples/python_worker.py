#!/usr/bin/env python3
"""A Keel worker in Python (pika), following docs/protocol.md.

Serves one task queue with two example activities:
  py-upper   input "text"            -> "TEXT"
  py-fail    input {"type", "message", "nonRetryable"} -> a failure of that type

Usage: python_worker.py [QUEUE]   (broker: KEEL_AMQP_URL, default amqp://guest:guest@localhost:5672;
namespace: KEEL_NAMESPACE, default keel)
"""
import json
import os
import signal
import socket
import sys
import time

import pika

URL = os.environ.get("KEEL_AMQP_URL", "amqp://guest:guest@localhost:%s" % os.environ.get("KEEL_AMQP_PORT", "5672"))
QUEUE = sys.argv[1] if len(sys.argv) > 1 else "python"
WORKER = "python:%s:%d" % (socket.gethostname(), os.getpid())
NS = os.environ.get("KEEL_NAMESPACE") or "keel"
HEADERS = {"keel-version": "1"}


def upper(task):
    return str(task["input"]).upper()


def fail(task):
    spec = task["input"]
    raise ActivityError(spec.get("type", "PythonError"), spec.get("message", ""), spec.get("nonRetryable", False))


ACTIVITIES = {"py-upper": upper, "py-fail": fail}


class ActivityError(Exception):
    def __init__(self, type_, message, non_retryable=False):
        super().__init__(message)
        self.type, self.message, self.non_retryable = type_, message, non_retryable


def declare(channel):
    # The same idempotent topology Keel declares (docs/protocol.md).
    channel.exchange_declare(NS + ".dlx", "fanout", durable=True)
    channel.exchange_declare(NS + ".tasks", "direct", durable=True)
    channel.exchange_declare(NS + ".results", "direct", durable=True)
    queue = NS + ".q." + QUEUE
    channel.queue_declare(queue, durable=True, arguments={"x-dead-letter-exchange": NS + ".dlx"})
    channel.queue_bind(queue, NS + ".tasks", routing_key=QUEUE)
    return queue


def report(channel, kind, body):
    # The channel is in confirm mode: basic_publish returns once RabbitMQ confirmed.
    channel.basic_publish(
        NS + ".results", "results", json.dumps(body),
        pika.BasicProperties(content_type="application/json", delivery_mode=2, type=kind,
                             headers=dict(HEADERS, **{"keel-type": kind})))


def stop(signum, frame):
    # Graceful stop: the task in hand is finished or left unacknowledged (RabbitMQ redelivers it).
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = declare(channel)
    channel.basic_qos(prefetch_count=1)
    print("python worker %s serving %s" % (WORKER, queue), flush=True)

    for method, properties, body in channel.consume(queue):
        try:
            task = json.loads(body)
            key = {"runId": task["runId"], "activityId": task["activityId"], "attempt": task["attempt"]}
        except (ValueError, KeyError) as error:
            channel.basic_reject(method.delivery_tag, requeue=False)  # dead-lettered by the queue
            print("rejected an undecodable task: %s" % error, flush=True)
            continue
        if method.redelivered:
            # An earlier delivery was not acknowledged and may have run: the coordinator decides.
            report(channel, "redelivered", dict(key, worker=WORKER))
            channel.basic_ack(method.delivery_tag)
            continue
        report(channel, "started", dict(key, worker=WORKER, time=time.time()))
        channel.basic_ack(method.delivery_tag)
        activity = ACTIVITIES.get(task["activityType"])
        try:
            if activity is None:
                raise ActivityError("UnknownActivityType", "python worker has no activity %s" % task["activityType"], True)
            result = dict(key, worker=WORKER, status="completed", result=activity(task))
        except ActivityError as error:
            result = dict(key, worker=WORKER, status="failed",
                          failure={"type": error.type, "message": error.message, "nonRetryable": error.non_retryable})
        except Exception as error:  # any other error is retryable, named by its class
            result = dict(key, worker=WORKER, status="failed", failure={"type": type(error).__name__, "message": str(error)})
        report(channel, "result", result)


if __name__ == "__main__":
    main()

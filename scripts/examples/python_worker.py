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
import uuid

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


class Claims:
    """Claims of republished tasks, answered by the coordinator over direct reply-to (a channel
    of their own: the reply-to pseudo-queue is consumed on the channel that publishes)."""

    def __init__(self, connection):
        self.connection = connection
        self.channel = connection.channel()
        self.answers = {}
        self.channel.basic_consume("amq.rabbitmq.reply-to", self.on_answer, auto_ack=True)

    def on_answer(self, channel, method, properties, body):
        self.answers[properties.correlation_id] = json.loads(body)

    def granted(self, key):
        # The same claimId on every ask: a claim granted before (its answer lost) is granted again.
        body = json.dumps(dict(key, worker=WORKER, claimId=str(uuid.uuid4())))
        while True:
            correlation = str(uuid.uuid4())
            self.channel.basic_publish(
                NS + ".results", "results", body,
                pika.BasicProperties(content_type="application/json", type="claim", reply_to="amq.rabbitmq.reply-to",
                                     correlation_id=correlation, headers=dict(HEADERS, **{"keel-type": "claim"})))
            deadline = time.time() + 30
            while correlation not in self.answers and time.time() < deadline:
                self.connection.process_data_events(time_limit=0.5)
            if correlation in self.answers:
                return self.answers.pop(correlation).get("ok", False)
            print("no answer to the claim of %s; asking again" % key, flush=True)


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
    claims = Claims(connection)
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
        if task.get("republished") and not claims.granted(key):
            # A copy the coordinator published again after a restart; the other copy runs.
            channel.basic_ack(method.delivery_tag)
            print("dropped a republished copy of %s/%s/%s" % (key["runId"], key["activityId"], key["attempt"]), flush=True)
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
        print("ran %s for %s/%s/%s" % (task["activityType"], key["runId"], key["activityId"], key["attempt"]), flush=True)


if __name__ == "__main__":
    main()

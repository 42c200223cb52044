"""The broker connection and the topology, as docs/protocol.md describes them."""
import json
import os

import pika

HEADERS = {"keel-version": "1"}


def default_url():
    """``KEEL_AMQP_URL``, else a local broker on ``KEEL_AMQP_PORT`` (default 5672)."""
    return os.environ.get("KEEL_AMQP_URL") or "amqp://guest:guest@localhost:%s" % os.environ.get("KEEL_AMQP_PORT", "5672")


def default_namespace():
    return os.environ.get("KEEL_NAMESPACE") or "keel"


def connect(url):
    parameters = pika.URLParameters(url)
    # Heartbeats keep a client that waits a long time for a run from being dropped.
    parameters.heartbeat = 30
    return pika.BlockingConnection(parameters)


def default_queue_type():
    """``KEEL_QUEUE_TYPE``: ``classic`` (the default) or ``quorum``, as every Keel process of the
    namespace uses."""
    value = os.environ.get("KEEL_QUEUE_TYPE") or "classic"
    if value not in ("classic", "quorum"):
        raise ValueError("KEEL_QUEUE_TYPE must be classic or quorum, not %r" % value)
    return value


class Topology:
    """Exchange and queue names of a namespace, and their declaration (idempotent: the same
    arguments the coordinator uses)."""

    def __init__(self, namespace, queue_type=None):
        self.namespace = namespace
        self.queue_type = queue_type or default_queue_type()
        self.jobs = namespace + ".jobs"
        self.results = namespace + ".results"
        self.tasks = namespace + ".tasks"
        self.dlx = namespace + ".dlx"
        self.dead = namespace + ".dead"
        self.control = namespace + ".control"

    def task_queue(self, name):
        return "%s.q.%s" % (self.namespace, name)

    def _arguments(self, dead_letters=True):
        arguments = {"x-dead-letter-exchange": self.dlx} if dead_letters else {}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return arguments or None

    def declare(self, connection, task_queues=()):
        """Declares the namespace on a channel of its own. A broker user that may not (a worker's
        or a publisher's, as ``scripts/rabbitmq users`` makes them) only checks that it exists:
        the coordinator declares it first."""
        channel = connection.channel()
        try:
            self._declare_all(channel, task_queues)
        except pika.exceptions.ChannelClosedByBroker as refusal:
            if refusal.reply_code != 403:
                raise
            channel = self._check(connection, [self.dead, self.jobs, self.results], refusal)
            # A worker's user may declare its own task queue.
            for name in task_queues:
                try:
                    self._declare_task_queue(channel, name)
                except pika.exceptions.ChannelClosedByBroker as refused:
                    if refused.reply_code != 403:
                        raise
                    channel = self._check(connection, [self.task_queue(name)], refused)
        if channel.is_open:
            channel.close()

    def _check(self, connection, queues, refusal):
        """Checks (passively, on a new channel) that the exchanges and ``queues`` exist; returns
        the channel."""
        channel = connection.channel()
        try:
            for exchange in (self.dlx, self.jobs, self.results, self.tasks, self.control):
                channel.exchange_declare(exchange, passive=True)
            for queue in queues:
                channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as missing:
            raise RuntimeError(
                "the broker user may not declare namespace %s (%s), and it is not declared yet (%s): start the "
                "coordinator first (it declares every exchange and queue), or declare them as a user that may"
                % (self.namespace, refusal.reply_text, missing.reply_text)) from None
        return channel

    def _declare_task_queue(self, channel, name):
        channel.queue_declare(self.task_queue(name), durable=True, arguments=self._arguments())
        channel.queue_bind(self.task_queue(name), self.tasks, routing_key=name)

    def _declare_all(self, channel, task_queues):
        channel.exchange_declare(self.dlx, "fanout", durable=True)
        channel.queue_declare(self.dead, durable=True, arguments=self._arguments(dead_letters=False))
        channel.queue_bind(self.dead, self.dlx, routing_key="")
        channel.exchange_declare(self.jobs, "direct", durable=True)
        channel.queue_declare(self.jobs, durable=True, arguments=self._arguments())
        channel.queue_bind(self.jobs, self.jobs, routing_key="jobs")
        channel.exchange_declare(self.results, "direct", durable=True)
        channel.queue_declare(self.results, durable=True, arguments=self._arguments())
        channel.queue_bind(self.results, self.results, routing_key="results")
        channel.exchange_declare(self.tasks, "direct", durable=True)
        channel.exchange_declare(self.control, "fanout", durable=True)
        for name in task_queues:
            self._declare_task_queue(channel, name)


def properties(kind, persistent=True, **extra):
    """AMQP properties of a Keel message of type ``kind``."""
    return pika.BasicProperties(
        content_type="application/json", delivery_mode=2 if persistent else 1, type=kind,
        headers=dict(HEADERS, **{"keel-type": kind}), **extra)


def encode(body):
    return json.dumps(body, separators=(",", ":"))


class EpochWatermark:
    """The highest coordinator epoch seen on tasks or answers. A coordinator takes a new epoch
    each time it takes over a history: anything from an older one comes from a coordinator that
    lost its lease while paused (docs/operations.md, "Fencing")."""

    def __init__(self):
        self.highest = 0
        # Whether a coordinator said its epoch itself (on keel.control, or in a claim's answer):
        # a task's own epoch proves nothing about the coordinator running now.
        self.heard = False

    def hear(self, epoch):
        """A coordinator said its epoch (None: a message without one)."""
        if epoch is None:
            return
        self.highest = max(self.highest, epoch)
        self.heard = True

    def is_stale(self, epoch):
        """Whether ``epoch`` (None: a message without one) is older than one seen; records it
        otherwise."""
        if epoch is None:
            return False
        if epoch < self.highest:
            return True
        self.highest = epoch
        return False

"""Jobs for the coordinator: start, signal, query, describe, cancel, terminate, schedules."""
import json
import time
import uuid

import pika

from . import _broker
from .dead_letters import DeadLetters
from .errors import KeelError, NoReply, WorkflowFailed, WorkflowNotFound, from_reply

OPEN = ("running", "blocked", "continuedAsNew")


class StartResult:
    """The run a start made, or the open run it joined (``started`` false)."""

    def __init__(self, workflow_id, run_id, started):
        self.workflow_id, self.run_id, self.started = workflow_id, run_id, started

    def __repr__(self):
        return "StartResult(workflow_id=%r, run_id=%r, started=%r)" % (self.workflow_id, self.run_id, self.started)


class Client:
    """A connection to a Keel deployment through RabbitMQ.

    ``url`` defaults to ``KEEL_AMQP_URL`` (else a local broker on ``KEEL_AMQP_PORT``), and
    ``namespace`` to ``KEEL_NAMESPACE`` (else ``keel``). Not thread-safe: one per thread.
    """

    def __init__(self, url=None, namespace=None, timeout=30.0):
        self.url = url or _broker.default_url()
        self.topology = _broker.Topology(namespace or _broker.default_namespace())
        self.timeout = timeout
        self._connection = _broker.connect(self.url)
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        # Jobs published before any coordinator ran wait in the queue instead of failing.
        self.topology.declare(self._connection)
        # Every job carries the broker user, which RabbitMQ checks: a coordinator run with
        # --operators takes cancels, terminations and the like from its operators only.
        self._user = pika.URLParameters(self.url).credentials.username
        self._answers = {}
        self._epochs = _broker.EpochWatermark()
        self._channel.basic_consume("amq.rabbitmq.reply-to", self._on_answer, auto_ack=True)
        self.dead_letters = DeadLetters(self)

    def close(self):
        if self._connection.is_open:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests

    def _on_answer(self, channel, method, properties, body):
        answer = json.loads(body)
        # One from an older coordinator epoch is skipped: the wait goes on for the current one's.
        if not self._epochs.is_stale(answer.get("coordinatorEpoch")):
            self._answers[properties.correlation_id] = answer

    def request(self, kind, body, timeout=None, persistent=True):
        """Publishes a job of type ``kind`` with ``reply_to`` and waits for the coordinator's
        answer. Returns the reply; raises the refusal as its exception class."""
        correlation = str(uuid.uuid4())
        self._channel.basic_publish(
            self.topology.jobs, "jobs", _broker.encode(body),
            _broker.properties(kind, persistent, reply_to="amq.rabbitmq.reply-to", correlation_id=correlation,
                               message_id=str(uuid.uuid4()), user_id=self._user))
        deadline = time.time() + (timeout or self.timeout)
        while correlation not in self._answers:
            left = deadline - time.time()
            if left <= 0:
                raise NoReply("no reply from a coordinator within %.0f s to %s (is `keel coordinator` running against %s?)"
                              % (timeout or self.timeout, kind, self.url))
            self._connection.process_data_events(time_limit=min(left, 0.2))
        reply = self._answers.pop(correlation)
        if not reply.get("ok"):
            raise from_reply(reply.get("error"))
        return reply

    # -- workflows

    def start(self, workflow_type, workflow_id, input=None, *, budget=None, priority=None, fairness_key=None,
              id_conflict_policy=None, id_reuse_policy=None, execution_timeout=None, request_id=None,
              wait=False, timeout=None):
        """Starts a workflow. ``budget`` is ``{"maxTokens": N, "maxCostUSD": X}`` (either bound).
        Returns a :class:`StartResult`; with ``wait=True``, waits for the run to close and
        returns its result, or raises :class:`WorkflowFailed` (``timeout`` bounds the wait)."""
        options = {}
        for key, value in (("budget", budget), ("priority", priority), ("fairnessKey", fairness_key),
                           ("idConflictPolicy", id_conflict_policy), ("idReusePolicy", id_reuse_policy),
                           ("executionTimeout", execution_timeout)):
            if value is not None:
                options[key] = value
        body = {"workflowType": workflow_type, "workflowId": workflow_id, "input": input,
                "requestId": request_id or str(uuid.uuid4())}
        if options:
            body["options"] = options
        result = self.request("start", body)["result"]
        started = StartResult(result["workflowId"], result["runId"], result["started"])
        if not wait:
            return started
        run = self.wait_for_result(workflow_id, timeout=timeout or 3600)
        if run["status"] != "completed":
            raise WorkflowFailed(run)
        return run.get("result")

    def signal(self, workflow_id, name, input=None):
        """Delivers a signal; raises WorkflowNotFound when no run is open."""
        self.request("signal", {"workflowId": workflow_id, "name": name, "input": input})

    def query(self, workflow_id, name, argument=None, timeout=10.0):
        """The answer of a query handler (a closed run is replayed to answer)."""
        return self.request("query", {"workflowId": workflow_id, "name": name, "input": argument},
                            timeout=timeout, persistent=False).get("result")

    def describe(self, workflow_id, timeout=10.0):
        """The latest run's record: ``status``, ``result``, ``failure``, ``spend``, …"""
        return self.request("describe", {"workflowId": workflow_id}, timeout=timeout, persistent=False)["run"]

    def cancel(self, workflow_id):
        """Asks the open run to cancel (its compensations run)."""
        self.request("cancel", {"workflowId": workflow_id})

    def terminate(self, workflow_id, reason="terminated by an operator"):
        """Ends the open run at once, running no more of its code."""
        self.request("terminate", {"workflowId": workflow_id, "reason": reason})

    def wait_for_result(self, workflow_id, timeout=3600.0, poll=0.2):
        """Polls until the workflow's last run is closed (following continue-as-new); returns its
        record. A start still in the queue is waited for."""
        deadline = time.time() + timeout
        while True:
            try:
                run = self.describe(workflow_id, timeout=max(1.0, min(10.0, deadline - time.time())))
                if run["status"] not in OPEN:
                    return run
            except WorkflowNotFound:
                pass
            if time.time() >= deadline:
                raise KeelError("Timeout", "workflow %s did not finish within %.0f s" % (workflow_id, timeout))
            self._connection.sleep(poll)

    # -- schedules (docs/operations.md, Schedules)

    def create_schedule(self, name, workflow_type, input=None, *, cron=None, every=None, time_zone=None,
                        id_template=None, overlap=None, catchup_window=None, options=None):
        """Creates a schedule (``every`` and ``catchup_window`` in seconds); raises InvalidSchedule."""
        schedule = {"name": name, "workflowType": workflow_type, "input": input}
        for key, value in (("cron", cron), ("every", every), ("timeZone", time_zone), ("idTemplate", id_template),
                           ("overlap", overlap), ("catchupWindow", catchup_window), ("options", options)):
            if value is not None:
                schedule[key] = value
        return self.request("schedule-create", {"schedule": schedule})["result"]

    def schedules(self):
        return self.request("schedule-list", {}, persistent=False)["result"]

    def describe_schedule(self, name):
        return self.request("schedule-describe", {"name": name}, persistent=False)["result"]

    def pause_schedule(self, name, note=None):
        return self.request("schedule-pause", {"name": name, "note": note})["result"]

    def unpause_schedule(self, name):
        return self.request("schedule-unpause", {"name": name})["result"]

    def trigger_schedule(self, name):
        return self.request("schedule-trigger", {"name": name})["result"]

    def delete_schedule(self, name):
        self.request("schedule-delete", {"name": name})

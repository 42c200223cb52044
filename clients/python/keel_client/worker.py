"""Activities written in Python, served to a Keel coordinator as docs/protocol.md describes:
redelivered tasks reported, republished and budgeted tasks claimed, ``started`` confirmed before
the ack, heartbeats with details, cancels, results with publisher confirms, graceful stop."""
import json
import os
import queue as queues
import signal
import socket
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

from . import _broker


class ActivityError(Exception):
    """Raise it from an activity to choose how the failure is recorded and retried: ``type``
    is what retry policies match, ``non_retryable`` stops retries, ``next_retry_delay``
    (seconds) sets the wait before the next attempt."""

    def __init__(self, type_, message, non_retryable=False, next_retry_delay=None, details=None):
        super().__init__(message)
        self.type, self.message = type_, message
        self.non_retryable, self.next_retry_delay, self.details = non_retryable, next_retry_delay, details


class Cancelled(Exception):
    """Raised by :meth:`ActivityContext.heartbeat` once the coordinator cancelled the attempt."""


class ActivityContext:
    """What an activity knows of its attempt, and how it heartbeats."""

    def __init__(self, task, worker):
        self.task = task
        self.workflow_id = task["workflowId"]
        self.run_id = task["runId"]
        self.activity_id = task["activityId"]
        self.activity_type = task["activityType"]
        self.attempt = task["attempt"]
        #: The details of the last heartbeat of an earlier attempt of this activity, or None.
        self.heartbeat_details = task.get("heartbeatDetails")
        #: Stable across the activity's attempts: send it with side effects.
        self.idempotency_key = "%s/%s/%s" % (self.workflow_id, self.run_id, self.activity_id)
        self._worker = worker
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._pending = None
        self._last_heartbeat = float("-inf")
        timeout = task.get("heartbeatTimeout")
        self._heartbeat_interval = 0.8 * timeout if timeout else None

    @property
    def is_cancelled(self):
        return self._cancelled.is_set()

    def heartbeat(self, details=None):
        """Tells the coordinator the attempt is alive; ``details`` (any JSON) come back as
        ``heartbeat_details`` of the next attempt if this one fails. Sent at most once per
        0.8 × the heartbeat timeout: a heartbeat inside that interval is sent at its end, with
        the latest details. Raises :class:`Cancelled` once the attempt was cancelled."""
        if self._cancelled.is_set():
            raise Cancelled("the coordinator cancelled this attempt")
        with self._lock:
            self._pending = (details,)
        self._worker._due_heartbeats(self)

    def _take_heartbeat(self, now):
        """The details to send now, if a heartbeat is pending and the interval has passed."""
        with self._lock:
            if self._pending is None:
                return None
            if self._heartbeat_interval is not None and now - self._last_heartbeat < self._heartbeat_interval:
                return None
            pending, self._pending = self._pending, None
            self._last_heartbeat = now
            return pending

    def _key(self):
        return {"runId": self.run_id, "activityId": self.activity_id, "attempt": self.attempt}


class Worker:
    """Serves one task queue with the given activities, ``concurrency`` at a time.

    ``activities`` maps an activity type to ``function(context, input) -> result`` (any JSON).
    ``run()`` blocks until :meth:`stop` or SIGTERM/SIGINT; running activities then finish and
    report before it returns.
    """

    def __init__(self, queue, activities, concurrency=4, url=None, namespace=None, name=None, handle_signals=True):
        self.queue = queue
        self.activities = dict(activities)
        self.concurrency = concurrency
        self.url = url or _broker.default_url()
        self.topology = _broker.Topology(namespace or _broker.default_namespace())
        self.name = name or "python:%s:%d" % (socket.gethostname(), os.getpid())
        self.handle_signals = handle_signals
        self._outbox = queues.Queue()
        self._pending = []
        self._running = {}
        self._answers = {}
        self._stopping = threading.Event()
        self._epochs = _broker.EpochWatermark()  # of tasks and answers

    def stop(self):
        """Stops taking tasks; ``run()`` returns once the running ones have reported."""
        self._stopping.set()

    def run(self):
        if self.handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        connection = _broker.connect(self.url)
        self._connection = connection
        channel = connection.channel()
        channel.confirm_delivery()
        self.topology.declare(connection, task_queues=[self.queue])
        # Each task is acknowledged before it runs (step 2), so a larger window would not bound
        # anything: one delivery at a time, and no consumer while every slot runs an activity.
        channel.basic_qos(prefetch_count=1)
        self._channel = channel
        self._task_queue = self.topology.task_queue(self.queue)
        # Claims over direct reply-to, on a channel of their own.
        self._claims = connection.channel()
        self._claims.basic_consume("amq.rabbitmq.reply-to", self._on_answer, auto_ack=True)
        # Cancels: an exclusive queue bound to the control fanout.
        control = connection.channel()
        # Named under the namespace, as a worker's broker user may declare it (docs/operations.md).
        declared = control.queue_declare(
            "%s.%s.%s" % (self.topology.control, self.name, uuid.uuid4().hex[:8]), exclusive=True, auto_delete=True)
        control.queue_bind(declared.method.queue, self.topology.control)
        control.basic_consume(declared.method.queue, self._on_control, auto_ack=True)
        # Before any task: the epoch of the coordinator running now, asked with a claim of no
        # attempt, which it refuses with its epoch (step 0b). Without an answer within 3 s, tasks
        # with an epoch are claimed until a coordinator says its own.
        self._await_answer(self._send_claim(dict(runId="", activityId=0, attempt=0, worker=self.name,
                                                 claimId="epoch-" + str(uuid.uuid4()))), timeout=3)
        self._consume()
        print("python worker %s serving %s, concurrency %d, activities %s"
              % (self.name, self._task_queue, self.concurrency, ", ".join(sorted(self.activities))), flush=True)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            self._pool = pool
            consuming = True
            while consuming or self._running or not self._outbox.empty():
                if consuming and self._stopping.is_set():
                    consuming = False
                    self._stop_consuming()
                    # Tasks received but not begun go back to the queue with the connection.
                    self._pending.clear()
                connection.process_data_events(time_limit=0.05)
                while self._pending and consuming:
                    self._take(*self._pending.pop(0))
                self._flush()
        connection.close()
        print("python worker %s stopped" % self.name, flush=True)

    def _consume(self):
        self._tag = self._channel.basic_consume(
            self._task_queue, lambda ch, method, props, body: self._pending.append((method, props, body)))

    def _stop_consuming(self):
        if self._tag is not None:
            self._channel.basic_cancel(self._tag)
            self._tag = None

    # -- the protocol's steps

    def _report(self, kind, body):
        # Confirm mode: basic_publish returns once RabbitMQ has the message.
        self._channel.basic_publish(self.topology.results, "results", _broker.encode(body), _broker.properties(kind))

    def _take(self, method, properties, body):
        try:
            task = json.loads(body)
            key = {"runId": task["runId"], "activityId": task["activityId"], "attempt": task["attempt"]}
        except (ValueError, KeyError, TypeError) as error:
            self._channel.basic_reject(method.delivery_tag, requeue=False)  # dead-lettered by the queue
            print("rejected an undecodable task: %s" % error, flush=True)
            return
        if method.redelivered:
            # An earlier delivery went unacknowledged and may have run: the coordinator decides.
            self._report("redelivered", dict(key, worker=self.name))
            self._channel.basic_ack(method.delivery_tag)
            return
        # A task from an older coordinator epoch than one seen may come from a coordinator that
        # lost its lease while paused: it runs only if its attempt still waits.
        stale = self._epochs.is_stale(task.get("coordinatorEpoch"))
        # Until a coordinator said its epoch, this may be the first copy of a task whose
        # coordinator stopped after publishing it, while its successor publishes another.
        unheard = task.get("coordinatorEpoch") is not None and not self._epochs.heard
        if (task.get("republished") or task.get("claimBeforeRunning") or stale or unheard) and not self._claim(key):
            # Another copy runs (or the attempt is over): this one is dropped unrun.
            self._channel.basic_ack(method.delivery_tag)
            print("dropped a %s copy of %s" % ("republished" if task.get("republished") else "claimed", _name(key)), flush=True)
            return
        self._report("started", dict(key, worker=self.name, time=time.time()))
        if len(self._running) + 1 >= self.concurrency:
            # The last free slot: no more tasks until an activity ends. The cancel goes before the
            # ack, so the window the ack frees is not filled with a task that would wait for a
            # slot, maybe for hours, while another worker idles (docs/protocol.md).
            self._stop_consuming()
        self._channel.basic_ack(method.delivery_tag)
        context = ActivityContext(task, self)
        attempt = (key["runId"], key["activityId"], key["attempt"])
        self._running[attempt] = context
        self._pool.submit(self._execute, task, key, context)

    def _claim(self, key):
        claim = dict(key, worker=self.name, claimId=str(uuid.uuid4()))
        while True:
            answer = self._await_answer(self._send_claim(claim), timeout=30)
            if answer is not None:
                return answer.get("ok", False)
            print("no answer to the claim of %s; asking again" % key, flush=True)

    def _send_claim(self, claim):
        """Publishes ``claim``; returns the correlation id its answer will carry."""
        correlation = str(uuid.uuid4())
        self._claims.basic_publish(
            self.topology.results, "results", _broker.encode(claim),
            _broker.properties("claim", reply_to="amq.rabbitmq.reply-to", correlation_id=correlation))
        return correlation

    def _await_answer(self, correlation, timeout):
        """The answer with ``correlation``, or None if none came within ``timeout`` seconds."""
        deadline = time.time() + timeout
        while correlation not in self._answers and time.time() < deadline:
            self._connection.process_data_events(time_limit=0.2)
        return self._answers.pop(correlation, None)

    def _on_answer(self, channel, method, properties, body):
        answer = json.loads(body)
        # One from an older coordinator epoch is skipped: the wait goes on for the current one's.
        if not self._epochs.is_stale(answer.get("coordinatorEpoch")):
            self._epochs.hear(answer.get("coordinatorEpoch"))
            self._answers[properties.correlation_id] = answer

    def _on_control(self, channel, method, properties, body):
        if properties.type == "coordinator-epoch":
            # A coordinator starting: tasks from older epochs are claimed from now on.
            try:
                self._epochs.hear(json.loads(body)["coordinatorEpoch"])
            except (ValueError, KeyError, TypeError):
                pass
            return
        try:
            cancel = json.loads(body)
            context = self._running.get((cancel["runId"], cancel["activityId"], cancel["attempt"]))
        except (ValueError, KeyError, TypeError):
            return
        if context is not None:
            context._cancelled.set()

    def _execute(self, task, key, context):
        """On a pool thread: runs the activity and hands the result to the connection's thread."""
        activity = self.activities.get(task["activityType"])
        try:
            if activity is None:
                raise ActivityError("UnknownActivityType", "python worker %s has no activity %s; it serves %s"
                                    % (self.name, task["activityType"], ", ".join(sorted(self.activities))), True)
            result = dict(key, worker=self.name, status="completed", result=activity(context, task.get("input")))
        except ActivityError as error:
            failure = {"type": error.type, "message": error.message, "nonRetryable": error.non_retryable}
            if error.next_retry_delay is not None:
                failure["nextRetryDelay"] = error.next_retry_delay
            if error.details is not None:
                failure["details"] = error.details
            result = dict(key, worker=self.name, status="failed", failure=failure)
        except Cancelled as error:
            result = dict(key, worker=self.name, status="failed", failure={"type": "Cancelled", "message": str(error)})
        except Exception as error:  # any other error is retryable, named by its class
            traceback.print_exc()
            result = dict(key, worker=self.name, status="failed", failure={"type": type(error).__name__, "message": str(error)})
        self._outbox.put(("result", result))

    def _due_heartbeats(self, context):
        """From an activity's thread: queues its heartbeat when one may be sent now; otherwise
        the connection's thread sends it when the interval has passed (``_flush``)."""
        taken = context._take_heartbeat(time.monotonic())
        if taken is not None:
            self._outbox.put(("heartbeat", dict(context._key(), details=taken[0])))

    def _flush(self):
        now = time.monotonic()
        for context in list(self._running.values()):
            taken = context._take_heartbeat(now)
            if taken is not None:
                self._report("heartbeat", dict(context._key(), details=taken[0]))
        while True:
            try:
                kind, body = self._outbox.get_nowait()
            except queues.Empty:
                return
            self._report(kind, body)
            if kind == "result":
                context = self._running.pop((body["runId"], body["activityId"], body["attempt"]), None)
                if self._tag is None and not self._stopping.is_set():
                    self._consume()
                print("ran %s for %s: %s" % (context.activity_type if context else "?", _name(body), body["status"]),
                      flush=True)


def _name(key):
    """``run/activity/attempt``, as the logs name an attempt."""
    return "%s/%s/%s" % (key["runId"], key["activityId"], key["attempt"])

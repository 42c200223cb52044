"""The dead-letter queue (``<namespace>.dead``): list, drain, redrive, discard, as ``keel dlq``
does (docs/protocol.md, Dead letters)."""
import base64
import json
import os

import pika

from .errors import KeelError


def _digest(data):
    """FNV-1a, 64 bits, hex: the id of a message that came without one (as keel's)."""
    value = 0xCBF29CE484222325
    for byte in data:
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(value, "x")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def item(properties, body):
    """A dead-letter item as ``keel dlq list --json`` shows it: ``id``, ``kind`` (``activity``
    with its ``entry``, or ``message`` with its ``body``), ``reason``, ``origin``, ``messageType``,
    ``headers``."""
    headers = {k: _text(v) for k, v in (properties.headers or {}).items() if not isinstance(v, (list, dict))}
    deaths = (properties.headers or {}).get("x-death") or []
    death = deaths[0] if deaths else None
    kind = headers.get("keel-type") or properties.type
    result = {"headers": headers, "messageType": kind,
              "origin": headers.get("keel-origin") or (_text(death.get("queue")) if death else None)}
    if kind == "dead-letter":
        try:
            entry = json.loads(body)
            failure = entry["failure"]
            reason = "%s: %s" % (failure["type"], failure["message"])
            if failure.get("retryState"):
                reason += " (%s)" % failure["retryState"]
            result.update(id=entry["id"], kind="activity", entry=entry, reason=reason)
            return result
        except (ValueError, KeyError, TypeError):
            pass
    result.update(kind="message", id=properties.message_id or "sha-" + _digest(body))
    if "keel-error" in headers:
        result["reason"] = headers["keel-error"]
    elif death:
        result["reason"] = "rejected by a consumer of %s (%s)" % (_text(death.get("queue")), _text(death.get("reason")))
    else:
        result["reason"] = "unknown"
    try:
        result["body"] = json.loads(body)
    except ValueError:
        try:
            result["bodyText"] = body.decode("utf-8")
        except UnicodeDecodeError:
            result["bodyBase64"] = base64.b64encode(body).decode("ascii")
    return result


class DeadLetters:
    """``client.dead_letters``: each call takes the queue's messages on a channel of its own;
    those it does not remove go back to the queue."""

    def __init__(self, client):
        self.client = client

    def _channel(self):
        channel = self.client._connection.channel()
        channel.confirm_delivery()
        return channel

    def list(self, limit=10000):
        """Every item, oldest first; nothing is removed."""
        channel = self._channel()
        items = []
        try:
            while len(items) < limit:
                method, properties, body = channel.basic_get(self.client.topology.dead)
                if method is None:
                    break
                items.append(item(properties, body))
        finally:
            channel.close()  # unacknowledged: every message returns to the queue
        return items

    def drain(self, path):
        """Moves every item into ``path`` (JSON Lines, appended), each line written and flushed
        to disk before its message is acknowledged. Returns how many."""
        channel = self._channel()
        count = 0
        try:
            with open(path, "a", encoding="utf-8") as file:
                while True:
                    method, properties, body = channel.basic_get(self.client.topology.dead)
                    if method is None:
                        break
                    file.write(json.dumps(item(properties, body), sort_keys=True) + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                    channel.basic_ack(method.delivery_tag)
                    count += 1
        finally:
            channel.close()
        return count

    def redrive(self, ids=(), all=False):
        """A parked activity gets fresh attempts (its workflow resumes); a message goes back to
        the queue it came from. Returns ``[{"id", "done", "detail"}]``; an item that cannot be
        redriven stays, and its ``detail`` says why."""
        def act(entry, properties, body, channel):
            if entry["kind"] == "activity":
                parked = entry["entry"]
                if not parked.get("parked"):
                    return False, ("not parked: workflow %s already received this failure" % parked["workflowId"])
                self.client.request("redrive", {"workflowId": parked["workflowId"], "runId": parked["runId"],
                                                "activityId": parked["activityId"]})
                return True, "workflow %s resumes: %s gets fresh attempts" % (parked["workflowId"], parked["activityType"])
            if entry["messageType"] == "task":
                return False, "a task attempt is owned by the coordinator; redrive its activity entry if it is parked"
            if not entry.get("origin"):
                return False, "the message does not say which queue it came from"
            headers = {k: v for k, v in (properties.headers or {}).items() if k not in ("keel-error", "keel-origin")}
            channel.basic_publish("", entry["origin"], body, pika.BasicProperties(
                content_type=properties.content_type, delivery_mode=2, type=properties.type,
                message_id=properties.message_id, headers=headers))
            return True, "republished to %s" % entry["origin"]
        return self._take(ids, all, act)

    def discard(self, ids=(), all=False):
        """A parked activity's failure goes to its workflow, which continues with it; any other
        item is removed."""
        def act(entry, properties, body, channel):
            parked = entry.get("entry")
            if parked and parked.get("parked"):
                self.client.request("discard", {"workflowId": parked["workflowId"], "runId": parked["runId"],
                                                "activityId": parked["activityId"]})
                return True, "workflow %s receives the failure" % parked["workflowId"]
            return True, "removed"
        return self._take(ids, all, act)

    def _take(self, ids, all, act):
        wanted = set(ids)
        channel = self._channel()
        outcomes, found = [], set()
        try:
            while True:
                method, properties, body = channel.basic_get(self.client.topology.dead)
                if method is None:
                    break
                entry = item(properties, body)
                if not all and entry["id"] not in wanted:
                    continue
                found.add(entry["id"])
                try:
                    done, detail = act(entry, properties, body, channel)
                except KeelError as error:
                    done, detail = False, str(error)
                if done:
                    channel.basic_ack(method.delivery_tag)
                outcomes.append({"id": entry["id"], "done": done, "detail": detail})
        finally:
            channel.close()
        for missing in sorted(wanted - found):
            outcomes.append({"id": missing, "done": False,
                             "detail": "no such entry in %s" % self.client.topology.dead})
        return outcomes

/// The console's page, style sheet and script, compiled into the binary (no build step, no
/// CDN). The script renders every page from the JSON API (docs/api.md) with DOM calls only,
/// never HTML strings, so ids and error texts cannot inject markup.
enum ConsoleAssets {
    /// Paths of the static files: served to anyone (they hold no data).
    static func serves(_ path: String) -> Bool {
        path == "/" || path == "/console/" || path == "/console/app.js" || path == "/console/style.css" || path == "/favicon.ico"
    }

    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Keel console</title>
        <link rel="stylesheet" href="/console/style.css">
        </head>
        <body>
        <header>
          <strong>Keel</strong>
          <nav>
            <a href="#/runs">Runs</a>
            <a href="#/dlq">Dead letters</a>
            <a href="#/queues">Queues</a>
            <a href="#/breakers">Breakers</a>
            <a href="#/schedules">Schedules</a>
          </nav>
          <label class="token">API token <input id="token" type="password" autocomplete="off" placeholder="KEEL_API_TOKEN"></label>
        </header>
        <main id="page"><p>Loading…</p></main>
        <script src="/console/app.js"></script>
        </body>
        </html>
        """

    static let style = """
        :root { --ok: #2f9e44; --bad: #e03131; --warn: #f08c00; --wait: #adb5bd; --run: #1c7ed6; --park: #9c36b5; --line: #dee2e6; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #212529; background: #f8f9fa; }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1rem; background: #212529; color: #fff; }
        header nav a { color: #dee2e6; margin-right: 1rem; text-decoration: none; }
        header nav a:hover { color: #fff; }
        header .token { margin-left: auto; font-size: 12px; color: #adb5bd; }
        header .token input { width: 11rem; }
        main { padding: 1rem; }
        h1 { font-size: 1.3rem; margin: .2rem 0 .8rem; }
        h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
        table { border-collapse: collapse; width: 100%; background: #fff; }
        th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { background: #f1f3f5; font-weight: 600; }
        td.num { text-align: right; font-variant-numeric: tabular-nums; }
        pre { background: #fff; border: 1px solid var(--line); padding: .5rem; overflow: auto; max-height: 16rem; margin: .2rem 0; }
        form.filters, .actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin-bottom: .8rem; }
        label { display: flex; flex-direction: column; font-size: 12px; color: #495057; }
        input, select, button { font: inherit; padding: .2rem .4rem; }
        button { cursor: pointer; }
        .badge { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: 12px; background: var(--wait); color: #fff; }
        .badge.completed, .badge.closed { background: var(--ok); }
        .badge.failed, .badge.timedOut, .badge.terminated, .badge.open { background: var(--bad); }
        .badge.running, .badge.halfOpen { background: var(--run); }
        .badge.blocked, .badge.stalled, .badge.cancelled { background: var(--warn); }
        .badge.parked { background: var(--park); }
        .flag { color: var(--bad); font-weight: 600; }
        .error { color: var(--bad); }
        .note { color: #495057; }
        .facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; background: #fff; padding: .6rem; border: 1px solid var(--line); }
        .facts dt { color: #495057; }
        .facts dd { margin: 0; overflow-wrap: anywhere; }
        .gantt { background: #fff; border: 1px solid var(--line); padding: .4rem; }
        .gantt .row { display: grid; grid-template-columns: 16rem 1fr; align-items: center; height: 1.5rem; }
        .gantt .label { font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; padding-right: .5rem; }
        .gantt .track { position: relative; height: 1rem; background: #f1f3f5; }
        .gantt .bar, .gantt .queued { position: absolute; top: 0; height: 1rem; min-width: 2px; border-radius: 2px; }
        .gantt .queued { background: repeating-linear-gradient(45deg, #dee2e6, #dee2e6 3px, #f1f3f5 3px, #f1f3f5 6px); }
        .bar.completed { background: var(--ok); } .bar.failed { background: var(--bad); } .bar.timedOut { background: var(--warn); }
        .bar.parked { background: var(--park); } .bar.running { background: var(--run); } .bar.waiting { background: var(--wait); }
        .bar.cancelled { background: #868e96; }
        .gantt .axis { display: flex; justify-content: space-between; font-size: 11px; color: #868e96; margin-left: 16rem; }
        .legend span { margin-right: .8rem; font-size: 12px; }
        .gantt .legend i { position: static; display: inline-block; width: .8rem; height: .8rem; margin-right: .25rem; vertical-align: -1px; }
        pre:empty { display: none; }
        """

    static let script = #"""
        "use strict";
        const page = document.getElementById("page");
        const tokenInput = document.getElementById("token");
        tokenInput.value = localStorage.getItem("keel-token") || "";
        tokenInput.addEventListener("change", () => { localStorage.setItem("keel-token", tokenInput.value); route(); });

        // h("tag.class", {attribute: value, onclick: fn}, children...): elements from data, never from HTML text.
        function h(spec, attributes, ...children) {
          const [tag, ...classes] = spec.split(".");
          const element = document.createElement(tag);
          if (classes.length) element.className = classes.join(" ");
          for (const [key, value] of Object.entries(attributes || {})) {
            if (value === undefined || value === null) continue;
            if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
            else if (key === "style") Object.assign(element.style, value);
            else element.setAttribute(key, value);
          }
          for (const child of children.flat()) {
            if (child === undefined || child === null || child === false) continue;
            element.append(child instanceof Node ? child : String(child));
          }
          return element;
        }

        async function api(path, options = {}) {
          const headers = Object.assign({}, options.headers || {});
          if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
          if (options.body !== undefined) headers["Content-Type"] = "application/json";
          const response = await fetch("/api" + path, Object.assign({}, options, { headers }));
          const body = await response.json().catch(() => ({ error: response.statusText }));
          if (!response.ok && response.status !== 409) throw new Error(body.error || response.statusText);
          return body;
        }

        const when = seconds => seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
        const duration = seconds => seconds < 1 ? (seconds * 1000).toFixed(0) + " ms" : seconds < 120 ? seconds.toFixed(2) + " s" : (seconds / 60).toFixed(1) + " min";
        const money = usd => "$" + (usd || 0).toFixed(4);
        const badge = text => h("span.badge." + text, {}, text);
        const runLink = id => h("a", { href: "#/run/" + encodeURIComponent(id) }, id);
        const json = value => h("pre", {}, value === undefined || value === null ? "—" : JSON.stringify(value, null, 2));
        // The page's content; null and false parts are left out.
        const render = (...children) => page.replaceChildren(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
        const showError = error => { page.replaceChildren(h("p.error", {}, String(error.message || error))); };

        async function route() {
          const [path, search] = location.hash.slice(1).split("?");
          const parts = (path || "/runs").split("/").filter(Boolean);
          const parameters = new URLSearchParams(search || "");
          try {
            if (parts[0] === "run" && parts[1]) return await runPage(decodeURIComponent(parts[1]), parameters.get("run"));
            if (parts[0] === "dlq") return await deadLetterPage();
            if (parts[0] === "queues") return await queuesPage();
            if (parts[0] === "breakers") return await breakersPage();
            if (parts[0] === "schedules") return await schedulesPage();
            return await runsPage(parameters);
          } catch (error) { showError(error); }
        }
        window.addEventListener("hashchange", route);
        route();

        async function runsPage(parameters) {
          const data = await api("/runs?" + parameters.toString());
          const field = (name, control) => h("label", {}, name, control);
          const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
            ["running", "completed", "failed", "cancelled", "terminated", "timedOut", "continuedAsNew", "blocked", "stalled", "parked"]
              .map(s => h("option", { value: s }, s)));
          const type = h("select", { name: "type" }, h("option", { value: "" }, "any type"), data.workflowTypes.map(t => h("option", { value: t }, t)));
          const sort = h("select", { name: "sort" }, h("option", { value: "started" }, "newest first"), h("option", { value: "cost" }, "most expensive first"));
          const search = h("input", { name: "search", placeholder: "workflow id contains" });
          const minCost = h("input", { name: "minCost", placeholder: "0.00", size: 6 });
          const outliers = h("input", { type: "checkbox", name: "outliers", value: "true" });
          status.value = parameters.get("status") || ""; type.value = parameters.get("type") || "";
          sort.value = parameters.get("sort") || "started"; search.value = parameters.get("search") || "";
          minCost.value = parameters.get("minCost") || ""; outliers.checked = parameters.get("outliers") === "true";
          const form = h("form.filters", {
            onsubmit: event => {
              event.preventDefault();
              const query = new URLSearchParams();
              for (const control of [status, type, sort, search, minCost]) if (control.value) query.set(control.name, control.value);
              if (outliers.checked) query.set("outliers", "true");
              location.hash = "#/runs?" + query.toString();
            }
          }, field("Status", status), field("Type", type), field("Search", search), field("Min. cost (USD)", minCost),
            field("Order", sort), h("label", {}, "Cost outliers", outliers), h("button", { type: "submit" }, "Filter"));
          const stalled = new Map(data.stalled.map(s => [s.runId, s.reason]));
          const rows = data.runs.map(({ run, costRatio }) => h("tr", {},
            h("td", {}, runLink(run.workflowId)), h("td", {}, run.workflowType),
            h("td", {}, badge(run.status), stalled.has(run.runId) ? [" ", badge("stalled")] : null),
            h("td.num", {}, run.historyLength), h("td.num", {}, run.inputTokens + run.outputTokens),
            h("td.num", {}, money(run.costUSD), costRatio ? h("span.flag", { title: "more than 3x the median cost of " + run.workflowType }, " " + costRatio.toFixed(1) + "x") : null),
            h("td", {}, when(run.createdAt)), h("td", {}, stalled.get(run.runId) || (run.failure ? run.failure.type + ": " + run.failure.message : ""))));
          render(h("h1", {}, "Workflow runs"), form,
            h("table", { id: "runs" }, h("tr", {}, ["Workflow id", "Type", "Status", "Events", "Tokens", "Cost", "Started", "Why"].map(t => h("th", {}, t))), rows),
            rows.length ? null : h("p.note", {}, "No runs match."));
        }

        function gantt(attempts, now) {
          if (!attempts.length) return h("p.note", {}, "No activities.");
          const start = Math.min(...attempts.map(a => a.scheduledAt));
          const end = Math.max(...attempts.map(a => a.endedAt || now), start + 0.001);
          const x = t => ((t - start) / (end - start) * 100).toFixed(3) + "%";
          const width = (a, b) => Math.max((b - a) / (end - start) * 100, 0.2).toFixed(3) + "%";
          const rows = attempts.map(a => {
            const began = a.startedAt || a.endedAt || now;
            const finished = a.endedAt || now;
            const tip = [a.activityType + " attempt " + a.attempt + " on " + a.taskQueue, a.worker ? "worker " + a.worker : "not started",
              a.startedAt ? "ran " + duration(finished - a.startedAt) : "", "waited " + duration(began - a.scheduledAt) + (a.capacityWaitSeconds ? " (" + duration(a.capacityWaitSeconds) + " for capacity)" : ""),
              a.outcome + (a.retrying ? " (retrying)" : ""), a.errorType ? a.errorType + ": " + a.errorMessage : ""].filter(Boolean).join("\n");
            return h("div.row", { "data-activity": a.activityId, "data-attempt": a.attempt, "data-outcome": a.outcome },
              h("span.label", { title: tip }, "#" + a.activityId + " " + a.activityType + " · " + a.attempt),
              h("span.track", {},
                h("span.queued", { style: { left: x(a.scheduledAt), width: width(a.scheduledAt, began) } }),
                h("span.bar." + a.outcome, { title: tip, style: { left: x(began), width: width(began, finished) } })));
          });
          const legend = h("p.legend", {}, ["completed", "failed", "timedOut", "parked", "running", "waiting", "cancelled"].map(o => h("span", {}, h("i.bar." + o), o)),
            h("span", {}, h("i.queued"), "queued"));
          return h("div.gantt", { id: "timeline" }, rows, h("div.axis", {}, h("span", {}, "0 s"), h("span", {}, duration(end - start))), legend);
        }

        async function runPage(workflowId, runId) {
          const path = "/runs/" + encodeURIComponent(workflowId) + (runId ? "?run=" + encodeURIComponent(runId) : "");
          const detail = await api(path);
          const run = detail.run;
          const now = Date.now() / 1000;
          const facts = h("dl.facts", {},
            h("dt", {}, "Workflow"), h("dd", {}, run.workflowId + " (" + run.workflowType + ")"),
            h("dt", {}, "Status"), h("dd", {}, badge(run.status), detail.stalledReason ? [" ", badge("stalled"), " " + detail.stalledReason] : null),
            h("dt", {}, "Run"), h("dd", {}, run.runId, detail.runIds.length > 1 ? h("span.note", {}, " (" + detail.runIds.length + " runs: ",
              detail.runIds.map(id => h("a", { href: "#/run/" + encodeURIComponent(run.workflowId) + "?run=" + encodeURIComponent(id) }, id.slice(0, 8) + " ")), ")") : null),
            h("dt", {}, "Trace id"), h("dd", { id: "trace-id" }, detail.traceId),
            h("dt", {}, "Started"), h("dd", {}, when(run.createdAt) + (run.closedAt ? " · closed " + when(run.closedAt) + " after " + duration(run.closedAt - run.createdAt) : "")),
            h("dt", {}, "Spend"), h("dd", {}, run.inputTokens + " input + " + run.outputTokens + " output tokens, " + money(run.costUSD)),
            run.failure ? [h("dt", {}, "Error"), h("dd.error", {}, run.failure.type + ": " + run.failure.message)] : null);
          const result = h("pre", { id: "action-result" }, "");
          const show = value => { result.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2); };
          const act = action => async event => {
            event.preventDefault();
            try { show(await action()); } catch (error) { show("error: " + error.message); }
          };
          const signalName = h("input", { placeholder: "name", required: "" });
          const signalInput = h("input", { placeholder: "input JSON (optional)" });
          const queryName = h("input", { placeholder: "name", required: "" });
          const queryArgument = h("input", { placeholder: "argument JSON (optional)" });
          const base = "/runs/" + encodeURIComponent(run.workflowId);
          const actions = h("div", {},
            h("form.actions", { onsubmit: act(() => api(base + "/signal", { method: "POST", body: JSON.stringify({ name: signalName.value, input: signalInput.value ? JSON.parse(signalInput.value) : null }) })) },
              h("label", {}, "Signal", signalName), h("label", {}, "Input", signalInput), h("button", { type: "submit" }, "Send signal")),
            h("form.actions", { onsubmit: act(() => api(base + "/query/" + encodeURIComponent(queryName.value) + (queryArgument.value ? "?argument=" + encodeURIComponent(queryArgument.value) : ""))) },
              h("label", {}, "Query", queryName), h("label", {}, "Argument", queryArgument), h("button", { type: "submit" }, "Query")),
            h("form.actions", { onsubmit: act(() => { if (!confirm("Cancel " + run.workflowId + "?")) return "not cancelled"; return api(base + "/cancel", { method: "POST" }); }) },
              h("button", { type: "submit" }, "Cancel workflow")),
            result);
          const open = detail.activities.map(a => h("tr", {}, h("td", {}, "#" + a.activityId + " " + a.activityType), h("td", {}, a.state),
            h("td.num", {}, a.attempt), h("td", {}, a.options.taskQueue), h("td", {}, when(a.lastHeartbeatAt)), h("td", {}, json(a.heartbeatDetails))));
          const events = detail.events.map(e => h("tr", {}, h("td.num", {}, e.id), h("td.num", {}, duration(e.time - detail.events[0].time)), h("td", {}, e.kind),
            h("td", {}, e.ref === undefined ? "" : "#" + e.ref), h("td", {}, e.name || ""), h("td", {}, e.attempt || ""),
            h("td", {}, e.failure ? h("span.error", {}, e.failure.type + ": " + e.failure.message) : "")));
          render(h("h1", {}, "Run " + run.workflowId), facts,
            h("h2", {}, "Activity attempts"), gantt(detail.attempts, now),
            open.length ? [h("h2", {}, "Open activities and their last heartbeat"),
              h("table", {}, h("tr", {}, ["Activity", "State", "Attempt", "Queue", "Last heartbeat", "Details"].map(t => h("th", {}, t))), open)] : null,
            h("h2", {}, "Actions"), actions,
            h("h2", {}, "Input"), json(run.input), h("h2", {}, "Result"), json(run.result),
            h("h2", {}, "History (" + detail.events.length + " events)"),
            h("table", { id: "events" }, h("tr", {}, ["#", "At", "Event", "Seq", "Name", "Attempt", "Error"].map(t => h("th", {}, t))), events));
        }

        async function deadLetterPage() {
          const data = await api("/dlq");
          const status = h("pre", { id: "action-result" }, "");
          const act = (id, verb) => async () => {
            try {
              const outcome = await api("/dlq/" + encodeURIComponent(id) + "/" + verb, { method: "POST" });
              status.textContent = id + ": " + (outcome.done ? "" : "NOT DONE: ") + outcome.detail;
              if (outcome.done) setTimeout(route, 600);
            } catch (error) { status.textContent = id + ": " + error.message; }
          };
          const rows = data.items.map(item => {
            const entry = item.entry;
            return h("tr", { "data-id": item.id },
              h("td", {}, item.id), h("td", {}, entry ? badge(entry.parked ? "parked" : "failed") : "message"),
              h("td", {}, entry ? [runLink(entry.workflowId), " (" + entry.workflowType + ")"] : (item.origin || "")),
              h("td", {}, entry ? entry.activityType + " on " + entry.taskQueue : (item.messageType || "")),
              h("td.num", {}, entry ? entry.attempts.length : ""),
              h("td", {}, item.reason, h("details", {}, h("summary", {}, "context"),
                entry ? [h("p", {}, "input"), json(entry.input), h("p", {}, "attempts"),
                  json(entry.attempts.map(a => ({ attempt: a.attempt, worker: a.worker, error: a.failure.type + ": " + a.failure.message })))] : json(item.body || item.bodyText))),
              h("td", {}, entry ? when(entry.deadLetteredAt) : ""),
              h("td", {}, h("button", { onclick: act(item.id, "redrive") }, "Redrive"), " ", h("button", { onclick: act(item.id, "discard") }, "Discard")));
          });
          render(h("h1", {}, "Dead-letter queue"), status,
            h("table", { id: "dead-letters" }, h("tr", {}, ["Id", "Kind", "Workflow", "Activity", "Attempts", "Reason", "Dead-lettered", ""].map(t => h("th", {}, t))), rows),
            rows.length ? null : h("p.note", {}, "The dead-letter queue is empty."));
        }

        async function queuesPage() {
          const data = await api("/queues");
          const rows = data.queues.map(q => h("tr", {}, h("td", {}, q.taskQueue), h("td", {}, q.queue), h("td.num", {}, q.messages),
            h("td.num", {}, q.consumers), h("td.num", {}, q.running), h("td.num", {}, q.dispatchedPerSecond.toFixed(1)), h("td.num", {}, q.dispatched),
            h("td", {}, q.stalled ? badge("stalled") : q.starvingSince ? "no consumer since " + when(q.starvingSince)
              : q.messages > 0 && q.consumers === 0 ? "workers all busy" : "ok"), h("td", {}, when(q.sampledAt))));
          render(h("h1", {}, "Task queues"),
            h("table", { id: "queues" }, h("tr", {}, ["Task queue", "RabbitMQ queue", "Ready", "Consumers", "Running", "Dispatched/s", "Dispatched", "State", "Sampled"].map(t => h("th", {}, t))), rows),
            rows.length ? null : h("p.note", {}, "No sample yet: the coordinator looks every few seconds."));
        }

        async function breakersPage() {
          const data = await api("/breakers");
          const rows = data.breakers.map(b => h("tr", {}, h("td", {}, b.provider), h("td", {}, badge(b.state)), h("td.num", {}, b.consecutiveFailures),
            h("td.num", {}, b.totalFailures), h("td.num", {}, b.totalSuccesses), h("td.num", {}, b.rejected), h("td", {}, when(b.openedAt)), h("td", {}, when(b.retryAt))));
          render(h("h1", {}, "Circuit breakers"),
            h("table", { id: "breakers" }, h("tr", {}, ["Provider", "State", "Consecutive failures", "Failures", "Successes", "Rejected", "Opened", "Probe after"].map(t => h("th", {}, t))), rows),
            rows.length ? null : h("p.note", {}, "No provider has been called yet."));
        }

        async function schedulesPage() {
          const data = await api("/schedules");
          const status = h("pre", { id: "action-result" }, "");
          const act = (name, verb) => async () => {
            try {
              const answer = await api("/schedules/" + encodeURIComponent(name) + "/" + verb, { method: "POST" });
              status.textContent = name + ": " + (answer.firing ? answer.firing.outcome + (answer.firing.workflowId ? " " + answer.firing.workflowId : "") : verb + "d");
              setTimeout(route, 600);
            } catch (error) { status.textContent = name + ": " + error.message; }
          };
          const rows = data.schedules.map(d => {
            const s = d.schedule, spec = s.spec, last = s.recent[s.recent.length - 1];
            return h("tr", { "data-name": spec.name },
              h("td", {}, spec.name), h("td", {}, spec.cron ? spec.cron + (spec.timeZone ? " (" + spec.timeZone + ")" : "") : "every " + spec.every + " s"),
              h("td", {}, spec.workflowType), h("td", {}, badge(s.paused ? "paused" : "active")), h("td", {}, d.upcoming.length ? when(d.upcoming[0]) : "-"),
              h("td.num", {}, s.started), h("td.num", {}, s.skippedOverlap), h("td.num", {}, s.missed),
              h("td", {}, last ? [last.outcome + " ", last.workflowId ? runLink(last.workflowId) : ""] : "-"),
              h("td", {}, h("button", { onclick: act(spec.name, s.paused ? "unpause" : "pause") }, s.paused ? "Unpause" : "Pause"), " ",
                h("button", { onclick: act(spec.name, "trigger") }, "Trigger")));
          });
          render(h("h1", {}, "Schedules"), status,
            h("table", { id: "schedules" }, h("tr", {}, ["Name", "When", "Workflow", "State", "Next", "Started", "Skipped", "Missed", "Last firing", ""].map(t => h("th", {}, t))), rows),
            rows.length ? null : h("p.note", {}, "No schedules: keel schedule create makes one."));
        }
        """#
}

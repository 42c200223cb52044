/// Where a message goes: an exchange and a routing key.
public struct Route: Sendable, Hashable {
    public let exchange: String
    public let routingKey: String

    public init(exchange: String, routingKey: String) {
        self.exchange = exchange
        self.routingKey = routingKey
    }
}

// The one place that decides which coordinator a job or a worker's report goes to. A namespace
// has one coordinator today, so every job goes to `<namespace>.jobs` and every report to
// `<namespace>.results`. Sharding workflows over several coordinators (docs/scaling.md) replaces
// these two functions with a lookup of the workflow's shard; everything that publishes jobs or
// reports (KeelClient, the worker's report sender and claims) asks them.
extension Topology {
    /// The route of a job about workflow `workflowId` (nil: a job about no one workflow, such as
    /// the schedule jobs).
    public func jobRoute(workflowId: String?) -> Route {
        Route(exchange: jobsExchange, routingKey: Self.jobsRoutingKey)
    }

    /// The route of a worker's report (started, redelivered, claim, heartbeat, result) about an
    /// activity of workflow `workflowId`.
    public func reportRoute(workflowId: String) -> Route {
        Route(exchange: resultsExchange, routingKey: Self.resultsRoutingKey)
    }
}

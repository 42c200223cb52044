// The library users import: the authoring API, the SQLite store and the runtime.
@_exported import KeelCore
@_exported import KeelHistory
@_exported import KeelRuntime
@_exported import KeelAMQP

// The library users import: the authoring API, the SQLite store, the runtime and the LLM kit.
@_exported import KeelCore
@_exported import KeelHistory
@_exported import KeelRuntime
@_exported import KeelAMQP
@_exported import KeelLLM

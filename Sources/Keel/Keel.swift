@_exported import KeelAMQP
// The library users import: the authoring API, the SQLite store, the runtime, the LLM kit and
// the in-memory broker and workers.
@_exported import KeelCore
@_exported import KeelHistory
@_exported import KeelInMemory
@_exported import KeelLLM
@_exported import KeelRuntime

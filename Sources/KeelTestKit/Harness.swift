// Tests use the harness (child processes, temporary folders, the fuzzer) through the test kit.
@_exported import KeelHarness
